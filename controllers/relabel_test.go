package controllers

import (
	"slices"
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

func bbWith(r bitbucket.Runner, name string, labels ...string) bitbucket.Runner {
	if name != "" {
		r.Name = name
	}
	r.Labels = labels
	return r
}

func TestLabelsChangedInBitbucket(t *testing.T) {
	const uuid = "{33333333-3333-3333-3333-333333333333}"
	online := fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour)
	ours := []fixture.RunnerMod{fixture.Registered(uuid), fixture.WithLabels("self.hosted", "linux", "build")}
	tests := []struct {
		name        string
		runner      []fixture.RunnerMod
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
		{"a Runner not registered yet is unchanged", []fixture.RunnerMod{fixture.WithLabels("self.hosted", "linux", "build")},
			[]bitbucket.Runner{bbWith(online, "", "self.hosted", "linux", "deploy")}, false, nil},
		{"a Runner that records no labels is unchanged", []fixture.RunnerMod{fixture.Registered(uuid)},
			[]bitbucket.Runner{bbWith(online, "", "self.hosted", "linux", "deploy")}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := fixture.Runner(tt.runner...)
			labels, changed := labelsChangedInBitbucket(&runner, fixture.Snapshot(t, tt.inBitbucket...))
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
	base := []fixture.RunnerMod{fixture.Registered(uuid), fixture.WithLabels("self.hosted", "linux"), fixture.PodStartedAgo(time.Hour), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)}
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
			pool := fixture.Pool()
			mods := append(append([]fixture.RunnerMod{}, base...), fixture.TemplateHash(runnerpod.TemplateHash(pool)), fixture.Mirrored(bitbucket.RunnerStatusOnline, tt.step))
			runners := []v1alpha1.Runner{fixture.Runner(mods...)}
			snap := fixture.Snapshot(t, bbWith(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, tt.step, time.Hour), "", tt.labels...))
			r := &RunnerPoolReconciler{Now: func() time.Time { return fixture.Now }}
			in := r.decisionInput(pool, runners, snap, fixture.Now, runnerpod.TemplateHash(pool))
			if v := in.Runners[0]; v.State != tt.wantState || v.Recycle != tt.wantRecycle {
				t.Fatalf("got %s recycle=%t, want %s recycle=%t", v.State.String(), v.Recycle, tt.wantState.String(), tt.wantRecycle)
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
