package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/layercache"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// ReasonWaitingForLayerCache is the Runner's PodReady reason while every layer cache claim the
// pool may keep is held by another runner or on its way out.
const ReasonWaitingForLayerCache = "WaitingForLayerCache"

// layerCacheRecheck is how soon a runner waiting for a claim, or a stopping runner waiting for
// its pod to go before it frees its claim, looks again.
const layerCacheRecheck = 2 * time.Second

// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete

// claimsOf lists the pool's layer cache claims: labelled with the pool and owned by it.
func claimsOf(ctx context.Context, c client.Reader, pool *v1alpha1.RunnerPool) ([]corev1.PersistentVolumeClaim, error) {
	var list corev1.PersistentVolumeClaimList
	if err := c.List(ctx, &list, client.InNamespace(pool.Namespace), client.MatchingLabels{v1alpha1.LabelPool: pool.Name}); err != nil {
		return nil, fmt.Errorf("list layer cache claims: %w", err)
	}
	out := list.Items[:0]
	for _, pvc := range list.Items {
		if ref := metav1.GetControllerOf(&pvc); ref != nil && ref.UID == pool.UID {
			out = append(out, pvc)
		}
	}
	return out, nil
}

func toClaims(pvcs []corev1.PersistentVolumeClaim, pool *v1alpha1.RunnerPool) []layercache.Claim {
	settings := layercache.Settings(pool.Spec.Docker.LayerCache)
	out := make([]layercache.Claim, 0, len(pvcs))
	for i := range pvcs {
		out = append(out, layercache.FromObject(&pvcs[i], settings))
	}
	return out
}

// acquireLayerCache gives the runner a claim of the pool's layer cache and records it in the
// status. It reports false while the runner must wait: no claim is free and the pool keeps as
// many as it may, or another runner took the chosen claim first (the update at the
// resourceVersion this reconcile saw fails, or the create finds the name taken).
func (r *RunnerReconciler) acquireLayerCache(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (bool, error) {
	pvcs, err := claimsOf(ctx, r, pool)
	if err != nil {
		return false, err
	}
	me := layercache.Runner{Name: runner.Name, UID: string(runner.UID), Recorded: runner.Status.LayerCacheClaim}
	choice := layercache.Choose(pool.Name, me, toClaims(pvcs, pool), int(pool.Spec.MaxRunners))
	logger := log.FromContext(ctx).WithValues("claim", choice.Claim, "reason", choice.Reason)
	switch choice.Action {
	case layercache.Keep:
	case layercache.Take:
		var pvc *corev1.PersistentVolumeClaim
		for i := range pvcs {
			if pvcs[i].Name == choice.Claim {
				pvc = pvcs[i].DeepCopy()
			}
		}
		layercache.Give(pvc, runner, r.now())
		if err := r.Update(ctx, pvc); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				logger.V(1).Info("layer cache claim changed before it could be taken; choosing again")
				return false, nil
			}
			return false, fmt.Errorf("take layer cache claim %s: %w", choice.Claim, err)
		}
		r.event(runner, corev1.EventTypeNormal, "LayerCacheTaken", "CreatePod", "Reusing layer cache claim %s", choice.Claim)
	case layercache.Create:
		pvc := layercache.NewClaim(pool, choice.Index, runner, r.now())
		if err := controllerutil.SetControllerReference(pool, pvc, r.Scheme()); err != nil {
			return false, fmt.Errorf("own layer cache claim: %w", err)
		}
		if err := r.Create(ctx, pvc); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return false, r.reportForeignClaim(ctx, pool, runner, choice.Claim)
			}
			return false, fmt.Errorf("create layer cache claim %s: %w", choice.Claim, err)
		}
		r.event(runner, corev1.EventTypeNormal, "LayerCacheCreated", "CreatePod", "Created layer cache claim %s", choice.Claim)
	default:
		setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonWaitingForLayerCache,
			"Waiting for a layer cache claim: "+choice.Reason)
		return false, nil
	}
	runner.Status.LayerCacheClaim = choice.Claim
	return true, nil
}

// reportForeignClaim explains a claim name that is taken: by the pool's own claim its cache does
// not show yet (try again), or by someone else's object, which the pool never touches.
func (r *RunnerReconciler) reportForeignClaim(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, name string) error {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: pool.Namespace, Name: name}, pvc); err != nil {
		return client.IgnoreNotFound(err)
	}
	if ref := metav1.GetControllerOf(pvc); ref == nil || ref.UID != pool.UID {
		msg := fmt.Sprintf("PersistentVolumeClaim %s exists and does not belong to pool %s; rename or remove it, or lower maxRunners", name, pool.Name)
		setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonWaitingForLayerCache, msg)
		r.event(runner, corev1.EventTypeWarning, ReasonWaitingForLayerCache, "CreatePod", "%s", msg)
	}
	return nil
}

// waitingForLayerCache reports a runner that got no claim at its last attempt.
func waitingForLayerCache(runner *v1alpha1.Runner) bool {
	return conditionReason(runner.Status.Conditions, v1alpha1.ConditionPodReady) == ReasonWaitingForLayerCache
}

// releaseLayerCache frees the claims a stopping runner holds, once its pod is gone: the daemon
// must have stopped before another starts on the same storage.
func (r *RunnerReconciler) releaseLayerCache(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (ctrl.Result, error) {
	pvcs, err := claimsOf(ctx, r, pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	var held []*corev1.PersistentVolumeClaim
	for i := range pvcs {
		c := layercache.FromObject(&pvcs[i], "")
		if c.Holder == runner.Name && c.HolderUID == string(runner.UID) {
			held = append(held, &pvcs[i])
		}
	}
	if len(held) == 0 {
		return ctrl.Result{}, nil
	}
	pod := &corev1.Pod{}
	err = r.Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}, pod)
	switch {
	case err == nil:
		if pod.DeletionTimestamp.IsZero() {
			if err := r.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("delete runner pod: %w", err)
			}
		}
		// The pod's deletion brings this Runner back (it owns the pod); the requeue is a backstop.
		return ctrl.Result{RequeueAfter: layerCacheRecheck}, nil
	case !apierrors.IsNotFound(err):
		return ctrl.Result{}, fmt.Errorf("get runner pod: %w", err)
	}
	var errs []error
	for _, pvc := range held {
		layercache.Release(pvc)
		if err := r.Update(ctx, pvc); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("release layer cache claim %s: %w", pvc.Name, err))
			continue
		}
		r.event(runner, corev1.EventTypeNormal, "LayerCacheReleased", "Unregister", "Released layer cache claim %s for the next runner", pvc.Name)
	}
	return ctrl.Result{}, errors.Join(errs...)
}

// tidyLayerCache frees the claims of Runners that went without freeing them (a finalizer removed
// by hand) and deletes the free claims the pool no longer wants (layercache.TidyClaims). Every
// write carries the resourceVersion the decision saw, so a claim a runner takes meanwhile is
// left alone.
func (r *RunnerPoolReconciler) tidyLayerCache(ctx context.Context, pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner) error {
	pvcs, err := claimsOf(ctx, r, pool)
	if err != nil || len(pvcs) == 0 {
		return err
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(pool.Namespace), client.MatchingLabels{v1alpha1.LabelPool: pool.Name}); err != nil {
		return fmt.Errorf("list runner pods: %w", err)
	}
	tidy := layercache.TidyClaims(toClaims(pvcs, pool), layercache.RunnersOf(runners), layercache.Mounted(pods.Items),
		int(pool.Spec.MaxRunners), pool.Spec.Docker.LayerCache != nil, r.now())
	byName := make(map[string]*corev1.PersistentVolumeClaim, len(pvcs))
	for i := range pvcs {
		byName[pvcs[i].Name] = &pvcs[i]
	}
	var errs []error
	for _, name := range tidy.Release {
		pvc := byName[name].DeepCopy()
		holder := pvc.Labels[v1alpha1.LabelRunner]
		layercache.Release(pvc)
		if err := r.Update(ctx, pvc); err != nil {
			if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("release layer cache claim %s: %w", name, err))
			}
			continue
		}
		r.event(pool, corev1.EventTypeNormal, "LayerCacheReleased", "Cleanup", "Released layer cache claim %s: its runner %s is gone", name, holder)
	}
	for _, name := range tidy.Delete {
		pvc := byName[name]
		rv := pvc.ResourceVersion
		if err := r.Delete(ctx, pvc, client.Preconditions{UID: &pvc.UID, ResourceVersion: &rv}); err != nil {
			if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete layer cache claim %s: %w", name, err))
			}
			continue
		}
		r.event(pool, corev1.EventTypeNormal, "LayerCacheDeleted", "Cleanup", "Deleted layer cache claim %s", name)
	}
	return errors.Join(errs...)
}

// poolOfPod maps a runner pod to its pool, so that a pod going wakes the pool to free claims.
func poolOfPod(_ context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetLabels()[v1alpha1.LabelPool]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}

var _ handler.MapFunc = poolOfPod
