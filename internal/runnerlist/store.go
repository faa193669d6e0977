// Package runnerlist keeps the latest list of Bitbucket runners per scope, so that every pool and
// every runner of a scope share one list call per poll instead of each asking Bitbucket.
//
// Store holds the snapshots; Waker turns each new list into reconciles of exactly the Runners
// whose Bitbucket state it changed.
package runnerlist

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

// Lister lists the runners of a scope; *bitbucket.Client implements it.
type Lister interface {
	ListRunners(ctx context.Context, s bitbucket.Scope) ([]bitbucket.Runner, error)
}

// Key identifies a scope on one Bitbucket installation, and whose list it is. Every credential
// that has listed the scope itself sees the same runners there, so they share one list: the key
// of that list has no Credential. A credential that has not (yet) has lists of its own, keyed by
// a hash of it, so a pool with wrong credentials, or with credentials for another workspace,
// never reads what another pool's credentials listed (docs/adr/0021-tenant-isolation.md).
type Key struct {
	APIURL string
	Scope  bitbucket.Scope
	// Credential is the hash of the credential whose own list this is; empty for the list shared
	// by every credential proven on the scope.
	Credential string
}

func (k Key) String() string {
	s := fmt.Sprintf("%s %s", k.APIURL, k.Scope.Workspace)
	if k.Scope.Repository != "" {
		s += "/" + k.Scope.Repository
	}
	if k.Credential != "" {
		s += " credential " + k.Credential[:min(8, len(k.Credential))]
	}
	return s
}

// Shared is the key of the scope's list shared by proven credentials.
func (k Key) Shared() Key { return Key{APIURL: k.APIURL, Scope: k.Scope} }

// Snapshot is one observation of a scope. It is immutable once published; writers copy it.
type Snapshot struct {
	// At is when the list call started: anything that happened in Bitbucket before At is in it.
	At      time.Time
	runners map[string]bitbucket.Runner // by UUID
	byName  map[string]string           // name -> UUID; names we create are unique
}

// Runners returns the runners of the snapshot, in no particular order.
func (s *Snapshot) Runners() []bitbucket.Runner {
	if s == nil {
		return nil
	}
	out := make([]bitbucket.Runner, 0, len(s.runners))
	for _, r := range s.runners {
		out = append(out, r)
	}
	return out
}

// ByUUID returns the runner with that UUID.
func (s *Snapshot) ByUUID(uuid string) (bitbucket.Runner, bool) {
	if s == nil {
		return bitbucket.Runner{}, false
	}
	r, ok := s.runners[uuid]
	return r, ok
}

// ByName returns the runner with that name. Bitbucket allows duplicate names; the operator's
// names are unique, so for them the answer is the one runner.
func (s *Snapshot) ByName(name string) (bitbucket.Runner, bool) {
	if s == nil {
		return bitbucket.Runner{}, false
	}
	uuid, ok := s.byName[name]
	if !ok {
		return bitbucket.Runner{}, false
	}
	r, ok := s.runners[uuid]
	return r, ok
}

func newSnapshot(at time.Time, runners []bitbucket.Runner) *Snapshot {
	s := &Snapshot{At: at, runners: make(map[string]bitbucket.Runner, len(runners)), byName: make(map[string]string, len(runners))}
	for _, r := range runners {
		s.runners[r.UUID] = r
		s.byName[r.Name] = r.UUID
	}
	return s
}

func (s *Snapshot) with(change func(runners map[string]bitbucket.Runner)) *Snapshot {
	runners := make(map[string]bitbucket.Runner, len(s.runners)+1)
	for k, v := range s.runners {
		runners[k] = v
	}
	change(runners)
	list := make([]bitbucket.Runner, 0, len(runners))
	for _, r := range runners {
		list = append(list, r)
	}
	return newSnapshot(s.At, list)
}

type entry struct {
	snap     *Snapshot
	inflight *call
	// changes made by the operator itself, replayed onto lists that started before them so
	// that a slow list never hides a runner just created or resurrects one just deleted.
	changes []change
}

type change func(map[string]bitbucket.Runner)

type call struct {
	started time.Time
	done    chan struct{}
	snap    *Snapshot
	err     error
}

// Store holds the latest snapshot per scope and makes concurrent readers share one list call.
type Store struct {
	mu      sync.Mutex
	entries map[Key]*entry
	now     func() time.Time
	// OnRefresh, when set, is called after every successful list with the new snapshot.
	OnRefresh func(Key, *Snapshot)
}

// NewStore returns an empty store. now may be nil for the real clock.
func NewStore(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{entries: map[Key]*entry{}, now: now}
}

// Peek returns the latest snapshot of a scope without calling Bitbucket; nil if none.
func (s *Store) Peek(k Key) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[k]; e != nil {
		return e.snap
	}
	return nil
}

// Get returns a snapshot of the scope taken at or after notBefore, listing the runners only when
// the latest snapshot is older. Concurrent callers share one list call.
func (s *Store) Get(ctx context.Context, k Key, l Lister, notBefore time.Time) (*Snapshot, error) {
	for {
		s.mu.Lock()
		e := s.entries[k]
		if e == nil {
			e = &entry{}
			s.entries[k] = e
		}
		if e.snap != nil && !e.snap.At.Before(notBefore) {
			snap := e.snap
			s.mu.Unlock()
			return snap, nil
		}
		if c := e.inflight; c != nil {
			s.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if c.err != nil {
				return nil, c.err
			}
			if !c.started.Before(notBefore) {
				return c.snap, nil
			}
			continue // that list started too early for this caller; start another
		}
		c := &call{started: s.now(), done: make(chan struct{})}
		e.inflight = c
		s.mu.Unlock()

		s.list(ctx, k, l, e, c)
		if c.err != nil {
			return nil, c.err
		}
		return c.snap, nil
	}
}

// list runs one shared list call with the context of the caller that started it. Reconcile
// contexts end only when the manager stops, so a cancelled list fails every waiter only then.
func (s *Store) list(ctx context.Context, k Key, l Lister, e *entry, c *call) {
	var runners []bitbucket.Runner
	defer func() {
		// Runs on panic too, so waiters never hang on a call that will not finish.
		s.mu.Lock()
		e.inflight = nil
		changes := e.changes
		e.changes = nil
		if c.err == nil && runners == nil && recover() != nil {
			c.err = fmt.Errorf("list runners of %s: panic", k)
		}
		if c.err == nil {
			c.snap = newSnapshot(c.started, runners)
			for _, ch := range changes {
				c.snap = c.snap.with(ch)
			}
			if e.snap == nil || !e.snap.At.After(c.started) {
				e.snap = c.snap
			}
		}
		onRefresh := s.OnRefresh
		s.mu.Unlock()
		close(c.done)
		if c.err == nil && onRefresh != nil {
			onRefresh(k, c.snap)
		}
	}()
	var err error
	runners, err = l.ListRunners(ctx, k.Scope)
	if err != nil {
		c.err = fmt.Errorf("list runners of %s: %w", k, err)
	} else if runners == nil {
		runners = []bitbucket.Runner{}
	}
}

// Record puts a runner the operator just created or changed into the latest snapshot, so that
// readers see it before the next list (a create must never be repeated because a stale
// snapshot lacks it).
func (s *Store) Record(k Key, r bitbucket.Runner) {
	r.OAuthClient = nil // the snapshot never holds a runner's secret
	s.update(k, func(m map[string]bitbucket.Runner) { m[r.UUID] = r })
}

// Forget removes a runner the operator deleted from the latest snapshot.
func (s *Store) Forget(k Key, uuid string) {
	s.update(k, func(m map[string]bitbucket.Runner) { delete(m, uuid) })
}

// update applies one of the operator's own changes to every list of the scope, shared or a
// credential's own: what the operator did in Bitbucket is a fact about the scope, and a reader
// whose key changes (its credential just proved itself) must still see it.
func (s *Store) update(k Key, apply func(map[string]bitbucket.Runner)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries[k] == nil {
		s.entries[k] = &entry{}
	}
	for key, e := range s.entries {
		if key.Shared() != k.Shared() {
			continue
		}
		if e.inflight != nil {
			e.changes = append(e.changes, apply)
		}
		if e.snap != nil {
			e.snap = e.snap.with(apply)
		}
	}
}

// Drop forgets a credential's own list (one Bitbucket refused, or no pool uses any more), so
// that credentials that come and go leave nothing behind. The shared lists stay.
func (s *Store) Drop(k Key) {
	if k.Credential == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[k]; e != nil && e.inflight == nil {
		delete(s.entries, k)
	}
}
