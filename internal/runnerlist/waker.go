package runnerlist

import (
	"context"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
)

const (
	runnerUUIDIndex = "status.uuid"
	runnerNameIndex = "spec.bitbucketName"
)

// IndexRunnerUUID lets the waker find a Runner by its Bitbucket UUID, and by its Bitbucket name
// while its status does not name the UUID yet (a starting runner's registration is written with
// its connection, ADR 0019).
func IndexRunnerUUID(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, &v1alpha1.Runner{}, runnerUUIDIndex, func(o client.Object) []string {
		if uuid := o.(*v1alpha1.Runner).Status.UUID; uuid != "" {
			return []string{uuid}
		}
		return nil
	}); err != nil {
		return err
	}
	return indexer.IndexField(ctx, &v1alpha1.Runner{}, runnerNameIndex, func(o client.Object) []string {
		if r := o.(*v1alpha1.Runner); r.Status.UUID == "" && r.Spec.BitbucketName != "" {
			return []string{r.Spec.BitbucketName}
		}
		return nil
	})
}

// Waker turns a new runner list into reconciles of exactly the Runners whose Bitbucket
// state changed, so a runner coming ONLINE or taking a step shows in its status at the next
// list instead of at its next periodic resync.
type Waker struct {
	Reader client.Reader
	Events chan event.TypedGenericEvent[*v1alpha1.Runner]

	mu   sync.Mutex
	last map[Key]map[string]string
}

// NewWaker returns a waker with a buffered channel.
func NewWaker(reader client.Reader) *Waker {
	return &Waker{Reader: reader, Events: make(chan event.TypedGenericEvent[*v1alpha1.Runner], 1024), last: map[Key]map[string]string{}}
}

// OnRefresh is the Store hook.
func (w *Waker) OnRefresh(k Key, snap *Snapshot) {
	current := map[string]string{}
	names := map[string]string{}
	for _, r := range snap.Runners() {
		current[r.UUID] = fingerprint(r)
		names[r.UUID] = r.Name
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
		if len(list.Items) == 0 && names[uuid] != "" {
			if err := w.Reader.List(ctx, &list, client.MatchingFields{runnerNameIndex: names[uuid]}); err != nil {
				log.FromContext(ctx).Error(err, "find runner to wake", "name", names[uuid])
				continue
			}
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
	return string(r.State.Status) + "/" + r.StepID()
}
