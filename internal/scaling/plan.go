package scaling

import (
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
)

// reasonNodeDraining is the Retiring condition's reason for a runner whose node is drained
// (controllers.ReasonNodeDraining, which this package cannot import).
const reasonNodeDraining = "NodeDraining"

// DefaultOfflineGrace is how long a runner that was ONLINE may stay OFFLINE or UNHEALTHY (an
// agent restart, a network blip) before it is replaced, unless the operator is told otherwise.
const DefaultOfflineGrace = 2 * time.Minute

// Reasons a runner is drained, undrained or replaced: the reason label of the scale-events
// metric and the words of the pool's events.
const (
	ReasonScaleDown         = "scale_down"
	ReasonRecycle           = "recycle"
	ReasonLabelsChanged     = "labels_changed"
	ReasonEphemeralStepDone = "ephemeral_step_done"
	ReasonNodeDrain         = "node_drain"
	ReasonNeededAgain       = "needed_again"
	ReasonFailedToStart     = "failed_to_start"
)

// Observation is everything the pool's decision depends on, as the reconciler observed it.
type Observation struct {
	Pool    *v1alpha1.RunnerPool
	Runners []v1alpha1.Runner
	// Snapshot is the latest runner list of the pool's scope. It wins over a Runner's status,
	// which may lag one reconcile.
	Snapshot *runnerlist.Snapshot
	// Unseen names Runners the pool created that its cache does not show yet: they count as
	// starting (and as replicas), so a reconcile right after a create never creates too many.
	Unseen []string
	// Queued is the number of steps waiting for this pool, when the queue was read.
	Queued int
	// TemplateHash is the hash of the pod the pool's runners should run.
	TemplateHash string
	// Schedule, when set, is what the pool's schedules give it now (EvaluateSchedules): its
	// minRunners and idleRunners replace the spec's.
	Schedule *Schedule
	// OfflineGrace is DefaultOfflineGrace when zero.
	OfflineGrace time.Duration
	Now          time.Time
}

// Action is what the plan does with one runner.
type Action string

const (
	Keep    Action = "Keep"
	Drain   Action = "Drain"
	Undrain Action = "Undrain"
	Replace Action = "Replace"
)

// RunnerPlan is the plan for one runner, and why.
type RunnerPlan struct {
	// State is how the runner counts.
	State  State
	Action Action
	// Reason says why a runner is drained, undrained or replaced (the Reason constants).
	Reason string
	// BitbucketLabels are the labels Bitbucket shows for a runner drained because they were
	// changed there (ReasonLabelsChanged), for the warning that tells people.
	BitbucketLabels []string
}

// Plan is the pool's decision: what to create, what happens to each runner, and the status.
type Plan struct {
	Decision
	// Runners is the plan of every runner by name, unseen ones included.
	Runners map[string]RunnerPlan
	Summary Summary
}

// Summary is the pool's population as its status shows it.
type Summary struct {
	Counts
	// Replicas counts Runner objects; Ready the ONLINE runners (busy or idle); Starting the
	// runners not ONLINE yet, stuck ones included.
	Replicas, Ready, Starting int
}

// PlanPool decides for one pool: it classifies each runner (starting, idle, busy, draining or
// stuck, with the stuck and pending timeouts and the offline grace), marks the runners due for
// recycling (maxAge, maxSteps, a changed pod template or label set, labels changed in
// Bitbucket) and spent ephemeral ones, applies the pool's policy (Decide) and names the reason
// of every drain, undrain and replacement. It is pure: the reconciler observes, calls it and
// carries out the result.
func PlanPool(o Observation) Plan {
	grace := o.OfflineGrace
	if grace <= 0 {
		grace = DefaultOfflineGrace
	}
	in := decisionInput(o.Pool, o.Runners, o.Snapshot, o.Now, o.TemplateHash, grace)
	if o.Schedule != nil {
		in.Min, in.IdleRunners = min(int(o.Schedule.MinRunners), in.Max), int(o.Schedule.IdleRunners)
	}
	for _, name := range o.Unseen {
		in.Runners = append(in.Runners, Runner{Name: name, State: Starting, IdleSince: o.Now})
	}
	in.Queued = o.Queued
	d := Decide(in)

	p := Plan{Decision: d, Runners: make(map[string]RunnerPlan, len(in.Runners)), Summary: summarize(d.Counts, len(o.Runners)+len(o.Unseen))}
	for _, v := range in.Runners {
		p.Runners[v.Name] = RunnerPlan{State: v.State, Action: Keep}
	}
	byName := make(map[string]*v1alpha1.Runner, len(o.Runners))
	for i := range o.Runners {
		byName[o.Runners[i].Name] = &o.Runners[i]
	}
	for _, name := range d.Drain {
		rp := p.Runners[name]
		rp.Action = Drain
		rp.Reason, rp.BitbucketLabels = relabelDrainReason(byName[name], o.Snapshot, drainReason(in, name))
		p.Runners[name] = rp
	}
	for _, name := range d.Undrain {
		rp := p.Runners[name]
		rp.Action, rp.Reason = Undrain, ReasonNeededAgain
		p.Runners[name] = rp
	}
	for _, name := range d.Replace {
		rp := p.Runners[name]
		rp.Action, rp.Reason = Replace, ReasonFailedToStart
		p.Runners[name] = rp
	}
	return p
}

// Summarize counts the pool's runners without a runner list: what the status shows while
// Bitbucket cannot be read, the credentials fail or the pool is being deleted.
func Summarize(pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner, now time.Time, offlineGrace time.Duration) Summary {
	if offlineGrace <= 0 {
		offlineGrace = DefaultOfflineGrace
	}
	views := make([]Runner, 0, len(runners))
	for i := range runners {
		views = append(views, runnerView(pool, &runners[i], nil, now, offlineGrace))
	}
	return summarize(Count(views), len(runners))
}

// Created adds n Runners created on the plan's decision: they exist and they start.
func (s Summary) Created(n int) Summary {
	s.Replicas += n
	s.Starting += n
	s.Counts.Starting += n
	return s
}

func summarize(c Counts, replicas int) Summary {
	return Summary{Counts: c, Replicas: replicas, Ready: c.Busy + c.Idle, Starting: c.Starting + c.Stuck}
}

// relabelDrainReason names the recycling of a runner relabelled in Bitbucket for what it is,
// with the labels Bitbucket shows; any other reason passes.
func relabelDrainReason(runner *v1alpha1.Runner, snap *runnerlist.Snapshot, reason string) (string, []string) {
	if reason != ReasonRecycle || runner == nil || runner.Spec.Drain {
		return reason, nil
	}
	labels, changed := labelsChangedInBitbucket(runner, snap)
	if !changed {
		return reason, nil
	}
	return ReasonLabelsChanged, labels
}
