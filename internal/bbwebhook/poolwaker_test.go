package bbwebhook

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/fixture"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

const (
	wsUUID    = "{0b3f8a1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}"
	repoA     = "{aaaaaaaa-0000-4000-8000-000000000001}"
	repoB     = "{bbbbbbbb-0000-4000-8000-000000000002}"
	otherWS   = "{cccccccc-0000-4000-8000-000000000003}"
	fullNameA = "acme/service-a"
)

func TestConcerns(t *testing.T) {
	eventA := WakeTarget{WorkspaceUUID: wsUUID, RepositoryUUID: repoA, RepositoryFullName: fullNameA}
	tests := []struct {
		name   string
		pool   *v1alpha1.RunnerPool
		target WakeTarget
		want   bool
	}{
		{"a repository pool is woken for its repository", fixture.Pool(fixture.InRepository(repoA)), eventA, true},
		{"a repository pool is not woken for another repository", fixture.Pool(fixture.InRepository(repoB)), eventA, false},
		{"the UUID matches without braces and in upper case", fixture.Pool(fixture.InRepository("AAAAAAAA-0000-4000-8000-000000000001")), eventA, true},
		{"a workspace pool without a repository list is woken for any repository", fixture.Pool(), eventA, true},
		{"a pool of another workspace is not woken", fixture.Pool(func(p *v1alpha1.RunnerPool) { p.Spec.Bitbucket.Workspace = otherWS }), eventA, false},
		{"a workspace pool reading the repository's queue is woken", fixture.Pool(fixture.ReadingRepositories(repoB, repoA)), eventA, true},
		{"a workspace pool reading other repositories is not woken", fixture.Pool(fixture.ReadingRepositories(repoB)), eventA, false},
		{"a repository listed by slug matches the full name", fixture.Pool(fixture.ReadingRepositories("Service-A")), eventA, true},
		{"another slug does not match", fixture.Pool(fixture.ReadingRepositories("service-b")), eventA, false},
		{"a UUID that cannot be compared (payload without uuid) counts as a match",
			fixture.Pool(fixture.ReadingRepositories(repoB)), WakeTarget{WorkspaceUUID: wsUUID, RepositoryFullName: fullNameA}, true},
		{"a slug that cannot be compared (payload without full name) counts as a match",
			fixture.Pool(fixture.ReadingRepositories("service-b")), WakeTarget{WorkspaceUUID: wsUUID, RepositoryUUID: repoA}, true},
		{"without a workspace, a repository pool is placed by the repository UUID",
			fixture.Pool(fixture.InRepository(repoA)), WakeTarget{RepositoryUUID: repoA}, true},
		{"without a workspace, a workspace pool cannot be placed and is not woken",
			fixture.Pool(), WakeTarget{RepositoryUUID: repoA, RepositoryFullName: fullNameA}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Concerns(tt.pool, tt.target); got != tt.want {
				t.Errorf("Concerns = %t, want %t", got, tt.want)
			}
		})
	}
}

// wakeEnv is a waker over a fake API server, on a clock the test moves.
type wakeEnv struct {
	t     *testing.T
	c     client.Client
	waker *PoolWaker
	clock *clocktesting.FakeClock
}

func newWakeEnv(t *testing.T, pools ...*v1alpha1.RunnerPool) *wakeEnv {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	objs := make([]client.Object, 0, len(pools))
	for _, p := range pools {
		objs = append(objs, p)
	}
	e := &wakeEnv{t: t, c: fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build(), clock: clocktesting.NewFakeClock(fixture.Now)}
	e.waker = NewPoolWaker(e.c)
	e.waker.clock = e.clock
	return e
}

// stamps are the pools' poll-requested times, as offsets from fixture.Now ("" for none).
func (e *wakeEnv) stamps() map[string]string {
	e.t.Helper()
	var list v1alpha1.RunnerPoolList
	if err := e.c.List(context.Background(), &list); err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for i := range list.Items {
		if at := scaling.PollRequested(&list.Items[i]); !at.IsZero() {
			out[list.Items[i].Name] = at.Sub(fixture.Now).String()
		} else {
			out[list.Items[i].Name] = ""
		}
	}
	return out
}

func (e *wakeEnv) assertStamps(why string, want map[string]string) {
	e.t.Helper()
	got := e.stamps()
	for name, w := range want {
		if got[name] != w {
			e.t.Errorf("%s: pool %s woken at %q, want %q (all: %v)", why, name, got[name], w, got)
		}
	}
}

func TestPoolWakerWakesOnlyTheConcernedPoolsAndCoalesces(t *testing.T) {
	e := newWakeEnv(t,
		fixture.Pool(fixture.PoolNamed("repo-a"), fixture.InRepository(repoA)),
		fixture.Pool(fixture.PoolNamed("repo-b"), fixture.InRepository(repoB)),
		fixture.Pool(fixture.PoolNamed("queue-a"), fixture.ReadingRepositories(repoA)),
		fixture.Pool(fixture.PoolNamed("queue-b"), fixture.ReadingRepositories(repoB)),
		fixture.Pool(fixture.PoolNamed("workspace")),
	)
	ctx := context.Background()
	eventA := WakeTarget{WorkspaceUUID: wsUUID, RepositoryUUID: repoA, RepositoryFullName: fullNameA}
	eventB := WakeTarget{WorkspaceUUID: wsUUID, RepositoryUUID: repoB, RepositoryFullName: "acme/service-b"}

	n, deferred, err := e.waker.Wake(ctx, eventA)
	if err != nil || n != 3 || deferred {
		t.Fatalf("Wake(A) = %d, deferred %t, %v; want 3 pools woken at once", n, deferred, err)
	}
	e.assertStamps("an event for A", map[string]string{"repo-a": "0s", "queue-a": "0s", "workspace": "0s", "repo-b": "", "queue-b": ""})

	// A burst within the window: deferred, not lost, and not one wake per event.
	for _, step := range []struct {
		after time.Duration
		ev    WakeTarget
	}{{300 * time.Millisecond, eventA}, {500 * time.Millisecond, eventB}, {400 * time.Millisecond, eventA}} {
		e.clock.Step(step.after)
		if n, deferred, err := e.waker.Wake(ctx, step.ev); err != nil || n != 0 || !deferred {
			t.Fatalf("Wake within the window = %d, deferred %t, %v; want it deferred", n, deferred, err)
		}
	}
	e.assertStamps("events within the window", map[string]string{"repo-a": "0s", "repo-b": "", "workspace": "0s"})
	due, ok := e.waker.NextFlush()
	if want := fixture.Now.Add(DefaultWakeWindow); !ok || !due.Equal(want) {
		t.Fatalf("NextFlush = %v, %t; want %v", due, ok, want)
	}
	if n, err := e.waker.Flush(ctx); err != nil || n != 0 {
		t.Fatalf("Flush before the window ends = %d, %v; want nothing", n, err)
	}
	e.clock.SetTime(due)
	if n, err := e.waker.Flush(ctx); err != nil || n != 5 {
		t.Fatalf("Flush = %d, %v; want the 5 pools of both repositories", n, err)
	}
	e.assertStamps("the end of the window", map[string]string{"repo-a": "2s", "queue-a": "2s", "workspace": "2s", "repo-b": "2s", "queue-b": "2s"})
	if _, ok := e.waker.NextFlush(); ok {
		t.Error("NextFlush after the flush: want nothing pending")
	}

	// After a quiet window an event wakes at once again, with one time for every pool.
	e.clock.Step(5 * time.Second)
	if n, deferred, err := e.waker.Wake(ctx, eventB); err != nil || n != 3 || deferred {
		t.Fatalf("Wake(B) after a quiet window = %d, deferred %t, %v; want 3 pools at once", n, deferred, err)
	}
	e.assertStamps("an event for B", map[string]string{"repo-a": "2s", "queue-a": "2s", "repo-b": "7s", "queue-b": "7s", "workspace": "7s"})
}

// A replica that learns from the annotations that another one woke the pools does not wake them
// again for the same events.
func TestPoolWakerFollowsAnotherReplicasRound(t *testing.T) {
	e := newWakeEnv(t, fixture.Pool(fixture.PoolNamed("queue-a"), fixture.ReadingRepositories(repoA)))
	other := NewPoolWaker(e.c)
	other.clock = e.clock
	ctx := context.Background()
	eventA := WakeTarget{WorkspaceUUID: wsUUID, RepositoryUUID: repoA}

	if _, deferred, err := other.Wake(ctx, eventA); err != nil || deferred {
		t.Fatalf("other replica: deferred %t, %v", deferred, err)
	}
	e.clock.Step(10 * time.Millisecond) // the same delivery reaches this replica
	if _, deferred, err := e.waker.Wake(ctx, eventA); err != nil || !deferred {
		t.Fatalf("this replica: deferred %t, %v; want deferred behind the other's round", deferred, err)
	}
	e.clock.Step(time.Second)
	if _, deferred, _ := other.Wake(ctx, eventA); !deferred {
		t.Fatal("other replica: a second event within its window was not deferred")
	}
	e.clock.SetTime(fixture.Now.Add(DefaultWakeWindow))
	if _, err := other.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	due, ok := e.waker.NextFlush()
	if !ok || !due.After(fixture.Now.Add(DefaultWakeWindow)) {
		t.Fatalf("this replica's flush at %v, %t; want after the other's", due, ok)
	}
	e.clock.SetTime(due)
	if _, err := e.waker.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.assertStamps("two replicas", map[string]string{"queue-a": "2s"})
}

// A time in the future in the annotation (a clock ahead, a hand-written one) puts events off
// for one window at most, and is replaced.
func TestPoolWakerDoesNotTrustATimeInTheFuture(t *testing.T) {
	future := fixture.Pool(fixture.PoolNamed("queue-a"), fixture.ReadingRepositories(repoA), fixture.WithPollRequested(fixture.Now.Add(24*time.Hour).Format(time.RFC3339Nano)))
	e := newWakeEnv(t, future)
	ctx := context.Background()
	if _, deferred, err := e.waker.Wake(ctx, WakeTarget{WorkspaceUUID: wsUUID, RepositoryUUID: repoA}); err != nil || !deferred {
		t.Fatalf("deferred %t, %v; want deferred by one window", deferred, err)
	}
	due, ok := e.waker.NextFlush()
	if !ok || due.After(fixture.Now.Add(2*DefaultWakeWindow)) {
		t.Fatalf("NextFlush = %v, %t; want within a window or so", due, ok)
	}
	e.clock.SetTime(due)
	if n, err := e.waker.Flush(ctx); err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v; want the pool woken", n, err)
	}
	e.assertStamps("a time in the future", map[string]string{"queue-a": due.Sub(fixture.Now).String()})
}

func TestPoolWakerMemoryStaysBoundedWhateverArrives(t *testing.T) {
	e := newWakeEnv(t, fixture.Pool(fixture.PoolNamed("workspace")))
	ctx := context.Background()

	// Workspaces and repositories no pool names, made up by the thousand: nothing is kept.
	for i := range 2000 {
		uuid := fmt.Sprintf("{%08x-0000-4000-8000-000000000000}", i)
		if n, deferred, err := e.waker.Wake(ctx, WakeTarget{WorkspaceUUID: uuid, RepositoryUUID: uuid}); err != nil || n != 0 || deferred {
			t.Fatalf("Wake(unknown workspace) = %d, deferred %t, %v; want nothing", n, deferred, err)
		}
		if n, _, err := e.waker.Wake(ctx, WakeTarget{RepositoryUUID: uuid}); err != nil || n != 0 {
			t.Fatalf("Wake(unknown repository) = %d, %v; want nothing", n, err)
		}
	}
	if n := len(e.waker.rounds); n != 0 {
		t.Errorf("%d rounds kept for events no pool cares about", n)
	}

	// The pool's workspace, with a different made-up repository every time, within one window:
	// the round remembers a bounded number of targets, then one for the whole workspace.
	if _, _, err := e.waker.Wake(ctx, WakeTarget{WorkspaceUUID: wsUUID, RepositoryUUID: repoA}); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(100 * time.Millisecond)
	for i := range 5000 {
		repo := fmt.Sprintf("{%08x-1111-4000-8000-000000000000}", i)
		if _, deferred, err := e.waker.Wake(ctx, WakeTarget{WorkspaceUUID: wsUUID, RepositoryUUID: repo}); err != nil || !deferred {
			t.Fatalf("Wake within the window: deferred %t, %v", deferred, err)
		}
		if n := len(e.waker.rounds[roundKey(WakeTarget{WorkspaceUUID: wsUUID})].pending); n > maxPendingTargets {
			t.Fatalf("%d targets pending after %d events, want at most %d", n, i+1, maxPendingTargets)
		}
	}
	e.clock.Step(DefaultWakeWindow)
	if n, err := e.waker.Flush(ctx); err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v; want the workspace's pool woken once", n, err)
	}
	e.assertStamps("the flood's flush", map[string]string{"workspace": (DefaultWakeWindow + 100*time.Millisecond).String()})
}
