package runnerpod

import (
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Node taints that announce a node is about to go (ADR 0024). Cordoning (`kubectl drain`)
// sets spec.unschedulable, which the node lifecycle controller mirrors as TaintNodeUnschedulable.
const (
	// TaintKarpenterDisrupted is put on a node Karpenter is consolidating, expiring or replacing.
	TaintKarpenterDisrupted = "karpenter.sh/disrupted"
	// TaintClusterAutoscalerToBeDeleted is put on a node the cluster-autoscaler scales down.
	TaintClusterAutoscalerToBeDeleted = "ToBeDeletedByClusterAutoscaler"
)

// NodeDraining reports whether the node is being emptied: cordoned, or tainted for removal by
// Karpenter or the cluster-autoscaler. Its message names which, for the Runner's condition.
func NodeDraining(node *corev1.Node) (bool, string) {
	if node == nil {
		return false, ""
	}
	if node.Spec.Unschedulable {
		return true, "node " + node.Name + " is cordoned"
	}
	for _, t := range node.Spec.Taints {
		switch t.Key {
		case TaintKarpenterDisrupted:
			return true, "Karpenter is disrupting node " + node.Name
		case TaintClusterAutoscalerToBeDeleted:
			return true, "the cluster-autoscaler is removing node " + node.Name
		case corev1.TaintNodeUnschedulable:
			return true, "node " + node.Name + " is cordoned"
		}
	}
	return false, ""
}

// BusyMarks returns the pod's labels and annotations as they should be with the runner busy or
// idle, and whether they differ from the pod's. A busy pod carries LabelBusy (which the pool's
// PodDisruptionBudget selects), the cluster-autoscaler's safe-to-evict "false" and Karpenter's
// do-not-disrupt "true"; an idle pod has none of them, except the values the pool's template
// gives the annotations, which always win when idle (a team may pin its runners to their nodes).
func BusyMarks(pool *v1alpha1.RunnerPool, pod *corev1.Pod, busy bool) (labels, annotations map[string]string, changed bool) {
	labels, annotations = maps.Clone(pod.Labels), maps.Clone(pod.Annotations)
	if labels == nil {
		labels = map[string]string{}
	}
	if annotations == nil {
		annotations = map[string]string{}
	}
	user := pool.Spec.Template.Metadata.Annotations
	set := func(m map[string]string, key, busyValue string, keepUser bool) {
		switch {
		case busy:
			m[key] = busyValue
		case keepUser && user[key] != "":
			m[key] = user[key]
		default:
			delete(m, key)
		}
	}
	set(labels, v1alpha1.LabelBusy, "true", false)
	set(annotations, v1alpha1.AnnotationSafeToEvict, "false", true)
	set(annotations, v1alpha1.AnnotationDoNotDisrupt, "true", true)
	changed = !maps.Equal(labels, pod.Labels) || !maps.Equal(annotations, pod.Annotations)
	return labels, annotations, changed
}

// PodDisruptionBudgetName is the name of the pool's PodDisruptionBudget.
func PodDisruptionBudgetName(pool *v1alpha1.RunnerPool) string {
	const suffix = "-busy-runners"
	name := pool.Name
	if len(name) > 253-len(suffix) {
		// A cut right after a dot would leave ".-", which no object name may contain.
		name = strings.TrimRight(name[:253-len(suffix)], ".")
	}
	return name + suffix
}

// PodDisruptionBudget is the pool's budget for its busy runner pods: none may be evicted, so
// `kubectl drain`, Karpenter and the cluster-autoscaler get 429 from the Eviction API for a
// pod in the middle of a step and retry, while idle pods (without LabelBusy) are evicted at once.
func PodDisruptionBudget(pool *v1alpha1.RunnerPool) *policyv1.PodDisruptionBudget {
	zero := intstr.FromInt32(0)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{
			Name:      PodDisruptionBudgetName(pool),
			Namespace: pool.Namespace,
			Labels:    map[string]string{v1alpha1.LabelPool: pool.Name},
		},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: &zero,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{
				v1alpha1.LabelPool: pool.Name,
				v1alpha1.LabelBusy: "true",
			}},
		},
	}
}
