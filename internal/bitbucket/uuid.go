package bitbucket

import "strings"

// SameUUID compares Bitbucket UUIDs with or without braces, case-insensitively. An unset UUID
// matches nothing.
func SameUUID(a, b string) bool {
	trim := func(s string) string { return strings.ToLower(strings.Trim(s, "{}")) }
	return a != "" && trim(a) == trim(b)
}

// IsUUID reports whether id is a UUID, with or without braces, rather than a slug.
func IsUUID(id string) bool { return bareUUID.MatchString(strings.Trim(id, "{}")) }

// CanonicalID writes a UUID one way, with braces and in lower case, so that spellings of one
// workspace or repository share a cache key; a slug is left as it is.
func CanonicalID(id string) string {
	if IsUUID(id) {
		return "{" + strings.ToLower(strings.Trim(id, "{}")) + "}"
	}
	return id
}
