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
	"github.com/runnerpool/runnerpool-operator/internal/observe"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

func TestRunnerViewState(t *testing.T) {
	const uuid = "{11111111-1111-1111-1111-111111111111}"
	tests := []struct {
		name string
		// runner is the Runner as the pool lists it.
		runner []runnerMod
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
			runner:    []runnerMod{createdAgo(10 * time.Second)},
			wantState: scaling.Starting,
		},
		{
			name:               "a Runner still registering past the pending timeout is starting and reported",
			runner:             []runnerMod{createdAgo(testPendingTimeout + time.Second)},
			wantState:          scaling.Starting,
			wantPendingTooLong: true,
		},
		{
			name:        "a runner the pool drains is draining, and not busy without a step",
			runner:      []runnerMod{registered(uuid), draining(), mirrored(bitbucket.RunnerStatusDisabled, "")},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusDisabled, "", time.Minute)),
			wantState:   scaling.Draining,
		},
		{
			name:        "a draining runner that still runs a step is draining and busy",
			runner:      []runnerMod{registered(uuid), draining(), mirrored(bitbucket.RunnerStatusOnline, "")},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusDisabled, "{step-1}", time.Minute)),
			wantState:   scaling.Draining,
			wantBusy:    true,
		},
		{
			name:        "a draining runner is not busy once Bitbucket shows its step ended, whatever its status says",
			runner:      []runnerMod{registered(uuid), draining(), mirrored(bitbucket.RunnerStatusDisabled, "{step-1}")},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusDisabled, "", time.Second)),
			wantState:   scaling.Draining,
		},
		{
			name:        "a Runner being deleted is draining",
			runner:      []runnerMod{registered(uuid), deleting(), mirrored(bitbucket.RunnerStatusOnline, "")},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Minute)),
			wantState:   scaling.Draining,
		},
		{
			name: "a runner whose drain was cancelled is capacity again while Bitbucket still shows it DISABLED",
			runner: []runnerMod{registered(uuid), disabledAgo(time.Minute), mirrored(bitbucket.RunnerStatusDisabled, ""),
				podStartedAgo(time.Hour), onlineSince(time.Hour), podRunning(time.Hour)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusDisabled, "", time.Minute)),
			wantState:   scaling.Starting,
		},
		{
			name:        "a runner Bitbucket shows on a step is busy before its status catches up",
			runner:      []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, ""), onlineSince(time.Hour), podRunning(time.Hour)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOnline, "{step-1}", time.Second)),
			wantState:   scaling.Busy,
			wantBusy:    true,
		},
		{
			name:        "a runner Bitbucket shows idle is idle though its status still names its last step",
			runner:      []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, "{step-1}"), onlineSince(time.Hour), podRunning(time.Hour)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)),
			wantState:   scaling.Idle,
		},
		{
			name:        "a runner on a step is busy even when Bitbucket shows it OFFLINE, so it is never replaced mid-step",
			runner:      []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, "{step-1}"), onlineSince(time.Hour), podRunning(time.Hour)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOffline, "{step-1}", time.Hour)),
			wantState:   scaling.Busy,
			wantBusy:    true,
		},
		{
			name:        "an ONLINE runner without a step is idle",
			runner:      []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, ""), onlineSince(time.Hour), podRunning(time.Hour)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour)),
			wantState:   scaling.Idle,
		},
		{
			name:      "a runner missing from the observation keeps the step its status mirrors",
			runner:    []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, "{step-1}"), onlineSince(time.Hour), podRunning(time.Hour)},
			wantState: scaling.Busy,
			wantBusy:  true,
		},
		{
			name:       "without any observation an ONLINE status counts as idle",
			runner:     []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, ""), onlineSince(time.Hour), podRunning(time.Hour)},
			unobserved: true,
			wantState:  scaling.Idle,
		},
		{
			name:       "without any observation an OFFLINE runner is not replaced, as nothing says for how long it is gone",
			runner:     []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOffline, ""), podStartedAgo(time.Hour), onlineSince(time.Hour), podRunning(time.Hour)},
			unobserved: true,
			wantState:  scaling.Starting,
		},
		{
			name:      "a failing pod younger than the pending timeout is not replaced yet",
			runner:    []runnerMod{registered(uuid), inPhase(v1alpha1.RunnerPhaseFailed), podStartedAgo(time.Minute)},
			wantState: scaling.Starting,
		},
		{
			name:      "a failing pod is replaced once older than the pending timeout",
			runner:    []runnerMod{registered(uuid), inPhase(v1alpha1.RunnerPhaseFailed), podStartedAgo(testPendingTimeout + time.Second)},
			wantState: scaling.Stuck,
		},
		{
			name:      "a Runner whose registration is refused is replaced once older than the pending timeout",
			runner:    []runnerMod{createdAgo(testPendingTimeout + time.Second), inPhase(v1alpha1.RunnerPhaseFailed)},
			wantState: scaling.Stuck,
		},
		{
			name: "a runner that was connected and went OFFLINE is replaced after the offline grace",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOffline, ""), podStartedAgo(time.Hour),
				onlineSince(time.Hour), podRunning(time.Hour)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOffline, "", testOfflineGrace+time.Second)),
			wantState:   scaling.Stuck,
		},
		{
			name: "a runner that was connected and is UNHEALTHY is replaced after the offline grace",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusUnhealthy, ""), podStartedAgo(time.Hour),
				onlineSince(time.Hour), podRunning(time.Hour)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusUnhealthy, "", testOfflineGrace+time.Second)),
			wantState:   scaling.Stuck,
		},
		{
			name: "a runner OFFLINE for less than the offline grace is not replaced, however old its pod",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOffline, ""), podStartedAgo(time.Hour),
				onlineSince(time.Hour), podRunning(time.Hour)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOffline, "", testOfflineGrace-time.Second)),
			wantState:   scaling.Starting,
		},
		{
			name: "an agent restarting within the offline grace is not reported as waiting for a node",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOffline, ""), podStartedAgo(time.Hour),
				onlineSince(time.Hour), podNotReady()},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOffline, "", 10*time.Second)),
			wantState:   scaling.Starting,
		},
		{
			name: "an OFFLINE runner that never connected with its pod is judged by the pending timeout, not the offline grace",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOffline, ""), podStartedAgo(time.Minute),
				podNotReady()},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOffline, "", time.Hour)),
			wantState:   scaling.Starting,
		},
		{
			name: "a pod that runs but whose agent never connected is replaced after the pending timeout",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusUnregistered, ""),
				podStartedAgo(testPendingTimeout + time.Second), podRunning(testPendingTimeout)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Hour)),
			wantState:   scaling.Stuck,
		},
		{
			name: "a pod that runs and whose agent has not connected yet is starting within the pending timeout",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusUnregistered, ""),
				podStartedAgo(time.Minute), podRunning(10 * time.Second)},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Minute)),
			wantState:   scaling.Starting,
		},
		{
			name: "a pod Pending past the pending timeout stays starting and is reported",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusUnregistered, ""),
				podStartedAgo(testPendingTimeout + time.Second), podNotReady()},
			inBitbucket:        ptr(bbRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Hour)),
			wantState:          scaling.Starting,
			wantPendingTooLong: true,
		},
		{
			name: "a pod Pending exactly the pending timeout is not reported yet",
			runner: []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusUnregistered, ""),
				podStartedAgo(testPendingTimeout), podNotReady()},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Hour)),
			wantState:   scaling.Starting,
		},
		{
			name: "the pending timeout counts from the current pod's start, not from the Runner's creation",
			runner: []runnerMod{createdAgo(time.Hour), registered(uuid), mirrored(bitbucket.RunnerStatusUnregistered, ""),
				podStartedAgo(time.Minute), podNotReady()},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusUnregistered, "", time.Minute)),
			wantState:   scaling.Starting,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := testRunner(tt.runner...)
			var snap *observe.Snapshot
			switch {
			case tt.unobserved:
			case tt.inBitbucket != nil:
				snap = snapshotOf(t, *tt.inBitbucket)
			default:
				snap = snapshotOf(t)
			}
			v := runnerView(testPool(), &runner, snap, now, testOfflineGrace)
			if v.State != tt.wantState || v.Busy != tt.wantBusy || v.PendingTooLong != tt.wantPendingTooLong {
				t.Errorf("got %s busy=%t pendingTooLong=%t, want %s busy=%t pendingTooLong=%t",
					stateName(v.State), v.Busy, v.PendingTooLong, stateName(tt.wantState), tt.wantBusy, tt.wantPendingTooLong)
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
		runner []runnerMod
		// inBitbucket is what the latest observation (made now) shows; nil passes none.
		inBitbucket *bitbucket.Runner
		want        time.Time
	}{
		{
			name:   "a runner that never came online counts as idle since its creation",
			runner: []runnerMod{createdAgo(created)},
			want:   ago(created),
		},
		{
			name:   "a runner without steps is idle since it came online",
			runner: []runnerMod{createdAgo(created), onlineSince(time.Hour)},
			want:   ago(time.Hour),
		},
		{
			name:   "a runner that ran a step is idle since it was last seen on it",
			runner: []runnerMod{createdAgo(created), onlineSince(time.Hour), lastStepAgo(10 * time.Minute)},
			want:   ago(10 * time.Minute),
		},
		{
			name:   "a step of an earlier pod does not date the idleness of the current one",
			runner: []runnerMod{createdAgo(created), onlineSince(time.Hour), lastStepAgo(2 * time.Hour)},
			want:   ago(time.Hour),
		},
		{
			name: "a runner whose drain was cancelled is idle since then",
			runner: []runnerMod{createdAgo(created), onlineSince(time.Hour), lastStepAgo(10 * time.Minute),
				drainCancelledAgo(time.Minute)},
			want: ago(time.Minute),
		},
		{
			name: "a drain cancelled before the last step does not date the idleness",
			runner: []runnerMod{createdAgo(created), onlineSince(time.Hour), lastStepAgo(10 * time.Minute),
				drainCancelledAgo(20 * time.Minute)},
			want: ago(10 * time.Minute),
		},
		{
			name: "a step that ended after the status last saw it dates the idleness from the observation",
			runner: []runnerMod{createdAgo(created), onlineSince(time.Hour), lastStepAgo(30 * time.Minute),
				registered(uuid), mirrored(bitbucket.RunnerStatusOnline, "{step-1}")},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)),
			want:        now,
		},
		{
			name: "a step the status saw end keeps its time",
			runner: []runnerMod{createdAgo(created), onlineSince(time.Hour), lastStepAgo(30 * time.Minute),
				registered(uuid), mirrored(bitbucket.RunnerStatusOnline, "")},
			inBitbucket: ptr(bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)),
			want:        ago(30 * time.Minute),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := testRunner(tt.runner...)
			var snap *observe.Snapshot
			if tt.inBitbucket != nil {
				snap = snapshotOf(t, *tt.inBitbucket)
			}
			v := runnerView(testPool(), &runner, snap, now, testOfflineGrace)
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
		runner []runnerMod
		want   string
	}{
		{
			name:   "a young runner of the current template is kept",
			runner: []runnerMod{podStartedAgo(time.Hour), stepsStarted(3), templateHash(current)},
			want:   "",
		},
		{
			name:   "a pod that reached maxAge is recycled",
			runner: []runnerMod{podStartedAgo(24 * time.Hour), templateHash(current)},
			want:   "maxAge",
		},
		{
			name:   "maxAge 0 never recycles",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxAge.Duration = 0 },
			runner: []runnerMod{podStartedAgo(1000 * time.Hour), templateHash(current)},
			want:   "",
		},
		{
			name:   "a runner without a pod has no age",
			runner: []runnerMod{createdAgo(1000 * time.Hour)},
			want:   "",
		},
		{
			name:   "a pod that ran maxSteps steps is recycled",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxSteps = 3 },
			runner: []runnerMod{podStartedAgo(time.Hour), stepsStarted(3), templateHash(current)},
			want:   "maxSteps",
		},
		{
			name:   "a pod below maxSteps is kept",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxSteps = 3 },
			runner: []runnerMod{podStartedAgo(time.Hour), stepsStarted(2), templateHash(current)},
			want:   "",
		},
		{
			name:   "maxSteps 0 never recycles",
			runner: []runnerMod{podStartedAgo(time.Hour), stepsStarted(10000), templateHash(current)},
			want:   "",
		},
		{
			name:   "a pod shaped by an earlier pool spec is recycled",
			runner: []runnerMod{podStartedAgo(time.Hour), templateHash("hash-before")},
			want:   "template changed",
		},
		{
			name:   "a runner registered with the pool's labels, in any order, is kept",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Labels = []v1alpha1.RunnerLabel{"build", "arm"} },
			runner: []runnerMod{podStartedAgo(time.Hour), templateHash(current), withLabels("linux", "build", "self.hosted", "arm")},
			want:   "",
		},
		{
			name:   "a runner registered before the pool's labels were edited is recycled",
			pool:   func(p *v1alpha1.RunnerPool) { p.Spec.Labels = []v1alpha1.RunnerLabel{"build", "gpu"} },
			runner: []runnerMod{podStartedAgo(time.Hour), templateHash(current), withLabels("self.hosted", "linux", "build")},
			want:   "labels changed",
		},
		{
			name:   "a runner without a recorded template hash is not recycled for it",
			runner: []runnerMod{podStartedAgo(time.Hour)},
			want:   "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := testPool()
			if tt.pool != nil {
				tt.pool(pool)
			}
			runner := testRunner(tt.runner...)
			if got := recycleReason(pool, &runner, current, now); got != tt.want {
				t.Errorf("recycleReason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecisionInputCarriesThePoolSettings(t *testing.T) {
	pool := testPool(func(p *v1alpha1.RunnerPool) {
		p.Spec.MinRunners, p.Spec.MaxRunners = 2, 7
		p.Spec.Scaling.Policy = v1alpha1.ScalingPolicyQueue
		p.Spec.Scaling.IdleRunners = 3
		p.Spec.Scaling.ScaleDownDelay.Duration = 90 * time.Second
	})
	r := &RunnerPoolReconciler{Now: func() time.Time { return now }}
	in := r.decisionInput(pool, nil, snapshotOf(t))
	want := scaling.Input{Policy: scaling.Queue, Min: 2, Max: 7, IdleRunners: 3, ScaleDownDelay: 90 * time.Second, Now: now}
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
			pool := testPool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Scaling.Policy = v1alpha1.ScalingPolicyPercentageIdle
				p.Spec.Scaling.PercentageIdle = &spec
			})
			r := &RunnerPoolReconciler{Now: func() time.Time { return now }}
			in := r.decisionInput(pool, nil, snapshotOf(t))
			if in.Policy != scaling.PercentageIdle || in.Percentage != tt.want {
				t.Errorf("policy %s params %+v, want %s %+v", in.Policy, in.Percentage, scaling.PercentageIdle, tt.want)
			}
		})
	}
}

func TestDecisionInputRunners(t *testing.T) {
	const uuid = "{22222222-2222-2222-2222-222222222222}"
	idleOnline := []runnerMod{registered(uuid), mirrored(bitbucket.RunnerStatusOnline, ""), podStartedAgo(time.Hour), onlineSince(time.Hour), podRunning(time.Hour)}
	tests := []struct {
		name        string
		pool        func(*v1alpha1.RunnerPool)
		timings     Timings
		runner      []runnerMod
		inBitbucket bitbucket.Runner
		// currentHash records the pool's own template hash on the runner.
		currentHash bool

		wantState   scaling.State
		wantRecycle bool
		wantSpent   bool
	}{
		{
			name:        "a runner of the current template is neither recycled nor spent",
			runner:      append(idleOnline, stepsStarted(4)),
			inBitbucket: bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   scaling.Idle,
		},
		{
			name:        "a runner whose pod the pool would now shape differently is recycled",
			runner:      append(idleOnline, templateHash("0000000000")),
			inBitbucket: bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			wantState:   scaling.Idle,
			wantRecycle: true,
		},
		{
			name:        "a runner past maxSteps is recycled",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxSteps = 2 },
			runner:      append(idleOnline, stepsStarted(2)),
			inBitbucket: bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   scaling.Idle,
			wantRecycle: true,
		},
		{
			name:        "an ephemeral runner that started its step is spent",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Ephemeral = true },
			runner:      append(idleOnline, stepsStarted(1)),
			inBitbucket: bbRunner(uuid, bitbucket.RunnerStatusOnline, "{step-1}", time.Minute),
			currentHash: true,
			wantState:   scaling.Busy,
			wantSpent:   true,
		},
		{
			name:        "an ephemeral runner that has not run a step yet is not spent",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Ephemeral = true },
			runner:      idleOnline,
			inBitbucket: bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   scaling.Idle,
		},
		{
			name:        "a runner of a non-ephemeral pool is never spent by its steps",
			runner:      append(idleOnline, stepsStarted(1)),
			inBitbucket: bbRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   scaling.Idle,
		},
		{
			name:        "the default offline grace applies when none is configured",
			runner:      idleOnline,
			inBitbucket: bbRunner(uuid, bitbucket.RunnerStatusOffline, "", DefaultOfflineGrace+time.Second),
			currentHash: true,
			wantState:   scaling.Stuck,
		},
		{
			name:        "a configured offline grace is waited for",
			timings:     Timings{OfflineGrace: 10 * time.Minute},
			runner:      idleOnline,
			inBitbucket: bbRunner(uuid, bitbucket.RunnerStatusOffline, "", DefaultOfflineGrace+time.Second),
			currentHash: true,
			wantState:   scaling.Starting,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := testPool()
			if tt.pool != nil {
				tt.pool(pool)
			}
			mods := tt.runner
			if tt.currentHash {
				mods = append(append([]runnerMod{}, mods...), templateHash(runnerpod.TemplateHash(pool)))
			}
			runners := []v1alpha1.Runner{testRunner(mods...)}
			r := &RunnerPoolReconciler{Now: func() time.Time { return now }, Timings: tt.timings}
			in := r.decisionInput(pool, runners, snapshotOf(t, tt.inBitbucket))
			if len(in.Runners) != 1 {
				t.Fatalf("got %d runners, want 1", len(in.Runners))
			}
			v := in.Runners[0]
			if v.State != tt.wantState || v.Recycle != tt.wantRecycle || v.Spent != tt.wantSpent {
				t.Errorf("got %s recycle=%t spent=%t, want %s recycle=%t spent=%t",
					stateName(v.State), v.Recycle, v.Spent, stateName(tt.wantState), tt.wantRecycle, tt.wantSpent)
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
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionCredentialsValid, metav1.ConditionTrue, ReasonCredentialsAccepted, "")},
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
			conditions:  []metav1.Condition{cond(v1alpha1.ConditionCredentialsValid, metav1.ConditionFalse, ReasonSecretNotFound, "Secret \"bitbucket\" not found")},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ReasonSecretNotFound,
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
			pool := testPool(func(p *v1alpha1.RunnerPool) {
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
		return testPool(func(p *v1alpha1.RunnerPool) { p.UID = types.UID(uid) })
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
			pool := testPool(func(p *v1alpha1.RunnerPool) { p.Name = tt.poolName })
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
		pool := testPool()
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
