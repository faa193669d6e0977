// Package scaling decides, as pure functions of an observation, how many runners a pool needs and
// which runners to create, drain, keep or replace, and why. It never talks to Kubernetes or
// Bitbucket: the RunnerPool reconciler observes (the pool, its Runners, the runner list, the step
// queue), calls PlanPool and carries out the plan.
//
// PlanPool turns Runners and the runner list into runner views (views.go: states, timeouts,
// recycling), Decide applies the policy to the views (decide.go), and the poll rules say how
// often and how freshly a pool looks (poll.go, requests.go).
package scaling

import (
	"math"
	"sort"
	"time"
)

// Policy is a scaling rule; the names match the RunnerPool API.
type Policy string

const (
	IdleBuffer     Policy = "IdleBuffer"
	PercentageIdle Policy = "PercentageIdle"
	Queue          Policy = "Queue"
)

// State is what a runner contributes to the pool.
type State int

const (
	// Starting: registered or registering, not ONLINE yet (pods Pending included). It counts
	// as capacity, so a pool never creates more runners while earlier ones are still coming up.
	Starting State = iota
	// Idle: ONLINE without a step.
	Idle
	// Busy: running a step. Never drained while the pool wants it, never deleted while busy.
	Busy
	// Draining: disabled, on its way out.
	Draining
	// Stuck: failed to start (image pull errors, crash loops, rejected pods, registration
	// refused). It does not count as capacity, so a broken runner never blocks the pool; the
	// pool replaces it.
	Stuck
)

var stateNames = [...]string{Starting: "Starting", Idle: "Idle", Busy: "Busy", Draining: "Draining", Stuck: "Stuck"}

// String names the state, for logs and test failures.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown state"
}

// Runner is one runner as the decision sees it.
type Runner struct {
	Name  string
	State State
	// IdleSince is when the runner last became idle (came ONLINE or finished a step).
	IdleSince time.Time
	// Drain is true when the pool has already asked the runner to drain.
	Drain bool
	// Deleting is true when the Runner is being deleted: its drain cannot be cancelled.
	Deleting bool
	// Busy is true when a draining runner is running a step.
	Busy bool
	// Recycle is true when the runner should be replaced once idle (maxAge, maxSteps, a
	// changed pod template).
	Recycle bool
	// Spent is true for an ephemeral runner that has run its one step, or a runner retired
	// because its node is drained. Once idle it goes at once, whatever the scale-down delay,
	// and it no longer counts as capacity.
	Spent bool
	// NodeDrain is true for a runner retired because its node is drained.
	NodeDrain bool
	// PendingTooLong is true for a starting runner whose pod has waited for a node longer than
	// the pending timeout. It stays capacity (creating more would only add Pending pods) and the
	// pool reports it.
	PendingTooLong bool
}

// PercentageIdleParams are the runners-autoscaler thresholds and multipliers.
type PercentageIdleParams struct {
	ScaleUpThreshold, ScaleDownThreshold, ScaleUpMultiplier, ScaleDownMultiplier float64
}

// Input is one observation of a pool and its settings.
type Input struct {
	Policy         Policy
	Min, Max       int
	IdleRunners    int
	Percentage     PercentageIdleParams
	Queued         int // steps waiting for a runner this pool could run, when the queue was read
	ScaleDownDelay time.Duration
	Now            time.Time
	Runners        []Runner
}

// Counts is the pool's population by state.
type Counts struct {
	Busy, Idle, Starting, Draining, Stuck int
	// PendingTooLong counts starting runners past the pending timeout (included in Starting).
	PendingTooLong int
}

// Capacity is the runners the pool can count on: busy, idle and starting ones.
func (c Counts) Capacity() int { return c.Busy + c.Idle + c.Starting }

// Decision is what the pool should do now.
type Decision struct {
	Counts  Counts
	Desired int
	// Create is how many new runners to create.
	Create int
	// Drain names runners to disable and remove, Undrain runners whose drain is cancelled,
	// Replace stuck runners to delete (they hold no step).
	Drain, Undrain, Replace []string
}

// Count classifies the runners.
func Count(runners []Runner) Counts {
	var c Counts
	for _, r := range runners {
		switch {
		case r.Drain || r.State == Draining || (r.Spent && r.State != Busy):
			c.Draining++
		case r.State == Busy:
			c.Busy++
		case r.State == Idle:
			c.Idle++
		case r.State == Stuck:
			c.Stuck++
		default:
			c.Starting++
			if r.PendingTooLong {
				c.PendingTooLong++
			}
		}
	}
	return c
}

// Desired is the number of runners the policy asks for, clamped to [Min, Max].
func Desired(in Input, c Counts) int {
	var want int
	switch in.Policy {
	case PercentageIdle:
		want = percentageIdle(in.Percentage, c)
	default:
		// IdleBuffer and Queue differ in when the queue is read (Queue: every poll; IdleBuffer:
		// only after a webhook announced a pipeline), not in how a known queue counts.
		want = c.Busy + in.Queued + in.IdleRunners
	}
	return clamp(want, in.Min, in.Max)
}

// percentageIdle follows runners-autoscaler: when the busy share of the runners is above the
// scale-up threshold, multiply the runner count; when it is below the scale-down threshold,
// shrink it by the scale-down multiplier. A share exactly at a threshold changes nothing, as in
// runners-autoscaler, so a migrated configuration scales at the same points. Starting runners
// count, which is what keeps this rule from overshooting while pods are Pending.
func percentageIdle(p PercentageIdleParams, c Counts) int {
	total := c.Capacity()
	if total == 0 {
		return 1
	}
	busyShare := float64(c.Busy) / float64(total)
	switch {
	case busyShare > p.ScaleUpThreshold && p.ScaleUpMultiplier > 1:
		return int(math.Ceil(float64(total) * p.ScaleUpMultiplier))
	case busyShare < p.ScaleDownThreshold && p.ScaleDownMultiplier < 1:
		return max(c.Busy, int(math.Ceil(float64(total)*p.ScaleDownMultiplier)))
	}
	return total
}

// Decide computes what to create and what to drain.
func Decide(in Input) Decision {
	c := Count(in.Runners)
	d := Decision{Counts: c, Desired: Desired(in, c)}

	for _, r := range in.Runners {
		switch {
		case r.Drain:
		case r.State == Stuck:
			d.Replace = append(d.Replace, r.Name)
		case r.Spent && (r.State == Idle || r.State == Starting):
			// Idle, or disabled by the Runner controller and so not ONLINE: either way done.
			d.Drain = append(d.Drain, r.Name)
		}
	}
	spent := len(d.Drain)

	capacity := c.Capacity()
	switch {
	case capacity < d.Desired:
		missing := d.Desired - capacity
		// Cancelling a drain is cheaper than a new runner; busy ones first, they are in the
		// race the drain lost. A runner drained to be recycled stays drained: cancelling it
		// would undo the recycling it was drained for, and the pool would drain the next one.
		// A spent ephemeral runner stays drained too: it would take a second step on a used pod,
		// and the next decision would drain it again (disable, enable, disable every poll).
		for _, r := range sorted(in.Runners, func(a, b Runner) bool { return a.Busy && !b.Busy }) {
			if missing == 0 {
				break
			}
			if r.Drain && r.State != Stuck && !r.Recycle && !r.Spent && !r.Deleting {
				d.Undrain = append(d.Undrain, r.Name)
				missing--
			}
		}
		// Every Runner object, draining and stuck ones included, is a Bitbucket runner: the
		// total never goes above max, so a replacement waits for the runner it replaces.
		d.Create = max(0, min(missing, in.Max-len(in.Runners)))
	case capacity > d.Desired:
		d.Drain = append(d.Drain, pickDrain(in, capacity-d.Desired)...)
	}
	// Recycle idle runners that asked for it, one at a time: only when the pool has what it
	// wants and no recycled runner is still on its way out, so recycling never leaves the pool
	// short by more than one runner, not even at max where the replacement waits for the
	// recycled runner to be gone.
	if len(d.Drain) == spent && d.Create == 0 && capacity >= d.Desired && !recycling(in.Runners) {
		for _, r := range oldestIdleFirst(in.Runners) {
			if r.Recycle && !r.Drain {
				d.Drain = append(d.Drain, r.Name)
				break
			}
		}
	}
	return d
}

// pickDrain chooses up to n runners to drain. Within the limits, only idle runners idle for at
// least the scale-down delay go, oldest idle first. Above max (max was lowered), idle runners go
// regardless of the delay, then starting ones, then busy ones, which finish their step first.
func pickDrain(in Input, n int) []string {
	var out []string
	take := func(r Runner) bool {
		if len(out) == n {
			return false
		}
		out = append(out, r.Name)
		return true
	}
	idle := oldestIdleFirst(in.Runners)
	for _, r := range idle {
		if r.Drain || in.Now.Sub(r.IdleSince) < in.ScaleDownDelay {
			continue
		}
		if !take(r) {
			return out
		}
	}
	over := Count(in.Runners).Capacity() - in.Max
	if over <= 0 {
		return out
	}
	n = max(len(out), over)
	chosen := map[string]bool{}
	for _, name := range out {
		chosen[name] = true
	}
	for _, state := range []State{Idle, Starting, Busy} {
		for _, r := range in.Runners {
			// A spent runner that is not busy is drained on its own account, not capacity.
			if r.State != state || r.Drain || chosen[r.Name] || (r.Spent && r.State != Busy) {
				continue
			}
			if !take(r) {
				return out
			}
			chosen[r.Name] = true
		}
	}
	return out
}

// recycling reports a runner drained to be recycled that is not gone yet.
func recycling(runners []Runner) bool {
	for _, r := range runners {
		if r.Drain && r.Recycle {
			return true
		}
	}
	return false
}

func oldestIdleFirst(runners []Runner) []Runner {
	var idle []Runner
	for _, r := range runners {
		if r.State == Idle && !r.Drain && !r.Spent {
			idle = append(idle, r)
		}
	}
	sort.SliceStable(idle, func(i, j int) bool {
		if !idle[i].IdleSince.Equal(idle[j].IdleSince) {
			return idle[i].IdleSince.Before(idle[j].IdleSince)
		}
		return idle[i].Name < idle[j].Name
	})
	return idle
}

func sorted(runners []Runner, less func(a, b Runner) bool) []Runner {
	out := append([]Runner(nil), runners...)
	sort.SliceStable(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out
}

func clamp(v, lo, hi int) int {
	return max(lo, min(v, hi))
}
