package controllers

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// writtenStatus remembers the last status the Runner reconciler wrote for each Runner, until
// the informer cache shows it. A Runner's next reconcile often starts a moment after the patch
// (the pod it just created queued it again), before the watch has delivered the patched object:
// working from the stale copy would take a registered runner for an unregistered one, adopt it
// with an event, and write the same status a second time.
//
// The stale copy is recognised by its resourceVersion: it is the one the patch was computed
// from. Any other resourceVersion is the patched object or a later one, and the cache is used
// as it is. The zero value is ready to use.
type writtenStatus struct {
	mu   sync.Mutex
	byNN map[types.NamespacedName]written
}

type written struct {
	uid types.UID
	// stale are resourceVersions the cache may still show that predate the write: the one it
	// was computed from, and those of earlier writes made on top of a stale copy.
	stale []string
	// version is the resourceVersion the write produced.
	version string
	status  v1alpha1.RunnerStatus
}

// remember records the status written over the Runner read at resourceVersion from.
func (w *writtenStatus) remember(runner *v1alpha1.Runner, from string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byNN == nil {
		w.byNN = map[types.NamespacedName]written{}
	}
	key := types.NamespacedName{Namespace: runner.Namespace, Name: runner.Name}
	stale := []string{from}
	if prev, ok := w.byNN[key]; ok && prev.uid == runner.UID && slices.Contains(prev.stale, from) {
		// Written on top of a stale copy: the cache may show either of the earlier versions.
		stale = append(slices.Clone(prev.stale), prev.version)
	}
	w.byNN[key] = written{uid: runner.UID, stale: stale, version: runner.ResourceVersion, status: *runner.Status.DeepCopy()}
}

// apply replaces the status of a Runner read from a cache that does not show the last write
// yet with the status written, and forgets writes the cache shows.
func (w *writtenStatus) apply(runner *v1alpha1.Runner) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := types.NamespacedName{Namespace: runner.Namespace, Name: runner.Name}
	last, ok := w.byNN[key]
	if !ok {
		return
	}
	if last.uid != runner.UID || !slices.Contains(last.stale, runner.ResourceVersion) {
		delete(w.byNN, key)
		return
	}
	runner.Status = *last.status.DeepCopy()
}

// forget drops what is remembered of a Runner that is gone.
func (w *writtenStatus) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byNN, key)
}

// heldStatus remembers, per Runner, a status the Runner reconciler computed but chose not to
// write yet (holdStart), over the status the API server has. The next reconcile works from the
// held status, and the write that ends the hold is computed from the stored one, so it carries
// everything held. A crash loses only what the Runner's Secret and pod also record: the next
// process adopts the runner through them (ADR 0001).
//
// The held status is used only while the stored status is the one it was held over: a status
// written since, by anyone, wins. The zero value is ready to use.
type heldStatus struct {
	mu   sync.Mutex
	byNN map[types.NamespacedName]held
}

type held struct {
	uid          types.UID
	base, status v1alpha1.RunnerStatus
}

// hold records the Runner's status as held over base, the status the API server has.
func (h *heldStatus) hold(runner *v1alpha1.Runner, base v1alpha1.RunnerStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byNN == nil {
		h.byNN = map[types.NamespacedName]held{}
	}
	h.byNN[types.NamespacedName{Namespace: runner.Namespace, Name: runner.Name}] = held{uid: runner.UID, base: *base.DeepCopy(), status: *runner.Status.DeepCopy()}
}

// apply replaces the stored status of the Runner with the status held over it, and forgets a
// held status the stored one has moved on from.
func (h *heldStatus) apply(runner *v1alpha1.Runner) {
	h.mu.Lock()
	defer h.mu.Unlock()
	key := types.NamespacedName{Namespace: runner.Namespace, Name: runner.Name}
	last, ok := h.byNN[key]
	if !ok {
		return
	}
	if last.uid != runner.UID || !equalStatus(last.base, runner.Status) {
		delete(h.byNN, key)
		return
	}
	runner.Status = *last.status.DeepCopy()
}

// stored returns the status the API server has under a held one.
func (h *heldStatus) stored(runner *v1alpha1.Runner) (v1alpha1.RunnerStatus, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	last, ok := h.byNN[types.NamespacedName{Namespace: runner.Namespace, Name: runner.Name}]
	if !ok || last.uid != runner.UID {
		return v1alpha1.RunnerStatus{}, false
	}
	return *last.base.DeepCopy(), true
}

// forget drops what is held for a Runner once written, or gone.
func (h *heldStatus) forget(key types.NamespacedName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.byNN, key)
}
