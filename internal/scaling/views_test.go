package scaling

import (
	"cmp"
	"slices"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

func TestRunnerViewState(t *testing.T) {
	const uuid = "{11111111-1111-1111-1111-111111111111}"
	// connected is the Runner of a runner that connected an hour ago, its pod running since, its
	// status mirroring the Bitbucket state and step given.
	connected := func(status bitbucket.RunnerStatus, step string) []fixture.RunnerMod {
		return []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(status, step), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)}
	}
	// draining is the Runner of a registered runner the pool drains.
	draining := func(status bitbucket.RunnerStatus, step string) []fixture.RunnerMod {
		return []fixture.RunnerMod{fixture.Registered(uuid), fixture.Draining(), fixture.Mirrored(status, step)}
	}
	// listed is the runner as the latest list shows it, in its state for stateAge.
	listed := func(status bitbucket.RunnerStatus, step string, stateAge time.Duration) *bitbucket.Runner {
		return ptr.To(fixture.BitbucketRunner(uuid, status, step, stateAge))
	}
	tests := []struct {
		name string
		// runner is the Runner as the pool lists it.
		runner []fixture.RunnerMod
		// inBitbucket is what the latest observation shows; nil leaves the runner out of it.
		inBitbucket *bitbucket.Runner
		// unobserved passes no snapshot at all, as counting without Bitbucket does.
		unobserved bool

		wantState          State
		wantBusy           bool
		wantPendingTooLong bool
	}{
		{
			name:      "a Runner still registering is starting",
			runner:    []fixture.RunnerMod{fixture.CreatedAgo(10 * time.Second)},
			wantState: Starting,
		},
		{
			name:               "a Runner still registering past the pending timeout is starting and reported",
			runner:             []fixture.RunnerMod{fixture.CreatedAgo(fixture.PendingTimeout + time.Second)},
			wantState:          Starting,
			wantPendingTooLong: true,
		},
		{
			name:        "a runner the pool drains is draining, and not busy without a step",
			runner:      draining(bitbucket.RunnerStatusDisabled, ""),
			inBitbucket: listed(bitbucket.RunnerStatusDisabled, "", time.Minute),
			wantState:   Draining,
		},
		{
			name:        "a draining runner that still runs a step is draining and busy",
			runner:      draining(bitbucket.RunnerStatusOnline, ""),
			inBitbucket: listed(bitbucket.RunnerStatusDisabled, "{step-1}", time.Minute),
			wantState:   Draining,
			wantBusy:    true,
		},
		{
			name:        "a draining runner is not busy once Bitbucket shows its step ended, whatever its status says",
			runner:      draining(bitbucket.RunnerStatusDisabled, "{step-1}"),
			inBitbucket: listed(bitbucket.RunnerStatusDisabled, "", time.Second),
			wantState:   Draining,
		},
		{
			name:        "a Runner being deleted is draining",
			runner:      []fixture.RunnerMod{fixture.Registered(uuid), fixture.Deleting(), fixture.Mirrored(bitbucket.RunnerStatusOnline, "")},
			inBitbucket: listed(bitbucket.RunnerStatusOnline, "", time.Minute),
			wantState:   Draining,
		},
		{
			name: "a runner whose drain was cancelled is capacity again while Bitbucket still shows it DISABLED",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.DisabledAgo(time.Minute), fixture.Mirrored(bitbucket.RunnerStatusDisabled, ""),
				fixture.PodStartedAgo(time.Hour), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: listed(bitbucket.RunnerStatusDisabled, "", time.Minute),
			wantState:   Starting,
		},
		{
			name:        "a runner Bitbucket shows on a step is busy before its status catches up",
			runner:      connected(bitbucket.RunnerStatusOnline, ""),
			inBitbucket: listed(bitbucket.RunnerStatusOnline, "{step-1}", time.Second),
			wantState:   Busy,
			wantBusy:    true,
		},
		{
			name:        "a runner Bitbucket shows idle is idle though its status still names its last step",
			runner:      connected(bitbucket.RunnerStatusOnline, "{step-1}"),
			inBitbucket: listed(bitbucket.RunnerStatusOnline, "", time.Second),
			wantState:   Idle,
		},
		{
			name:        "a runner on a step is busy even when Bitbucket shows it OFFLINE, so it is never replaced mid-step",
			runner:      connected(bitbucket.RunnerStatusOnline, "{step-1}"),
			inBitbucket: listed(bitbucket.RunnerStatusOffline, "{step-1}", time.Hour),
			wantState:   Busy,
			wantBusy:    true,
		},
		{
			name:        "an ONLINE runner without a step is idle",
			runner:      connected(bitbucket.RunnerStatusOnline, ""),
			inBitbucket: listed(bitbucket.RunnerStatusOnline, "", time.Hour),
			wantState:   Idle,
		},
		{
			name:      "a runner missing from the observation keeps the step its status mirrors",
			runner:    connected(bitbucket.RunnerStatusOnline, "{step-1}"),
			wantState: Busy,
			wantBusy:  true,
		},
		{
			name:       "without any observation an ONLINE status counts as idle",
			runner:     connected(bitbucket.RunnerStatusOnline, ""),
			unobserved: true,
			wantState:  Idle,
		},
		{
			name:       "without any observation an OFFLINE runner is not replaced, as nothing says for how long it is gone",
			runner:     []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Hour), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			unobserved: true,
			wantState:  Starting,
		},
		{
			name:      "a failing pod younger than the pending timeout is not replaced yet",
			runner:    []fixture.RunnerMod{fixture.Registered(uuid), fixture.InPhase(v1alpha1.RunnerPhaseFailed), fixture.PodStartedAgo(time.Minute)},
			wantState: Starting,
		},
		{
			name:      "a failing pod is replaced once older than the pending timeout",
			runner:    []fixture.RunnerMod{fixture.Registered(uuid), fixture.InPhase(v1alpha1.RunnerPhaseFailed), fixture.PodStartedAgo(fixture.PendingTimeout + time.Second)},
			wantState: Stuck,
		},
		{
			name:      "a Runner whose registration is refused is replaced once older than the pending timeout",
			runner:    []fixture.RunnerMod{fixture.CreatedAgo(fixture.PendingTimeout + time.Second), fixture.InPhase(v1alpha1.RunnerPhaseFailed)},
			wantState: Stuck,
		},
		{
			name: "a runner that was connected and went OFFLINE is replaced after the offline grace",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Hour),
				fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: listed(bitbucket.RunnerStatusOffline, "", fixture.OfflineGrace+time.Second),
			wantState:   Stuck,
		},
		{
			name: "a runner that was connected and is UNHEALTHY is replaced after the offline grace",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnhealthy, ""), fixture.PodStartedAgo(time.Hour),
				fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: listed(bitbucket.RunnerStatusUnhealthy, "", fixture.OfflineGrace+time.Second),
			wantState:   Stuck,
		},
		{
			name: "a runner OFFLINE for less than the offline grace is not replaced, however old its pod",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Hour),
				fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)},
			inBitbucket: listed(bitbucket.RunnerStatusOffline, "", fixture.OfflineGrace-time.Second),
			wantState:   Starting,
		},
		{
			name: "an agent restarting within the offline grace is not reported as waiting for a node",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Hour),
				fixture.OnlineSince(time.Hour), fixture.PodNotReady()},
			inBitbucket: listed(bitbucket.RunnerStatusOffline, "", 10*time.Second),
			wantState:   Starting,
		},
		{
			name: "an OFFLINE runner that never connected with its pod is judged by the pending timeout, not the offline grace",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOffline, ""), fixture.PodStartedAgo(time.Minute),
				fixture.PodNotReady()},
			inBitbucket: listed(bitbucket.RunnerStatusOffline, "", time.Hour),
			wantState:   Starting,
		},
		{
			name: "a pod that runs but whose agent never connected is replaced after the pending timeout",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(fixture.PendingTimeout + time.Second), fixture.PodRunning(fixture.PendingTimeout)},
			inBitbucket: listed(bitbucket.RunnerStatusUnregistered, "", time.Hour),
			wantState:   Stuck,
		},
		{
			name: "a pod that runs and whose agent has not connected yet is starting within the pending timeout",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(time.Minute), fixture.PodRunning(10 * time.Second)},
			inBitbucket: listed(bitbucket.RunnerStatusUnregistered, "", time.Minute),
			wantState:   Starting,
		},
		{
			name: "a pod Pending past the pending timeout stays starting and is reported",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(fixture.PendingTimeout + time.Second), fixture.PodNotReady()},
			inBitbucket:        listed(bitbucket.RunnerStatusUnregistered, "", time.Hour),
			wantState:          Starting,
			wantPendingTooLong: true,
		},
		{
			name: "a pod Pending exactly the pending timeout is not reported yet",
			runner: []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(fixture.PendingTimeout), fixture.PodNotReady()},
			inBitbucket: listed(bitbucket.RunnerStatusUnregistered, "", time.Hour),
			wantState:   Starting,
		},
		{
			name: "the pending timeout counts from the current pod's start, not from the Runner's creation",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(time.Hour), fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusUnregistered, ""),
				fixture.PodStartedAgo(time.Minute), fixture.PodNotReady()},
			inBitbucket: listed(bitbucket.RunnerStatusUnregistered, "", time.Minute),
			wantState:   Starting,
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
			inBitbucket: ptr.To(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)),
			want:        fixture.Now,
		},
		{
			name: "a step the status saw end keeps its time",
			runner: []fixture.RunnerMod{fixture.CreatedAgo(created), fixture.OnlineSince(time.Hour), fixture.LastStepAgo(30 * time.Minute),
				fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, "")},
			inBitbucket: ptr.To(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Second)),
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
	in := decisionInput(pool, nil, fixture.Snapshot(t), fixture.Now, runnerpod.TemplateHash(pool), DefaultOfflineGrace)
	want := Input{Policy: Queue, Min: 2, Max: 7, IdleRunners: 3, ScaleDownDelay: 90 * time.Second, Now: fixture.Now}
	if in.Policy != want.Policy || in.Min != want.Min || in.Max != want.Max || in.IdleRunners != want.IdleRunners ||
		in.ScaleDownDelay != want.ScaleDownDelay || !in.Now.Equal(want.Now) || len(in.Runners) != 0 || in.Queued != 0 {
		t.Errorf("decisionInput = %+v, want %+v", in, want)
	}
	if in.Percentage != (PercentageIdleParams{}) {
		t.Errorf("a pool without percentageIdle settings got %+v", in.Percentage)
	}
}

func TestDecisionInputPercentageIdleDefaults(t *testing.T) {
	tests := []struct {
		name string
		spec v1alpha1.PercentageIdleSpec
		want PercentageIdleParams
	}{
		{
			name: "unset settings take the runners-autoscaler defaults",
			want: PercentageIdleParams{ScaleUpThreshold: 0.5, ScaleDownThreshold: 0.2, ScaleUpMultiplier: 1.5, ScaleDownMultiplier: 0.5},
		},
		{
			name: "set settings are used as written",
			spec: v1alpha1.PercentageIdleSpec{ScaleUpThreshold: "0.8", ScaleDownThreshold: "0.1", ScaleUpMultiplier: "2", ScaleDownMultiplier: "0.25"},
			want: PercentageIdleParams{ScaleUpThreshold: 0.8, ScaleDownThreshold: 0.1, ScaleUpMultiplier: 2, ScaleDownMultiplier: 0.25},
		},
		{
			name: "a zero threshold is a setting, not a missing one",
			spec: v1alpha1.PercentageIdleSpec{ScaleDownThreshold: "0"},
			want: PercentageIdleParams{ScaleUpThreshold: 0.5, ScaleDownThreshold: 0, ScaleUpMultiplier: 1.5, ScaleDownMultiplier: 0.5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			pool := fixture.Pool(func(p *v1alpha1.RunnerPool) {
				p.Spec.Scaling.Policy = v1alpha1.ScalingPolicyPercentageIdle
				p.Spec.Scaling.PercentageIdle = &spec
			})
			in := decisionInput(pool, nil, fixture.Snapshot(t), fixture.Now, runnerpod.TemplateHash(pool), DefaultOfflineGrace)
			if in.Policy != PercentageIdle || in.Percentage != tt.want {
				t.Errorf("policy %s params %+v, want %s %+v", in.Policy, in.Percentage, PercentageIdle, tt.want)
			}
		})
	}
}

func TestDecisionInputRunners(t *testing.T) {
	const uuid = "{22222222-2222-2222-2222-222222222222}"
	idleOnline := []fixture.RunnerMod{fixture.Registered(uuid), fixture.Mirrored(bitbucket.RunnerStatusOnline, ""), fixture.PodStartedAgo(time.Hour), fixture.OnlineSince(time.Hour), fixture.PodRunning(time.Hour)}
	tests := []struct {
		name         string
		pool         func(*v1alpha1.RunnerPool)
		offlineGrace time.Duration
		runner       []fixture.RunnerMod
		inBitbucket  bitbucket.Runner
		// currentHash records the pool's own template hash on the runner.
		currentHash bool

		wantState   State
		wantRecycle bool
		wantSpent   bool
	}{
		{
			name:        "a runner of the current template is neither recycled nor spent",
			runner:      append(idleOnline, fixture.StepsStarted(4)),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   Idle,
		},
		{
			name:        "a runner whose pod the pool would now shape differently is recycled",
			runner:      append(idleOnline, fixture.TemplateHash("0000000000")),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			wantState:   Idle,
			wantRecycle: true,
		},
		{
			name:        "a runner past maxSteps is recycled",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.MaxSteps = 2 },
			runner:      append(idleOnline, fixture.StepsStarted(2)),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   Idle,
			wantRecycle: true,
		},
		{
			name:        "an ephemeral runner that started its step is spent",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Ephemeral = true },
			runner:      append(idleOnline, fixture.StepsStarted(1)),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "{step-1}", time.Minute),
			currentHash: true,
			wantState:   Busy,
			wantSpent:   true,
		},
		{
			name:        "an ephemeral runner that has not run a step yet is not spent",
			pool:        func(p *v1alpha1.RunnerPool) { p.Spec.Runner.Ephemeral = true },
			runner:      idleOnline,
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   Idle,
		},
		{
			name:        "a runner of a non-ephemeral pool is never spent by its steps",
			runner:      append(idleOnline, fixture.StepsStarted(1)),
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, "", time.Hour),
			currentHash: true,
			wantState:   Idle,
		},
		{
			name:        "the default offline grace applies when none is configured",
			runner:      idleOnline,
			inBitbucket: fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", DefaultOfflineGrace+time.Second),
			currentHash: true,
			wantState:   Stuck,
		},
		{
			name:         "a configured offline grace is waited for",
			offlineGrace: 10 * time.Minute,
			runner:       idleOnline,
			inBitbucket:  fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOffline, "", DefaultOfflineGrace+time.Second),
			currentHash:  true,
			wantState:    Starting,
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
			in := decisionInput(pool, runners, fixture.Snapshot(t, tt.inBitbucket), fixture.Now, runnerpod.TemplateHash(pool), cmp.Or(tt.offlineGrace, DefaultOfflineGrace))
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
	in := Input{Runners: []Runner{
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
		wantState   State
		wantRecycle bool
		wantReason  string
	}{
		{"idle and relabelled", "", []string{"self.hosted", "linux", "other"}, Idle, true, ReasonLabelsChanged},
		{"busy and relabelled", "{step-1}", []string{"self.hosted", "linux", "other"}, Busy, true, ReasonLabelsChanged},
		{"idle with its own labels", "", []string{"linux", "self.hosted"}, Idle, false, "recycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := fixture.Pool()
			mods := append(append([]fixture.RunnerMod{}, base...), fixture.TemplateHash(runnerpod.TemplateHash(pool)), fixture.Mirrored(bitbucket.RunnerStatusOnline, tt.step))
			runners := []v1alpha1.Runner{fixture.Runner(mods...)}
			snap := fixture.Snapshot(t, bbWith(fixture.BitbucketRunner(uuid, bitbucket.RunnerStatusOnline, tt.step, time.Hour), "", tt.labels...))
			in := decisionInput(pool, runners, snap, fixture.Now, runnerpod.TemplateHash(pool), DefaultOfflineGrace)
			if v := in.Runners[0]; v.State != tt.wantState || v.Recycle != tt.wantRecycle {
				t.Fatalf("got %s recycle=%t, want %s recycle=%t", v.State.String(), v.Recycle, tt.wantState.String(), tt.wantRecycle)
			}
			if got, _ := relabelDrainReason(&runners[0], snap, "recycle"); got != tt.wantReason {
				t.Errorf("drain reason %q, want %q", got, tt.wantReason)
			}
			if got, _ := relabelDrainReason(&runners[0], snap, "scale_down"); got != "scale_down" {
				t.Errorf("a scale-down of a relabelled runner is reported as %q", got)
			}
		})
	}
}
