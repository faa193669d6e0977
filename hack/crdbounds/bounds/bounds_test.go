package bounds

import "testing"

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
