package harness

import "strings"

// SetField returns a change that writes value at a dotted path of an unstructured object (a
// RunnerPool's spec, say), creating maps on the way: the tests that send invalid objects to the
// API server describe each by the one field they break.
func SetField(path string, value any) func(map[string]any) {
	return func(obj map[string]any) {
		parts := strings.Split(path, ".")
		m := obj
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = value
	}
}

// UnsetField returns a change that removes the field at a dotted path, if it is there.
func UnsetField(path string) func(map[string]any) {
	return func(obj map[string]any) {
		parts := strings.Split(path, ".")
		m := obj
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				return
			}
			m = next
		}
		delete(m, parts[len(parts)-1])
	}
}
