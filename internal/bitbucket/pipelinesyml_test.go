package bitbucket

import (
	"reflect"
	"strings"
	"testing"
)

func TestParsePipelineRunsOn(t *testing.T) {
	tests := []struct {
		name string
		yml  string
		want [][]string
	}{
		{
			name: "default with string and list runs-on",
			yml: `
pipelines:
  default:
    - step:
        name: build
        runs-on: self.hosted
    - step:
        name: test
        runs-on:
          - self.hosted
          - linux
          - docker-builds
    - step:
        name: cloud
        script: [echo hi]
`,
			want: [][]string{{"self.hosted"}, {"self.hosted", "linux", "docker-builds"}, nil},
		},
		{
			name: "sections keep file order, not alphabetical",
			yml: `
pipelines:
  pull-requests:
    '**':
      - step: {runs-on: [pr]}
  branches:
    release/*:
      - step: {runs-on: [release]}
    main:
      - step: {runs-on: [main]}
  tags:
    v*:
      - step: {runs-on: tag}
  custom:
    deploy:
      - variables:
          - name: ENV
      - step: {runs-on: [deploy]}
    imported:
      import: shared:main:share
  default:
    - step: {runs-on: [default]}
`,
			want: [][]string{{"pr"}, {"release"}, {"main"}, {"tag"}, {"deploy"}, {"default"}},
		},
		{
			name: "parallel list form, parallel steps form, stage",
			yml: `
pipelines:
  default:
    - parallel:
        - step: {runs-on: [a]}
        - step: {runs-on: [b]}
    - parallel:
        fail-fast: true
        steps:
          - step: {runs-on: [c]}
          - step: {name: no-runner}
    - stage:
        name: Deploy
        steps:
          - step: {runs-on: [d, linux]}
          - step: {runs-on: [e]}
`,
			want: [][]string{{"a"}, {"b"}, {"c"}, nil, {"d", "linux"}, {"e"}},
		},
		{
			name: "anchors, aliases and merge keys",
			yml: `
definitions:
  steps:
    - step: &build
        name: Build
        runs-on: [self.hosted, linux, big]
  labels: &labels [self.hosted, shared]
pipelines:
  default:
    - step: *build
    - step:
        <<: *build
        name: Override keeps runs-on
    - step:
        <<: *build
        runs-on: override
    - step:
        runs-on: *labels
`,
			want: [][]string{{"self.hosted", "linux", "big"}, {"self.hosted", "linux", "big"}, {"override"}, {"self.hosted", "shared"}},
		},
		{
			name: "empty and null runs-on",
			yml: `
pipelines:
  default:
    - step: {runs-on: ""}
    - step: {runs-on: null}
    - step: {runs-on: []}
    - step:
`,
			want: [][]string{nil, nil, nil, nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePipelineRunsOn([]byte(tt.yml))
			if err != nil {
				t.Fatalf("ParsePipelineRunsOn: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParsePipelineStepsSectionsAndNames(t *testing.T) {
	steps, err := ParsePipelineSteps([]byte(`
pipelines:
  branches:
    main:
      - step: {name: Build, runs-on: [x]}
  custom:
    nightly:
      - stage: {steps: [{step: {name: Check}}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []PipelineStepSpec{
		{Section: "branches/main", Name: "Build", RunsOn: []string{"x"}},
		{Section: "custom/nightly", Name: "Check"},
	}
	if !reflect.DeepEqual(steps, want) {
		t.Errorf("got %+v\nwant %+v", steps, want)
	}
}

func TestParsePipelineRunsOnErrors(t *testing.T) {
	tests := map[string]string{
		"empty":         "",
		"not a mapping": "- a\n- b\n",
		"no pipelines":  "image: golang\n",
		"invalid yaml":  "pipelines: [\n",
	}
	for name, yml := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParsePipelineRunsOn([]byte(yml)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestParsePipelineRunsOnBillionLaughs(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 {step: {runs-on: x}}\n")
	prev := "a0"
	for i := 1; i < 12; i++ {
		name := "a" + string(rune('a'+i))
		b.WriteString(name + ": &" + name + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n")
		prev = name
	}
	b.WriteString("pipelines:\n  default: *" + prev + "\n")
	// Either the YAML library or our walker must refuse; neither may hang.
	if steps, err := ParsePipelineRunsOn([]byte(b.String())); err == nil && len(steps) > maxYAMLVisits {
		t.Errorf("expanded %d steps", len(steps))
	}
}

func FuzzParsePipelineRunsOn(f *testing.F) {
	seeds := []string{
		"pipelines:\n  default:\n    - step:\n        runs-on: [self.hosted, linux]\n",
		"pipelines:\n  branches:\n    main:\n      - parallel:\n          steps:\n            - step: {runs-on: a}\n",
		"pipelines:\n  custom:\n    x:\n      - stage: {steps: [{step: {runs-on: [b]}}]}\n",
		"definitions:\n  steps:\n    - step: &s {runs-on: [c]}\npipelines:\n  default:\n    - step: *s\n    - step: {<<: *s, name: n}\n",
		"a: &a [*a]\npipelines: {default: *a}\n",
		"pipelines: {default: [{step: {runs-on: [[x], {y: z}, 1, true]}}]}\n",
		"",
		"\t",
		"pipelines: !!binary aGVsbG8=\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		runsOn, err := ParsePipelineRunsOn(data)
		if err != nil {
			return
		}
		for _, labels := range runsOn {
			for _, l := range labels {
				if l == "" || strings.TrimSpace(l) != l {
					t.Fatalf("label %q not trimmed or empty", l)
				}
			}
		}
	})
}
