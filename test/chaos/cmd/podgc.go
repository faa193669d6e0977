package main

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// podGCQuarantine is how long kube-controller-manager's pod garbage collector waits before it
// deletes a pod bound to a node that no longer exists.
const podGCQuarantine = 40 * time.Second

// podGC plays the pod garbage collector, which the test control plane does not run: a pod the
// scheduler bound to a node in the moment that node was removed stays Pending forever otherwise,
// which no real cluster does.
func (r *run) podGC(ctx context.Context) {
	orphanedSince := map[string]time.Time{}
	for {
		if sleep(ctx, 5*time.Second) != nil {
			return
		}
		nodes, err := r.env.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		exists := map[string]bool{}
		for _, n := range nodes.Items {
			exists[n.Name] = true
		}
		pods, err := r.env.cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		seen := map[string]bool{}
		for _, pod := range pods.Items {
			if pod.Spec.NodeName == "" || exists[pod.Spec.NodeName] {
				continue
			}
			key := pod.Namespace + "/" + pod.Name + "/" + string(pod.UID)
			seen[key] = true
			first, ok := orphanedSince[key]
			if !ok {
				orphanedSince[key] = time.Now()
				continue
			}
			if time.Since(first) < podGCQuarantine {
				continue
			}
			r.attrib.add(pod.Annotations[v1alpha1.AnnotationRunnerUUID], "pod garbage-collected after its node was removed")
			err := r.env.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
				GracePeriodSeconds: new(int64),
				Preconditions:      &metav1.Preconditions{UID: &pod.UID},
			})
			if err == nil || apierrors.IsNotFound(err) {
				r.say("    pod garbage collector: deleted %s/%s, bound to removed node %s", pod.Namespace, pod.Name, pod.Spec.NodeName)
				r.res.mu.Lock()
				r.res.OrphanedPodsCollected++
				r.res.mu.Unlock()
				delete(orphanedSince, key)
			}
		}
		for key := range orphanedSince {
			if !seen[key] {
				delete(orphanedSince, key)
			}
		}
	}
}
