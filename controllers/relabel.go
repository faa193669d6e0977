package controllers

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
)

// Runners renamed or relabelled in Bitbucket, behind the operator's back (the Bitbucket UI lets
// a person edit both; the runners API has no update the operator could undo it with).
//
// A rename changes nothing: a Runner knows its Bitbucket runner by UUID once registered (and,
// in the moment before the UUID is saved, by the UUID its Secret names), so a renamed runner
// keeps its Runner, is drained, unregistered and deleted by UUID like any other,
// and is never taken for an orphan (removeOrphans skips every UUID a Runner records, whatever the
// name). Only a runner with the pool's marker and no Runner is removed as an orphan; a renamed
// runner that lost the marker and whose Runner is gone is left alone, because nothing proves it
// is still ours: a person who renamed it may have taken it over, and deleting someone's runner
// is worse than leaving a registration to remove by hand. (Deleting its Runner unregisters it by
// UUID, so this only happens when a Runner is removed without its finalizer.)
//
// A relabel does matter: Bitbucket hands a step to a runner that has all its runs-on labels, so
// a relabelled runner stops taking the pool's steps and may take another pool's. The pool treats
// it like a runner due for recycling: replaced once idle, one at a time, never while it runs a
// step; its drain disables it first, so a step it took in the meantime finishes.

// ReasonLabelsChanged is the event reason, and labels_changed the drain reason of the metric, of
// a runner replaced because its labels were changed in Bitbucket.
const (
	ReasonLabelsChanged      = "LabelsChanged"
	drainReasonLabelsChanged = "labels_changed"
)

// labelsChangedInBitbucket returns the labels Bitbucket shows for the runner when they are not
// the labels it was registered with. A runner not registered, not in the observation or listed
// without labels is taken as unchanged: only a label set seen to differ replaces a runner. The
// comparison is with the Runner's labels, not the pool's, so that it finds edits made in
// Bitbucket; it relies on Bitbucket keeping the labels a runner is created with as they were
// sent (as the runners API does), or every replacement would differ again.
func labelsChangedInBitbucket(runner *v1alpha1.Runner, snap *runnerlist.Snapshot) ([]string, bool) {
	if runner.Status.UUID == "" || len(runner.Spec.Labels) == 0 {
		return nil, false
	}
	bb, ok := snap.ByUUID(runner.Status.UUID)
	if !ok || len(bb.Labels) == 0 {
		return nil, false
	}
	have := sortedLabels(bb.Labels)
	want := sortedLabels(labelStrings(runner.Spec.Labels))
	if slices.Equal(have, want) {
		return nil, false
	}
	return have, true
}

// relabelDrainReason names the recycling of a relabelled runner for what it is (the metric's
// reason) and tells people with a warning event what Bitbucket shows; any other reason passes.
func (r *RunnerPoolReconciler) relabelDrainReason(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, snap *runnerlist.Snapshot, reason string) string {
	if reason != "recycle" || runner == nil || runner.Spec.Drain {
		return reason
	}
	labels, changed := labelsChangedInBitbucket(runner, snap)
	if !changed {
		return reason
	}
	r.event(pool, corev1.EventTypeWarning, ReasonLabelsChanged, "Recycle",
		"Bitbucket runner %s of Runner %s has labels %v instead of %v (changed in Bitbucket): steps for the pool no longer go to it; replacing it once idle",
		runner.Status.UUID, runner.Name, labels, labelStrings(runner.Spec.Labels))
	return drainReasonLabelsChanged
}
