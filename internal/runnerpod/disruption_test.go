package runnerpod

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

func TestBusyMarks(t *testing.T) {
	busyLabels := map[string]string{v1alpha1.LabelPool: "p", v1alpha1.LabelBusy: "true"}
	busyAnnotations := map[string]string{"a": "b", v1alpha1.AnnotationSafeToEvict: "false", v1alpha1.AnnotationDoNotDisrupt: "true"}
	tests := []struct {
		name            string
		user            map[string]string
		labels, annots  map[string]string
		busy            bool
		wantLabels      map[string]string
		wantAnnotations map[string]string
		wantChanged     bool
	}{
		{
			name: "an idle pod without marks is left alone (no write)", labels: map[string]string{v1alpha1.LabelPool: "p"}, annots: map[string]string{"a": "b"},
			wantLabels: map[string]string{v1alpha1.LabelPool: "p"}, wantAnnotations: map[string]string{"a": "b"},
		},
		{
			name: "a pod turning busy gets the label and both annotations", labels: map[string]string{v1alpha1.LabelPool: "p"}, annots: map[string]string{"a": "b"}, busy: true,
			wantLabels: busyLabels, wantAnnotations: busyAnnotations, wantChanged: true,
		},
		{
			name: "a busy pod already marked is left alone", labels: busyLabels, annots: busyAnnotations, busy: true,
			wantLabels: busyLabels, wantAnnotations: busyAnnotations,
		},
		{
			name: "a pod turning idle loses them", labels: busyLabels, annots: busyAnnotations,
			wantLabels: map[string]string{v1alpha1.LabelPool: "p"}, wantAnnotations: map[string]string{"a": "b"}, wantChanged: true,
		},
		{
			name: "a pod turning idle keeps the template's own values", user: map[string]string{v1alpha1.AnnotationSafeToEvict: "false"}, labels: busyLabels, annots: busyAnnotations,
			wantLabels: map[string]string{v1alpha1.LabelPool: "p"}, wantAnnotations: map[string]string{"a": "b", v1alpha1.AnnotationSafeToEvict: "false"}, wantChanged: true,
		},
		{
			name: "a busy value wins over the template's while busy", user: map[string]string{v1alpha1.AnnotationDoNotDisrupt: "false"},
			labels: map[string]string{v1alpha1.LabelPool: "p"}, annots: map[string]string{"a": "b", v1alpha1.AnnotationDoNotDisrupt: "false"}, busy: true,
			wantLabels: busyLabels, wantAnnotations: busyAnnotations, wantChanged: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool := &v1alpha1.RunnerPool{}
			pool.Spec.Template.Metadata.Annotations = tt.user
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: tt.labels, Annotations: tt.annots}}
			labels, annotations, changed := BusyMarks(pool, pod, tt.busy)
			if changed != tt.wantChanged || !equalMaps(labels, tt.wantLabels) || !equalMaps(annotations, tt.wantAnnotations) {
				t.Errorf("got %v %v changed=%t; want %v %v changed=%t", labels, annotations, changed, tt.wantLabels, tt.wantAnnotations, tt.wantChanged)
			}
			if len(pod.Labels) != len(tt.labels) {
				t.Error("BusyMarks changed the pod it was given")
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestNodeDraining(t *testing.T) {
	taint := func(key string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: key, Effect: corev1.TaintEffectNoSchedule}}}}
	}
	tests := []struct {
		name string
		node *corev1.Node
		want bool
	}{
		{"no node", nil, false},
		{"a schedulable node", &corev1.Node{}, false},
		{"cordoned (kubectl drain)", &corev1.Node{Spec: corev1.NodeSpec{Unschedulable: true}}, true},
		{"the unschedulable taint", taint(corev1.TaintNodeUnschedulable), true},
		{"Karpenter disrupting it", taint(TaintKarpenterDisrupted), true},
		{"the cluster-autoscaler removing it", taint(TaintClusterAutoscalerToBeDeleted), true},
		{"another taint", taint("dedicated"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, why := NodeDraining(tt.node); got != tt.want || (got && why == "") {
				t.Errorf("NodeDraining = %t %q; want %t", got, why, tt.want)
			}
		})
	}
}

func TestPodDisruptionBudgetSelectsOnlyBusyPodsOfThePool(t *testing.T) {
	pool := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: "builds", Namespace: "ci"}}
	pdb := PodDisruptionBudget(pool)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 0 || pdb.Spec.MinAvailable != nil {
		t.Errorf("budget %+v; want maxUnavailable 0", pdb.Spec)
	}
	want := map[string]string{v1alpha1.LabelPool: "builds", v1alpha1.LabelBusy: "true"}
	if !equalMaps(pdb.Spec.Selector.MatchLabels, want) || pdb.Namespace != "ci" || pdb.Name != "builds-busy-runners" {
		t.Errorf("budget %s/%s selects %v; want %v", pdb.Namespace, pdb.Name, pdb.Spec.Selector.MatchLabels, want)
	}
	long := &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("a.", 126) + "a"}}
	if n := PodDisruptionBudgetName(long); len(n) > 253 {
		t.Errorf("name of %d characters", len(n))
	}
}
