package controllers

import (
	"context"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// runnerWakeSpacing is the least time between the start of a pool's reconcile and a reconcile
// that a change of one of its Runners brings. A pool of 100 starting runners sees hundreds of
// Runner changes (created, registered, pod ready, online) within seconds; reconciling and
// writing the pool's status for each would cost more API server writes than the runners
// themselves, while one reconcile per second sees the same runners a moment later. A change
// after a quiet second (a runner taking a step, one finishing its drain) still reconciles the
// pool at once, and the pool's own spec, its poll requests and its poll interval are not spaced.
const runnerWakeSpacing = time.Second

// poolWakes spaces out the reconciles of each pool that its Runners' changes cause. The zero
// value is ready to use.
type poolWakes struct {
	mu   sync.Mutex
	last map[types.NamespacedName]time.Time
}

// started records that a reconcile of the pool started at now.
func (w *poolWakes) started(pool types.NamespacedName, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = map[types.NamespacedName]time.Time{}
	}
	w.last[pool] = now
}

// delay is how long a reconcile of the pool that a Runner change asks for at now waits: until
// runnerWakeSpacing after the start of the last one, and not at all when that is past.
func (w *poolWakes) delay(pool types.NamespacedName, now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	last, ok := w.last[pool]
	if !ok {
		return 0
	}
	return max(last.Add(runnerWakeSpacing).Sub(now), 0)
}

func (w *poolWakes) forget(pool types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.last, pool)
}

// handler enqueues the pool that controls a Runner when the Runner changes, spaced out by
// delay. Waits are merged by the work queue: a pool waiting for its turn is queued once,
// however many of its Runners change meanwhile.
func (w *poolWakes) handler(now func() time.Time) handler.TypedEventHandler[client.Object, reconcile.Request] {
	enqueue := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
		for _, obj := range objs {
			ref := metav1.GetControllerOf(obj)
			if ref == nil || ref.Kind != "RunnerPool" {
				continue
			}
			if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != v1alpha1.GroupVersion.Group {
				continue
			}
			req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: ref.Name}}
			if d := w.delay(req.NamespacedName, now()); d > 0 {
				q.AddAfter(req, d)
			} else {
				q.Add(req)
			}
		}
	}
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, e.Object)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, e.ObjectOld, e.ObjectNew)
		},
		DeleteFunc: func(_ context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, e.Object)
		},
		GenericFunc: func(_ context.Context, e event.TypedGenericEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, e.Object)
		},
	}
}
