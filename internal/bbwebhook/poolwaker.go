package bbwebhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

// WakeTarget is where a webhook event happened, as its payload names it.
type WakeTarget struct {
	// WorkspaceUUID and RepositoryUUID are braced UUIDs; either may be empty in old payloads.
	WorkspaceUUID  string
	RepositoryUUID string
	// RepositoryFullName is "<workspace slug>/<repository slug>", for pools that name their
	// repositories by slug.
	RepositoryFullName string
}

// repositorySlug is the repository part of the full name, "" if there is none.
func (t WakeTarget) repositorySlug() string {
	_, slug, _ := strings.Cut(t.RepositoryFullName, "/")
	return slug
}

// namesRepository reports whether ref (a repository UUID or slug, as a pool spells it) is the
// event's repository. When the payload lacks the field ref could be compared with, it cannot
// tell and counts as a match: waking a pool too many is cheaper than missing a step.
func (t WakeTarget) namesRepository(ref string) bool {
	if bitbucket.IsUUID(ref) {
		return t.RepositoryUUID == "" || bitbucket.SameUUID(ref, t.RepositoryUUID)
	}
	slug := t.repositorySlug()
	return slug == "" || strings.EqualFold(ref, slug)
}

// Concerns reports whether an event at t can change what the pool decides, so the pool is worth
// waking for it. A webhook is worth a poll because the pool then reads the step queue of its
// repositories; an event of a repository whose queue the pool does not read tells it nothing
// its next periodic poll would not. So a repository pool is woken for its repository only; a
// workspace pool with spec.scaling.repositories for those repositories only; a workspace pool
// without that list reads the workspace's repositories and is woken for any of them.
func Concerns(pool *v1alpha1.RunnerPool, t WakeTarget) bool {
	b := pool.Spec.Bitbucket
	if t.WorkspaceUUID == "" {
		// Without the workspace only a repository UUID, unique across Bitbucket, places the event.
		return b.Repository != "" && bitbucket.SameUUID(string(b.Repository), t.RepositoryUUID)
	}
	if !bitbucket.SameUUID(string(b.Workspace), t.WorkspaceUUID) {
		return false
	}
	if b.Repository != "" {
		return t.namesRepository(string(b.Repository))
	}
	if repos := pool.Spec.Scaling.Repositories; len(repos) > 0 {
		return slices.ContainsFunc(repos, t.namesRepository)
	}
	return true
}

// PoolWaker wakes the pools an event concerns, for webhook events. It writes the time into the
// pools' poll-requested annotation: the leader's watch sees the change and reconciles the pool
// with an observation and a queue read newer than that time. Going through the API server lets
// any replica receive webhooks, leader or not, and lets a user force a poll with kubectl
// annotate.
//
// Events are coalesced per workspace into rounds at most Window apart: the first event wakes at
// once, the events of the next Window are woken together when it ends (Flush). Every pool woken
// in a round gets the same time, so pools reading the same repository share one queue read
// (stepqueue.Store serves every caller whose time is not after the read's start), and a burst of
// commit statuses for one pipeline costs one or two polls, not one per delivery.
type PoolWaker struct {
	Client client.Client
	// Window is the coalescing window; 0 means DefaultWakeWindow.
	Window time.Duration
	clock  clock.PassiveClock

	mu     sync.Mutex
	rounds map[string]*wakeRound // by workspace
}

// wakeRound is the coalescing state of one workspace.
type wakeRound struct {
	last    time.Time    // when its pools were last woken by anyone
	pending []WakeTarget // events since then, to be woken at due
	since   time.Time    // arrival of the first pending event
	due     time.Time
}

// DefaultWakeWindow is how far apart the rounds of one workspace are at least. Bitbucket sends
// two or three commit statuses per pipeline within seconds; a step waits this much longer at
// worst.
const DefaultWakeWindow = 2 * time.Second

// NewPoolWaker returns a waker.
func NewPoolWaker(c client.Client) *PoolWaker {
	return &PoolWaker{Client: c, clock: clock.RealClock{}, rounds: map[string]*wakeRound{}}
}

func (w *PoolWaker) window() time.Duration {
	if w.Window > 0 {
		return w.Window
	}
	return DefaultWakeWindow
}

func roundKey(t WakeTarget) string {
	if t.WorkspaceUUID != "" {
		return strings.ToLower(strings.Trim(t.WorkspaceUUID, "{}"))
	}
	return "repository " + strings.ToLower(strings.Trim(t.RepositoryUUID, "{}"))
}

// Wake requests a poll of the pools the event concerns, now or, when the workspace's pools were
// woken less than Window ago (by this replica or, as their annotations show, another), at the
// end of the window; then deferred is true and Flush does it. It returns how many pools it woke.
func (w *PoolWaker) Wake(ctx context.Context, t WakeTarget) (woken int, deferred bool, err error) {
	pools, err := w.listConcerned(ctx, []WakeTarget{t})
	if err != nil {
		return 0, false, err
	}
	if len(pools) == 0 {
		// An event no pool cares about (another workspace, a made-up UUID) leaves no state
		// behind: the waker holds rounds only for workspaces that have pools.
		return 0, false, nil
	}
	now := w.clock.Now()
	key := roundKey(t)
	w.mu.Lock()
	if w.rounds == nil {
		w.rounds = map[string]*wakeRound{}
	}
	r := w.rounds[key]
	if r == nil {
		r = &wakeRound{}
		w.rounds[key] = r
	}
	last := r.last
	for _, p := range pools {
		// Another replica's round: this one must not follow it within the window either. A
		// time in the future (a clock ahead, a hand-written annotation) counts as now, so it
		// cannot put events off for longer than a window.
		if requested := scaling.PollRequested(p); requested.After(last) {
			last = requested
			if last.After(now) {
				last = now
			}
		}
	}
	if len(r.pending) > 0 || now.Sub(last) < w.window() {
		if len(r.pending) == 0 {
			r.since, r.due = now, last.Add(w.window())
			if last.After(r.last) {
				// Another replica woke them and will flush its own events at the end of its
				// window: going a little later lets this one see that and skip the pools.
				r.due = r.due.Add(w.window() / 20)
			}
		}
		switch {
		case len(r.pending) == 1 && r.pending[0] == workspaceWide(t):
			// Already waking every pool of the workspace.
		case len(r.pending) >= maxPendingTargets:
			// Many repositories in one window: waking every pool of the workspace costs no more
			// than one poll each, and keeps the round's memory fixed however many arrive.
			r.pending = []WakeTarget{workspaceWide(t)}
		case !slices.Contains(r.pending, t):
			r.pending = append(r.pending, t)
		}
		w.mu.Unlock()
		return 0, true, nil
	}
	r.last = now
	w.mu.Unlock()
	woken, err = w.wake(ctx, pools, now, now)
	return woken, false, err
}

// maxPendingTargets bounds the distinct targets a workspace's round remembers until its flush.
const maxPendingTargets = 32

// workspaceWide is a target that concerns every pool of t's workspace (or of t's repository when
// the event named no workspace): without a repository it cannot tell, so it matches them all.
func workspaceWide(t WakeTarget) WakeTarget {
	if t.WorkspaceUUID == "" {
		return WakeTarget{RepositoryUUID: t.RepositoryUUID}
	}
	return WakeTarget{WorkspaceUUID: t.WorkspaceUUID}
}

// NextFlush is when Flush has deferred events to wake; ok is false when there are none.
func (w *PoolWaker) NextFlush() (at time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.rounds {
		if len(r.pending) > 0 && (!ok || r.due.Before(at)) {
			at, ok = r.due, true
		}
	}
	return at, ok
}

// Flush wakes the pools of the deferred events whose window has ended, and forgets workspaces
// quiet for a while. It returns how many pools it woke.
func (w *PoolWaker) Flush(ctx context.Context) (int, error) {
	now := w.clock.Now()
	type due struct {
		targets []WakeTarget
		since   time.Time
	}
	var rounds []due
	w.mu.Lock()
	for key, r := range w.rounds {
		switch {
		case len(r.pending) > 0 && !now.Before(r.due):
			rounds = append(rounds, due{targets: r.pending, since: r.since})
			r.pending, r.last = nil, now
		case len(r.pending) == 0 && now.Sub(r.last) > time.Minute:
			delete(w.rounds, key)
		}
	}
	w.mu.Unlock()
	woken := 0
	var errs []error
	for _, d := range rounds {
		pools, err := w.listConcerned(ctx, d.targets)
		if err == nil {
			var n int
			n, err = w.wake(ctx, pools, now, d.since)
			woken += n
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return woken, errors.Join(errs...)
}

// listConcerned lists the pools any of the events concerns.
func (w *PoolWaker) listConcerned(ctx context.Context, targets []WakeTarget) ([]*v1alpha1.RunnerPool, error) {
	var list v1alpha1.RunnerPoolList
	if err := w.Client.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list pools to wake: %w", err)
	}
	var pools []*v1alpha1.RunnerPool
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp.IsZero() && slices.ContainsFunc(targets, func(t WakeTarget) bool { return Concerns(p, t) }) {
			pools = append(pools, p)
		}
	}
	return pools, nil
}

// wake writes stamp into the pools' poll-requested annotation, except where a time between
// since and stamp is there already: someone woke that pool after the events arrived. A time
// after stamp is not trusted (the reconciler ignores it), so it is overwritten.
func (w *PoolWaker) wake(ctx context.Context, pools []*v1alpha1.RunnerPool, stamp, since time.Time) (int, error) {
	woken := 0
	var errs []error
	for _, p := range pools {
		if requested := scaling.PollRequested(p); !requested.Before(since) && !requested.After(stamp) {
			woken++
			continue
		}
		patch := client.MergeFrom(p.DeepCopy())
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[v1alpha1.AnnotationPollRequested] = stamp.UTC().Format(time.RFC3339Nano)
		if err := w.Client.Patch(ctx, p, patch); err != nil {
			errs = append(errs, fmt.Errorf("wake pool %s/%s: %w", p.Namespace, p.Name, err))
			continue
		}
		woken++
	}
	return woken, errors.Join(errs...)
}
