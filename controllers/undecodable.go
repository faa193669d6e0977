package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/metrics"
)

// Objects the operator cannot read (docs/adr/0012-undecodable-objects.md). A RunnerPool or
// Runner whose spec or status does not decode arrives with its metadata only (DecodeError says
// why). Its spec is empty, so acting on it would be acting on nothing: an update would wipe the
// spec, a scaling decision would drain every runner. The reconcilers report it on the object, in
// an event and in runnerpool_undecodable_objects, and change nothing else until it is fixed.

const (
	// ReasonInvalidSpec: the pool (or one of its runners) cannot be decoded.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonInvalidPodTemplate: the pool decodes, but no runner pod can be built from it.
	ReasonInvalidPodTemplate = "InvalidPodTemplate"
	// ReasonRunnerUndecodable: one of the pool's Runners cannot be decoded, so the pool does not
	// scale: it cannot tell whether that runner is busy.
	ReasonRunnerUndecodable = "RunnerUndecodable"

	kindRunnerPool = "RunnerPool"
	kindRunner     = "Runner"

	// undecodableRecheck is how often an undecodable object is looked at again when no change
	// to it arrives: a fix of the status alone does not change the generation, which is all the
	// pool controller watches for.
	undecodableRecheck = time.Minute
)

// reportUndecodablePool writes why the pool cannot be read into its Ready and ScalingActive
// conditions, with a status patch that carries nothing else, and leaves its runners alone.
func (r *RunnerPoolReconciler) reportUndecodablePool(ctx context.Context, pool *v1alpha1.RunnerPool, decodeErr error) (ctrl.Result, error) {
	metrics.UndecodableObjects.WithLabelValues(pool.Namespace, kindRunnerPool, pool.Name).Set(1)
	msg := fmt.Sprintf("The operator cannot read this RunnerPool (%s). Its runners are left as they are, none created, drained or deleted, until the object is fixed.", decodeErr)
	return r.reportPoolBlocked(ctx, pool, ReasonInvalidSpec, msg)
}

// reportUndecodableRunners holds the pool still while one of its Runners cannot be read.
func (r *RunnerPoolReconciler) reportUndecodableRunners(ctx context.Context, pool *v1alpha1.RunnerPool, bad *v1alpha1.Runner) (ctrl.Result, error) {
	msg := fmt.Sprintf("The operator cannot read Runner %s (%s). The pool neither scales nor deletes runners until it is fixed or deleted.", bad.Name, bad.DecodeError())
	return r.reportPoolBlocked(ctx, pool, ReasonRunnerUndecodable, msg)
}

// reportInvalidPodTemplate holds the pool still while no runner pod can be built from it (a
// clash between spec.template.spec and the operator's fields, say): registering runners that
// can never run would only fill Bitbucket with OFFLINE runners.
func (r *RunnerPoolReconciler) reportInvalidPodTemplate(ctx context.Context, pool *v1alpha1.RunnerPool, err error) (ctrl.Result, error) {
	msg := fmt.Sprintf("No runner pod can be built from this RunnerPool: %s. Its runners are left as they are, none created, drained or deleted, until the spec is fixed.", err)
	return r.reportPoolBlocked(ctx, pool, ReasonInvalidPodTemplate, msg)
}

func (r *RunnerPoolReconciler) reportPoolBlocked(ctx context.Context, pool *v1alpha1.RunnerPool, reason, msg string) (ctrl.Result, error) {
	if prev := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionReady); prev == nil || prev.Reason != reason || prev.Message != msg {
		action := "Decode"
		if reason == ReasonInvalidPodTemplate {
			action = "BuildPod"
		}
		r.event(pool, corev1.EventTypeWarning, reason, action, "%s", msg)
		log.FromContext(ctx).Info("pool left alone", "reason", reason, "message", msg)
	}
	before := pool.DeepCopy()
	setPoolCondition(pool, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
	setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, reason, msg)
	pool.Status.ObservedGeneration = pool.Generation
	if !equalStatus(before.Status, pool.Status) {
		// A merge patch of the status subresource: the pool's spec, unknown to us, is never sent.
		if err := r.Status().Patch(ctx, pool, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, fmt.Errorf("patch status of pool that cannot be decoded: %w", err)
		}
	}
	return ctrl.Result{RequeueAfter: undecodableRecheck}, nil
}

// firstUndecodable returns the first runner that could not be decoded, or nil.
func firstUndecodable(runners []v1alpha1.Runner) *v1alpha1.Runner {
	for i := range runners {
		if runners[i].DecodeError() != nil {
			return &runners[i]
		}
	}
	return nil
}

// reportUndecodableRunner records a Runner that cannot be read. Its status is not written: the
// status may be what does not decode, and the pool reports the runner to its users.
func (r *RunnerReconciler) reportUndecodableRunner(ctx context.Context, runner *v1alpha1.Runner) (ctrl.Result, error) {
	g := metrics.UndecodableObjects.WithLabelValues(runner.Namespace, kindRunner, runner.Name)
	if first := readGauge(g) == 0; first {
		r.event(runner, corev1.EventTypeWarning, ReasonInvalidSpec, "Decode",
			"The operator cannot read this Runner (%s); its pod and Bitbucket runner are left as they are", runner.DecodeError())
		log.FromContext(ctx).Info("runner left alone: it cannot be decoded", "error", runner.DecodeError().Error())
	}
	g.Set(1)
	return ctrl.Result{RequeueAfter: undecodableRecheck}, nil
}

// forgetUndecodable drops the object's series once it decodes again or is gone.
func forgetUndecodable(kind, namespace, name string) {
	metrics.UndecodableObjects.DeleteLabelValues(namespace, kind, name)
}

// readGauge is the gauge's current value (0 for a fresh series), so that a report is made once
// per object and process rather than at every recheck.
func readGauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return 0
	}
	return m.GetGauge().GetValue()
}
