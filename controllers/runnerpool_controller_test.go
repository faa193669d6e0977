package controllers

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/credentials"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

func TestRunnerViewState(t *testing.T) {
	const uuid = "{11111111-1111-1111-1111-111111111111}"
	tests := []struct {
		name string
		// runner is the Runner as the pool lists it.
		runner []fixture.RunnerMod
		// inBitbucket is what the latest observation shows; nil leaves the runner out of it.
		inBitbucket *bitbucket.Runner
		// unobserved passes no snapshot at all, as counting without Bitbucket does.
		unobserved bool

		wantState          scaling.State
		wantBusy           bool
		wantPendingTooLong bool
	}{
		{
			name:      "a Runner still registering is starting",
			runner:    []fixture.RunnerMod{fixture.CreatedAgo(10 * time.Second)},
			wantState: scaling.Starting,
		},
		{
			name:               "a Runner still registering past the pending timeout is starting and reported",
			runner:             []fixture.RunnerMod{fixture.CreatedAgo(fixture.PendingTimeout + time.Second)},
			wantState:          scaling.Starting,
			wantPendingTooLong: true,
		},
		{
			name:        "a runner the pool drains is draining, and not busy without a step",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Draining(), fixture.Mirrored(bitbucket.RunnerStatusDisabled, "")},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusDisabled, "", time.Minute)),
			wantState:   scaling.Draining,
		},
		{
			name:        "a draining runner that still runs a step is draining and busy",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Draining(), fixture.Mirrored(bitbucket.RunnerStatusOnline, "")},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusDisabled, "{step-1}", time.Minute)),
			wantState:   scaling.Draining,
			wantBusy:    true,
		},
		{
			name:        "a draining runner is not busy once Bitbucket shows its step ended, whatever its status says",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Draining(), fixture.Mirrored(bitbucket.RunnerStatusDisabled, "{step-1}")},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusDisabled, "", time.Second)),
			wantState:   scaling.Draining,
		},
		{
			name:        "a Runner being deleted is draining",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Deleting(), fixture.Mirrored(bitbucket.RunnerStatusOnline, "")},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Minute)),
			wantState:   scaling.Draining,
		},
		{
			name: "a runner whose drain was cancelled is capacity again while Bitbucket still shows it DISABLED",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.DisabledAgo(time.Minute), fixture.Mirrored(bitbucket.RunnerStatusDisabled, ""),
				fixture.PodStartedAgo(time.Hour), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusDisabled, "", time.Minute)),
			wantState:   scaling.Starting,
		},
		{
			name:        "a runner Bitbucket shows on a step is busy before its status catches up",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, ""), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "{step-1}", time.Second)),
			wantState:   scaling.Busy,
			wantBusy:    true,
		},
		{
			name:        "a runner Bitbucket shows idle is idle though its status still names its last step",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, "{step-1}"), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)),
			wantState:   scaling.Idle,
		},
		{
			name:        "a runner on a step is busy even when Bitbucket shows it OFFLINE, so it is never replaced mid-step",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, "{step-1}"), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "{step-1}", time.Hour)),
			wantState:   scaling.Busy,
			wantBusy:    true,
		},
		{
			name:        "an ONLINE runner without a step is idle",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, ""), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour)),
			wantState:   scaling.Idle,
		},
		{
			name:      "a runner missing from the observation keeps the step its status mirrors",
			runner:    []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, "{step-1}"), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			wantState: scaling.Busy,
			wantBusy:  true,
		},
		{
			name:       "without any observation an ONLINE status counts as idle",
			runner:     []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, ""), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			unobserved: true,
			wantState:  scaling.Idle,
		},
		{
			name:       "without any observation an OFFLINE runner is not replaced, as nothing says for how long it is gone",
			runner:     []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Hour), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			unobserved: true,
			wantState:  scaling.Starting,
		},
		{
			name:      "a failing pod younger than the pending timeout is not replaced yet",
			runner:    []fixture.RunnerMod{fixture.Registered(uuid), fixture.InPhase(v1alpha1.RunnerPhaseFailed), fixture.PodStartedAgo(time.Minute)},
			wantState: scaling.Starting,
		},
		{
			name:      "a failing pod is replaced once older than the pending timeout",
			runner:    []fixture.RunnerMod{fixture.Registered(uuid), fixture.InPhase(v1alpha1.RunnerPhaseFailed), fixture.PodStartedAgo(fixture.PendingTimeout + time.Second)},
			wantState: scaling.Stuck,
		},
		{
			name:      "a Runner whose registration is refused is replaced once older than the pending timeout",
			runner:    []fixture.RunnerMod{fixture.CreatedAgo(fixture.PendingTimeout + time.Second), fixture.InPhase(v1alpha1.RunnerPhaseFailed)},
			wantState: scaling.Stuck,
		},
		{
			name: "a runner that was connected and went OFFLINE is replaced after the offline grace",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Hour),
				fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", fixture.OfflineGrace+time.Second)),
			wantState:   scaling.Stuck,
		},
		{
			name: "a runner that was connected and is UNHEALTHY is replaced after the offline grace",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnhealthy, ""), fixture.PodStartedAgo(time.Hour),
				fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusUnhealthy, "", fixture.OfflineGrace+time.Second)),
			wantState:   scaling.Stuck,
		},
		{
			name: "a runner OFFLINE for less than the offline grace is not replaced, however old its pod",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Hour),
				fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", fixture.OfflineGrace-time.Second)),
			wantState:   scaling.Starting,
		},
		{
			name: "an agent restarting within the offline grace is not reported as waiting for a node",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Hour),
				fixture.OnlineSince(time.Hour), fixture.PodNotReady()},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", 10*time.Second)),
			wantState:   scaling.Starting,
		},
		{
			name: "an OFFLINE runner that never connected with its pod is judged by the pending timeout, not the offline grace",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Minute),
				fixture.PodNotReady()},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", time.Hour)),
			wantState:   scaling.Starting,
		},
		{
			name: "a pod that runs but whose agent never connected is replaced after the pending timeout",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(fixture.PendingTimeout + time.Second), fixture.PodRunning(fixture.PendingTimeout)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Hour)),
			wantState:   scaling.Stuck,
		},
		{
			name: "a pod that runs and whose agent has not connected yet is starting within the pending timeout",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(time.Minute), fixture.PodRunning(10 * time.Second)},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Minute)),
			wantState:   scaling.Starting,
		},
		{
			name: "a pod Pending past the pending timeout stays starting and is reported",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(fixture.PendingTimeout + time.Second), fixture.PodNotReady()},
			inBitbucket:        ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Hour)),
			wantState:          scaling.Starting,
			wantPendingTooLong: true,
		},
		{
			name: "a pod Pending exactly the pending timeout is not reported yet",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(fixture.PendingTimeout), fixture.PodNotReady()},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Hour)),
			wantState:   scaling.Starting,
		},
		{
			name: "the pending timeout counts from the current pod's start, not from the Runner's creation",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(time.Hour), fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(time.Minute), fixture.PodNotReady()},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Minute)),
			wantState:   scaling.Starting,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := fixture.Runner(tt.runner...)
			var snap *runnerlist.Snapshot
			switch {
			case tt.unobserved:
			case tt.inBitbucket != nil:
				snap = fixture.Snapshot(t, *tt.inBitbucket)
			default:
				snap = fixture.Snapshot(t)
			}
			v := runnerView(fixture.Pool(), &runner, snap, fixture.Now, fixture.OfflineGrace)
			if v.State != tt.wantState || v.Busy != tt.wantBusy || v.PendingTooLong != tt.wantPendingTooLong {
				t.Errorf("got %s busy=%t pendingTooLong=%t, want %s busy=%t pendingTooLong=%t",
					v.State.String(), v.Busy, v.PendingTooLong, tt.wantState.String(), tt.wantBusy, tt.wantPendingTooLong)
			}
			// A Runner being deleted drains whatever its spec says, and for good.
			deleting := !runner.DeletionTimestamp.IsZero()
			if v.Name != runner.Name || v.Drain != (runner.Spec.Drain || deleting) || v.Deleting != deleting {
				t.Errorf("got name %q drain=%t deleting=%t, want the Runner's %q drain=%t deleting=%t",
					v.Name, v.Drain, v.Deleting, runner.Name, runner.Spec.Drain || deleting, deleting)
			}
		})
	}
}

func TestRunnerViewIdleSince(t *testing.T) {
	created := 3 * time.Hour
	const uuid = "{11111111-1111-1111-1111-111111111111}"
	tests := []struct {
		name   string
		runner []fixture.RunnerMod
		// inBitbucket is what the latest observation (made now) shows; nil passes none.
		inBitbucket *bitbucket.Runner
		want        time.Time
	}{
		{
			name:   "a runner that never came online counts as idle since its creation",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created)},
			want:   fixture.Ago(created),
		},
		{
			name:   "a runner without steps is idle since it came online",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created), fixture.OnlineSince(time.Hour)},
			want:   fixture.Ago(time.Hour),
		},
		{
			name:   "a runner that ran a step is idle since it was last seen on it",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created), fixture.OnlineSince(time.Hour), fixture.LastStepAgo(10 * time.Minute)},
			want:   fixture.Ago(10 * time.Minute),
		},
		{
			name:   "a step of an earlier pod does not date the idleness of the current one",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created), fixture.OnlineSince(time.Hour), fixture.LastStepAgo(2 * time.Hour)},
			want:   fixture.Ago(time.Hour),
		},
		{
			name: "a runner whose drain was cancelled is idle since then",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created), fixture.OnlineSince(time.Hour), fixture.LastStepAgo(10 * time.Minute),
				fixture.DrainCancelledAgo(time.Minute)},
			want: fixture.Ago(time.Minute),
		},
		{
			name: "a drain cancelled before the last step does not date the idleness",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created), fixture.OnlineSince(time.Hour), fixture.LastStepAgo(10 * time.Minute),
				fixture.DrainCancelledAgo(20 * time.Minute)},
			want: fixture.Ago(10 * time.Minute),
		},
		{
			name: "a step that ended after the status last saw it dates the idleness from the observation",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created), fixture.OnlineSince(time.Hour), fixture.LastStepAgo(30 * time.Minute),
				fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, "{step-1}")},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)),
			want:        fixture.Now,
		},
		{
			name: "a step the status saw end keeps its time",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created), fixture.OnlineSince(time.Hour), fixture.LastStepAgo(30 * time.Minute),
				fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, "")},
			inBitbucket: ptr(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)),
			want:        fixture.Ago(30 * time.Minute),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := fixture.Runner(tt.runner...)
			var snap *runnerlist.Snapshot
			if tt.inBitbucket != nil {
				snap = fixture.Snapshot(t, *tt.inBitbucket)
			}
			v := runnerView(fixture.Pool(), &runner, snap, fixture.Now, fixture.OfflineGrace)
			if !v.IdleSince.Equal(tt.want) {
				t.Errorf("IdleSince = %s, want %s", v.IdleSince, tt.want)
			}
		})
	}
}

func TestRecycleReason(t *testing.T) {
	const current = "hash-now"
	tests := []struct {
		name   string
		pool   func(*v1alpha1.RunnerPool)
		runner []fixture.RunnerMod
		want   string
	}{
		{
			name:   "a young runner of the current template is kept",
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(time.Hour), fixture.StepsStarted(3), fixture.TemplateHash(current)},
			want:   "",
		},
		{
			name:   "a pod that reached maxAge is recycled",
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(24 * time.Hour), fixture.TemplateHash(current)},
			want:   "maxAge",
		},
		{
			name:   "maxAge 0 never recycles",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxAge.Duration = 0 },
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(1000 * time.Hour), fixture.TemplateHash(current)},
			want:   "",
		},
		{
			name:   "a runner without a pod has no age",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(1000 * time.Hour)},
			want:   "",
		},
		{
			name:   "a pod that ran maxSteps steps is recycled",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxSteps = 3 },
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(time.Hour), fixture.StepsStarted(3), fixture.TemplateHash(current)},
			want:   "maxSteps",
		},
		{
			name:   "a pod below maxSteps is kept",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxSteps = 3 },
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(time.Hour), fixture.StepsStarted(2), fixture.TemplateHash(current)},
			want:   "",
		},
		{
			name:   "maxSteps 0 never recycles",
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(time.Hour), fixture.StepsStarted(10000), fixture.TemplateHash(current)},
			want:   "",
		},
		{
			name:   "a pod shaped by an earlier pool spec is recycled",
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(time.Hour), fixture.TemplateHash("hash-before")},
			want:   "template changed",
		},
		{
			name:   "a runner registered with the pool's labels, in any order, is kept",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Labels = []v1alpha1.RunnerLabel{"build", "arm"} },
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(time.Hour), fixture.TemplateHash(current), fixture.WithLabels("linux", "build", "self.hosted", "arm")},
			want:   "",
		},
		{
			name:   "a runner registered before the pool's labels were edited is recycled",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Labels = []v1alpha1.RunnerLabel{"build", "gpu"} },
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(time.Hour), fixture.TemplateHash(current), fixture.WithLabels("self.hosted", "linux", "build")},
			want:   "labels changed",
		},
		{
			name:   "a runner without a recorded template hash is not recycled for it",
			runner: []fixture.RunnerMod{fixture.PodStartedAgo(time.Hour)},
			want:   "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := fixture.Pool()
			if tt.pool != nil {
				tt.pool(pool)
			}
			runner := fixture.Runner(tt.runner...)
			if got := recycleReason(pool, &runner, current, fixture.Now); got != tt.want {
				t.Errorf("recycleReason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecisionInputCarriesThePoolSettings(t *testing.T) {
	pool := fixture.Pool(func(p *v1alpha1.RunnerPool) {
		p.Spec.MinRunners, p.Spec.MaxRunners = 2, 7
		p.Spec.Scaling.Policy = v1alpha1.ScalingPolicyQueue
		p.Spec.Scaling.IdleRunners = 3
		p.Spec.Scaling.ScaleDownDelay.Duration = 90 * time.Second
	})
	r := &RunnerPoolReconciler{Now: func() time.Time { return fixture.Now }}
	in := r.decisionInput(pool, nil, fixture.Snapshot(t), fixture.Now, runnerpod.TemplateHash(pool))
	want := scaling.Input{Policy: scaling.Queue, Min: 2, Max: 7, IdleRunners: 3, ScaleDownDelay: 90 * time.Second, Now: fixture.Now}
	if in.Policy != want.Policy || in.Min != want.Min || in.Max != want.Max || in.IdleRunners != want.IdleRunners ||
		in.ScaleDownDelay != want.ScaleDownDelay || !in.Now.Equal(want.Now) || len(in.Runners) != 0 || in.Queued != 0 {
		t.Errorf("decisionInput = %+v, want %+v", in, want)
	}
	if in.Percentage != (scaling.PercentageIdleParams{}) {
		t.Errorf("a pool without percentageIdle settings got %+v", in.Percentage)
	}
}

func TestDecisionInputPercentageIdleDefaults(t *testing.T) {
	tests := []struct {
		name string
		spec v1alpha1.PercentageIdleSpec
		want scaling.PercentageIdleParams
	}{
		{
			name: "unset settings take the runners-autoscaler defaults",
			want: scaling.PercentageIdleParams{ScaleUpThreshold: 0.5, ScaleDownThreshold: 0.2, ScaleUpMultiplier: 1.5, ScaleDownMultiplier: 0.5},
		},
		{
			name: "set settings are used as written",
			spec: v1alpha1.PercentageIdleSpec{ScaleUpThreshold: "0.8", ScaleDownThreshold: "0.1", ScaleUpMultiplier: "2", ScaleDownMultiplier: "0.25"},
			want: scaling.PercentageIdleParams{ScaleUpThreshold: 0.8, ScaleDownThreshold: 0.1, ScaleUpMultiplier: 2, ScaleDownMultiplier: 0.25},
		},
		{
			name: "a zero threshold is a setting, not a missing one",
			spec: v1alpha1.PercentageIdleSpec{ScaleDownThreshold: "0"},
			want: scaling.PercentageIdleParams{ScaleUpThreshold: 0.5, ScaleDownThreshold: 0, ScaleUpMultiplier: 1.5, ScaleDownMultiplier: 0.5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			pool := fixture.Pool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Scaling.Policy = v1alpha1.ScalingPolicyPercentageIdle
				p.Spec.Scaling.PercentageIdle = &spec
			})
			r := &RunnerPoolReconciler{Now: func() time.Time { return fixture.Now }}
			in := r.decisionInput(pool, nil, fixture.Snapshot(t), fixture.Now, runnerpod.TemplateHash(pool))
			if in.Policy != scaling.PercentageIdle || in.Percentage != tt.want {
				t.Errorf("policy %s params %+v, want %s %+v", in.Policy, in.Percentage, scaling.PercentageIdle, tt.want)
			}
		})
	}
}

func TestDecisionInputRunners(t *testing.T) {
	const uuid = "{22222222-2222-2222-2222-222222222222}"
	idleOnline := []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, ""), fixture.PodStartedAgo(time.Hour), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)}
	tests := []struct {
		name        string
		pool        func(*v1alpha1.RunnerPool)
		timings     Timings
		runner      []fixture.RunnerMod
		inBitbucket bitbucket.Runner
		// currentHash records the pool's own template hash on the runner.
		currentHash bool

		wantState   scaling.State
		wantRecycle bool
		wantSpent   bool
	}{
		{
			name:        "a runner of the current template is neither recycled nor spent",
			runner:      append(idleOnline, fixture.StepsStarted(4)),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   scaling.Idle,
		},
		{
			name:        "a runner whose pod the pool would now shape differently is recycled",
			runner:      append(idleOnline, fixture.TemplateHash("0000000000")),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			wantState:   scaling.Idle,
			wantRecycle: true,
		},
		{
			name:        "a runner past maxSteps is recycled",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxSteps = 2 },
			runner:      append(idleOnline, fixture.StepsStarted(2)),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   scaling.Idle,
			wantRecycle: true,
		},
		{
			name:        "an ephemeral runner that started its step is spent",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Ephemeral = true },
			runner:      append(idleOnline, fixture.StepsStarted(1)),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "{step-1}", time.Minute),
			currentHash: true,
			wantState:   scaling.Busy,
			wantSpent:   true,
		},
		{
			name:        "an ephemeral runner that has not run a step yet is not spent",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Ephemeral = true },
			runner:      idleOnline,
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   scaling.Idle,
		},
		{
			name:        "a runner of a non-ephemeral pool is never spent by its steps",
			runner:      append(idleOnline, fixture.StepsStarted(1)),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   scaling.Idle,
		},
		{
			name:        "the default offline grace applies when none is configured",
			runner:      idleOnline,
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", DefaultOfflineGrace+time.Second),
			currentHash: true,
			wantState:   scaling.Stuck,
		},
		{
			name:        "a configured offline grace is waited for",
			timings:     Timings{OfflineGrace: 10 * time.Minute},
			runner:      idleOnline,
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", DefaultOfflineGrace+time.Second),
			currentHash: true,
			wantState:   scaling.Starting,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := fixture.Pool()
			if tt.pool != nil {
				tt.pool(pool)
			}
			mods := tt.runner
			if tt.currentHash {
				mods = append(append([]fixture.RunnerMod{}, mods...), fixture.TemplateHash(runnerpod.TemplateHash(pool)))
			}
			runners := []v1alpha1.Runner{fixture.Runner(mods...)}
			r := &RunnerPoolReconciler{Now: func() time.Time { return fixture.Now }, Timings: tt.timings}
			in := r.decisionInput(pool, runners, fixture.Snapshot(t, tt.inBitbucket), fixture.Now, runnerpod.TemplateHash(pool))
			if len(in.Runners) != 1 {
				t.Fatalf("got %d runners, want 1", len(in.Runners))
			}
			v := in.Runners[0]
			if v.State != tt.wantState || v.Recycle != tt.wantRecycle || v.Spent != tt.wantSpent {
				t.Errorf("got %s recycle=%t spent=%t, want %s recycle=%t spent=%t",
					v.State.String(), v.Recycle, v.Spent, tt.wantState.String(), tt.wantRecycle, tt.wantSpent)
			}
		})
	}
}

func TestDrainReason(t *testing.T) {
	in := scaling.Input{Runners: []scaling.Runner{
		{Name: "spent", Spent: true},
		{Name: "spent-and-old", Spent: true, Recycle: true},
		{Name: "old", Recycle: true},
		{Name: "surplus"},
	}}
	tests := []struct {
		name, runner, want string
	}{
		{"an ephemeral runner goes because its step is done", "spent", "ephemeral_step_done"},
		{"an ephemeral runner that is also due for recycling goes because its step is done", "spent-and-old", "ephemeral_step_done"},
		{"a runner due for recycling goes to be recycled", "old", "recycle"},
		{"any other runner goes because the pool scales down", "surplus", "scale_down"},
		{"a runner the input does not know goes because the pool scales down", "unknown", "scale_down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := drainReason(in, tt.runner); got != tt.want {
				t.Errorf("drainReason(%s) = %q, want %q", tt.runner, got, tt.want)
			}
		})
	}
}

func TestSetReady(t *testing.T) {
	cond := func(condType string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
		return metav1.Condition{Type: condType, Status: status, Reason: reason, Message: message}
	}
	tests := []struct {
		name        string
		min, ready  int32
		busy, idle  int32
		conditions  []metav1.Condition
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage string
	}{
		{
			name: "enough ONLINE runners make the pool ready",
			min:  2, ready: 3, busy: 1, idle: 2,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionCredentialsValid, metav1.ConditionTrue, credentials.ReasonCredentialsAccepted, "")},
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			wantMessage: "3 runners ONLINE (1 busy, 2 idle)",
		},
		{
			name:        "a pool scaled to zero is ready without runners",
			min:         0,
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			wantMessage: "0 runners ONLINE (0 busy, 0 idle)",
		},
		{
			name: "credentials Bitbucket refuses make the pool not ready, with their fix",
			min:  1, ready: 1, idle: 1,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionCredentialsValid, metav1.ConditionFalse, credentials.ReasonSecretNotFound, "Secret \"bitbucket\" not found")},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  credentials.ReasonSecretNotFound,
			wantMessage: "Secret \"bitbucket\" not found",
		},
		{
			name: "an unreachable Bitbucket makes the pool not ready",
			min:  1, ready: 1, idle: 1,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonBitbucketError, "connection refused")},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ReasonBitbucketError,
			wantMessage: "connection refused",
		},
		{
			name: "a rate limit alone leaves a pool with enough runners ready",
			min:  1, ready: 1, idle: 1,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonRateLimited, "wait")},
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			wantMessage: "1 runners ONLINE (0 busy, 1 idle)",
		},
		{
			name: "fewer ONLINE runners than the minimum means runners are starting",
			min:  2, ready: 1, idle: 1,
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ReasonRunnersStarting,
			wantMessage: "1 of at least 2 runners are ONLINE",
		},
		{
			name: "fewer ONLINE runners than the minimum while pods wait for nodes says so",
			min:  2, ready: 1, idle: 1,
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonPodsPending, "pending")},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ReasonPodsPending,
			wantMessage: "1 of at least 2 runners are ONLINE",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := fixture.Pool(func(p *v1alpha1.RunnerPool) {
				p.Generation = 4
				p.Spec.MinRunners = tt.min
				p.Status.Ready, p.Status.Busy, p.Status.Idle = tt.ready, tt.busy, tt.idle
				p.Status.Conditions = tt.conditions
			})
			setReady(pool)
			got := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionReady)
			if got == nil {
				t.Fatal("no Ready condition")
			}
			if got.Status != tt.wantStatus || got.Reason != tt.wantReason || got.Message != tt.wantMessage {
				t.Errorf("Ready = %s %s %q, want %s %s %q", got.Status, got.Reason, got.Message, tt.wantStatus, tt.wantReason, tt.wantMessage)
			}
			if got.ObservedGeneration != 4 {
				t.Errorf("Ready observedGeneration = %d, want 4", got.ObservedGeneration)
			}
		})
	}
}

func TestDecimal(t *testing.T) {
	tests := []struct {
		name string
		in   v1alpha1.Decimal
		want float64
	}{
		{"an unset decimal takes the default", "", 0.5},
		{"a fraction is parsed", "0.75", 0.75},
		{"a whole number is parsed", "2", 2},
		{"zero is a value, not unset", "0", 0},
		{"text that is no number takes the default", "half", 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decimal(tt.in, 0.5); got != tt.want {
				t.Errorf("decimal(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestBitbucketNames(t *testing.T) {
	withUID := func(uid string) *v1alpha1.RunnerPool {
		return fixture.Pool(func(p *v1alpha1.RunnerPool) { p.UID = types.UID(uid) })
	}
	tests := []struct {
		name       string
		pool       *v1alpha1.RunnerPool
		wantPrefix string
	}{
		{"the marker holds the first 8 characters of the pool's UID", withUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"), "rp-0f1e2d3c-"},
		{"a short UID is used whole", withUID("abc"), "rp-abc-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BitbucketNamePrefix(tt.pool); got != tt.wantPrefix {
				t.Errorf("BitbucketNamePrefix = %q, want %q", got, tt.wantPrefix)
			}
			name := BitbucketRunnerName(tt.pool, "build-x1y2z")
			if name != tt.wantPrefix+"build-x1y2z" || !strings.HasPrefix(name, BitbucketNamePrefix(tt.pool)) {
				t.Errorf("BitbucketRunnerName = %q, want the marker %q then the Runner's name", name, tt.wantPrefix)
			}
		})
	}

	t.Run("pools of the same name in two clusters mark their runners differently", func(t *testing.T) {
		a := withUID("aaaaaaaa-0000-0000-0000-000000000000")
		b := withUID("bbbbbbbb-0000-0000-0000-000000000000")
		if BitbucketNamePrefix(a) == BitbucketNamePrefix(b) {
			t.Errorf("both pools use the marker %q", BitbucketNamePrefix(a))
		}
	})
}

func TestRunnerName(t *testing.T) {
	tests := []struct {
		name     string
		poolName string
	}{
		{"a short pool name is kept whole", "build"},
		{"a pool name of 50 characters is kept whole", strings.Repeat("a", 50)},
		{"a pool name of 63 characters is shortened", strings.Repeat("b", 63)},
		{"a pool name of 253 characters is shortened", strings.Repeat("c", 253)},
		{"a pool name cut right after a dot still gives a valid name", strings.Repeat("d", 49) + ".tail-of-a-long-name"},
		{"a pool name cut right after a dash still gives a valid name", strings.Repeat("e", 49) + "-tail-of-a-long-name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := fixture.Pool(func(p *v1alpha1.RunnerPool) { p.Name = tt.poolName })
			got := runnerName(pool)
			if len(got) > validation.LabelValueMaxLength {
				t.Errorf("runnerName = %q, %d characters, longer than a label value may be", got, len(got))
			}
			if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
				t.Errorf("runnerName = %q is not a valid object name: %v", got, errs)
			}
			if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
				t.Errorf("runnerName = %q is not a valid label value: %v", got, errs)
			}
			keep := min(len(tt.poolName), 50)
			if !strings.HasPrefix(got, strings.TrimRight(tt.poolName[:keep], ".")) {
				t.Errorf("runnerName = %q does not start with the pool name %q", got, tt.poolName)
			}
		})
	}

	t.Run("two runners of a pool get different names", func(t *testing.T) {
		pool := fixture.Pool()
		seen := map[string]bool{}
		for range 20 {
			seen[runnerName(pool)] = true
		}
		if len(seen) < 2 {
			t.Errorf("20 names drawn, %d distinct", len(seen))
		}
	})
}

func ptr[T any](v T) *T { return &v }
