package controllers

import (
	"slices"
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

func withLabels(labels ...string) runnerMod {
	return func(r *v1alpha1.Runner) {
		r.Spec.Labels = nil
		for _, l := range labels {
			r.Spec.Labels = append(r.Spec.Labels, v1alpha1.RunnerLabel(l))
		}
	}
}

func bbWith(r bitbucket.Runner, name string, labels ...string) bitbucket.Runner {
	if name != "" {
		r.Name = name
	}
	r.Labels = labels
	return r
}

func TestLabelsChangedInBitbucket(t *testing.T) {
	const uuid = "{33333333-3333-3333-3333-333333333333}"
	online := bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour)
	ours := []runnerMod{registered(uuid), withLabels("self.hosted", "linux", "build")}
	tests := []struct {
		name        string
		runner      []runnerMod
		inBitbucket []bitbucket.Runner
		wantChanged bool
		wantLabels  []string
	}{
		{"the same labels in another order are unchanged", ours,
			[]bitbucket.Runner{bbWith(online, "", "build", "linux", "self.hosted")}, false, nil},
		{"a rename alone changes nothing", ours,
			[]bitbucket.Runner{bbWith(online, "someone-renamed-me", "self.hosted", "linux", "build")}, false, nil},
		{"a label replaced is a change", ours,
			[]bitbucket.Runner{bbWith(online, "", "self.hosted", "linux", "deploy")}, true, []string{"deploy", "linux", "self.hosted"}},
		{"a label added is a change: steps of other pools may select it", ours,
			[]bitbucket.Runner{bbWith(online, "", "self.hosted", "linux", "build", "gpu")}, true, []string{"build", "gpu", "linux", "self.hosted"}},
		{"a label removed is a change", ours,
			[]bitbucket.Runner{bbWith(online, "", "self.hosted", "linux")}, true, []string{"linux", "self.hosted"}},
		{"a runner listed without labels is taken as unchanged", ours,
			[]bitbucket.Runner{bbWith(online, "")}, false, nil},
		{"a runner not in the observation is unchanged", ours, nil, false, nil},
		{"a Runner not registered yet is unchanged", []runnerMod{withLabels("self.hosted", "linux", "build")},
			[]bitbucket.Runner{bbWith(online, "", "self.hosted", "linux", "deploy")}, false, nil},
		{"a Runner that records no labels is unchanged", []runnerMod{registered(uuid)},
			[]bitbucket.Runner{bbWith(online, "", "self.hosted", "linux", "deploy")}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := testRunner(tt.runner...)
			labels, changed := labelsChangedInBitbucket(&runner, snapshotOf(t, tt.inBitbucket...))
			if changed != tt.wantChanged || !slices.Equal(labels, tt.wantLabels) {
				t.Errorf("got %v %t, want %v %t", labels, changed, tt.wantLabels, tt.wantChanged)
			}
		})
	}
}

// A relabelled runner is recycled by the decision: busy ones keep their state (the decision only
// drains idle runners for recycling), and the drain is reported as labels_changed.
func TestRelabelledRunnerIsRecycledAndNamedSo(t *testing.T) {
	const uuid = "{44444444-4444-4444-4444-444444444444}"
	base := []runnerMod{registered(uuid), withLabels("self.hosted", "linux"), podStartedAgo(time.Hour), onlineSince(time.Hour), podRunning(time.Hour)}
	tests := []struct {
		name        string
		step        string
		labels      []string
		wantState   scaling.State
		wantRecycle bool
		wantReason  string
	}{
		{"idle and relabelled", "", []string{"self.hosted", "linux", "other"}, scaling.Idle, true, drainReasonLabelsChanged},
		{"busy and relabelled", "{step-1}", []string{"self.hosted", "linux", "other"}, scaling.Busy, true, drainReasonLabelsChanged},
		{"idle with its own labels", "", []string{"linux", "self.hosted"}, scaling.Idle, false, "recycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := testPool()
			mods := append(append([]runnerMod{}, base...), templateHash(runnerpod.TemplateHash(pool)), mirrored(bitbucket.RunnerStatusOnline, tt.step))
			runners := []v1alpha1.Runner{testRunner(mods...)}
			snap := snapshotOf(t, bbWith(bbRunner(uuid, bitbucket.RunnerStatusOnline, tt.step, time.Hour), "", tt.labels...))
			r := &RunnerPoolReconciler{Now: func() time.Time { return now }}
			in := r.decisionInput(pool, runners, snap)
			if v := in.Runners[0]; v.State != tt.wantState || v.Recycle != tt.wantRecycle {
				t.Fatalf("got %s recycle=%t, want %s recycle=%t", stateName(v.State), v.Recycle, stateName(tt.wantState), tt.wantRecycle)
			}
			if got := r.relabelDrainReason(pool, &runners[0], snap, "recycle"); got != tt.wantReason {
				t.Errorf("drain reason %q, want %q", got, tt.wantReason)
			}
			if got := r.relabelDrainReason(pool, &runners[0], snap, "scale_down"); got != "scale_down" {
				t.Errorf("a scale-down of a relabelled runner is reported as %q", got)
			}
		})
	}
}
