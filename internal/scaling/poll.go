package scaling

import (
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// MaxPollStretch bounds how far a low budget stretches the poll interval.
const MaxPollStretch = 20

// PollInterval stretches a pool's poll interval when the Bitbucket request budget it shares
// with every pool on the same credential runs low. With a quarter of the hourly budget or more
// left, polls keep their pace; below that the interval grows as the remaining budget shrinks,
// up to MaxPollStretch times, so the budget lasts to the end of the window and the creates and
// deletes that matter (which have a reserve of their own in the client) are never starved.
func PollInterval(base time.Duration, remaining, limit int) time.Duration {
	if limit <= 0 || remaining >= limit/4 {
		return base
	}
	if remaining <= 0 {
		return base * MaxPollStretch
	}
	stretch := float64(limit) / 4 / float64(remaining)
	if stretch > MaxPollStretch {
		stretch = MaxPollStretch
	}
	return time.Duration(float64(base) * stretch)
}

// Budget is the part of a credential's request budget the poll interval depends on;
// *bitbucket.Budget implements it.
type Budget interface {
	Remaining() int
	Limit() int
}

// EffectivePoll is the poll interval a pool and its runners work at: the pool's own, stretched
// by PollInterval while the request budget of its credential runs low. It is the one rule for
// how old a runner list or a step-queue read may be; budget is nil when the client keeps none.
func EffectivePoll(pool *v1alpha1.RunnerPool, budget Budget) time.Duration {
	base := pool.Spec.Scaling.PollInterval.Duration
	if budget == nil {
		return base
	}
	return PollInterval(base, budget.Remaining(), budget.Limit())
}

// FreshnessCutoff is the oldest start a runner list or step-queue read may have to be used now:
// one effective poll ago, or the time a poll was requested (a webhook, a user's annotation) when
// that is later, so a requested poll always sees a list made after the request.
//
// A request from the future counts as now. Replicas stamp requests with their own clocks, and a
// clock a little ahead must not turn a webhook's wake into nothing; taking it as now reads afresh
// once, and the reads that follow within the poll share that read. Ignoring it instead, as the
// step-queue read once did, served the read from before the event the webhook announced.
func FreshnessCutoff(now time.Time, poll time.Duration, requested time.Time) time.Time {
	cutoff := now.Add(-poll)
	if requested.After(cutoff) {
		cutoff = requested
	}
	if cutoff.After(now) {
		cutoff = now
	}
	return cutoff
}

// WakeShare is the part of a credential's hourly request budget that requested polls (webhook
// wakes, a user's annotation) may spend: a requested poll reads Bitbucket before the pool's
// next poll only while more than this share of the budget is left.
const WakeShare = 2

// HonoursWake reports whether a requested poll may read Bitbucket ahead of the pool's own pace.
// While more than half of the credential's hourly budget is left it may; below that, wakes wait
// for the next poll. However many webhooks arrive, wakes then spend at most half the budget, and
// the polls that keep pools scaling (stretched only below a quarter, see PollInterval) keep the
// rest. budget is nil when the client keeps none.
func HonoursWake(budget Budget) bool {
	if budget == nil || budget.Limit() <= 0 {
		return true
	}
	return budget.Remaining() > budget.Limit()/WakeShare
}
