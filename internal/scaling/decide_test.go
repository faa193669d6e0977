package scaling_test

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Runner shorthands: the name first, then what matters about the runner.

func idle(name string, idleFor time.Duration) scaling.Runner {
	return scaling.Runner{Name: name, State: scaling.Idle, IdleSince: now.Add(-idleFor)}
}

func busy(name string) scaling.Runner {
	return scaling.Runner{Name: name, State: scaling.Busy, Busy: true, IdleSince: now.Add(-time.Hour)}
}

func starting(name string) scaling.Runner {
	return scaling.Runner{Name: name, State: scaling.Starting, IdleSince: now.Add(-time.Minute)}
}

func pendingTooLong(name string) scaling.Runner {
	r := starting(name)
	r.PendingTooLong = true
	return r
}

func stuck(name string) scaling.Runner {
	return scaling.Runner{Name: name, State: scaling.Stuck, IdleSince: now.Add(-time.Minute)}
}

// drainRequested is a runner the pool asked to drain that is not disabled yet.
func drainRequested(r scaling.Runner) scaling.Runner {
	r.Drain = true
	return r
}

// disabledBusy is a drained runner that is disabled in Bitbucket but took a step before the
// disable landed.
func disabledBusy(name string) scaling.Runner {
	return scaling.Runner{Name: name, State: scaling.Draining, Drain: true, Busy: true, IdleSince: now.Add(-time.Hour)}
}

// disabledIdle is a drained runner, disabled in Bitbucket, waiting to be deleted.
func disabledIdle(name string) scaling.Runner {
	return scaling.Runner{Name: name, State: scaling.Draining, Drain: true, IdleSince: now.Add(-time.Hour)}
}

// deleting is a runner on its way out without a drain the pool could cancel (the pool or the
// Runner is being deleted).
func deleting(name string) scaling.Runner {
	return scaling.Runner{Name: name, State: scaling.Draining, Drain: true, Deleting: true, IdleSince: now.Add(-time.Hour)}
}

func recycle(r scaling.Runner) scaling.Runner {
	r.Recycle = true
	return r
}

// pool is an IdleBuffer pool with a wide range; cases override what they test.
func pool(idleRunners int, runners ...scaling.Runner) scaling.Input {
	return scaling.Input{
		Policy:         scaling.IdleBuffer,
		Min:            0,
		Max:            20,
		IdleRunners:    idleRunners,
		ScaleDownDelay: 10 * time.Minute,
		Now:            now,
		Runners:        runners,
	}
}

func with(in scaling.Input, change func(*scaling.Input)) scaling.Input {
	change(&in)
	return in
}

// want is the part of a decision a case checks; nil slices and empty slices are the same.
type want struct {
	Desired                 int
	Create                  int
	Drain, Undrain, Replace []string
}

func (w want) String() string {
	return fmt.Sprintf("desired=%d create=%d drain=%v undrain=%v replace=%v", w.Desired, w.Create, w.Drain, w.Undrain, w.Replace)
}

func got(d scaling.Decision) want {
	return want{Desired: d.Desired, Create: d.Create, Drain: d.Drain, Undrain: d.Undrain, Replace: d.Replace}
}

func (w want) equal(o want) bool {
	return w.Desired == o.Desired && w.Create == o.Create &&
		slices.Equal(w.Drain, o.Drain) && slices.Equal(w.Undrain, o.Undrain) && slices.Equal(w.Replace, o.Replace)
}

type decideCase struct {
	name string
	in   scaling.Input
	want want
}

func runDecideCases(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if g := got(scaling.Decide(tc.in)); !g.equal(tc.want) {
				t.Errorf("Decide:\n got  %v\n want %v", g, tc.want)
			}
		})
	}
}

func TestIdleBufferKeepsBusyPlusIdleRunners(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name: "an empty pool creates its idle buffer",
			in:   pool(2),
			want: want{Desired: 2, Create: 2},
		},
		{
			name: "busy runners do not eat into the idle buffer",
			in:   pool(1, busy("b1"), busy("b2")),
			want: want{Desired: 3, Create: 1},
		},
		{
			name: "a pool with exactly the idle buffer does nothing",
			in:   pool(2, busy("b1"), idle("i1", time.Hour), idle("i2", time.Hour)),
			want: want{Desired: 3},
		},
		{
			name: "starting runners count as capacity so pending pods do not cause more creates",
			in:   pool(3, starting("s1"), pendingTooLong("s2"), idle("i1", time.Minute)),
			want: want{Desired: 3},
		},
		{
			name: "starting runners fill the gap before new ones are created",
			in:   pool(3, busy("b1"), starting("s1")),
			want: want{Desired: 4, Create: 2},
		},
		{
			name: "runners on their way out are not capacity",
			in:   pool(1, busy("b1"), deleting("d1")),
			want: want{Desired: 2, Create: 1},
		},
	})
}

func TestDesiredIsClampedToMinAndMax(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name: "an empty pool with no idle buffer still creates its minimum",
			in:   with(pool(0), func(in *scaling.Input) { in.Min = 3 }),
			want: want{Desired: 3, Create: 3},
		},
		{
			name: "idle runners above the minimum are kept while they are young",
			in:   with(pool(0, idle("i1", time.Minute), idle("i2", time.Minute)), func(in *scaling.Input) { in.Min = 1 }),
			want: want{Desired: 1},
		},
		{
			name: "the minimum keeps idle runners past scaleDownDelay",
			in:   with(pool(0, idle("i1", time.Hour), idle("i2", time.Hour)), func(in *scaling.Input) { in.Min = 2 }),
			want: want{Desired: 2},
		},
		{
			name: "a large idle buffer is capped by max",
			in:   with(pool(10), func(in *scaling.Input) { in.Max = 4 }),
			want: want{Desired: 4, Create: 4},
		},
		{
			name: "busy runners beyond max ask for nothing more",
			in:   with(pool(2, busy("b1"), busy("b2"), busy("b3")), func(in *scaling.Input) { in.Max = 3 }),
			want: want{Desired: 3},
		},
		{
			name: "a pool with max 0 creates nothing",
			in:   with(pool(2), func(in *scaling.Input) { in.Max = 0 }),
			want: want{Desired: 0},
		},
	})
}

func TestQueuePolicyAddsWaitingSteps(t *testing.T) {
	queue := func(queued, idleRunners int, runners ...scaling.Runner) scaling.Input {
		in := pool(idleRunners, runners...)
		in.Policy = scaling.Queue
		in.Queued = queued
		return in
	}
	runDecideCases(t, []decideCase{
		{
			name: "no steps waiting keeps only the idle buffer",
			in:   queue(0, 1, busy("b1")),
			want: want{Desired: 2, Create: 1},
		},
		{
			name: "every waiting step asks for a runner on top of busy and idle",
			in:   queue(5, 1, busy("b1"), busy("b2")),
			want: want{Desired: 8, Create: 6},
		},
		{
			name: "waiting steps already covered by starting runners create nothing",
			in:   queue(2, 0, busy("b1"), starting("s1"), starting("s2")),
			want: want{Desired: 3},
		},
		{
			name: "a long queue is capped by max",
			in:   with(queue(50, 0), func(in *scaling.Input) { in.Max = 6 }),
			want: want{Desired: 6, Create: 6},
		},
		{
			name: "an empty queue with a minimum still keeps the minimum",
			in:   with(queue(0, 0), func(in *scaling.Input) { in.Min = 2 }),
			want: want{Desired: 2, Create: 2},
		},
	})
}

// A saturated IdleBuffer pool reads the queue (ReadsQueue); what it reads counts as under the
// Queue policy, so a burst gets runners for all its steps at once.
func TestASaturatedIdleBufferPoolCountsTheStepsItRead(t *testing.T) {
	idleBuffer := func(queued int, runners ...scaling.Runner) scaling.Input {
		in := pool(1, runners...)
		in.Min, in.Max, in.Queued = 1, 10, queued
		return in
	}
	runDecideCases(t, []decideCase{
		{
			name: "the burst seen at the first poll: one runner busy, 19 waiting, up to max at once",
			in:   idleBuffer(19, busy("b1")),
			want: want{Desired: 10, Create: 9},
		},
		{
			name: "without the queue the same pool grows by its buffer only",
			in:   idleBuffer(0, busy("b1")),
			want: want{Desired: 2, Create: 1},
		},
		{
			name: "a few waiting steps: one runner each, and the buffer",
			in:   idleBuffer(2, busy("b1"), busy("b2"), busy("b3")),
			want: want{Desired: 6, Create: 3},
		},
	})
}

// The defaults of runners-autoscaler's percentageRunnersIdle strategy.
var autoscalerDefaults = scaling.PercentageIdleParams{
	ScaleUpThreshold: 0.5, ScaleDownThreshold: 0.2, ScaleUpMultiplier: 1.5, ScaleDownMultiplier: 0.5,
}

func TestPercentageIdleFollowsRunnersAutoscalerThresholdsAndMultipliers(t *testing.T) {
	n := func(prefix string, count int, mk func(string) scaling.Runner) []scaling.Runner {
		var out []scaling.Runner
		for i := range count {
			out = append(out, mk(fmt.Sprintf("%s%d", prefix, i)))
		}
		return out
	}
	idleHour := func(name string) scaling.Runner { return idle(name, time.Hour) }
	percentage := func(p scaling.PercentageIdleParams, groups ...[]scaling.Runner) scaling.Input {
		in := pool(0, slices.Concat(groups...)...)
		in.Policy = scaling.PercentageIdle
		in.Percentage = p
		return in
	}
	tests := []struct {
		name    string
		in      scaling.Input
		desired int
	}{
		{"an empty pool starts with one runner", percentage(autoscalerDefaults), 1},
		{"an empty pool starts with its minimum", with(percentage(autoscalerDefaults), func(in *scaling.Input) { in.Min = 3 }), 3},
		{"busy share above the scale-up threshold multiplies the runners (3 of 4 busy: 4*1.5)",
			percentage(autoscalerDefaults, n("b", 3, busy), n("i", 1, idleHour)), 6},
		{"the scale-up result is rounded up (1 of 1 busy: 1*1.5 -> 2)",
			percentage(autoscalerDefaults, n("b", 1, busy)), 2},
		{"a busy share exactly at the scale-up threshold does not scale up (2 of 4 busy)",
			percentage(autoscalerDefaults, n("b", 2, busy), n("i", 2, idleHour)), 4},
		{"between the thresholds the pool keeps its size (2 of 5 busy)",
			percentage(autoscalerDefaults, n("b", 2, busy), n("i", 3, idleHour)), 5},
		{"a busy share exactly at the scale-down threshold does not scale down (1 of 5 busy)",
			percentage(autoscalerDefaults, n("b", 1, busy), n("i", 4, idleHour)), 5},
		{"busy share under the scale-down threshold shrinks by the multiplier (1 of 10 busy: 10*0.5)",
			percentage(autoscalerDefaults, n("b", 1, busy), n("i", 9, idleHour)), 5},
		{"the scale-down result is rounded up (0 of 3 busy: 3*0.5 -> 2)",
			percentage(autoscalerDefaults, n("i", 3, idleHour)), 2},
		{"a single idle runner stays: the pool needs one to notice demand",
			percentage(autoscalerDefaults, n("i", 1, idleHour)), 1},
		{"starting runners lower the busy share so pending pods do not compound the scale-up (2 busy, 2 starting)",
			percentage(autoscalerDefaults, n("b", 2, busy), n("s", 2, starting)), 4},
		{"starting runners are multiplied too (2 busy, 1 starting: 3*1.5 -> 5)",
			percentage(autoscalerDefaults, n("b", 2, busy), n("s", 1, starting)), 5},
		{"draining runners are not part of the count (2 busy, 2 draining: 2*1.5)",
			percentage(autoscalerDefaults, n("b", 2, busy), n("d", 2, disabledIdle)), 3},
		{"the scale-up is capped by max",
			with(percentage(autoscalerDefaults, n("b", 8, busy)), func(in *scaling.Input) { in.Max = 10 }), 10},
		{"the scale-down stops at min",
			with(percentage(autoscalerDefaults, n("i", 10, idleHour)), func(in *scaling.Input) { in.Min = 7 }), 7},
		{"the scale-down never goes under the busy runners",
			percentage(scaling.PercentageIdleParams{ScaleUpThreshold: 0.9, ScaleDownThreshold: 0.5, ScaleUpMultiplier: 2, ScaleDownMultiplier: 0.1},
				n("b", 4, busy), n("i", 6, idleHour)), 4},
		{"a scale-up multiplier of 1 never scales up",
			percentage(scaling.PercentageIdleParams{ScaleUpThreshold: 0.5, ScaleDownThreshold: 0.2, ScaleUpMultiplier: 1, ScaleDownMultiplier: 0.5},
				n("b", 4, busy)), 4},
		{"a scale-down multiplier of 1 never scales down",
			percentage(scaling.PercentageIdleParams{ScaleUpThreshold: 0.5, ScaleDownThreshold: 0.2, ScaleUpMultiplier: 1.5, ScaleDownMultiplier: 1},
				n("i", 4, idleHour)), 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := scaling.Decide(tc.in); d.Desired != tc.desired {
				t.Errorf("desired = %d, want %d (counts %+v)", d.Desired, tc.desired, d.Counts)
			}
		})
	}
}

func TestScaleDown(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name: "scale down only idle runners past scaleDownDelay, oldest first",
			in: pool(0,
				idle("young", 5*time.Minute), idle("older", 15*time.Minute), busy("b1"), idle("oldest", 20*time.Minute)),
			want: want{Desired: 1, Drain: []string{"oldest", "older"}},
		},
		{
			name: "scale down stops at the desired count, keeping the most recently idle",
			in:   pool(1, idle("a", 30*time.Minute), idle("b", 40*time.Minute), idle("c", 20*time.Minute)),
			want: want{Desired: 1, Drain: []string{"b", "a"}},
		},
		{
			name: "runners idle for exactly scaleDownDelay may go",
			in:   pool(0, idle("i1", 10*time.Minute)),
			want: want{Desired: 0, Drain: []string{"i1"}},
		},
		{
			name: "no idle runner is old enough: nothing is drained yet",
			in:   pool(0, idle("i1", 9*time.Minute), idle("i2", time.Minute)),
			want: want{Desired: 0},
		},
		{
			name: "a busy runner is never drained",
			in:   with(pool(0, busy("b1"), busy("b2")), func(in *scaling.Input) { in.ScaleDownDelay = 0 }),
			want: want{Desired: 2},
		},
		{
			name: "a busy runner is never drained, even when the pool wants fewer runners than are busy",
			in: with(pool(0, busy("b1"), busy("b2"), busy("b3"), idle("i1", time.Hour)), func(in *scaling.Input) {
				in.Policy = scaling.PercentageIdle
				in.Percentage = scaling.PercentageIdleParams{ScaleUpThreshold: 1, ScaleDownThreshold: 0.9, ScaleUpMultiplier: 2, ScaleDownMultiplier: 0.25}
			}),
			want: want{Desired: 3, Drain: []string{"i1"}},
		},
		{
			name: "a starting runner is not drained to scale down: it may be about to take a step",
			in:   pool(0, starting("s1"), pendingTooLong("s2")),
			want: want{Desired: 0},
		},
		{
			name: "runners already draining are not drained again",
			in:   pool(0, drainRequested(idle("i1", time.Hour)), disabledIdle("d1"), idle("i2", time.Hour)),
			want: want{Desired: 0, Drain: []string{"i2"}},
		},
		{
			name: "equal idle times drain in name order so decisions are stable",
			in:   pool(1, idle("b", time.Hour), idle("c", time.Hour), idle("a", time.Hour)),
			want: want{Desired: 1, Drain: []string{"a", "b"}},
		},
	})
}

func TestLoweringMax(t *testing.T) {
	lowered := func(max int, runners ...scaling.Runner) scaling.Input {
		return with(pool(1, runners...), func(in *scaling.Input) { in.Max = max })
	}
	// Two busy, one young idle, two starting: five runners of capacity.
	population := []scaling.Runner{busy("b1"), starting("s1"), idle("i1", time.Minute), busy("b2"), starting("s2")}
	runDecideCases(t, []decideCase{
		{
			name: "lowering max drains idle first then starting then busy (max 4)",
			in:   lowered(4, population...),
			want: want{Desired: 3, Drain: []string{"i1"}},
		},
		{
			name: "lowering max drains idle first then starting then busy (max 2)",
			in:   lowered(2, population...),
			want: want{Desired: 2, Drain: []string{"i1", "s1", "s2"}},
		},
		{
			name: "lowering max drains idle first then starting then busy (max 1)",
			in:   lowered(1, population...),
			want: want{Desired: 1, Drain: []string{"i1", "s1", "s2", "b1"}},
		},
		{
			name: "max 0 drains every runner, busy ones too: they finish their step first",
			in:   lowered(0, population...),
			want: want{Desired: 0, Drain: []string{"i1", "s1", "s2", "b1", "b2"}},
		},
		{
			name: "above max, idle runners go regardless of scaleDownDelay but only down to max",
			in:   lowered(2, idle("i1", time.Minute), idle("i2", time.Minute), idle("i3", time.Minute)),
			want: want{Desired: 1, Drain: []string{"i1"}},
		},
		{
			name: "above max, idle runners past scaleDownDelay go before younger ones",
			in:   lowered(2, idle("young", time.Minute), idle("old", time.Hour), busy("b1"), busy("b2")),
			want: want{Desired: 2, Drain: []string{"old", "young"}},
		},
		{
			name: "runners already draining count towards going under max",
			in:   lowered(2, disabledBusy("d1"), busy("b1"), busy("b2"), starting("s1")),
			want: want{Desired: 2, Drain: []string{"s1"}},
		},
	})
}

func TestUndrain(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name: "a drained runner that picked a step in the race is un-drained before anything new is created",
			in:   pool(1, disabledBusy("d1")),
			want: want{Desired: 1, Undrain: []string{"d1"}},
		},
		{
			name: "busy drained runners are un-drained before idle ones",
			in:   pool(1, disabledIdle("d-idle"), busy("b1"), disabledBusy("d-busy")),
			want: want{Desired: 2, Undrain: []string{"d-busy"}},
		},
		{
			name: "a drain not yet carried out is cancelled rather than creating a runner",
			in:   pool(2, drainRequested(idle("i1", time.Hour)), busy("b1")),
			want: want{Desired: 3, Create: 1, Undrain: []string{"i1"}},
		},
		{
			name: "every drained runner is un-drained before the rest is created",
			in:   pool(4, disabledIdle("d1"), disabledBusy("d2")),
			want: want{Desired: 4, Create: 2, Undrain: []string{"d2", "d1"}},
		},
		{
			name: "a spent ephemeral runner is never un-drained: its pod is not clean, a new runner is created instead",
			in:   pool(1, spent(drainRequested(idle("e1", time.Second)))),
			want: want{Desired: 1, Create: 1},
		},
		{
			name: "a Runner being deleted is never un-drained: a new runner is created instead",
			in:   pool(1, deleting("d1")),
			want: want{Desired: 1, Create: 1},
		},
		{
			name: "a stuck runner is never un-drained",
			in:   pool(1, drainRequested(stuck("x1"))),
			want: want{Desired: 1, Create: 1},
		},
		{
			name: "a pool that does not need them leaves drained runners draining",
			in:   pool(1, idle("i1", time.Minute), disabledBusy("d1"), disabledIdle("d2")),
			want: want{Desired: 1},
		},
	})
}

func TestStuckRunners(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name: "a stuck runner is replaced and is not capacity",
			in:   pool(1, busy("b1"), stuck("x1")),
			want: want{Desired: 2, Create: 1, Replace: []string{"x1"}},
		},
		{
			name: "stuck runners are replaced but the replacement waits until the total is below max",
			in:   with(pool(2, busy("b1"), stuck("x1"), stuck("x2")), func(in *scaling.Input) { in.Max = 3 }),
			want: want{Desired: 3, Create: 0, Replace: []string{"x1", "x2"}},
		},
		{
			name: "once a stuck runner is gone its replacement is created",
			in:   with(pool(2, busy("b1"), stuck("x2")), func(in *scaling.Input) { in.Max = 3 }),
			want: want{Desired: 3, Create: 1, Replace: []string{"x2"}},
		},
		{
			name: "a stuck runner already being removed is not replaced twice",
			in:   pool(0, drainRequested(stuck("x1"))),
			want: want{Desired: 0},
		},
		{
			name: "a stuck runner is replaced even when the pool wants no runners",
			in:   pool(0, stuck("x1")),
			want: want{Desired: 0, Replace: []string{"x1"}},
		},
	})
}

func TestNeverMoreRunnerObjectsThanMax(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name: "runners on their way out use up max until they are gone",
			in:   with(pool(3, busy("b1"), deleting("d1"), deleting("d2")), func(in *scaling.Input) { in.Max = 4 }),
			want: want{Desired: 4, Create: 1},
		},
		{
			name: "a pool at max with draining and stuck runners creates nothing",
			in: with(pool(3, busy("b1"), drainRequested(busy("d1")), stuck("x1")), func(in *scaling.Input) {
				in.Max = 3
			}),
			want: want{Desired: 3, Undrain: []string{"d1"}, Replace: []string{"x1"}},
		},
		{
			name: "creates stop at max",
			in:   with(pool(5, busy("b1"), busy("b2")), func(in *scaling.Input) { in.Max = 4 }),
			want: want{Desired: 4, Create: 2},
		},
	})
}

func TestRecycle(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name: "recycle one idle runner at a time, the longest idle first",
			in: pool(3, recycle(idle("r-young", time.Minute)), busy("b1"),
				recycle(idle("r-old", time.Hour)), recycle(idle("r-mid", 30*time.Minute))),
			want: want{Desired: 4, Drain: []string{"r-old"}},
		},
		{
			name: "a busy runner that asked to be recycled waits until it is idle",
			in:   pool(1, recycle(busy("b1")), idle("i1", time.Minute)),
			want: want{Desired: 2},
		},
		{
			name: "a recycled runner leaving makes room for its replacement instead of being un-drained",
			in:   pool(2, recycle(drainRequested(idle("r1", time.Hour))), recycle(idle("r2", time.Hour)), busy("b1")),
			want: want{Desired: 3, Create: 1},
		},
		{
			name: "no other runner is recycled while a recycled runner is still draining",
			in: pool(2, recycle(disabledIdle("r1")), recycle(idle("r2", time.Hour)), busy("b1"),
				starting("replacement")),
			want: want{Desired: 3},
		},
		{
			name: "at max the replacement waits for the recycled runner to be gone and nothing else is recycled",
			in: with(pool(2, recycle(disabledIdle("r1")), recycle(idle("r2", time.Hour)), busy("b1")), func(in *scaling.Input) {
				in.Max = 3
			}),
			want: want{Desired: 3},
		},
		{
			name: "nothing is recycled while the pool is short of runners it cannot create",
			in: with(pool(2, recycle(idle("r1", time.Hour)), stuck("x1"), busy("b1")), func(in *scaling.Input) {
				in.Max = 3
			}),
			want: want{Desired: 3, Replace: []string{"x1"}},
		},
		{
			name: "scale down wins over recycling in the same decision",
			in:   pool(0, recycle(idle("r1", time.Minute)), idle("i1", time.Hour)),
			want: want{Desired: 0, Drain: []string{"i1"}},
		},
		{
			name: "creating wins over recycling in the same decision",
			in:   pool(3, recycle(idle("r1", time.Hour))),
			want: want{Desired: 3, Create: 2},
		},
	})
}

func TestCountClassifiesRunners(t *testing.T) {
	got := scaling.Count([]scaling.Runner{
		busy("b1"), busy("b2"), idle("i1", time.Minute), starting("s1"), pendingTooLong("s2"),
		stuck("x1"), disabledBusy("d1"), drainRequested(idle("d2", time.Hour)), drainRequested(stuck("d3")),
	})
	want := scaling.Counts{Busy: 2, Idle: 1, Starting: 2, PendingTooLong: 1, Stuck: 1, Draining: 3}
	if got != want {
		t.Errorf("Count = %+v, want %+v", got, want)
	}
	if got.Capacity() != 5 {
		t.Errorf("Capacity = %d, want busy + idle + starting = 5", got.Capacity())
	}
}

// TestDecisionInvariants checks, over many generated pools, the promises every decision keeps
// whatever the policy and population.
func TestDecisionInvariants(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	policies := []scaling.Policy{scaling.IdleBuffer, scaling.Queue, scaling.PercentageIdle}
	for i := range 5000 {
		in := randomInput(rng, policies[i%len(policies)])
		d := scaling.Decide(in)
		byName := map[string]scaling.Runner{}
		for _, r := range in.Runners {
			byName[r.Name] = r
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s\ninput: %+v\ndecision: %+v", fmt.Sprintf(format, args...), in, d)
		}
		if d.Desired < in.Min || d.Desired > in.Max {
			fail("desired %d outside [min %d, max %d]", d.Desired, in.Min, in.Max)
		}
		if len(in.Runners)+d.Create > max(in.Max, len(in.Runners)) {
			fail("never more Runner objects than max: %d runners + %d creates > max %d", len(in.Runners), d.Create, in.Max)
		}
		// A spent ephemeral runner goes whatever else is decided; the rules below are about the
		// drains that size the pool.
		sizing := slices.DeleteFunc(slices.Clone(d.Drain), func(name string) bool { return byName[name].Spent })
		if d.Create > 0 && len(sizing) > 0 {
			fail("a decision never creates and drains at once")
		}
		if (d.Create > 0 || len(d.Undrain) > 0) && d.Counts.Capacity()+d.Create+len(d.Undrain) > d.Desired {
			fail("creates and un-drains never overshoot desired")
		}
		if len(sizing) > 0 && len(d.Undrain) > 0 {
			fail("a decision never drains and un-drains at once")
		}
		if d.Counts.Capacity() <= d.Desired && len(sizing) > 1 {
			fail("recycling drains one runner at a time, drained %v", d.Drain)
		}
		seen := map[string]bool{}
		for _, name := range slices.Concat(d.Drain, d.Undrain, d.Replace) {
			if seen[name] {
				fail("runner %s appears twice", name)
			}
			seen[name] = true
		}
		above := d.Counts.Capacity() - in.Max
		for _, name := range d.Drain {
			r := byName[name]
			if r.Drain || r.State == scaling.Draining || r.State == scaling.Stuck {
				fail("drained %s, which is already leaving or stuck", name)
			}
			if r.State == scaling.Busy && above <= 0 {
				fail("a busy runner is never drained while the pool is within max (drained %s)", name)
			}
			if r.State == scaling.Starting && above <= 0 && !r.Spent {
				fail("a starting runner is only drained above max, or spent (drained %s)", name)
			}
			if r.State == scaling.Idle && above <= 0 && !r.Recycle && !r.Spent && in.Now.Sub(r.IdleSince) < in.ScaleDownDelay {
				fail("within max only idle runners past scaleDownDelay are drained (drained %s)", name)
			}
		}
		if above > 0 && len(d.Drain) < above {
			fail("above max by %d but only %d drained", above, len(d.Drain))
		}
		for _, name := range d.Undrain {
			if r := byName[name]; !r.Drain || r.State == scaling.Stuck || r.Recycle || r.Spent || r.Deleting {
				fail("un-drained %s, which was not drained, is stuck, is being recycled, has run its one step or is being deleted", name)
			}
		}
		for _, name := range d.Replace {
			if r := byName[name]; r.State != scaling.Stuck || r.Drain {
				fail("replaced %s, which is not a stuck runner", name)
			}
		}
	}
}

func randomInput(rng *rand.Rand, policy scaling.Policy) scaling.Input {
	maxRunners := rng.Intn(8)
	in := scaling.Input{
		Policy:         policy,
		Max:            maxRunners,
		Min:            rng.Intn(maxRunners + 1),
		IdleRunners:    rng.Intn(4),
		Queued:         rng.Intn(6),
		ScaleDownDelay: time.Duration(rng.Intn(20)) * time.Minute,
		Now:            now,
		Percentage:     autoscalerDefaults,
	}
	for i := range rng.Intn(12) {
		r := scaling.Runner{
			Name:      fmt.Sprintf("r%d", i),
			State:     scaling.State(rng.Intn(5)),
			IdleSince: now.Add(-time.Duration(rng.Intn(30)) * time.Minute),
			Recycle:   rng.Intn(4) == 0,
			Spent:     rng.Intn(6) == 0,
		}
		r.Drain = rng.Intn(5) == 0 || (r.State == scaling.Draining && rng.Intn(3) > 0)
		r.Busy = r.State == scaling.Busy || (r.State == scaling.Draining && rng.Intn(2) == 0)
		r.PendingTooLong = r.State == scaling.Starting && rng.Intn(3) == 0
		if r.State == scaling.Draining && rng.Intn(3) == 0 {
			r.Drain, r.Deleting = true, true
		}
		in.Runners = append(in.Runners, r)
	}
	return in
}

func spent(r scaling.Runner) scaling.Runner {
	r.Spent = true
	return r
}

func TestEphemeralRunners(t *testing.T) {
	runDecideCases(t, []decideCase{
		{
			name: "an ephemeral runner that ran its step goes at once, even inside scaleDownDelay",
			in:   pool(1, spent(idle("e1", time.Second)), idle("i1", time.Second)),
			want: want{Desired: 1, Drain: []string{"e1"}},
		},
		{
			name: "a spent runner is not capacity, so its replacement is created in the same decision",
			in:   pool(1, spent(idle("e1", time.Second))),
			want: want{Desired: 1, Create: 1, Drain: []string{"e1"}},
		},
		{
			name: "a spent runner still running its step is busy and stays",
			in:   pool(1, spent(busy("e1"))),
			want: want{Desired: 2, Create: 1},
		},
		{
			name: "a spent runner that was disabled at its step (no longer ONLINE, so not idle) goes once the step ends",
			in:   pool(1, spent(scaling.Runner{Name: "e1", State: scaling.Starting, IdleSince: now})),
			want: want{Desired: 1, Create: 1, Drain: []string{"e1"}},
		},
		{
			name: "at max the replacement of a spent runner waits until it is gone",
			in:   with(pool(1, spent(idle("e1", time.Second)), busy("b1")), func(in *scaling.Input) { in.Max = 2 }),
			want: want{Desired: 2, Drain: []string{"e1"}},
		},
	})
}
