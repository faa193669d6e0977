package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

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

// PoolWaker wakes the pools of a workspace or repository at once, for webhook events. It
// writes the time into the pools' poll-requested annotation: the leader's watch sees the change
// and reconciles the pool with an observation newer than that time. Going through the API
// server lets any replica receive webhooks, leader or not, and lets a user force a poll with
// kubectl annotate.
type PoolWaker struct {
	Client client.Client
	now    func() time.Time
}

// NewPoolWaker returns a waker.
func NewPoolWaker(c client.Client) *PoolWaker {
	return &PoolWaker{Client: c, now: time.Now}
}

// minWakeInterval bounds the annotation writes per pool: a burst of webhooks for one push
// causes one poll, not one per delivery.
const minWakeInterval = 2 * time.Second

// Wake requests a poll of every pool of the workspace whose scope covers the repository
// (workspace pools, and repository pools of that repository); repository "" means all. It
// returns how many pools it woke.
func (w *PoolWaker) Wake(ctx context.Context, workspace, repository string) (int, error) {
	var pools v1alpha1.RunnerPoolList
	if err := w.Client.List(ctx, &pools); err != nil {
		return 0, fmt.Errorf("list pools to wake: %w", err)
	}
	now := w.now()
	woken := 0
	var errs []error
	for i := range pools.Items {
		p := &pools.Items[i]
		b := p.Spec.Bitbucket
		if !sameUUID(string(b.Workspace), workspace) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		if repository != "" && b.Repository != "" && !sameUUID(string(b.Repository), repository) {
			continue
		}
		if last := pollRequested(p); now.Sub(last) < minWakeInterval {
			woken++
			continue
		}
		patch := client.MergeFrom(p.DeepCopy())
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[v1alpha1.AnnotationPollRequested] = now.UTC().Format(time.RFC3339Nano)
		if err := w.Client.Patch(ctx, p, patch); err != nil {
			errs = append(errs, fmt.Errorf("wake pool %s/%s: %w", p.Namespace, p.Name, err))
			continue
		}
		woken++
	}
	return woken, errors.Join(errs...)
}

// pollRequested is the time in the pool's poll-requested annotation, zero if none.
func pollRequested(pool *v1alpha1.RunnerPool) time.Time {
	t, err := time.Parse(time.RFC3339Nano, pool.Annotations[v1alpha1.AnnotationPollRequested])
	if err != nil {
		return time.Time{}
	}
	return t
}

// sameUUID compares Bitbucket UUIDs with or without braces, case-insensitively.
func sameUUID(a, b string) bool {
	trim := func(s string) string { return strings.ToLower(strings.Trim(s, "{}")) }
	return a != "" && trim(a) == trim(b)
}
