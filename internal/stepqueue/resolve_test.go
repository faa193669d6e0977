package stepqueue

import (
	"reflect"
	"strings"
	"testing"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// A file with every kind of section, parallel and stage steps, an unnamed
// step and a repeated name.
const sectionsYML = `
image: atlassian/default-image:4
definitions:
  steps:
    - step: &build
        name: Build
        runs-on: [self.hosted, linux, docker]
        script: [make]
pipelines:
  default:
    - step: *build
    - parallel:
        - step:
            name: Unit
            runs-on: [self.hosted, linux]
            script: [make test]
        - step:
            name: Lint
            script: [make lint]
  branches:
    main:
      - step:
          name: Release build
          runs-on: [self.hosted, linux, big]
          script: [make]
    'feature/*':
      - step:
          name: Feature
          runs-on: self.hosted
          script: [make]
    'feature/bb-*':
      - step:
          name: BB feature
          runs-on: [self.hosted, bb]
          script: [make]
    '**':
      - step:
          name: Anything
          runs-on: [self.hosted, any]
          script: [make]
  tags:
    'v*':
      - stage:
          name: Ship
          steps:
            - step:
                name: Package
                runs-on: [self.hosted, linux.arm64]
                script: [make package]
            - step:
                name: Package
                runs-on: [self.hosted, linux]
                script: [make package]
  custom:
    deploy:
      - variables:
          - name: ENV
      - step:
          runs-on: [self.hosted, deploy]
          script: [make deploy]
      - step:
          runs-on: [self.hosted, deploy, prod]
          script: [make deploy]
  pull-requests:
    '**':
      - step:
          name: PR
          runs-on: [self.hosted, pr]
          script: [make]
`

func parse(t *testing.T, yml string) []bitbucket.PipelineStepSpec {
	t.Helper()
	specs, err := bitbucket.ParsePipelineSteps([]byte(yml))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return specs
}

func TestSelectSection(t *testing.T) {
	specs := parse(t, sectionsYML)
	branch := func(name string) bitbucket.PipelineTarget {
		return bitbucket.PipelineTarget{Type: "pipeline_ref_target", RefType: "branch", RefName: name}
	}
	withSelector := func(t bitbucket.PipelineTarget, typ, pattern string) bitbucket.PipelineTarget {
		t.SelectorType, t.SelectorPattern = typ, pattern
		return t
	}
	tests := []struct {
		name    string
		target  bitbucket.PipelineTarget
		want    string
		wantErr string
	}{
		{name: "default selector", target: withSelector(branch("whatever"), "default", ""), want: "default"},
		{name: "branches selector names the section", target: withSelector(branch("feature/x"), "branches", "feature/*"), want: "branches/feature/*"},
		{name: "custom selector", target: withSelector(bitbucket.PipelineTarget{Type: "pipeline_commit_target"}, "custom", "deploy"), want: "custom/deploy"},
		{name: "custom pipeline missing from the file", target: withSelector(branch("main"), "custom", "gone"), wantErr: `custom pipeline "gone" is not in the file`},
		{name: "tags selector", target: withSelector(bitbucket.PipelineTarget{RefType: "tag", RefName: "v1.2"}, "tags", "v*"), want: "tags/v*"},
		{name: "pull-requests selector", target: withSelector(bitbucket.PipelineTarget{Type: pullRequestTarget}, "pull-requests", "**"), want: "pull-requests/**"},
		{name: "no selector: an exact branch name wins", target: branch("main"), want: "branches/main"},
		{name: "no selector: the most specific glob wins", target: branch("feature/bb-123"), want: "branches/feature/bb-*"},
		{name: "no selector: * stops at a slash, ** does not", target: branch("feature/a/b"), want: "branches/**"},
		{name: "no selector: tag glob", target: bitbucket.PipelineTarget{RefType: "tag", RefName: "v2"}, want: "tags/v*"},
		{name: "no selector: an unmatched tag runs nothing from default", target: bitbucket.PipelineTarget{RefType: "tag", RefName: "release-2"}, wantErr: `no tags pattern matches "release-2"`},
		{name: "selector names a section this commit lacks: fall back to the ref", target: withSelector(branch("main"), "branches", "old-*"), want: "branches/main"},
		{name: "nothing to go by", target: bitbucket.PipelineTarget{Type: "pipeline_commit_target"}, wantErr: "cannot tell which pipeline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := selectSection(tt.target, specs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("selectSection = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("selectSection = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSelectSectionFallsBackToDefault(t *testing.T) {
	specs := parse(t, `
pipelines:
  default:
    - step: {name: Build, runs-on: [self.hosted], script: [make]}
  branches:
    main:
      - step: {name: Main, script: [make]}
`)
	got, err := selectSection(bitbucket.PipelineTarget{RefType: "branch", RefName: "topic"}, specs)
	if err != nil || got != "default" {
		t.Fatalf("selectSection = %q, %v; want default for a branch no pattern matches", got, err)
	}
	noDefault := parse(t, "pipelines:\n  branches:\n    main:\n      - step: {script: [make]}\n")
	if got, err := selectSection(bitbucket.PipelineTarget{RefType: "branch", RefName: "topic"}, noDefault); err == nil {
		t.Fatalf("selectSection = %q without a default section; want an error", got)
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, ref string
		want         bool
	}{
		{"main", "main", true},
		{"main", "main2", false},
		{"*", "main", true},
		{"*", "feature/x", false},
		{"**", "feature/x/y", true},
		{"feature/*", "feature/x", true},
		{"feature/*", "feature/x/y", false},
		{"feature/**", "feature/x/y", true},
		{"*/feature", "team/feature", true},
		{"release-?", "release-1", true},
		{"release-?", "release-10", false},
		{"{feature/*,fix/*}", "fix/crash", true},
		{"{feature/*,fix/*}", "dev/crash", false},
		{"v1.*", "v1.2", true},
		{"v1.*", "v1x2", false}, // the dot is literal
		{"{unclosed", "{unclosed", false},
		{"naïve-*", "naïve-branch", true},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.ref); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.ref, got, tt.want)
		}
	}
}

func TestResolveRunsOn(t *testing.T) {
	specs := parse(t, sectionsYML)
	defaultTarget := bitbucket.PipelineTarget{RefType: "branch", RefName: "topic", SelectorType: "default"}
	deploy := bitbucket.PipelineTarget{Type: "pipeline_commit_target", SelectorType: "custom", SelectorPattern: "deploy"}
	tag := bitbucket.PipelineTarget{RefType: "tag", RefName: "v1", SelectorType: "tags", SelectorPattern: "v*"}
	steps := func(names ...string) []bitbucket.Step {
		out := make([]bitbucket.Step, len(names))
		for i, n := range names {
			out[i] = bitbucket.Step{UUID: n, Name: n}
		}
		return out
	}
	tests := []struct {
		name    string
		target  bitbucket.PipelineTarget
		steps   []bitbucket.Step
		want    [][]string
		reasons []string // substrings; "" for resolved steps
	}{
		{
			name:   "names, through an anchor and a parallel block",
			target: defaultTarget, steps: steps("Build", "Unit", "Lint"),
			want:    [][]string{{"self.hosted", "linux", "docker"}, {"self.hosted", "linux"}, nil},
			reasons: []string{"", "", ""},
		},
		{
			name:   "names in another order than the file still match",
			target: defaultTarget, steps: steps("Lint", "Build", "Unit"),
			want:    [][]string{nil, {"self.hosted", "linux", "docker"}, {"self.hosted", "linux"}},
			reasons: []string{"", "", ""},
		},
		{
			name:   "unnamed steps match by position",
			target: deploy, steps: steps("", ""),
			want:    [][]string{{"self.hosted", "deploy"}, {"self.hosted", "deploy", "prod"}},
			reasons: []string{"", ""},
		},
		{
			name:   "repeated names inside a stage match by position",
			target: tag, steps: steps("Package", "Package"),
			want:    [][]string{{"self.hosted", "linux.arm64"}, {"self.hosted", "linux"}},
			reasons: []string{"", ""},
		},
		{
			name:   "a repeated name with a different step count cannot be placed",
			target: tag, steps: steps("Package", "Package", "Package"),
			want:    [][]string{nil, nil, nil},
			reasons: []string{"no unique step", "no unique step", "no unique step"},
		},
		{
			name:   "a unique name still matches when the counts differ",
			target: defaultTarget, steps: steps("Unit", "Extra"),
			want:    [][]string{{"self.hosted", "linux"}, nil},
			reasons: []string{"", "no unique step"},
		},
		{
			name:   "a name that contradicts its position is not trusted",
			target: tag, steps: steps("Other", "Package"),
			want:    [][]string{nil, {"self.hosted", "linux"}},
			reasons: []string{"is named", ""},
		},
		{
			name:   "an unknown section leaves every step without labels",
			target: bitbucket.PipelineTarget{SelectorType: "custom", SelectorPattern: "nope"}, steps: steps("A", "B"),
			want:    [][]string{nil, nil},
			reasons: []string{"not in the file", "not in the file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resolveRunsOn(tt.target, tt.steps, specs)
			for i, r := range got {
				if !reflect.DeepEqual(r.runsOn, tt.want[i]) {
					t.Errorf("step %d (%q): runs-on %v, want %v", i, tt.steps[i].Name, r.runsOn, tt.want[i])
				}
				if want := tt.reasons[i]; (want == "") != (r.reason == "") || !strings.Contains(r.reason, want) {
					t.Errorf("step %d (%q): reason %q, want one containing %q", i, tt.steps[i].Name, r.reason, want)
				}
			}
		})
	}
}

func TestFileCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c := newFileCache(2)
	a, b, d := commitKey{commit: "a"}, commitKey{commit: "b"}, commitKey{commit: "d"}
	c.put(a, parsedFile{reason: "a"})
	c.put(b, parsedFile{reason: "b"})
	if _, ok := c.get(a); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	c.put(d, parsedFile{reason: "d"})
	if _, ok := c.get(b); ok {
		t.Error("b survived; it was the least recently used")
	}
	for _, k := range []commitKey{a, d} {
		if f, ok := c.get(k); !ok || f.reason != k.commit {
			t.Errorf("get(%s) = %+v, %v", k.commit, f, ok)
		}
	}
	if c.len() != 2 {
		t.Errorf("len = %d, want 2", c.len())
	}
}
