package controllers

import (
	"sync"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// minStateFlipInterval is how soon after a runner was enabled it may be disabled again. A pool
// that keeps draining and un-draining the same runner (a wobbling count, or a bug) would
// otherwise send a PUT per reconcile: every one of them is a request of the credential's hourly
// budget, and a budget spent by a loop stops every drain of the credential for up to an hour.
// Only the disable waits: a runner enabled again is one a step is waiting for, and a disable
// costs nothing to put off. With the enable at once and the next disable this long after it, a
// loop still costs at most six PUTs a minute per runner.
const minStateFlipInterval = 20 * time.Second

// stateFlips remembers the last state sent for each runner, to space out opposite changes.
// The zero value is ready to use.
type stateFlips struct {
	mu   sync.Mutex
	last map[string]stateChange
}

type stateChange struct {
	status bitbucket.RunnerStatus
	at     time.Time
}

// wait is how long to hold back setting the runner to status: 0 unless it is a disable of a
// runner enabled less than minStateFlipInterval ago.
func (f *stateFlips) wait(uuid string, status bitbucket.RunnerStatus, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	last, ok := f.last[uuid]
	if !ok || last.status == status || status != bitbucket.RunnerStatusDisabled {
		return 0
	}
	return max(last.at.Add(minStateFlipInterval).Sub(now), 0)
}

// record notes a state change Bitbucket accepted, and forgets changes too old to matter so the
// map stays as small as the runners changing right now.
func (f *stateFlips) record(uuid string, status bitbucket.RunnerStatus, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		f.last = map[string]stateChange{}
	}
	for id, c := range f.last {
		if now.Sub(c.at) >= minStateFlipInterval {
			delete(f.last, id)
		}
	}
	f.last[uuid] = stateChange{status: status, at: now}
}
