package runnerlist_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
)

var (
	t0        = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	workspace = runnerlist.Key{APIURL: "http://127.0.0.1:1/2.0", Scope: bitbucket.Scope{Workspace: "{ws}"}}
)

// hangGuard only keeps a broken test from hanging; nothing waits for it in a passing run.
const hangGuard = 10 * time.Second

type listResult struct {
	runners []bitbucket.Runner
	err     error
}

// fakeLister stands in for the Bitbucket list call: every call blocks until the test releases
// it, so the test decides what is in flight when.
type fakeLister struct {
	calls   atomic.Int32
	started chan bitbucket.Scope
	results chan listResult
}

func newFakeLister() *fakeLister {
	return &fakeLister{started: make(chan bitbucket.Scope, 16), results: make(chan listResult)}
}

func (f *fakeLister) ListRunners(ctx context.Context, s bitbucket.Scope) ([]bitbucket.Runner, error) {
	f.calls.Add(1)
	f.started <- s
	select {
	case r := <-f.results:
		return r.runners, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// awaitList waits until a list call has started and returns its scope.
func (f *fakeLister) awaitList(t *testing.T) bitbucket.Scope {
	t.Helper()
	select {
	case s := <-f.started:
		return s
	case <-time.After(hangGuard):
		t.Fatal("no list call started")
		return bitbucket.Scope{}
	}
}

func (f *fakeLister) release(t *testing.T, runners ...bitbucket.Runner) {
	t.Helper()
	f.finish(t, listResult{runners: runners})
}

func (f *fakeLister) fail(t *testing.T, err error) {
	t.Helper()
	f.finish(t, listResult{err: err})
}

func (f *fakeLister) finish(t *testing.T, r listResult) {
	t.Helper()
	select {
	case f.results <- r:
	case <-time.After(hangGuard):
		t.Fatal("no list call to release")
	}
}

// waitingContext tells the test when Get waits on a list call another caller started: that is
// the only place Get asks for its context's Done channel (the fake lister is never handed one
// of these in the tests that use it).
type waitingContext struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func newWaitingContext(parent context.Context) *waitingContext {
	return &waitingContext{Context: parent, waiting: make(chan struct{})}
}

func (c *waitingContext) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

func (c *waitingContext) awaitWaiting(t *testing.T) {
	t.Helper()
	select {
	case <-c.waiting:
	case <-time.After(hangGuard):
		t.Fatal("Get never waited for the list in flight")
	}
}

type getResult struct {
	snap *runnerlist.Snapshot
	err  error
}

func getAsync(ctx context.Context, s *runnerlist.Store, k runnerlist.Key, l runnerlist.Lister, notBefore time.Time) <-chan getResult {
	out := make(chan getResult, 1)
	go func() {
		snap, err := s.Get(ctx, k, l, notBefore)
		out <- getResult{snap, err}
	}()
	return out
}

// getWaiting starts a Get that waits for the list in flight and returns once it waits.
func getWaiting(t *testing.T, ctx context.Context, s *runnerlist.Store, l runnerlist.Lister, notBefore time.Time) <-chan getResult {
	t.Helper()
	wctx := newWaitingContext(ctx)
	out := getAsync(wctx, s, workspace, l, notBefore)
	wctx.awaitWaiting(t)
	return out
}

// listWithWaiters starts a Get that lists, then n more that wait for that list.
func listWithWaiters(t *testing.T, s *runnerlist.Store, l *fakeLister, notBefore time.Time, n int) (first <-chan getResult, waiters []<-chan getResult) {
	t.Helper()
	first = getAsync(context.Background(), s, workspace, l, notBefore)
	l.awaitList(t)
	for range n {
		waiters = append(waiters, getWaiting(t, context.Background(), s, l, notBefore))
	}
	return first, waiters
}

func await(t *testing.T, ch <-chan getResult) getResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(hangGuard):
		t.Fatal("Get did not return")
		return getResult{}
	}
}

func runner(uuid string, status bitbucket.RunnerStatus) bitbucket.Runner {
	return bitbucket.Runner{UUID: uuid, Name: "runner-" + uuid, State: bitbucket.RunnerState{Status: status}}
}

func statuses(s *runnerlist.Snapshot) map[string]bitbucket.RunnerStatus {
	out := map[string]bitbucket.RunnerStatus{}
	for _, r := range s.Runners() {
		out[r.UUID] = r.State.Status
	}
	return out
}

// refreshCounter records OnRefresh calls.
type refreshCounter struct {
	mu    sync.Mutex
	snaps []*runnerlist.Snapshot
	keys  []runnerlist.Key
}

func (r *refreshCounter) hook(k runnerlist.Key, s *runnerlist.Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = append(r.keys, k)
	r.snaps = append(r.snaps, s)
}

func (r *refreshCounter) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.snaps)
}

func newStore() (*runnerlist.Store, *clocktesting.FakeClock, *fakeLister, *refreshCounter) {
	clk := clocktesting.NewFakeClock(t0)
	s := runnerlist.NewStore(clk.Now)
	refreshes := &refreshCounter{}
	s.OnRefresh = refreshes.hook
	return s, clk, newFakeLister(), refreshes
}

// listOnce fills the store with a first snapshot.
func listOnce(t *testing.T, s *runnerlist.Store, clk *clocktesting.FakeClock, l *fakeLister, runners ...bitbucket.Runner) *runnerlist.Snapshot {
	t.Helper()
	ch := getAsync(context.Background(), s, workspace, l, clk.Now())
	l.awaitList(t)
	l.release(t, runners...)
	r := await(t, ch)
	if r.err != nil {
		t.Fatalf("Get: %v", r.err)
	}
	return r.snap
}

func TestConcurrentGetsShareOneList(t *testing.T) {
	s, clk, l, refreshes := newStore()
	notBefore := clk.Now().Add(-time.Minute)

	first, waiters := listWithWaiters(t, s, l, notBefore, 5)
	l.release(t, runner("a", bitbucket.RunnerStatusOnline), runner("b", bitbucket.RunnerStatusOnline))

	want := await(t, first)
	if want.err != nil {
		t.Fatalf("first Get: %v", want.err)
	}
	for i, ch := range waiters {
		if r := await(t, ch); r.err != nil || r.snap != want.snap {
			t.Errorf("waiter %d got (%p, %v), want the shared snapshot %p", i, r.snap, r.err, want.snap)
		}
	}
	if n := l.calls.Load(); n != 1 {
		t.Errorf("ListRunners called %d times, want 1", n)
	}
	if n := refreshes.count(); n != 1 {
		t.Errorf("OnRefresh called %d times, want once per list", n)
	}
	if refreshes.keys[0] != workspace || refreshes.snaps[0] != want.snap {
		t.Errorf("OnRefresh got (%v, %p), want (%v, %p)", refreshes.keys[0], refreshes.snaps[0], workspace, want.snap)
	}
	if !want.snap.At.Equal(t0) {
		t.Errorf("snapshot At = %v, want the time the list started, %v", want.snap.At, t0)
	}
	if got := statuses(want.snap); len(got) != 2 {
		t.Errorf("snapshot runners = %v, want a and b", got)
	}
	if s.Peek(workspace) != want.snap {
		t.Errorf("Peek does not return the latest snapshot")
	}
}

func TestGetListsOnlyWhenTheSnapshotIsOlderThanNotBefore(t *testing.T) {
	s, clk, l, refreshes := newStore()
	steps := []struct {
		name      string
		advance   time.Duration
		notBefore func(now time.Time) time.Time
		wantList  bool
		wantAt    time.Time
	}{
		{"the first Get lists", 0, func(now time.Time) time.Time { return now.Add(-time.Minute) }, true, t0},
		{"a snapshot younger than the poll interval is reused", 30 * time.Second,
			func(now time.Time) time.Time { return now.Add(-time.Minute) }, false, t0},
		{"a snapshot taken exactly at notBefore is reused", 30 * time.Second,
			func(now time.Time) time.Time { return now.Add(-time.Minute) }, false, t0},
		{"a snapshot older than notBefore triggers a new list", time.Second,
			func(now time.Time) time.Time { return now.Add(-time.Minute) }, true, t0.Add(61 * time.Second)},
		{"a zero notBefore takes whatever snapshot there is", time.Hour,
			func(time.Time) time.Time { return time.Time{} }, false, t0.Add(61 * time.Second)},
		{"a notBefore of now always lists", 0, func(now time.Time) time.Time { return now }, true, t0.Add(time.Hour + 61*time.Second)},
	}
	lists := 0
	for _, step := range steps {
		clk.Step(step.advance)
		ch := getAsync(context.Background(), s, workspace, l, step.notBefore(clk.Now()))
		if step.wantList {
			l.awaitList(t)
			l.release(t, runner("a", bitbucket.RunnerStatusOnline))
			lists++
		}
		r := await(t, ch)
		if r.err != nil {
			t.Fatalf("%s: Get: %v", step.name, r.err)
		}
		if n := int(l.calls.Load()); n != lists {
			t.Errorf("%s: %d list calls so far, want %d", step.name, n, lists)
		}
		if !r.snap.At.Equal(step.wantAt) {
			t.Errorf("%s: snapshot At = %v, want %v", step.name, r.snap.At, step.wantAt)
		}
	}
	if n := refreshes.count(); n != lists {
		t.Errorf("OnRefresh called %d times for %d lists", n, lists)
	}
}

func TestAWaiterNeedingANewerListStartsAnotherOne(t *testing.T) {
	s, clk, l, refreshes := newStore()
	first := getAsync(context.Background(), s, workspace, l, clk.Now().Add(-time.Minute))
	l.awaitList(t)

	// A runner disabled after that list started needs a list that shows the disable.
	clk.Step(5 * time.Second)
	later := getWaiting(t, context.Background(), s, l, t0.Add(time.Second))

	l.release(t, runner("a", bitbucket.RunnerStatusOnline))
	if r := await(t, first); r.err != nil || statuses(r.snap)["a"] != bitbucket.RunnerStatusOnline {
		t.Fatalf("first Get = (%v, %v), want a ONLINE", r.snap, r.err)
	}
	l.awaitList(t)
	l.release(t, runner("a", bitbucket.RunnerStatusDisabled))
	r := await(t, later)
	if r.err != nil {
		t.Fatalf("later Get: %v", r.err)
	}
	if got := statuses(r.snap)["a"]; got != bitbucket.RunnerStatusDisabled || !r.snap.At.Equal(t0.Add(5*time.Second)) {
		t.Errorf("later Get saw a %s at %v, want DISABLED from the list started at %v", got, r.snap.At, t0.Add(5*time.Second))
	}
	if n := l.calls.Load(); n != 2 {
		t.Errorf("ListRunners called %d times, want 2", n)
	}
	if n := refreshes.count(); n != 2 {
		t.Errorf("OnRefresh called %d times, want 2", n)
	}
}

func TestRecordAndForgetShowInTheLatestSnapshot(t *testing.T) {
	online, disabled := bitbucket.RunnerStatusOnline, bitbucket.RunnerStatusDisabled
	tests := []struct {
		name    string
		listed  []bitbucket.Runner // nil: no list yet
		changes func(s *runnerlist.Store)
		want    map[string]bitbucket.RunnerStatus // nil: no snapshot at all
	}{
		{
			name:    "a runner just created is there before the next list",
			listed:  []bitbucket.Runner{runner("a", online)},
			changes: func(s *runnerlist.Store) { s.Record(workspace, runner("new", bitbucket.RunnerStatusUnregistered)) },
			want:    map[string]bitbucket.RunnerStatus{"a": online, "new": bitbucket.RunnerStatusUnregistered},
		},
		{
			name:    "a runner just disabled shows its new state",
			listed:  []bitbucket.Runner{runner("a", online), runner("b", online)},
			changes: func(s *runnerlist.Store) { s.Record(workspace, runner("a", disabled)) },
			want:    map[string]bitbucket.RunnerStatus{"a": disabled, "b": online},
		},
		{
			name:    "a runner just deleted is gone",
			listed:  []bitbucket.Runner{runner("a", online), runner("b", online)},
			changes: func(s *runnerlist.Store) { s.Forget(workspace, "a") },
			want:    map[string]bitbucket.RunnerStatus{"b": online},
		},
		{
			name:    "forgetting a runner the snapshot never had changes nothing",
			listed:  []bitbucket.Runner{runner("a", online)},
			changes: func(s *runnerlist.Store) { s.Forget(workspace, "unknown") },
			want:    map[string]bitbucket.RunnerStatus{"a": online},
		},
		{
			name:   "changes to another scope stay there",
			listed: []bitbucket.Runner{runner("a", online)},
			changes: func(s *runnerlist.Store) {
				other := runnerlist.Key{APIURL: workspace.APIURL, Scope: bitbucket.Scope{Workspace: "{ws}", Repository: "{repo}"}}
				s.Record(other, runner("elsewhere", online))
				s.Forget(other, "a")
			},
			want: map[string]bitbucket.RunnerStatus{"a": online},
		},
		{
			name:    "a change before any list invents no snapshot: the first list will see it",
			changes: func(s *runnerlist.Store) { s.Record(workspace, runner("new", online)) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk, l, refreshes := newStore()
			var before *runnerlist.Snapshot
			var beforeStatuses map[string]bitbucket.RunnerStatus
			if tc.listed != nil {
				before = listOnce(t, s, clk, l, tc.listed...)
				beforeStatuses = statuses(before)
			}
			tc.changes(s)

			latest := s.Peek(workspace)
			if tc.want == nil {
				if latest != nil {
					t.Fatalf("Peek = %v, want no snapshot", statuses(latest))
				}
				return
			}
			if got := statuses(latest); !maps.Equal(got, tc.want) {
				t.Errorf("latest snapshot = %v, want %v", got, tc.want)
			}
			for uuid := range tc.want {
				if r, ok := latest.ByName("runner-" + uuid); !ok || r.UUID != uuid {
					t.Errorf("ByName(runner-%s) = (%v, %v), want runner %s", uuid, r.UUID, ok, uuid)
				}
			}
			if !latest.At.Equal(before.At) {
				t.Errorf("a change moved At from %v to %v: it must not make the snapshot look fresher", before.At, latest.At)
			}
			if got := statuses(before); !maps.Equal(got, beforeStatuses) {
				t.Errorf("a snapshot already handed out changed to %v: snapshots are immutable", got)
			}
			if got, err := s.Get(context.Background(), workspace, l, before.At); err != nil || got != latest {
				t.Errorf("Get of a fresh enough snapshot = (%p, %v), want the latest snapshot %p without listing", got, err, latest)
			}
			if n := l.calls.Load(); n != 1 || refreshes.count() != 1 {
				t.Errorf("%d list calls and %d refreshes, want one each: changes are not lists", n, refreshes.count())
			}
		})
	}
}

func TestChangesDuringAListAreReplayedOntoIt(t *testing.T) {
	online, disabled := bitbucket.RunnerStatusOnline, bitbucket.RunnerStatusDisabled
	tests := []struct {
		name          string
		previous      []bitbucket.Runner // nil: the list in flight is the first one
		whileInFlight func(s *runnerlist.Store)
		// staleList is what the list in flight returns: it started before the changes.
		staleList []bitbucket.Runner
		want      map[string]bitbucket.RunnerStatus
	}{
		{
			name:          "a runner created during the list is not hidden by it",
			previous:      []bitbucket.Runner{runner("a", online)},
			whileInFlight: func(s *runnerlist.Store) { s.Record(workspace, runner("new", bitbucket.RunnerStatusUnregistered)) },
			staleList:     []bitbucket.Runner{runner("a", online)},
			want:          map[string]bitbucket.RunnerStatus{"a": online, "new": bitbucket.RunnerStatusUnregistered},
		},
		{
			name:          "a runner deleted during the list is not resurrected by it",
			previous:      []bitbucket.Runner{runner("a", online), runner("b", online)},
			whileInFlight: func(s *runnerlist.Store) { s.Forget(workspace, "b") },
			staleList:     []bitbucket.Runner{runner("a", online), runner("b", online)},
			want:          map[string]bitbucket.RunnerStatus{"a": online},
		},
		{
			name:          "a runner disabled during the list keeps its new state",
			previous:      []bitbucket.Runner{runner("a", online)},
			whileInFlight: func(s *runnerlist.Store) { s.Record(workspace, runner("a", disabled)) },
			staleList:     []bitbucket.Runner{runner("a", online)},
			want:          map[string]bitbucket.RunnerStatus{"a": disabled},
		},
		{
			name:     "several changes are replayed in order",
			previous: []bitbucket.Runner{runner("a", online)},
			whileInFlight: func(s *runnerlist.Store) {
				s.Record(workspace, runner("new", bitbucket.RunnerStatusUnregistered))
				s.Record(workspace, runner("new", online))
				s.Forget(workspace, "new")
				s.Record(workspace, runner("a", disabled))
			},
			staleList: []bitbucket.Runner{runner("a", online)},
			want:      map[string]bitbucket.RunnerStatus{"a": disabled},
		},
		{
			name:          "changes during the very first list are replayed too",
			whileInFlight: func(s *runnerlist.Store) { s.Record(workspace, runner("new", bitbucket.RunnerStatusUnregistered)) },
			staleList:     []bitbucket.Runner{runner("a", online)},
			want:          map[string]bitbucket.RunnerStatus{"a": online, "new": bitbucket.RunnerStatusUnregistered},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk, l, _ := newStore()
			if tc.previous != nil {
				listOnce(t, s, clk, l, tc.previous...)
				clk.Step(time.Minute)
			}
			inFlight := getAsync(context.Background(), s, workspace, l, clk.Now())
			l.awaitList(t)
			tc.whileInFlight(s)
			l.release(t, tc.staleList...)

			r := await(t, inFlight)
			if r.err != nil {
				t.Fatalf("Get: %v", r.err)
			}
			if got := statuses(r.snap); !maps.Equal(got, tc.want) {
				t.Errorf("snapshot from the list in flight = %v, want %v", got, tc.want)
			}
			if got := statuses(s.Peek(workspace)); !maps.Equal(got, tc.want) {
				t.Errorf("latest snapshot = %v, want %v", got, tc.want)
			}

			// The next list started after the changes: Bitbucket's answer stands on its own.
			clk.Step(time.Minute)
			next := getAsync(context.Background(), s, workspace, l, clk.Now())
			l.awaitList(t)
			l.release(t, runner("z", online))
			if r := await(t, next); r.err != nil || !maps.Equal(statuses(r.snap), map[string]bitbucket.RunnerStatus{"z": online}) {
				t.Errorf("a later list = (%v, %v), want only what it listed: changes are replayed once", statuses(r.snap), r.err)
			}
		})
	}
}

func TestAListErrorReachesEveryWaiterAndKeepsThePreviousSnapshot(t *testing.T) {
	s, clk, l, refreshes := newStore()
	previous := listOnce(t, s, clk, l, runner("a", bitbucket.RunnerStatusOnline))
	clk.Step(2 * time.Minute)
	notBefore := clk.Now().Add(-time.Minute)

	first, waiters := listWithWaiters(t, s, l, notBefore, 3)
	unavailable := errors.New("503 service unavailable")
	l.fail(t, unavailable)

	for i, ch := range append([]<-chan getResult{first}, waiters...) {
		r := await(t, ch)
		if !errors.Is(r.err, unavailable) || r.snap != nil {
			t.Errorf("caller %d got (%v, %v), want the list error", i, r.snap, r.err)
			continue
		}
		if !strings.Contains(r.err.Error(), workspace.String()) {
			t.Errorf("caller %d error %q does not say which scope failed", i, r.err)
		}
	}
	if n := l.calls.Load(); n != 2 {
		t.Errorf("ListRunners called %d times, want 2: the failed list is shared too", n)
	}
	if s.Peek(workspace) != previous {
		t.Errorf("a failed list replaced the previous snapshot")
	}
	if n := refreshes.count(); n != 1 {
		t.Errorf("OnRefresh called %d times, want 1: a failed list refreshes nothing", n)
	}

	// The error is not remembered: the next caller lists again.
	retry := getAsync(context.Background(), s, workspace, l, notBefore)
	l.awaitList(t)
	l.release(t, runner("a", bitbucket.RunnerStatusOnline))
	if r := await(t, retry); r.err != nil || !r.snap.At.Equal(clk.Now()) {
		t.Errorf("retry = (%v, %v), want a fresh snapshot", r.snap, r.err)
	}
	if n := refreshes.count(); n != 2 {
		t.Errorf("OnRefresh called %d times after the retry, want 2", n)
	}
}

func TestRecordNeverKeepsTheOAuthSecret(t *testing.T) {
	const secret = "runner-oauth-secret"
	created := func() bitbucket.Runner {
		r := runner("new", bitbucket.RunnerStatusUnregistered)
		r.OAuthClient = &bitbucket.OAuthClient{ID: "client-id", Secret: secret}
		return r
	}
	tests := []struct {
		name string
		// record records the runner and returns the snapshot that should hold it.
		record func(t *testing.T, s *runnerlist.Store, clk *clocktesting.FakeClock, l *fakeLister) *runnerlist.Snapshot
	}{
		{
			name: "recorded onto the latest snapshot",
			record: func(t *testing.T, s *runnerlist.Store, clk *clocktesting.FakeClock, l *fakeLister) *runnerlist.Snapshot {
				listOnce(t, s, clk, l)
				s.Record(workspace, created())
				return s.Peek(workspace)
			},
		},
		{
			name: "replayed onto a list in flight",
			record: func(t *testing.T, s *runnerlist.Store, clk *clocktesting.FakeClock, l *fakeLister) *runnerlist.Snapshot {
				ch := getAsync(context.Background(), s, workspace, l, clk.Now())
				l.awaitList(t)
				s.Record(workspace, created())
				l.release(t)
				return await(t, ch).snap
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk, l, _ := newStore()
			snap := tc.record(t, s, clk, l)
			r, ok := snap.ByUUID("new")
			if !ok {
				t.Fatal("the recorded runner is missing")
			}
			if r.OAuthClient != nil {
				t.Errorf("the snapshot holds the runner's OAuth client %v", r.OAuthClient)
			}
			if dump := fmt.Sprintf("%#v %+v", snap.Runners(), snap); strings.Contains(dump, secret) {
				t.Errorf("the secret can be read from the snapshot: %s", dump)
			}
		})
	}

	t.Run("the caller's runner keeps its credentials", func(t *testing.T) {
		s, clk, l, _ := newStore()
		listOnce(t, s, clk, l)
		r := created()
		s.Record(workspace, r)
		if r.OAuthClient == nil || r.OAuthClient.Secret != secret {
			t.Errorf("Record changed the caller's runner: %v", r.OAuthClient)
		}
	})
}

func TestContextCancellation(t *testing.T) {
	t.Run("a waiter whose context ends stops waiting and the list goes on", func(t *testing.T) {
		s, clk, l, refreshes := newStore()
		first := getAsync(context.Background(), s, workspace, l, clk.Now())
		l.awaitList(t)

		cancelled, cancel := context.WithCancel(context.Background())
		waiter := getWaiting(t, cancelled, s, l, clk.Now())
		cancel()
		if r := await(t, waiter); !errors.Is(r.err, context.Canceled) || r.snap != nil {
			t.Errorf("cancelled waiter got (%v, %v), want context.Canceled", r.snap, r.err)
		}

		l.release(t, runner("a", bitbucket.RunnerStatusOnline))
		if r := await(t, first); r.err != nil {
			t.Errorf("the list's own caller failed: %v", r.err)
		}
		if n := l.calls.Load(); n != 1 || refreshes.count() != 1 {
			t.Errorf("%d list calls and %d refreshes, want one each", n, refreshes.count())
		}
	})

	t.Run("a list abandoned by its caller leaves no snapshot and does not block the next one", func(t *testing.T) {
		s, clk, l, refreshes := newStore()
		ctx, cancel := context.WithCancel(context.Background())
		abandoned := getAsync(ctx, s, workspace, l, clk.Now())
		l.awaitList(t)
		cancel()
		if r := await(t, abandoned); !errors.Is(r.err, context.Canceled) {
			t.Errorf("abandoned Get returned %v, want context.Canceled", r.err)
		}
		if s.Peek(workspace) != nil || refreshes.count() != 0 {
			t.Errorf("an abandoned list left a snapshot or a refresh")
		}

		next := getAsync(context.Background(), s, workspace, l, clk.Now())
		l.awaitList(t)
		l.release(t, runner("a", bitbucket.RunnerStatusOnline))
		if r := await(t, next); r.err != nil {
			t.Errorf("the next Get failed: %v", r.err)
		}
	})
}

func TestEachScopeHasItsOwnList(t *testing.T) {
	repo := runnerlist.Key{APIURL: workspace.APIURL, Scope: bitbucket.Scope{Workspace: "{ws}", Repository: "{repo}"}}
	otherInstallation := runnerlist.Key{APIURL: "http://127.0.0.1:2/2.0", Scope: workspace.Scope}
	s, clk, l, refreshes := newStore()
	for _, k := range []runnerlist.Key{workspace, repo, otherInstallation} {
		ch := getAsync(context.Background(), s, k, l, clk.Now())
		if got := l.awaitList(t); got != k.Scope {
			t.Errorf("listed scope %v for key %v", got, k)
		}
		l.release(t, runner(k.APIURL+k.Scope.Repository, bitbucket.RunnerStatusOnline))
		if r := await(t, ch); r.err != nil || len(r.snap.Runners()) != 1 {
			t.Errorf("Get(%v) = (%v, %v), want its own runner", k, r.snap, r.err)
		}
	}
	if n := l.calls.Load(); n != 3 || refreshes.count() != 3 {
		t.Errorf("%d list calls and %d refreshes, want 3 each", n, refreshes.count())
	}
	for i, k := range []runnerlist.Key{workspace, repo, otherInstallation} {
		if refreshes.keys[i] != k {
			t.Errorf("refresh %d was for %v, want %v", i, refreshes.keys[i], k)
		}
	}
}

func TestKeyString(t *testing.T) {
	tests := []struct {
		key  runnerlist.Key
		want string
	}{
		{workspace, "http://127.0.0.1:1/2.0 {ws}"},
		{runnerlist.Key{APIURL: "http://127.0.0.1:1/2.0", Scope: bitbucket.Scope{Workspace: "{ws}", Repository: "{repo}"}}, "http://127.0.0.1:1/2.0 {ws}/{repo}"},
	}
	for _, tc := range tests {
		if got := tc.key.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestNoSnapshotYetIsSafeToRead(t *testing.T) {
	var none *runnerlist.Snapshot
	if none.Runners() != nil {
		t.Error("Runners of no snapshot is not empty")
	}
	if _, ok := none.ByUUID("a"); ok {
		t.Error("ByUUID found a runner in no snapshot")
	}
	if _, ok := none.ByName("a"); ok {
		t.Error("ByName found a runner in no snapshot")
	}
	if runnerlist.NewStore(nil).Peek(workspace) != nil {
		t.Error("a new store has a snapshot")
	}
}
