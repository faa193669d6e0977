package controllers

import (
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// expectationTimeout bounds how long a created Runner is counted without being seen: long
// enough for any watch delay, short enough that a create lost in the API server does not hold
// a slot for long.
const expectationTimeout = time.Minute

// expectations are the Runners a pool created and its informer cache has not shown yet. The
// cache lags the API server by a watch event; without this, a reconcile right after creating
// three runners may see one and create two more.
type expectations struct {
	mu     sync.Mutex
	byPool map[client.ObjectKey]map[string]time.Time
}

func (e *expectations) add(pool client.ObjectKey, name string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.byPool == nil {
		e.byPool = map[client.ObjectKey]map[string]time.Time{}
	}
	if e.byPool[pool] == nil {
		e.byPool[pool] = map[string]time.Time{}
	}
	e.byPool[pool][name] = now
}

// pending returns the created Runners not in the listed ones, and forgets those seen or too old.
func (e *expectations) pending(pool client.ObjectKey, listed []v1alpha1.Runner, now time.Time) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	names := e.byPool[pool]
	if len(names) == 0 {
		return nil
	}
	for i := range listed {
		delete(names, listed[i].Name)
	}
	var out []string
	for name, at := range names {
		if now.Sub(at) > expectationTimeout {
			delete(names, name)
			continue
		}
		out = append(out, name)
	}
	return out
}

func (e *expectations) forget(pool client.ObjectKey) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.byPool, pool)
}
