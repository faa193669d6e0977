package scaling_test

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

// planRunner is one runner of a situation: its Runner and, unless absent, what Bitbucket lists.
type planRunner struct {
	runner v1alpha1.Runner
	listed *bitbucket.Runner
}

// online is a runner of the pool's current template that connected an hour ago, idle since
// idleFor, or busy with step.
func online(pool *v1alpha1.RunnerPool, name, step string, idleFor time.Duration, mods ...fixture.RunnerMod) planRunner {
	uuid := fmt.Sprintf("{%08x-0000-4000-8000-000000000000}", len(name)*7919+int(name[len(name)-1]))
	base := []fixture.RunnerMod{
		fixture.Named(name), fixture.Registered(uuid), fixture.WithLabels(runnerpod.Labels(pool)...),
		fixture.PodStartedAgo(time.Hour), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour),
		fixture.LastStepAgo(idleFor), fixture.TemplateHash(runnerpod.TemplateHash(pool)),
		fixture.Mirrored(bitbucket.RunnerStatusOnline, step),
	}
	listed := fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, step, idleFor)
	listed.Labels = runnerpod.Labels(pool)
	return planRunner{runner: fixture.Runner(append(base, mods...)...), listed: &listed}
}

// waitingForNode is a Runner whose pod has waited for a node for age.
func waitingForNode(name string, age time.Duration) planRunner {
	return planRunner{runner: fixture.Runner(fixture.Named(name), fixture.CreatedAgo(age), fixture.PodNotReady())}
}

type planWant struct {
	action scaling.Action
	reason string
}

// The whole decision for one pool, situation by situation: what each runner becomes and why,
// how many runners are created, and what the status shows.
func TestPlanPool(t *testing.T) {
	pool := fixture.Pool() // IdleBuffer, 1 idle, min 1, max 10, scale-down delay 5m
	relabelled := online(pool, "relabelled", "", time.Hour)
	relabelled.listed.Labels = []string{"self.hosted", "linux", "someone-else"}
	offline := online(pool, "lost", "", time.Hour)
	offline.listed.State.Status = bitbucket.RunnerStatusOffline
	offline.listed.State.UpdatedOn = fixture.Ago(scaling.DefaultOfflineGrace + time.Second)
	ephemeral := fixture.Pool(func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Ephemeral = true })
	retiredBusy := online(pool, "retired-busy", "{step-1}", time.Minute, fixture.DisabledAgo(time.Second),
		fixture.WithCondition(v1alpha1.ConditionRetiring, metav1.ConditionTrue, "NodeDraining", time.Second))
	retiredBusy.listed.State.Status = bitbucket.RunnerStatusDisabled
	retiredDone := online(pool, "retired-done", "", time.Second, fixture.DisabledAgo(time.Minute),
		fixture.WithCondition(v1alpha1.ConditionRetiring, metav1.ConditionTrue, "NodeDraining", time.Minute))
	retiredDone.listed.State.Status = bitbucket.RunnerStatusDisabled
	ephemeralBusy := online(ephemeral, "first-step", "{step-1}", time.Second)
	needed := online(pool, "needed", "", time.Hour, fixture.Draining(), fixture.DisabledAgo(time.Second))
	needed.listed.State.Status = bitbucket.RunnerStatusDisabled

	tests := []struct {
		name    string
		pool    *v1alpha1.RunnerPool
		runners []planRunner
		unseen  []string
		queued  int

		want        map[string]planWant
		wantCreate  int
		wantSummary scaling.Summary
	}{
		{
			name:        "a busy runner without an idle one gets an idle one created",
			runners:     []planRunner{online(pool, "busy", "{step-1}", time.Minute)},
			want:        map[string]planWant{"busy": {scaling.Keep, ""}},
			wantCreate:  1,
			wantSummary: scaling.Summary{Counts: scaling.Counts{Busy: 1}, Replicas: 1, Ready: 1},
		},
		{
			name:    "a runner created moments ago and not in the cache yet is capacity",
			runners: []planRunner{online(pool, "busy", "{step-1}", time.Minute)},
			unseen:  []string{"created"},
			want:    map[string]planWant{"busy": {scaling.Keep, ""}, "created": {scaling.Keep, ""}},
			// It exists: the status counts it among the replicas as well as starting.
			wantSummary: scaling.Summary{Counts: scaling.Counts{Busy: 1, Starting: 1}, Replicas: 2, Ready: 1, Starting: 1},
		},
		{
			name:        "a surplus idle runner past the scale-down delay is drained, the one idle longest",
			runners:     []planRunner{online(pool, "idle-a", "", 30*time.Minute), online(pool, "idle-b", "", 50*time.Minute)},
			want:        map[string]planWant{"idle-a": {scaling.Keep, ""}, "idle-b": {scaling.Drain, scaling.ReasonScaleDown}},
			wantSummary: scaling.Summary{Counts: scaling.Counts{Idle: 2}, Replicas: 2, Ready: 2},
		},
		{
			name:        "a surplus idle runner within the scale-down delay stays, whatever its name",
			runners:     []planRunner{online(pool, "idle-a", "", time.Hour), online(pool, "idle-b", "", time.Minute)},
			want:        map[string]planWant{"idle-a": {scaling.Drain, scaling.ReasonScaleDown}, "idle-b": {scaling.Keep, ""}},
			wantSummary: scaling.Summary{Counts: scaling.Counts{Idle: 2}, Replicas: 2, Ready: 2},
		},
		{
			name:        "an idle runner of an older pod template is recycled",
			runners:     []planRunner{online(pool, "old", "", time.Hour, fixture.TemplateHash("0000000000"))},
			want:        map[string]planWant{"old": {scaling.Drain, scaling.ReasonRecycle}},
			wantSummary: scaling.Summary{Counts: scaling.Counts{Idle: 1}, Replicas: 1, Ready: 1},
		},
		{
			name:        "an idle runner relabelled in Bitbucket is recycled and named so",
			runners:     []planRunner{relabelled},
			want:        map[string]planWant{"relabelled": {scaling.Drain, scaling.ReasonLabelsChanged}},
			wantSummary: scaling.Summary{Counts: scaling.Counts{Idle: 1}, Replicas: 1, Ready: 1},
		},
		{
			name:        "an ephemeral runner that ran its step goes at once",
			pool:        ephemeral,
			runners:     []planRunner{online(ephemeral, "spent", "", time.Second, fixture.StepsStarted(1))},
			want:        map[string]planWant{"spent": {scaling.Drain, scaling.ReasonEphemeralStepDone}},
			wantCreate:  1,
			wantSummary: scaling.Summary{Counts: scaling.Counts{Draining: 1}, Replicas: 1},
		},
		{
			name:        "an ephemeral runner the list shows busy before its status does is spent: its replacement is created now",
			pool:        ephemeral,
			runners:     []planRunner{ephemeralBusy},
			want:        map[string]planWant{"first-step": {scaling.Keep, ""}},
			wantCreate:  1,
			wantSummary: scaling.Summary{Counts: scaling.Counts{Busy: 1}, Replicas: 1, Ready: 1},
		},
		{
			name:        "a busy runner retired for a node drain finishes its step, and an idle runner is created for the pool",
			runners:     []planRunner{retiredBusy},
			want:        map[string]planWant{"retired-busy": {scaling.Keep, ""}},
			wantCreate:  1,
			wantSummary: scaling.Summary{Counts: scaling.Counts{Busy: 1}, Replicas: 1, Ready: 1},
		},
		{
			name:        "a runner retired for a node drain, disabled and done with its step, goes at once",
			runners:     []planRunner{retiredDone},
			want:        map[string]planWant{"retired-done": {scaling.Drain, scaling.ReasonNodeDrain}},
			wantCreate:  1,
			wantSummary: scaling.Summary{Counts: scaling.Counts{Draining: 1}, Replicas: 1},
		},
		{
			name:        "a runner OFFLINE past the offline grace is replaced, and a runner created for it",
			runners:     []planRunner{offline},
			want:        map[string]planWant{"lost": {scaling.Replace, scaling.ReasonFailedToStart}},
			wantCreate:  1,
			wantSummary: scaling.Summary{Counts: scaling.Counts{Stuck: 1}, Replicas: 1, Starting: 1},
		},
		{
			name:        "a draining runner is kept when steps wait for it",
			runners:     []planRunner{online(pool, "busy", "{step-1}", time.Minute), needed},
			queued:      1,
			want:        map[string]planWant{"busy": {scaling.Keep, ""}, "needed": {scaling.Undrain, scaling.ReasonNeededAgain}},
			wantCreate:  1,
			wantSummary: scaling.Summary{Counts: scaling.Counts{Busy: 1, Draining: 1}, Replicas: 2, Ready: 1},
		},
		{
			name:        "a pod waiting for a node past the pending timeout is reported and still counted",
			runners:     []planRunner{waitingForNode("pending", fixture.PendingTimeout+time.Minute)},
			want:        map[string]planWant{"pending": {scaling.Keep, ""}},
			wantSummary: scaling.Summary{Counts: scaling.Counts{Starting: 1, PendingTooLong: 1}, Replicas: 1, Starting: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.pool
			if p == nil {
				p = pool
			}
			var runners []v1alpha1.Runner
			var listed []bitbucket.Runner
			for _, r := range tt.runners {
				runners = append(runners, r.runner)
				if r.listed != nil {
					listed = append(listed, *r.listed)
				}
			}
			plan := scaling.PlanPool(scaling.Observation{
				Pool: p, Runners: runners, Snapshot: fixture.Snapshot(t, listed...), Unseen: tt.unseen,
				Queued: tt.queued, TemplateHash: runnerpod.TemplateHash(p), Now: fixture.Now,
			})
			if len(plan.Runners) != len(tt.want) {
				t.Errorf("planned %d runners, want %d", len(plan.Runners), len(tt.want))
			}
			for name, want := range tt.want {
				got := plan.Runners[name]
				if got.Action != want.action || got.Reason != want.reason {
					t.Errorf("%s: %s (%q), want %s (%q)", name, got.Action, got.Reason, want.action, want.reason)
				}
			}
			if plan.Create != tt.wantCreate {
				t.Errorf("create %d, want %d", plan.Create, tt.wantCreate)
			}
			if plan.Summary != tt.wantSummary {
				t.Errorf("summary %+v, want %+v", plan.Summary, tt.wantSummary)
			}
		})
	}
}

// The warning about a relabelled runner needs what Bitbucket shows.
func TestPlanPoolTellsTheLabelsBitbucketShows(t *testing.T) {
	pool := fixture.Pool()
	r := online(pool, "relabelled", "", time.Hour)
	r.listed.Labels = []string{"self.hosted", "linux", "someone-else"}
	plan := scaling.PlanPool(scaling.Observation{
		Pool: pool, Runners: []v1alpha1.Runner{r.runner}, Snapshot: fixture.Snapshot(t, *r.listed),
		TemplateHash: runnerpod.TemplateHash(pool), Now: fixture.Now,
	})
	got := plan.Runners["relabelled"].BitbucketLabels
	if want := []string{"linux", "self.hosted", "someone-else"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("labels %v, want %v", got, want)
	}
}

// Without a runner list the status still counts what the Runners say.
func TestSummarizeCountsWithoutBitbucket(t *testing.T) {
	pool := fixture.Pool()
	runners := []v1alpha1.Runner{
		online(pool, "busy", "{step-1}", time.Minute).runner,
		online(pool, "idle", "", time.Hour).runner,
		waitingForNode("new", time.Second).runner,
	}
	got := scaling.Summarize(pool, runners, fixture.Now, 0)
	want := scaling.Summary{Counts: scaling.Counts{Busy: 1, Idle: 1, Starting: 1}, Replicas: 3, Ready: 2, Starting: 1}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
}

func TestSummaryCreatedCountsNewRunnersAsStarting(t *testing.T) {
	s := scaling.Summary{Counts: scaling.Counts{Busy: 1, Idle: 1, Starting: 1}, Replicas: 3, Ready: 2, Starting: 1}
	got := s.Created(10)
	want := scaling.Summary{Counts: scaling.Counts{Busy: 1, Idle: 1, Starting: 11}, Replicas: 13, Ready: 2, Starting: 11}
	if got != want {
		t.Errorf("Created(10) = %+v, want %+v", got, want)
	}
	if s.Created(0) != s {
		t.Errorf("Created(0) changed the summary")
	}
}
