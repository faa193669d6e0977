package stepqueue

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// Section kinds of bitbucket-pipelines.yml, as they appear both in
// bitbucket.PipelineStepSpec.Section ("<kind>/<pattern>") and in a pipeline's
// target.selector.type.
const (
	sectionDefault      = "default"
	sectionBranches     = "branches"
	sectionTags         = "tags"
	sectionBookmarks    = "bookmarks"
	sectionCustom       = "custom"
	sectionPullRequests = "pull-requests"
)

const pullRequestTarget = "pipeline_pullrequest_target"

// resolution is what the file says about one step: its runs-on labels, or
// why they could not be found.
type resolution struct {
	runsOn []string
	reason string
}

// resolveRunsOn finds, for each step of a pipeline (in the order the steps
// API lists them), its runs-on labels in the parsed bitbucket-pipelines.yml
// of the pipeline's commit. It never guesses: a step it cannot place gets a
// reason instead of labels.
func resolveRunsOn(target bitbucket.PipelineTarget, steps []bitbucket.Step, specs []bitbucket.PipelineStepSpec) []resolution {
	out := make([]resolution, len(steps))
	section, err := selectSection(target, specs)
	if err != nil {
		for i := range out {
			out[i].reason = err.Error()
		}
		return out
	}
	var inSection []bitbucket.PipelineStepSpec
	for _, spec := range specs {
		if spec.Section == section {
			inSection = append(inSection, spec)
		}
	}
	return matchSteps(steps, inSection, section)
}

// matchSteps pairs API steps with the steps of one section. Names come first
// because they survive anything that could shift positions; a name is only
// trusted when it is unique on both sides. Otherwise the position decides,
// but only when both sides have the same number of steps (Bitbucket lists a
// pipeline's steps in file order, parallel and stage steps flattened).
func matchSteps(steps []bitbucket.Step, specs []bitbucket.PipelineStepSpec, section string) []resolution {
	specsByName := map[string][]int{}
	for i, spec := range specs {
		if spec.Name != "" {
			specsByName[spec.Name] = append(specsByName[spec.Name], i)
		}
	}
	stepNames := map[string]int{}
	for _, st := range steps {
		if st.Name != "" {
			stepNames[st.Name]++
		}
	}
	samePositions := len(steps) == len(specs)

	out := make([]resolution, len(steps))
	for i, st := range steps {
		if byName := specsByName[st.Name]; st.Name != "" && len(byName) == 1 && stepNames[st.Name] == 1 {
			out[i].runsOn = specs[byName[0]].RunsOn
			continue
		}
		if !samePositions {
			out[i].reason = fmt.Sprintf("step %q: no unique step of that name in section %s, and the section has %d steps where the pipeline has %d",
				st.Name, section, len(specs), len(steps))
			continue
		}
		if spec := specs[i]; spec.Name != "" && st.Name != "" && spec.Name != st.Name {
			out[i].reason = fmt.Sprintf("step %q: step %d of section %s is named %q", st.Name, i+1, section, spec.Name)
			continue
		}
		out[i].runsOn = specs[i].RunsOn
	}
	return out
}

// selectSection picks the section of the file the pipeline ran from. The
// pipeline's selector names it directly (type and pattern are the section's
// kind and key); the ref is matched against the file's patterns only when
// the selector is missing or names no section of this file.
func selectSection(target bitbucket.PipelineTarget, specs []bitbucket.PipelineStepSpec) (string, error) {
	patterns := map[string][]string{} // kind -> keys in file order
	hasDefault := false
	seen := map[string]bool{}
	for _, spec := range specs {
		if seen[spec.Section] {
			continue
		}
		seen[spec.Section] = true
		if spec.Section == sectionDefault {
			hasDefault = true
			continue
		}
		if kind, key, ok := strings.Cut(spec.Section, "/"); ok {
			patterns[kind] = append(patterns[kind], key)
		}
	}
	orDefault := func(kind string) (string, error) {
		if hasDefault {
			return sectionDefault, nil
		}
		return "", fmt.Errorf("no %s pattern matches %q and the file has no default pipeline", kind, target.RefName)
	}

	switch kind := target.SelectorType; kind {
	case sectionDefault:
		if hasDefault {
			return sectionDefault, nil
		}
	case sectionBranches, sectionTags, sectionBookmarks, sectionCustom, sectionPullRequests:
		if target.SelectorPattern != "" && seen[kind+"/"+target.SelectorPattern] {
			return kind + "/" + target.SelectorPattern, nil
		}
		if kind == sectionCustom {
			// A custom pipeline is chosen by name, not by the ref: no other
			// section can stand in for it.
			return "", fmt.Errorf("custom pipeline %q is not in the file at this commit", target.SelectorPattern)
		}
	}

	if target.RefName == "" {
		return "", fmt.Errorf("cannot tell which pipeline of the file ran: selector %q/%q, no ref name",
			target.SelectorType, target.SelectorPattern)
	}
	switch {
	case target.Type == pullRequestTarget:
		if key, ok := bestPattern(patterns[sectionPullRequests], target.RefName); ok {
			return sectionPullRequests + "/" + key, nil
		}
		return "", fmt.Errorf("no pull-requests pattern matches %q", target.RefName)
	case target.RefType == "tag":
		// Tag pushes run only a matching tags pipeline, never the default one.
		if key, ok := bestPattern(patterns[sectionTags], target.RefName); ok {
			return sectionTags + "/" + key, nil
		}
		return "", fmt.Errorf("no tags pattern matches %q", target.RefName)
	case target.RefType == "bookmark":
		if key, ok := bestPattern(patterns[sectionBookmarks], target.RefName); ok {
			return sectionBookmarks + "/" + key, nil
		}
		return orDefault(sectionBookmarks)
	default: // branch, named_branch
		if key, ok := bestPattern(patterns[sectionBranches], target.RefName); ok {
			return sectionBranches + "/" + key, nil
		}
		return orDefault(sectionBranches)
	}
}

// bestPattern returns the pattern Bitbucket would pick for ref: an exact name
// beats any glob, and among globs the most specific one wins
// (support.atlassian.com/bitbucket-cloud/docs/use-glob-patterns-on-the-pipelines-yaml-file/).
// Specificity is approximated by the number of literal characters; a tie
// goes to the pattern written first.
func bestPattern(patterns []string, ref string) (string, bool) {
	best, bestScore := "", -1
	for _, p := range patterns {
		if p == ref {
			return p, true
		}
		if !globMatch(p, ref) {
			continue
		}
		if score := literalChars(p); score > bestScore {
			best, bestScore = p, score
		}
	}
	return best, bestScore >= 0
}

func literalChars(pattern string) int {
	n := 0
	for _, r := range pattern {
		if !strings.ContainsRune("*?{},", r) {
			n++
		}
	}
	return n
}

// globMatch matches a ref against a pipelines glob: `*` and `?` stop at `/`,
// `**` crosses it, `{a,b}` is a choice of alternatives.
func globMatch(pattern, ref string) bool {
	expr, ok := globToRegexp(pattern)
	if !ok {
		return false
	}
	re, err := regexp.Compile("^" + expr + "$")
	if err != nil {
		return false
	}
	return re.MatchString(ref)
}

// globToRegexp translates a glob; ok is false for unbalanced braces, which
// then match nothing rather than something they were not meant to.
func globToRegexp(pattern string) (expr string, ok bool) {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '*' && i+1 < len(pattern) && pattern[i+1] == '*':
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '{':
			depth++
			b.WriteString("(?:")
		case c == '}' && depth > 0:
			depth--
			b.WriteString(")")
		case c == ',' && depth > 0:
			b.WriteString("|")
		default:
			b.WriteString(regexp.QuoteMeta(pattern[i : i+1]))
		}
	}
	return b.String(), depth == 0
}
