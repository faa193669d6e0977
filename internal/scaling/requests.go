package scaling

import (
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// PollRequested is the time in the pool's poll-requested annotation, zero if none or if it is
// not a time. The webhook receiver writes it; a user may too, with kubectl annotate.
func PollRequested(pool *v1alpha1.RunnerPool) time.Time {
	t, err := time.Parse(time.RFC3339Nano, pool.Annotations[v1alpha1.AnnotationPollRequested])
	if err != nil {
		return time.Time{}
	}
	return t
}

// ReadsQueue reports whether the pool reads the step queue on this reconcile, given how its
// runners count now (c: the plan's counts, which do not depend on the queue). The queue is read
// when it can change the decision, and only then, since a read costs at least one request per
// repository from the hourly budget:
//
//   - Under the Queue policy, at every poll.
//   - Under IdleBuffer, while the pool is saturated (Saturated) and its polls keep their pace: a
//     burst of steps then gets runners for all of them at the next poll, instead of one more
//     runner per poll as each new runner takes a step. A pool with an idle runner, or a runner
//     on its way, reads nothing: its idle poll costs what it did. While polls are stretched for a
//     low budget (budgetLow), the pool grows with its runners alone.
//   - Under the other policies, while a webhook-requested poll is recent, so a pipeline that
//     just started gets runners for all its waiting steps at once.
func ReadsQueue(pool *v1alpha1.RunnerPool, now time.Time, c Counts, budgetLow bool) bool {
	switch pool.Spec.Scaling.Policy {
	case v1alpha1.ScalingPolicyQueue:
		return true
	case v1alpha1.ScalingPolicyIdleBuffer, "":
		if !budgetLow && Saturated(pool, c) {
			return true
		}
	}
	requested := PollRequested(pool)
	return !requested.IsZero() && now.Sub(requested) < 2*pool.Spec.Scaling.PollInterval.Duration+time.Minute
}

// Saturated reports an IdleBuffer pool whose every runner is busy, with none idle or on its way,
// that could still grow for waiting steps: its busy runners plus its idle buffer are below its
// maximum. Steps may be waiting that its runners cannot show: the runner list shows only the
// steps runners took. Once busy runners and buffer reach the maximum, no count of waiting steps
// changes the pool's size (Desired clamps it), so reading the queue would buy nothing.
func Saturated(pool *v1alpha1.RunnerPool, c Counts) bool {
	return c.Busy > 0 && c.Idle == 0 && c.Starting == 0 &&
		c.Busy+int(pool.Spec.Scaling.IdleRunners) < int(pool.Spec.MaxRunners)
}
