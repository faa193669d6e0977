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

// ReadsQueue reports whether the pool reads the step queue on this reconcile: always under the
// Queue policy; under the others while a webhook-requested poll is recent, so a pipeline that
// just started gets runners for all its waiting steps at once instead of one per observation.
func ReadsQueue(pool *v1alpha1.RunnerPool, now time.Time) bool {
	if pool.Spec.Scaling.Policy == v1alpha1.ScalingPolicyQueue {
		return true
	}
	requested := PollRequested(pool)
	return !requested.IsZero() && now.Sub(requested) < 2*pool.Spec.Scaling.PollInterval.Duration+time.Minute
}
