package valuesdoc

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		values  string
		want    []Value
		wantErr string
	}{
		{
			name: "scalars, nested keys and a file header",
			values: `# Header of the file, not a description.

# -- Replicas.
replicas: 1
image:
  # -- Image tag; empty means
  # the appVersion.
  tag: ""
  # -- Pull it.
  pull: true
`,
			want: []Value{
				{Key: "replicas", Type: "int", Default: "1", Description: "Replicas."},
				{Key: "image.tag", Type: "string", Default: `""`, Description: "Image tag; empty means the appVersion."},
				{Key: "image.pull", Type: "bool", Default: "true", Description: "Pull it."},
			},
		},
		{
			name: "a documented mapping is shown whole",
			values: `# -- Resources.
resources:
  limits:
    memory: 256Mi
# -- Args.
extraArgs: ["--a=<b>"]
`,
			want: []Value{
				{Key: "resources", Type: "object", Default: `{"limits":{"memory":"256Mi"}}`, Description: "Resources."},
				{Key: "extraArgs", Type: "list", Default: `["--a=<b>"]`, Description: "Args."},
			},
		},
		{
			name:    "an undocumented leaf is an error",
			values:  "image:\n  tag: x\n",
			wantErr: "image.tag has no",
		},
		{
			name:    "an empty undocumented mapping is an error",
			values:  "labels: {}\n",
			wantErr: "labels has no",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.values))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestRender(t *testing.T) {
	readme := "# Chart\n\n" + StartMarker + "\nstale\n" + EndMarker + "\n\nMore.\n"
	got, err := Render([]byte(readme), []byte("# -- A | B.\nx: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := "# Chart\n\n" + StartMarker + "\n| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n| `x` | int | `1` | A \\| B. |\n" + EndMarker + "\n\nMore.\n"
	if string(got) != want {
		t.Errorf("Render =\n%s\nwant\n%s", got, want)
	}
	if _, err := Render([]byte("# no markers\n"), []byte("# -- X.\nx: 1\n")); err == nil {
		t.Error("Render without markers succeeded")
	}
}
