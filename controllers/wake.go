package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/observe"
)

const runnerUUIDIndex = "status.uuid"

// IndexRunnerUUID lets the waker find a Runner by its Bitbucket UUID.
func IndexRunnerUUID(ctx context.Context, indexer client.FieldIndexer) error {
	return indexer.IndexField(ctx, &v1alpha1.Runner{}, runnerUUIDIndex, func(o client.Object) []string {
		if uuid := o.(*v1alpha1.Runner).Status.UUID; uuid != "" {
			return []string{uuid}
		}
		return nil
	})
}

// RunnerWaker turns a new observation into reconciles of exactly the Runners whose Bitbucket
// state changed, so a runner coming ONLINE or taking a step shows in its status at the next
// list instead of at its next periodic resync.
type RunnerWaker struct {
	Reader client.Reader
	Events chan event.TypedGenericEvent[*v1alpha1.Runner]

	mu   sync.Mutex
	last map[observe.Key]map[string]string
}

// NewRunnerWaker returns a waker with a buffered channel.
func NewRunnerWaker(reader client.Reader) *RunnerWaker {
	return &RunnerWaker{Reader: reader, Events: make(chan event.TypedGenericEvent[*v1alpha1.Runner], 1024), last: map[observe.Key]map[string]string{}}
}

// OnRefresh is the observe.Store hook.
func (w *RunnerWaker) OnRefresh(k observe.Key, snap *observe.Snapshot) {
	current := map[string]string{}
	for _, r := range snap.Runners() {
		current[r.UUID] = fingerprint(r)
	}
	w.mu.Lock()
	prev := w.last[k]
	w.last[k] = current
	w.mu.Unlock()

	var changed []string
	for uuid, fp := range current {
		if prev[uuid] != fp {
			changed = append(changed, uuid)
		}
	}
	for uuid := range prev {
		if _, ok := current[uuid]; !ok {
			changed = append(changed, uuid)
		}
	}
	ctx := context.Background()
	for _, uuid := range changed {
		var list v1alpha1.RunnerList
		if err := w.Reader.List(ctx, &list, client.MatchingFields{runnerUUIDIndex: uuid}); err != nil {
			log.FromContext(ctx).Error(err, "find runner to wake", "uuid", uuid)
			continue
		}
		for i := range list.Items {
			select {
			case w.Events <- event.TypedGenericEvent[*v1alpha1.Runner]{Object: &list.Items[i]}:
			default: // the periodic resync catches up
			}
		}
	}
}

func fingerprint(r bitbucket.Runner) string {
	return string(r.State.Status) + "/" + stepID(r)
}

// PoolWaker wakes the pools of a workspace or repository at once, for webhook events, and
// makes their next reconcile observe Bitbucket afresh instead of reusing a recent list.
type PoolWaker struct {
	Reader client.Reader
	Events chan event.TypedGenericEvent[*v1alpha1.RunnerPool]

	mu    sync.Mutex
	fresh map[types.NamespacedName]time.Time
	now   func() time.Time
}

// NewPoolWaker returns a waker with a buffered channel.
func NewPoolWaker(reader client.Reader) *PoolWaker {
	return &PoolWaker{Reader: reader, Events: make(chan event.TypedGenericEvent[*v1alpha1.RunnerPool], 1024),
		fresh: map[types.NamespacedName]time.Time{}, now: time.Now}
}

// Wake wakes every pool of the workspace whose scope covers the repository (workspace pools,
// and repository pools of that repository); repository "" wakes them all. It returns how many
// pools it woke.
func (w *PoolWaker) Wake(ctx context.Context, workspace, repository string) (int, error) {
	var pools v1alpha1.RunnerPoolList
	if err := w.Reader.List(ctx, &pools); err != nil {
		return 0, fmt.Errorf("list pools to wake: %w", err)
	}
	now := w.now()
	woken := 0
	for i := range pools.Items {
		p := &pools.Items[i]
		b := p.Spec.Bitbucket
		if !sameUUID(string(b.Workspace), workspace) {
			continue
		}
		if repository != "" && b.Repository != "" && !sameUUID(string(b.Repository), repository) {
			continue
		}
		w.mu.Lock()
		w.fresh[client.ObjectKeyFromObject(p)] = now
		w.mu.Unlock()
		select {
		case w.Events <- event.TypedGenericEvent[*v1alpha1.RunnerPool]{Object: p}:
			woken++
		default:
		}
	}
	return woken, nil
}

// FreshSince is when the pool was last woken: its next observation must be newer.
func (w *PoolWaker) FreshSince(pool types.NamespacedName) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fresh[pool]
}

// sameUUID compares Bitbucket UUIDs with or without braces, case-insensitively.
func sameUUID(a, b string) bool {
	trim := func(s string) string { return strings.ToLower(strings.Trim(s, "{}")) }
	return a != "" && trim(a) == trim(b)
}
