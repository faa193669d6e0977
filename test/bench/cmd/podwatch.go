package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// runningPods records when each runner pod was first seen Running, from a watch, so that a
// scenario can tell the time the operator took to have its pods Running from the time the
// simulated agents then take to connect, without listing pods in a loop.
type runningPods struct {
	mu sync.Mutex
	// seen and first are when each pod was first seen at all, and first seen Running.
	seen, first map[string]time.Time
	stop        context.CancelFunc
}

func watchRunningPods(ctx context.Context, cs kubernetes.Interface) (*runningPods, error) {
	ctx, cancel := context.WithCancel(ctx)
	r := &runningPods{seen: map[string]time.Time{}, first: map[string]time.Time{}, stop: cancel}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = v1alpha1.LabelRunner
	}))
	informer := factory.Core().V1().Pods().Informer()
	observe := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		key := pod.Namespace + "/" + pod.Name
		now := time.Now()
		r.mu.Lock()
		if _, seen := r.seen[key]; !seen {
			r.seen[key] = now
		}
		if _, seen := r.first[key]; !seen && pod.Status.Phase == corev1.PodRunning {
			r.first[key] = now
		}
		r.mu.Unlock()
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	}); err != nil {
		cancel()
		return nil, fmt.Errorf("watch runner pods: %w", err)
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			cancel()
			return nil, fmt.Errorf("watch runner pods: cache for %v did not sync", typ)
		}
	}
	return r, nil
}

// lastOf returns when the n-th pod was first seen Running, or false when fewer have run.
func (r *runningPods) lastOf(n int) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.first) < n {
		return time.Time{}, false
	}
	var last time.Time
	for _, t := range r.first {
		if t.After(last) {
			last = t
		}
	}
	return last, true
}

// timeline says, from start, when half and all of the pods were first seen, and first seen
// Running: whether the last pods were late to be created or late to run.
func (r *runningPods) timeline(start time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	since := func(m map[string]time.Time) (half, last time.Duration) {
		var ds []time.Duration
		for _, t := range m {
			ds = append(ds, t.Sub(start))
		}
		if len(ds) == 0 {
			return 0, 0
		}
		slices.Sort(ds)
		return ds[len(ds)/2], ds[len(ds)-1]
	}
	ch, cl := since(r.seen)
	rh, rl := since(r.first)
	return fmt.Sprintf("pods created: half after %.1f s, all after %.1f s; Running: half after %.1f s, all after %.1f s",
		ch.Seconds(), cl.Seconds(), rh.Seconds(), rl.Seconds())
}
