package bitbucket

import (
	"errors"
	"fmt"
	"strings"

	// The node API of the YAML library that sigs.k8s.io/yaml wraps: "in file
	// order" needs mapping keys in document order (branches, custom names),
	// and sigs.k8s.io/yaml goes through JSON maps, which sorts them.
	yaml "go.yaml.in/yaml/v3"
)

// PipelineStepSpec is one step as written in bitbucket-pipelines.yml.
type PipelineStepSpec struct {
	// Section is where the step is: "default", or "<kind>/<pattern>" such as
	// "branches/main", "tags/v*", "custom/deploy", "pull-requests/**".
	Section string
	Name    string
	// RunsOn is the step's runs-on labels; nil for a step that runs on
	// Bitbucket's own cloud runners.
	RunsOn []string
}

// Limits on a hostile or broken file: anchors can make a small document
// expand enormously when walked ("billion laughs").
const (
	maxYAMLVisits = 200_000
	maxYAMLDepth  = 64
)

// pipelineSections are the pipelines.* keys holding steps; `default` is a
// list, the others map a pattern or name to a list.
var pipelineSections = map[string]bool{
	"branches": true, "tags": true, "bookmarks": true, "custom": true, "pull-requests": true,
}

// ParsePipelineRunsOn returns, for every step of bitbucket-pipelines.yml in
// file order, its runs-on labels (nil when it has none). runs-on may be a
// string or a list; steps are found under pipelines.default, branches, tags,
// bookmarks, custom and pull-requests, inside `parallel` (list form and
// `parallel: {steps: [...]}`) and `stage: {steps: [...]}`. Anchors, aliases
// and `<<` merge keys are resolved. Steps under `definitions` are templates
// and only count where a pipeline uses them.
func ParsePipelineRunsOn(yml []byte) ([][]string, error) {
	steps, err := ParsePipelineSteps(yml)
	if err != nil {
		return nil, err
	}
	out := make([][]string, len(steps))
	for i, s := range steps {
		out[i] = s.RunsOn
	}
	return out, nil
}

// ParsePipelineSteps is ParsePipelineRunsOn with each step's section and name.
func ParsePipelineSteps(yml []byte) (steps []PipelineStepSpec, err error) {
	// The parser is third-party code fed with user-controlled files; a panic
	// in it must cost one queue reading, not the manager.
	defer func() {
		if r := recover(); r != nil {
			steps, err = nil, fmt.Errorf("parse bitbucket-pipelines.yml: parser failure: %v", r)
		}
	}()
	var doc yaml.Node
	if err := yaml.Unmarshal(yml, &doc); err != nil {
		return nil, fmt.Errorf("parse bitbucket-pipelines.yml: %w", err)
	}
	w := &ymlWalker{}
	root := w.resolve(&doc)
	if root == nil || root.Kind != yaml.MappingNode {
		return nil, errors.New("parse bitbucket-pipelines.yml: top level is not a mapping")
	}
	pipelines := w.lookup(root, "pipelines", 0)
	if pipelines == nil || pipelines.Kind != yaml.MappingNode {
		return nil, errors.New("parse bitbucket-pipelines.yml: no pipelines section")
	}
	for _, section := range w.pairs(pipelines, 0) {
		switch {
		case section.key == "default":
			w.items(section.value, "default", 1)
		case pipelineSections[section.key]:
			for _, named := range w.pairs(section.value, 1) {
				w.items(named.value, section.key+"/"+named.key, 2)
			}
		}
	}
	if w.err != nil {
		return nil, fmt.Errorf("parse bitbucket-pipelines.yml: %w", w.err)
	}
	return w.steps, nil
}

type ymlWalker struct {
	visits int
	steps  []PipelineStepSpec
	err    error
}

type ymlPair struct {
	key   string
	value *yaml.Node
}

// resolve follows aliases and unwraps documents, counting each visit.
func (w *ymlWalker) resolve(n *yaml.Node) *yaml.Node {
	for hops := 0; n != nil; hops++ {
		w.visits++
		if w.visits > maxYAMLVisits || hops > maxYAMLDepth {
			if w.err == nil {
				w.err = errors.New("document too large or too deeply aliased")
			}
			return nil
		}
		switch {
		case n.Kind == yaml.AliasNode:
			n = n.Alias
		case n.Kind == yaml.DocumentNode && len(n.Content) > 0:
			n = n.Content[0]
		case n.Kind == yaml.DocumentNode:
			return nil
		default:
			return n
		}
	}
	return nil
}

// pairs lists a mapping's entries in file order, followed by entries merged
// in with `<<` that the mapping does not override.
func (w *ymlWalker) pairs(n *yaml.Node, depth int) []ymlPair {
	n = w.resolve(n)
	if n == nil || n.Kind != yaml.MappingNode || depth > maxYAMLDepth {
		return nil
	}
	var out []ymlPair
	var merges []*yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := w.resolve(n.Content[i])
		if key == nil || key.Kind != yaml.ScalarNode {
			continue
		}
		if key.Tag == "!!merge" || key.Value == "<<" {
			merges = append(merges, n.Content[i+1])
			continue
		}
		if !seen[key.Value] {
			seen[key.Value] = true
			out = append(out, ymlPair{key: key.Value, value: n.Content[i+1]})
		}
	}
	for _, m := range merges {
		sources := []*yaml.Node{m}
		if r := w.resolve(m); r != nil && r.Kind == yaml.SequenceNode {
			sources = r.Content
		}
		for _, src := range sources {
			for _, p := range w.pairs(src, depth+1) {
				if !seen[p.key] {
					seen[p.key] = true
					out = append(out, p)
				}
			}
		}
	}
	return out
}

func (w *ymlWalker) lookup(n *yaml.Node, key string, depth int) *yaml.Node {
	for _, p := range w.pairs(n, depth) {
		if p.key == key {
			return w.resolve(p.value)
		}
	}
	return nil
}

// items walks a list of pipeline items: step, parallel, stage (variables and
// anything else are skipped).
func (w *ymlWalker) items(n *yaml.Node, section string, depth int) {
	n = w.resolve(n)
	if n == nil || n.Kind != yaml.SequenceNode || depth > maxYAMLDepth || w.err != nil {
		return
	}
	for _, item := range n.Content {
		for _, p := range w.pairs(item, depth+1) {
			switch p.key {
			case "step":
				w.step(p.value, section, depth+1)
			case "parallel":
				group := w.resolve(p.value)
				if group != nil && group.Kind == yaml.MappingNode {
					group = w.lookup(group, "steps", depth+1)
				}
				w.items(group, section, depth+1)
			case "stage":
				w.items(w.lookup(p.value, "steps", depth+1), section, depth+1)
			}
		}
	}
}

func (w *ymlWalker) step(n *yaml.Node, section string, depth int) {
	spec := PipelineStepSpec{Section: section}
	if name := w.lookup(n, "name", depth); name != nil && name.Kind == yaml.ScalarNode {
		spec.Name = name.Value
	}
	if runsOn := w.lookup(n, "runs-on", depth); runsOn != nil {
		switch runsOn.Kind {
		case yaml.ScalarNode:
			if label := strings.TrimSpace(runsOn.Value); label != "" && runsOn.Tag != "!!null" {
				spec.RunsOn = []string{label}
			}
		case yaml.SequenceNode:
			for _, item := range runsOn.Content {
				item = w.resolve(item)
				if item != nil && item.Kind == yaml.ScalarNode && item.Tag != "!!null" {
					if label := strings.TrimSpace(item.Value); label != "" {
						spec.RunsOn = append(spec.RunsOn, label)
					}
				}
			}
		}
	}
	w.steps = append(w.steps, spec)
}
