package stepqueue

import (
	"strings"
)

// Pool is what Assign needs to know about a runner pool.
type Pool struct {
	ID         string
	Workspace  string // UUID with braces (or slug), as the steps carry it
	Repository string // empty for a workspace pool, which serves every repository of its workspace
	// Labels is the full label set of the pool's runners, system labels
	// (self.hosted, linux or the arm64 label) included.
	Labels []string
}

// Assign gives every waiting self-hosted step to at most one pool, so that
// pools with overlapping labels never both scale up for the same step. A pool
// can take a step when it serves the step's repository and its labels
// include all of the step's runs-on labels. Among those pools the step goes
// to the most specific one (fewest labels beyond the step's), then to a
// repository pool before a workspace pool, then to the smallest ID.
//
// Steps without runs-on labels (cloud steps, or steps whose labels could not
// be read) go to no pool. Every pool ID appears in the result, with the steps
// in the order given. Assign does not weigh capacity: a step goes to the
// most specific pool even when that pool is at its maximum.
func Assign(steps []WaitingStep, pools []Pool) map[string][]WaitingStep {
	out := make(map[string][]WaitingStep, len(pools))
	candidates := make([]poolLabels, 0, len(pools))
	for _, p := range pools {
		if _, dup := out[p.ID]; dup {
			continue
		}
		out[p.ID] = nil
		candidates = append(candidates, poolLabels{Pool: p, labels: labelSet(p.Labels)})
	}
	for _, st := range steps {
		if len(st.RunsOn) == 0 {
			continue
		}
		if best := bestPool(st, candidates); best != nil {
			out[best.ID] = append(out[best.ID], st)
		}
	}
	return out
}

// wantedBy is the rule a refresh of one repository reads pipelines again by:
// a waiting step matters when one of the pools could take it, which are the
// same for every pool of the workspace that reads the repository.
func wantedBy(pools []Pool, workspace, repository string) Wanted {
	var serving []poolLabels
	for _, p := range pools {
		pl := poolLabels{Pool: p, labels: labelSet(p.Labels)}
		if pl.serves(WaitingStep{Workspace: workspace, Repository: repository}) {
			serving = append(serving, pl)
		}
	}
	return func(runsOn []string) bool {
		for i := range serving {
			if serving[i].covers(runsOn) {
				return true
			}
		}
		return false
	}
}

type poolLabels struct {
	Pool
	labels map[string]bool
}

func bestPool(st WaitingStep, pools []poolLabels) *poolLabels {
	var best *poolLabels
	for i := range pools {
		p := &pools[i]
		if !p.serves(st) || !p.covers(st.RunsOn) {
			continue
		}
		if best == nil || p.preferredOver(best) {
			best = p
		}
	}
	return best
}

func (p *poolLabels) serves(st WaitingStep) bool {
	if !sameID(p.Workspace, st.Workspace) {
		return false
	}
	return p.Repository == "" || sameID(p.Repository, st.Repository)
}

func (p *poolLabels) covers(runsOn []string) bool {
	for _, l := range runsOn {
		if !p.labels[l] {
			return false
		}
	}
	return true
}

// preferredOver orders two pools that can both take a step. Both labels sets
// contain the step's, so fewer labels means fewer beyond the step's.
func (p *poolLabels) preferredOver(other *poolLabels) bool {
	if len(p.labels) != len(other.labels) {
		return len(p.labels) < len(other.labels)
	}
	if repo, otherRepo := p.Repository != "", other.Repository != ""; repo != otherRepo {
		return repo
	}
	return p.ID < other.ID
}

func labelSet(labels []string) map[string]bool {
	set := make(map[string]bool, len(labels))
	for _, l := range labels {
		set[l] = true
	}
	return set
}

// sameID compares Bitbucket identifiers the way Bitbucket does: UUIDs with
// or without braces, and slugs, case-insensitively.
func sameID(a, b string) bool {
	return strings.EqualFold(strings.Trim(a, "{}"), strings.Trim(b, "{}"))
}
