// Package bounds narrows a generated CRD schema to what the Go types parse, where controller-gen
// leaves it wider (docs/adr/0012-undecodable-objects.md):
//
//   - controller-gen marks an int32 field `format: int32`. Recent API servers check that format
//     for custom resources, but older ones the chart supports do not: they store any integer up
//     to 2^53, and decoding it into an int32 fails. Every int32 gets the type's range, which
//     every API server checks (and names in a plainer message).
//   - controller-gen's pattern for a resource.Quantity allows a fractional exponent ("1e.5") and
//     an exponent of any length ("1e99999999999"), which resource.ParseQuantity rejects (or,
//     for a huge exponent that fits an int64, computes for minutes). The exponent is limited to
//     an integer of at most three digits.
//
// Fields of our own types could carry markers instead, but the ones embedded from core/v1
// (volume modes, resource lists, size limits, ...) cannot, hence this pass over
// controller-gen's output. It edits the text in place, so the rest of the file stays byte for
// byte what controller-gen wrote.
package bounds

import (
	"strings"
)

const (
	minInt32 = "-2147483648"
	maxInt32 = "2147483647"

	// QuantityPattern is controller-gen's pattern for a resource.Quantity, and StrictQuantityPattern
	// the one that replaces it.
	QuantityPattern       = `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	StrictQuantityPattern = `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,3}))?$`
)

// Apply adds `maximum` and `minimum` next to every `format: int32` of an integer schema that
// has neither, and replaces controller-gen's quantity pattern with StrictQuantityPattern.
func Apply(doc []byte) []byte {
	text := strings.ReplaceAll(string(doc), "pattern: "+QuantityPattern+"\n", "pattern: "+StrictQuantityPattern+"\n")
	lines := strings.SplitAfter(text, "\n")
	var out strings.Builder
	for i, line := range lines {
		out.WriteString(line)
		indent, ok := int32Format(line)
		if !ok {
			continue
		}
		keys := siblingKeys(lines, i, indent)
		if keys["type"] != "integer" {
			continue
		}
		_, hasMax := keys["maximum"]
		_, hasMin := keys["minimum"]
		if hasMax || hasMin {
			continue
		}
		// controller-gen sorts keys: format < maximum < minimum < type.
		out.WriteString(indent + "maximum: " + maxInt32 + "\n")
		out.WriteString(indent + "minimum: " + minInt32 + "\n")
	}
	return []byte(out.String())
}

// int32Format reports whether line is the key `format: int32`, and its indentation.
func int32Format(line string) (string, bool) {
	trimmed := strings.TrimLeft(line, " ")
	if strings.TrimRight(trimmed, "\r\n") != "format: int32" {
		return "", false
	}
	return line[:len(line)-len(trimmed)], true
}

// siblingKeys returns the scalar keys of the mapping that holds line i: the lines at the same
// indentation, up and down to the first line indented less.
func siblingKeys(lines []string, i int, indent string) map[string]string {
	keys := map[string]string{}
	collect := func(line string) bool {
		if strings.TrimSpace(line) == "" {
			return true
		}
		n := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case n < len(indent):
			return false
		case n > len(indent):
			return true // a nested value or a block scalar's text
		}
		rest := strings.TrimRight(line[n:], "\r\n")
		if strings.HasPrefix(rest, "- ") {
			return false // an item of a list at this indentation: another mapping
		}
		if k, v, ok := strings.Cut(rest, ":"); ok {
			keys[k] = strings.TrimSpace(v)
		}
		return true
	}
	for j := i - 1; j >= 0 && collect(lines[j]); j-- {
	}
	for j := i + 1; j < len(lines) && collect(lines[j]); j++ {
	}
	return keys
}
