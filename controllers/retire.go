package controllers

import (
	"context"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// Reasons of the Runner's Retiring condition.
const (
	ReasonEphemeralStepTaken = "EphemeralStepTaken"
	ReasonNodeDraining       = "NodeDraining"
)

// markBusy keeps the pod's busy label and the autoscalers' annotations in step with the runner
// (runnerpod.BusyMarks). It writes only when the runner turns busy or idle, so a runner that
// never takes a step costs no pod write.
func (r *RunnerReconciler) markBusy(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, pod *corev1.Pod) error {
	if pod == nil {
		return nil
	}
	labels, annotations, changed := runnerpod.BusyMarks(pool, pod, runner.Status.Step != "")
	if !changed {
		return nil
	}
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Labels, pod.Annotations = labels, annotations
	if err := r.Patch(ctx, pod, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("mark runner pod %s busy=%t: %w", pod.Name, runner.Status.Step != "", err)
	}
	return nil
}

// retiring reports a runner that takes no further step (ConditionRetiring).
func retiring(runner *v1alpha1.Runner) bool {
	return meta.IsStatusConditionTrue(runner.Status.Conditions, v1alpha1.ConditionRetiring)
}

// retire disables, at the first sign, a runner that must take no further step: an ephemeral
// runner seen with a step, or a busy runner whose node is being drained (its pod's eviction is
// refused by the pool's PodDisruptionBudget until the step ends). Disabling while the step runs
// lets the step finish and keeps Bitbucket from handing the runner the next one; the pool then
// drains the runner as soon as it is idle (scaling: a spent runner), and its pod goes with it,
// which lets the drain of the node go on. The pool's own drain (spec.drain) does not wait for
// this: it needs one more reconcile of the pool, and a short step may be over by then.
func (r *RunnerReconciler) retire(ctx context.Context, scope *reconcileScope, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, pod *corev1.Pod) (ctrl.Result, error) {
	if runner.Spec.Drain || runner.Status.UUID == "" {
		return ctrl.Result{}, nil
	}
	if !retiring(runner) {
		reason, msg := r.retireReason(ctx, pool, runner, pod)
		if reason == "" {
			return ctrl.Result{}, nil
		}
		setCondition(runner, v1alpha1.ConditionRetiring, metav1.ConditionTrue, reason, msg)
		r.event(runner, corev1.EventTypeNormal, reason, "Retire", "%s", msg)
	}
	if runner.Status.DisabledTime != nil {
		return ctrl.Result{}, nil
	}
	ctx = bitbucket.WithPriority(ctx, bitbucket.PriorityHigh)
	if state, ok := r.storedState(scope.Key, runner.Status.UUID); !ok || state != bitbucket.RunnerStatusDisabled {
		if err := r.setState(ctx, scope, runner, bitbucket.RunnerStatusDisabled); err != nil {
			if bitbucket.IsNotFound(err) {
				return ctrl.Result{}, nil // gone from Bitbucket: the next observation handles it
			}
			return retryFlip(ctx, err)
		}
	}
	disabled := disabledTime(r.now())
	runner.Status.DisabledTime = &disabled
	return ctrl.Result{}, nil
}

// retireReason says why the runner must take no further step, "" when it may.
func (r *RunnerReconciler) retireReason(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, pod *corev1.Pod) (reason, message string) {
	st := runner.Status
	if pool.Spec.Runner.Ephemeral && (st.StepsStarted > 0 || st.Step != "") {
		return ReasonEphemeralStepTaken, "The ephemeral runner took its step; disabled in Bitbucket so that it takes no other, it goes when the step ends"
	}
	// Only a busy runner needs this: an idle pod is not covered by the PodDisruptionBudget and
	// is evicted at once, and the runner gets a new pod elsewhere.
	if st.Step == "" || pod == nil || pod.Spec.NodeName == "" || r.NodeReader == nil {
		return "", ""
	}
	node := &corev1.Node{}
	if err := r.NodeReader.Get(ctx, types.NamespacedName{Name: pod.Spec.NodeName}, node); err != nil {
		// Without read access to nodes (a namespaced install) drains are not noticed; the
		// PodDisruptionBudget still keeps the step from being killed.
		log.FromContext(ctx).V(1).Info("cannot read the runner pod's node", "node", pod.Spec.NodeName, "error", err.Error())
		return "", ""
	}
	if draining, why := runnerpod.NodeDraining(node); draining {
		return ReasonNodeDraining, why + "; disabled in Bitbucket, the runner goes when its step ends"
	}
	return "", ""
}

// ensureDisruptionBudget keeps the pool's PodDisruptionBudget for its busy runner pods
// (runnerpod.PodDisruptionBudget). It writes only when the budget is missing or differs.
func (r *RunnerPoolReconciler) ensureDisruptionBudget(ctx context.Context, pool *v1alpha1.RunnerPool) error {
	want := runnerpod.PodDisruptionBudget(pool)
	if err := controllerutil.SetControllerReference(pool, want, r.Scheme()); err != nil {
		return fmt.Errorf("own pod disruption budget: %w", err)
	}
	have := &policyv1.PodDisruptionBudget{}
	err := r.Get(ctx, client.ObjectKeyFromObject(want), have)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create pod disruption budget %s: %w", want.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("get pod disruption budget %s: %w", want.Name, err)
	}
	if equality.Semantic.DeepEqual(have.Spec.Selector, want.Spec.Selector) && equality.Semantic.DeepEqual(have.Spec.MaxUnavailable, want.Spec.MaxUnavailable) &&
		have.Spec.MinAvailable == nil && maps.Equal(have.Labels, want.Labels) {
		return nil
	}
	patch := client.MergeFrom(have.DeepCopy())
	have.Labels, have.Spec = want.Labels, want.Spec
	if err := r.Patch(ctx, have, patch); err != nil {
		return fmt.Errorf("restore pod disruption budget %s: %w", want.Name, err)
	}
	return nil
}
