package bitbucket

import "testing"

func TestSameUUID(t *testing.T) {
	const braced = "{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}"
	tests := []struct {
		name string
		a, b string
		want bool
	}{
		{"a UUID is itself", braced, braced, true},
		{"braces do not matter", braced, "0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b", true},
		{"case does not matter", braced, "{0B3F8A1E-2C4D-4E5F-8A9B-0C1D2E3F4A5B}", true},
		{"different UUIDs differ", braced, "{ffffffff-2c4d-4e5f-8a9b-0c1d2e3f4a5b}", false},
		{"an unset UUID matches nothing", "", braced, false},
		{"two unset UUIDs do not match", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SameUUID(tt.a, tt.b); got != tt.want {
				t.Errorf("SameUUID(%q, %q) = %t, want %t", tt.a, tt.b, got, tt.want)
			}
		})
	}
}
