package bitbucket

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// flexTime accepts the timestamp shapes Bitbucket uses (RFC 3339 with or
// without fractional seconds, "Z" or an offset) and leaves the zero time for
// null, empty or unparseable values: one odd timestamp must not make a whole
// runner list undecodable.
type flexTime struct{ time.Time }

var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02 15:04:05.999999999Z07:00",
}

func (t *flexTime) UnmarshalJSON(data []byte) error {
	var s string
	if json.Unmarshal(data, &s) != nil {
		return nil
	}
	t.Time = parseTimestamp(s)
	return nil
}

func parseTimestamp(s string) time.Time {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}
	}
	for _, layout := range timeLayouts {
		if ts, err := time.Parse(layout, s); err == nil {
			return ts.UTC()
		}
	}
	return time.Time{}
}

// flexString accepts a string, a number or a boolean as text and anything
// else as empty.
type flexString string

func (f *flexString) UnmarshalJSON(data []byte) error {
	*f = flexString(scalarText(data))
	return nil
}

func scalarText(data []byte) string {
	data = bytes.TrimSpace(data)
	var s string
	if json.Unmarshal(data, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(data, &n) == nil {
		return n.String()
	}
	var b bool
	if json.Unmarshal(data, &b) == nil {
		return strconv.FormatBool(b)
	}
	return ""
}

// flexInt accepts a number or a numeric string.
type flexInt int

func (f *flexInt) UnmarshalJSON(data []byte) error {
	if n, err := strconv.ParseFloat(scalarText(data), 64); err == nil && n > -1e15 && n < 1e15 {
		*f = flexInt(n)
	}
	return nil
}

// flexStrings accepts a list of scalars (non-scalars are dropped), a single
// string, or null.
type flexStrings []string

func (f *flexStrings) UnmarshalJSON(data []byte) error {
	var items []json.RawMessage
	if json.Unmarshal(data, &items) != nil {
		if s := scalarText(data); s != "" {
			*f = flexStrings{s}
		}
		return nil
	}
	out := make(flexStrings, 0, len(items))
	for _, item := range items {
		if s := scalarText(item); s != "" {
			out = append(out, s)
		}
	}
	*f = out
	return nil
}

// flexObject decodes v only if data is a JSON object; other shapes are ignored.
func flexObject(data []byte, v any) bool {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return false
	}
	return json.Unmarshal(data, v) == nil
}

var bareUUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// normalizeUUID accepts a UUID with braces, without braces, or with
// percent-encoded braces and returns Bitbucket's braced form. Anything that
// is not a UUID (a slug) is returned trimmed but otherwise unchanged.
func normalizeUUID(s string) string {
	s = strings.TrimSpace(s)
	lower := strings.ToLower(s)
	if strings.HasPrefix(lower, "%7b") && strings.HasSuffix(lower, "%7d") && len(s) >= 6 {
		s = "{" + s[3:len(s)-3] + "}"
	}
	if bareUUID.MatchString(s) {
		return "{" + s + "}"
	}
	return s
}
