package scaling

import (
	"slices"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// decisionInput turns the pool, its Runners and the Bitbucket snapshot into the pure input of
// the scaling decision. The snapshot wins over Runner status, which may lag one reconcile.
func decisionInput(pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner, snap *runnerlist.Snapshot, now time.Time, hash string, offlineGrace time.Duration) Input {
	in := Input{
		Policy:         Policy(pool.Spec.Scaling.Policy),
		Min:            int(pool.Spec.MinRunners),
		Max:            int(pool.Spec.MaxRunners),
		IdleRunners:    int(pool.Spec.Scaling.IdleRunners),
		ScaleDownDelay: pool.Spec.Scaling.ScaleDownDelay.Duration,
		Now:            now,
	}
	if p := pool.Spec.Scaling.PercentageIdle; p != nil {
		in.Percentage = PercentageIdleParams{
			ScaleUpThreshold: decimal(p.ScaleUpThreshold, 0.5), ScaleDownThreshold: decimal(p.ScaleDownThreshold, 0.2),
			ScaleUpMultiplier: decimal(p.ScaleUpMultiplier, 1.5), ScaleDownMultiplier: decimal(p.ScaleDownMultiplier, 0.5),
		}
	}
	for i := range runners {
		v := runnerView(pool, &runners[i], snap, now, offlineGrace)
		_, relabelled := labelsChangedInBitbucket(&runners[i], snap)
		v.Recycle = recycleReason(pool, &runners[i], hash, now) != "" || relabelled
		// Spent: an ephemeral runner seen with a step (by its status or the newer list), or a
		// runner the Runner controller retired (disabled at once: an ephemeral runner's step,
		// a drained node). Either is replaced and goes as soon as it is idle.
		v.Spent = pool.Spec.Runner.Ephemeral && (runners[i].Status.StepsStarted > 0 || v.State == Busy) ||
			meta.IsStatusConditionTrue(runners[i].Status.Conditions, v1alpha1.ConditionRetiring)
		v.NodeDrain = conditionReason(runners[i].Status.Conditions, v1alpha1.ConditionRetiring) == reasonNodeDraining
		in.Runners = append(in.Runners, v)
	}
	return in
}

// recycleReason says why a runner's pod should be replaced once idle, "" if it should not:
// fresh docker storage after maxAge or maxSteps (the weekly `docker system prune -af` of a
// hand-run runner), or a pool change that shapes pods differently.
func recycleReason(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, templateHash string, now time.Time) string {
	st, spec := runner.Status, pool.Spec.Runner
	switch {
	case st.PodStartTime != nil && spec.MaxAge.Duration > 0 && now.Sub(st.PodStartTime.Time) >= spec.MaxAge.Duration:
		return "maxAge"
	case spec.MaxSteps > 0 && st.StepsStarted >= spec.MaxSteps:
		return "maxSteps"
	case st.PodTemplateHash != "" && st.PodTemplateHash != templateHash:
		return "template changed"
	case len(runner.Spec.Labels) > 0 && !slices.Equal(runnerpod.SortedLabels(runnerpod.RunnerLabels(runner)), runnerpod.Labels(pool)):
		// Bitbucket has no call to change a registered runner's labels, so a pool whose labels
		// were edited gets runners registered with the new ones, one idle runner at a time.
		return "labels changed"
	}
	return ""
}

// runnerView is how the runner counts for the decision, from its Runner and, where it has the
// runner, the latest runner list.
func runnerView(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, snap *runnerlist.Snapshot, now time.Time, offlineGrace time.Duration) Runner {
	st := runner.Status
	v := Runner{Name: runner.Name, Drain: runner.Spec.Drain, State: Starting, IdleSince: runner.CreationTimestamp.Time}
	if st.OnlineTime != nil {
		v.IdleSince = st.OnlineTime.Time
	}
	if st.LastStepTime != nil && st.LastStepTime.After(v.IdleSince) {
		v.IdleSince = st.LastStepTime.Time
	}
	// A runner needed again is not drained again before a full scale-down delay: a count that
	// wobbles for one poll must not disable, enable and disable the same runner.
	if t, err := time.Parse(time.RFC3339Nano, runner.Annotations[v1alpha1.AnnotationDrainCancelled]); err == nil && t.After(v.IdleSince) {
		v.IdleSince = t
	}
	bbState, step := st.BitbucketState, st.Step
	var stateSince time.Time
	if bb, ok := snap.ByUUID(st.UUID); ok && st.UUID != "" {
		bbState, step, stateSince = string(bb.State.Status), bb.StepID(), bb.State.UpdatedOn
		if st.Step != "" && step == "" && snap.At.After(v.IdleSince) {
			// The step ended after the Runner's status last saw it: idle since this snapshot.
			v.IdleSince = snap.At
		}
	}
	startedAt := runner.CreationTimestamp.Time
	if st.PodStartTime != nil {
		startedAt = st.PodStartTime.Time
	}
	pendingTimeout := pool.Spec.Scaling.PendingTimeout.Duration
	switch {
	case !runner.DeletionTimestamp.IsZero() || runner.Spec.Drain:
		// A runner whose drain the pool cancelled is capacity again at once, even before the
		// Runner controller enables it, so the pool does not create one too many meanwhile.
		v.State = Draining
		v.Busy = step != ""
		if !runner.DeletionTimestamp.IsZero() {
			v.Drain, v.Deleting = true, true
		}
	case step != "":
		v.State = Busy
	case bbState == string(bitbucket.RunnerStatusOnline):
		v.State = Idle
	case st.Phase == v1alpha1.RunnerPhaseFailed && now.Sub(startedAt) > pendingTimeout:
		// Failing pods (image pulls, crash loops) are replaced, at most once per pending
		// timeout, so a broken image does not churn Bitbucket registrations.
		v.State = Stuck
	case st.OnlineTime != nil && (bbState == string(bitbucket.RunnerStatusOffline) || bbState == string(bitbucket.RunnerStatusUnhealthy)) &&
		!stateSince.IsZero() && now.Sub(stateSince) > offlineGrace:
		// Was connected, lost for longer than a restart takes: replace it.
		v.State = Stuck
	case st.OnlineTime == nil && conditionReason(st.Conditions, v1alpha1.ConditionPodReady) == runnerpod.ReasonPodRunning && now.Sub(startedAt) > pendingTimeout:
		// The pod runs but its agent never connected (UNREGISTERED): replace it. A runner that
		// did connect is judged by the offline grace above, not by the age of its pod.
		v.State = Stuck
	default:
		// A runner that came online with its pod had a node: it is not waiting for one.
		v.PendingTooLong = st.OnlineTime == nil && now.Sub(startedAt) > pendingTimeout
	}
	if v.State == Busy {
		v.Busy = true
	}
	return v
}

// drainReason names why the decision drains a runner, for events and metrics.
func drainReason(in Input, name string) string {
	for _, r := range in.Runners {
		if r.Name != name {
			continue
		}
		switch {
		case r.NodeDrain:
			return ReasonNodeDrain
		case r.Spent:
			return ReasonEphemeralStepDone
		case r.Recycle:
			return ReasonRecycle
		}
	}
	return ReasonScaleDown
}

// decimal is a PercentageIdle setting as a number: def when it is unset or not a number.
func decimal(d v1alpha1.Decimal, def float64) float64 {
	if d == "" {
		return def
	}
	v, err := strconv.ParseFloat(string(d), 64)
	if err != nil {
		return def
	}
	return v
}

// Runners renamed or relabelled in Bitbucket, behind the operator's back (the Bitbucket UI lets
// a person edit both; the runners API has no update the operator could undo it with).
//
// A rename changes nothing: a Runner knows its Bitbucket runner by UUID once registered (and,
// in the moment before the UUID is saved, by the UUID its Secret names), so a renamed runner
// keeps its Runner, is drained, unregistered and deleted by UUID like any other,
// and is never taken for an orphan (the pool's orphan removal skips every UUID a Runner records,
// whatever the name). Only a runner with the pool's marker and no Runner is removed as an orphan; a renamed
// runner that lost the marker and whose Runner is gone is left alone, because nothing proves it
// is still ours: a person who renamed it may have taken it over, and deleting someone's runner
// is worse than leaving a registration to remove by hand. (Deleting its Runner unregisters it by
// UUID, so this only happens when a Runner is removed without its finalizer.)
//
// A relabel does matter: Bitbucket hands a step to a runner that has all its runs-on labels, so
// a relabelled runner stops taking the pool's steps and may take another pool's. The pool treats
// it like a runner due for recycling: replaced once idle, one at a time, never while it runs a
// step; its drain disables it first, so a step it took in the meantime finishes.

// labelsChangedInBitbucket returns the labels Bitbucket shows for the runner when they are not
// the labels it was registered with. A runner not registered, not in the observation or listed
// without labels is taken as unchanged: only a label set seen to differ replaces a runner. The
// comparison is with the Runner's labels, not the pool's, so that it finds edits made in
// Bitbucket; it relies on Bitbucket keeping the labels a runner is created with as they were
// sent (as the runners API does), or every replacement would differ again.
func labelsChangedInBitbucket(runner *v1alpha1.Runner, snap *runnerlist.Snapshot) ([]string, bool) {
	if runner.Status.UUID == "" || len(runner.Spec.Labels) == 0 {
		return nil, false
	}
	bb, ok := snap.ByUUID(runner.Status.UUID)
	if !ok || len(bb.Labels) == 0 {
		return nil, false
	}
	have := runnerpod.SortedLabels(bb.Labels)
	want := runnerpod.SortedLabels(runnerpod.RunnerLabels(runner))
	if slices.Equal(have, want) {
		return nil, false
	}
	return have, true
}

// conditionReason is the reason of the condition of that type, "" without one.
func conditionReason(conds []metav1.Condition, condType string) string {
	if c := meta.FindStatusCondition(conds, condType); c != nil {
		return c.Reason
	}
	return ""
}
