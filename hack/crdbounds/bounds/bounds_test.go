package bounds

import (
	"regexp"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Every string the strict pattern accepts parses as a quantity; the loose one accepts some that
// do not.
func TestStrictQuantityPatternOnlyAcceptsWhatParseQuantityParses(t *testing.T) {
	loose, strict := regexp.MustCompile(QuantityPattern), regexp.MustCompile(StrictQuantityPattern)
	for _, s := range []string{"1", "+1", "-1", "1.", ".5", "+.5", "1.5Gi", "512Mi", "100m", "1k", "1E3", "1e+3", "1e-3", "1e999", "0.000000000000000000001"} {
		if !strict.MatchString(s) {
			t.Errorf("%q is refused by the strict pattern", s)
		}
		if _, err := resource.ParseQuantity(s); err != nil {
			t.Errorf("%q matches the strict pattern but does not parse: %v", s, err)
		}
	}
	for _, s := range []string{"1e.5", "1e1.5", "1e99999999999999999999", "1e1000"} {
		if !loose.MatchString(s) {
			t.Fatalf("%q no longer matches controller-gen's pattern: update the test", s)
		}
		if strict.MatchString(s) {
			t.Errorf("%q matches the strict pattern", s)
		}
	}
}

func TestApply(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{
			name: "an int32 without bounds gets the type's range",
			in: `            defaultMode:
              description: |-
                format: int32 in a description is text
              format: int32
              type: integer
            name:
              type: string
`,
			want: `            defaultMode:
              description: |-
                format: int32 in a description is text
              format: int32
              maximum: 2147483647
              minimum: -2147483648
              type: integer
            name:
              type: string
`,
		},
		{
			name: "explicit bounds are kept",
			in: `  maxRunners:
    default: 10
    format: int32
    maximum: 100
    minimum: 1
    type: integer
`,
		},
		{
			name: "the quantity pattern is made strict",
			in: `    pattern: ` + QuantityPattern + `
    x-kubernetes-int-or-string: true
`,
			want: `    pattern: ` + StrictQuantityPattern + `
    x-kubernetes-int-or-string: true
`,
		},
		{
			name: "int64 and int-or-string are left alone",
			in: `  a:
    format: int64
    type: integer
  b:
    format: int32
    x-kubernetes-int-or-string: true
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == "" {
				want = tt.in
			}
			if got := string(Apply([]byte(tt.in))); got != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}
