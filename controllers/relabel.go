package controllers

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// ReasonLabelsChanged is the event reason of a runner replaced because its labels were changed
// in Bitbucket (scaling.ReasonLabelsChanged explains the rule).
const ReasonLabelsChanged = "LabelsChanged"

// warnRelabelled tells people with a warning event what Bitbucket shows for a runner the pool
// replaces because its labels were changed there.
func (r *RunnerPoolReconciler) warnRelabelled(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, labels []string) {
	if runner == nil {
		return
	}
	r.event(pool, corev1.EventTypeWarning, ReasonLabelsChanged, "Recycle",
		"Bitbucket runner %s of Runner %s has labels %v instead of %v (changed in Bitbucket): steps for the pool no longer go to it; replacing it once idle",
		runner.Status.UUID, runner.Name, labels, runnerpod.RunnerLabels(runner))
}
