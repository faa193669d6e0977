package controllers

import (
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/credentials"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

// reconcileScope is what one reconcile of a pool, or of one of its runners, works from. It is
// worked out once at the start, so every phase of the reconcile agrees on the time, on how old an
// observation may be and on the pod template, instead of each phase working them out again.
type reconcileScope struct {
	// Now is the reconcile's present.
	Now time.Time
	// API is the pool's Bitbucket client; Key the runner list its scope shares.
	API credentials.BitbucketAPI
	Key runnerlist.Key
	// Poll is the effective poll interval (scaling.EffectivePoll).
	Poll time.Duration
	// NotBefore is the freshness cut-off (scaling.FreshnessCutoff): the oldest runner list and
	// step-queue read this reconcile uses.
	NotBefore time.Time
	// Snapshot is the runner list the reconcile decides on, once read.
	Snapshot *runnerlist.Snapshot

	pool         *v1alpha1.RunnerPool
	templateHash string
}

// newScope works out the scope of a reconcile of the pool at now. requested is the time a poll
// was requested, zero for none: the pool reconciler passes the pool's annotation; a runner's
// reconcile passes none, because a request asks the pool to look, and its runners follow the
// pool's list (the runner-list waker brings them when it shows a change).
func newScope(pool *v1alpha1.RunnerPool, api credentials.BitbucketAPI, key runnerlist.Key, now, requested time.Time) *reconcileScope {
	s := &reconcileScope{Now: now, API: api, Key: key, pool: pool}
	var budget scaling.Budget
	if b, ok := api.(interface{ Budget() *bitbucket.Budget }); ok && b.Budget() != nil {
		budget = b.Budget()
	}
	s.Poll = scaling.EffectivePoll(pool, budget)
	if !scaling.HonoursWake(budget) {
		// Half the hour's budget is spent: a flood of webhooks must not spend the rest.
		requested = time.Time{}
	}
	s.NotBefore = scaling.FreshnessCutoff(now, s.Poll, requested)
	return s
}

// TemplateHash is the hash of the pod template the pool's runners should run, worked out on
// first use.
func (s *reconcileScope) TemplateHash() string {
	if s.templateHash == "" {
		s.templateHash = runnerpod.TemplateHash(s.pool)
	}
	return s.templateHash
}
