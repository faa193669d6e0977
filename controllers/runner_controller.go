package controllers

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/credentials"
	"github.com/runnerpool/runnerpool-operator/internal/metrics"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

// Runner condition reasons.
const (
	ReasonRegistered         = "Registered"
	ReasonRegistrationFailed = "RegistrationFailed"
	ReasonRunnerLimitReached = "RunnerLimitReached"
	ReasonCredentials        = "CredentialsUnavailable"
	ReasonOnline             = "Online"
	ReasonNotOnline          = "NotOnline"
	// ReasonOutOfScope: the Runner names a workspace, repository or Bitbucket runner outside
	// its pool's scope and marker (see runnerpod.OutOfScope); nothing is done in Bitbucket.
	ReasonOutOfScope = "OutOfScope"
	// ReasonNotControlled: a pod or Secret has the name the Runner's would have, but the Runner
	// does not control it; it is left alone.
	ReasonNotControlled = "NotControlled"
	// ReasonPodEnded: the runner pod ended (Failed or Succeeded) and is being replaced.
	ReasonPodEnded = "PodEnded"
	// ReasonPodRestartBackoff: pods ended in a row before the runner came ONLINE; the next one
	// waits (scaling.RecreatePod).
	ReasonPodRestartBackoff = "PodRestartBackoff"
)

// RunnerReconciler acts on one Runner: it registers the Bitbucket runner, keeps its Secret and
// pod, mirrors the Bitbucket state into status, drains it when asked and unregisters it before
// the object goes.
type RunnerReconciler struct {
	client.Client
	// APIReader reads what the cache cannot show: the cache holds only pods and Secrets with
	// the pool label, so an object someone else made under a runner's name is read through it
	// (once per registration, and when a create finds the name taken). The client when nil.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clients   *credentials.Clients
	Store     *runnerlist.Store
	// Wake receives Runners whose Bitbucket state changed in a new observation.
	Wake <-chan event.TypedGenericEvent[*v1alpha1.Runner]
	// NodeReader reads the node of a busy runner's pod, to notice a drain (ADR 0024). It reads
	// the API server directly, one node per busy runner and poll, so the operator keeps no cache
	// of the cluster's nodes. Nil: drains are not noticed.
	NodeReader client.Reader
	// Clock is the real clock unless a test sets one.
	Clock clock.PassiveClock

	flips   stateFlips
	written writtenStatus
	held    heldStatus
}

// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runners,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runners/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runners/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one Runner closer to its desired state.
func (r *RunnerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	runner := &v1alpha1.Runner{}
	if err := r.Get(ctx, req.NamespacedName, runner); err != nil {
		if apierrors.IsNotFound(err) {
			forgetUndecodable(kindRunner, req.Namespace, req.Name)
			r.written.forget(req.NamespacedName)
			r.held.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.written.apply(runner)
	r.held.apply(runner)
	if runner.DecodeError() != nil {
		return r.reportUndecodableRunner(ctx, runner)
	}
	forgetUndecodable(kindRunner, runner.Namespace, runner.Name)
	pool, err := r.poolOf(ctx, runner)
	if err != nil {
		return ctrl.Result{}, err
	}
	if pool != nil && pool.DecodeError() != nil {
		// The pool reports it; without its spec the runner can neither be registered, nor have
		// its pod rebuilt, nor be unregistered with the right credentials.
		return ctrl.Result{RequeueAfter: undecodableRecheck}, nil
	}
	if !runner.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, pool, runner)
	}
	if pool != nil {
		if why := runnerpod.OutOfScope(pool, runner); why != "" {
			return r.refuse(ctx, runner, why)
		}
	}
	if pool == nil {
		// The pool is gone without draining us (its finalizer was removed by hand): nothing can
		// be registered without its credentials, and deleting the Runner unregisters what exists.
		log.FromContext(ctx).Info("runner has no pool, deleting it")
		return ctrl.Result{}, client.IgnoreNotFound(r.Delete(ctx, runner))
	}
	if controllerutil.AddFinalizer(runner, v1alpha1.RunnerFinalizer) {
		if err := r.Update(ctx, runner); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
		r.held.apply(runner) // the update returned the stored status
	}

	before := runner.DeepCopy()
	res, err := throttled(r.reconcileNormal(ctx, pool, runner))
	runner.Status.Phase = runnerPhase(runner)
	runner.Status.ObservedGeneration = runner.Generation
	holdPodReady(before, runner, r.podReadySince(ctx, runner), r.now())
	stored, ok := r.held.stored(runner)
	if !ok {
		stored = before.Status
	}
	if holdStart(stored, runner, r.now()) {
		r.held.hold(runner, stored)
		// Written at the latest when the hold is over, whatever else brings the Runner back.
		if left := runner.Status.RegisteredTime.Add(startHold).Sub(r.now()) + time.Second; err == nil && (res.RequeueAfter == 0 || res.RequeueAfter > left) {
			res.RequeueAfter = left
		}
		return res, err
	}
	if perr := r.patchStatus(ctx, before, runner); perr != nil {
		err = errors.Join(err, perr)
	}
	return res, err
}

// startHold is how long the status of a runner registered moments ago may wait to be written
// with its connection: about as long as a pod on a node that has the images takes to start and
// its agent to connect. Reconciles meanwhile work from the status held in memory
// (heldStatus), so a runner that connects in time costs one status write for its registration,
// its pod, the pod's readiness and its connection, instead of two. One that has not connected
// by then has its status written as it is. Nothing waits on the written status meanwhile: the
// pool counts a Runner without one as starting, as it counts a registered one, its timeouts
// (30 s at least) run from the Runner's creation, and the Secret and the pod name the UUID.
const startHold = podReadyHold

// holdStart reports a status to hold back (heldStatus) rather than write: the first news of a
// fresh Runner (stored: nothing written yet) that is only its start going as it should, a
// registration less than startHold old, a pod created or ready, no connection yet. Anything
// else (a failure, a drain, a deletion, the connection) is written at once, with what was held.
func holdStart(stored v1alpha1.RunnerStatus, after *v1alpha1.Runner, now time.Time) bool {
	st := after.Status
	if stored.UUID != "" || len(stored.Conditions) > 0 || !after.DeletionTimestamp.IsZero() || after.Spec.Drain ||
		st.Phase != v1alpha1.RunnerPhaseStarting || st.RegisteredTime == nil || now.Sub(st.RegisteredTime.Time) >= startHold {
		return false
	}
	for _, c := range st.Conditions {
		switch {
		case c.Type == v1alpha1.ConditionRegistered && c.Status == metav1.ConditionTrue:
		case c.Type == v1alpha1.ConditionPodReady && (c.Reason == runnerpod.ReasonPodNotReady || c.Reason == runnerpod.ReasonPodRunning):
		case c.Type == v1alpha1.ConditionOnline && c.Status == metav1.ConditionFalse:
		default:
			return false
		}
	}
	return true
}

func (r *RunnerReconciler) reconcileNormal(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (ctrl.Result, error) {
	api, err := r.Clients.For(ctx, pool)
	if err != nil {
		_, msg, ok := credentials.Condition(err)
		if !ok {
			return ctrl.Result{}, err
		}
		// The pool reports the credentials problem; the runner waits without a hot loop.
		setCondition(runner, v1alpha1.ConditionRegistered, metav1.ConditionFalse, ReasonCredentials, msg)
		return ctrl.Result{RequeueAfter: max(scaling.EffectivePoll(pool, nil), time.Minute)}, nil
	}
	scope := newScope(pool, api, r.Clients.ListKey(pool), r.now(), time.Time{})

	if runner.Status.UUID == "" && runner.Spec.Drain {
		if err := r.recoverRegistration(ctx, runner); err != nil {
			return ctrl.Result{}, err
		}
	}
	// A draining runner without a registration (it vanished from Bitbucket) is deleted below,
	// not registered again.
	if runner.Status.UUID == "" && !runner.Spec.Drain {
		if res, err := r.register(ctx, scope, runner); err != nil || !res.IsZero() {
			return res, err
		}
	}
	// A runner whose pod just became ready connects within seconds: look again soon, so the
	// pool counts it (and the step it takes) long before the next regular poll. The lists are
	// shared by every runner of the scope, and this stops after connectWindow.
	requeue, notBefore := scope.Poll, scope.NotBefore
	if r.awaitingConnection(runner, r.podReadySince(ctx, runner)) {
		requeue = connectRecheck
		notBefore = scope.Now.Add(-connectRecheck)
	}
	scope.Snapshot, err = r.Store.Get(ctx, scope.Key, api, notBefore)
	if err != nil {
		if _, _, ok := credentials.Condition(err); ok {
			// The pool reports it; the runner waits without a hot loop.
			return ctrl.Result{RequeueAfter: max(scope.Poll, time.Minute)}, nil
		}
		return ctrl.Result{}, err
	}
	r.Clients.Listed(scope.Key)
	if why := r.foreignRunner(ctx, pool, runner, scope.Snapshot); why != "" {
		r.eventOnce(runner, ReasonOutOfScope, "Observe", why)
		setCondition(runner, v1alpha1.ConditionRegistered, metav1.ConditionFalse, ReasonOutOfScope, why)
		return ctrl.Result{}, nil
	}
	if vanished := r.mirror(ctx, runner, scope.Snapshot); vanished {
		return ctrl.Result{Requeue: true}, nil
	}
	pod, podWait, err := r.reconcilePod(ctx, pool, runner)
	if err != nil {
		return ctrl.Result{}, err
	}
	if podWait > 0 {
		// Nothing runs to be observed meanwhile; the waker and the pool bring it back on news.
		requeue = podWait
	}
	if err := r.markBusy(ctx, pool, runner, pod); err != nil {
		return ctrl.Result{}, err
	}
	if res, err := r.retire(ctx, scope, pool, runner, pod); err != nil || !res.IsZero() {
		return res, err
	}
	if res, err := r.reconcileDrain(ctx, scope, runner); err != nil || !res.IsZero() {
		return res, err
	}
	if r.awaitingConnection(runner, readySinceOf(runner)) {
		requeue = min(requeue, connectRecheck)
	}
	if waitingForLayerCache(runner) {
		requeue = min(requeue, layerCacheRecheck)
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

const (
	// connectRecheck is how soon a runner whose pod is ready is observed again.
	connectRecheck = 2 * time.Second
	// connectWindow bounds the quick rechecks: a runner that does not connect by then is
	// observed at the pool's pace, so a broken agent cannot burn the request budget.
	connectWindow = time.Minute
)

// awaitingConnection reports a runner whose pod became ready at readySince (zero: it is not
// ready) but which Bitbucket does not show ONLINE yet, within connectWindow of the pod becoming
// ready.
func (r *RunnerReconciler) awaitingConnection(runner *v1alpha1.Runner, readySince time.Time) bool {
	st := runner.Status
	if st.UUID == "" || st.Step != "" || st.BitbucketState == string(bitbucket.RunnerStatusOnline) || runner.Spec.Drain {
		return false
	}
	return !readySince.IsZero() && r.now().Sub(readySince) < connectWindow
}

// readySinceOf is when the runner's pod became ready, as its PodReady condition says; zero when
// it says the pod is not ready.
func readySinceOf(runner *v1alpha1.Runner) time.Time {
	if c := meta.FindStatusCondition(runner.Status.Conditions, v1alpha1.ConditionPodReady); c != nil && c.Status == metav1.ConditionTrue {
		return c.LastTransitionTime.Time
	}
	return time.Time{}
}

// podReadySince is when the runner's pod became ready, from the pod itself: the Runner's
// PodReady condition may not say so yet (holdPodReady).
func (r *RunnerReconciler) podReadySince(ctx context.Context, runner *v1alpha1.Runner) time.Time {
	pod := &corev1.Pod{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}, pod); err != nil || !pod.DeletionTimestamp.IsZero() {
		return time.Time{}
	}
	return runnerpod.ReadySince(pod)
}

// podReadyHold is how long a runner's PodReady condition may wait to be written with its
// connection: about as long as an agent takes to start and connect once its pod is ready. The
// Runner is observed every connectRecheck meanwhile, so when the connection comes, the two cost
// one status write instead of two; a runner that has not connected by then has PodReady written
// on its own. Nothing waits on it: the pool's check for agents that never connect looks at it
// only after the pending timeout (30 s at least), and the quick rechecks go by the pod.
const podReadyHold = 15 * time.Second

// holdPodReady leaves the PodReady condition of after as it is in before when the news it
// brings is a pod that became ready at readySince, less than podReadyHold ago, for a runner
// Bitbucket does not show ONLINE yet: its connection, expected any moment, writes both. It
// reports whether it held the condition back.
func holdPodReady(before, after *v1alpha1.Runner, readySince, now time.Time) bool {
	was := meta.FindStatusCondition(before.Status.Conditions, v1alpha1.ConditionPodReady)
	is := meta.FindStatusCondition(after.Status.Conditions, v1alpha1.ConditionPodReady)
	st := after.Status
	// Only a pod that was starting is held: one that recovers from failing is news for the pool
	// (the runner is no longer a candidate for replacement) and for people.
	if is == nil || is.Status != metav1.ConditionTrue || (was != nil && was.Reason != runnerpod.ReasonPodNotReady) ||
		st.UUID == "" || st.Step != "" || st.BitbucketState == string(bitbucket.RunnerStatusOnline) ||
		after.Spec.Drain || !after.DeletionTimestamp.IsZero() || readySince.IsZero() || now.Sub(readySince) >= podReadyHold {
		return false
	}
	if was == nil {
		meta.RemoveStatusCondition(&after.Status.Conditions, v1alpha1.ConditionPodReady)
	} else {
		*is = *was.DeepCopy()
	}
	return true
}

// register creates the Bitbucket runner and its Secret, or adopts the runner a crash left behind.
// The registration is not written on its own: the reconcile goes on to create the pod, and its
// one status patch at the end carries both. Until that patch, the Secret (created right after the
// Bitbucket runner, annotated with its UUID) is the record a crash leaves, and the next reconcile
// adopts the runner through it.
func (r *RunnerReconciler) register(ctx context.Context, scope *reconcileScope, runner *v1alpha1.Runner) (ctrl.Result, error) {
	api, key := scope.API, scope.Key
	logger := log.FromContext(ctx)
	bbScope := scopeOf(runner)
	// The look-up guards the create, so it must not be starved by a nearly spent budget.
	ctx = bitbucket.WithPriority(ctx, bitbucket.PriorityHigh)
	// A snapshot taken after the Runner existed is needed: an older one cannot show a runner
	// registered for it before a crash.
	snap, err := r.Store.Get(ctx, key, api, runner.CreationTimestamp.Time)
	if err != nil {
		return ctrl.Result{}, err
	}
	existing, ok := snap.ByName(runner.Spec.BitbucketName)
	// A runner of this name means an earlier attempt registered it: its Secret says whether to
	// adopt or replace it. Without one, the Secret is almost never there, and the create below
	// finds out when it is (secretInTheWay); reading it first would cost every new runner a
	// request to the API server, which is what bounds a scale-up. A Secret this Runner was
	// already found not to control is read first, so that a blocked Runner does not register
	// and unregister a runner every minute.
	var secret *corev1.Secret
	if ok || conditionReason(runner.Status.Conditions, v1alpha1.ConditionRegistered) == ReasonNotControlled {
		if secret, err = r.liveSecret(ctx, runner); err != nil {
			return ctrl.Result{}, err
		}
	}
	if secret != nil && !metav1.IsControlledBy(secret, runner) {
		return r.secretNotControlled(runner, secret), nil
	}
	if ok {
		if secret != nil && secret.Annotations[v1alpha1.AnnotationRunnerUUID] == existing.UUID {
			logger.Info("adopting Bitbucket runner registered before a restart", "uuid", existing.UUID)
			r.adopt(runner, existing.UUID, secret.Name)
			return ctrl.Result{}, nil
		}
		// Its OAuth secret was only ever returned at creation and is lost: the runner can never
		// connect, so replace it.
		if err := api.DeleteRunner(ctx, bbScope, existing.UUID); err != nil && !bitbucket.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("delete runner %s without credentials: %w", existing.UUID, err)
		}
		r.Store.Forget(key, existing.UUID)
		r.event(runner, corev1.EventTypeWarning, "Replaced", "Register", "Bitbucket runner %s had lost its credentials; registering a new one", existing.UUID)
	}
	if secret != nil {
		if err := r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("delete stale runner secret: %w", err)
		}
	}

	created, err := api.CreateRunner(ctx, bbScope, runner.Spec.BitbucketName, runnerpod.RunnerLabels(runner))
	if err != nil {
		if bitbucket.IsLimitReached(err) {
			msg := fmt.Sprintf("Bitbucket refused a new runner: the limit of %d runners per workspace or repository is reached", v1alpha1.MaxRunnersPerScope)
			setCondition(runner, v1alpha1.ConditionRegistered, metav1.ConditionFalse, ReasonRunnerLimitReached, msg)
			r.event(runner, corev1.EventTypeWarning, ReasonRunnerLimitReached, "Register", "%s", msg)
			return ctrl.Result{RequeueAfter: time.Minute}, nil
		}
		if reason, msg, ok := credentials.Condition(err); ok {
			// The pool reports PermissionDenied and InvalidCredentials from here: a list may
			// work with credentials that cannot create.
			setCondition(runner, v1alpha1.ConditionRegistered, metav1.ConditionFalse, reason, msg)
			return ctrl.Result{RequeueAfter: time.Minute}, nil
		}
		setCondition(runner, v1alpha1.ConditionRegistered, metav1.ConditionFalse, ReasonRegistrationFailed, err.Error())
		return ctrl.Result{}, fmt.Errorf("create runner %s: %w", runner.Spec.BitbucketName, err)
	}
	r.Store.Record(key, *created)
	if created.OAuthClient == nil || created.OAuthClient.ID == "" || created.OAuthClient.Secret == "" {
		return ctrl.Result{}, fmt.Errorf("create runner %s: Bitbucket returned no OAuth client credentials", runner.Spec.BitbucketName)
	}
	newSecret := runnerpod.BuildSecret(runner, created.UUID, created.OAuthClient.ID, created.OAuthClient.Secret)
	if err := controllerutil.SetControllerReference(runner, newSecret, r.Scheme()); err != nil {
		return ctrl.Result{}, fmt.Errorf("own runner secret: %w", err)
	}
	// If this fails, the next attempt finds the runner by name without a matching Secret and
	// replaces it: credentials are never guessed.
	if err := r.Create(ctx, newSecret); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, fmt.Errorf("create runner secret: %w", err)
		}
		return r.secretInTheWay(ctx, scope, runner, snap, created, newSecret)
	}
	// No event: the Registered condition says the same with its time, and an event per runner
	// would cost a write per runner (ADR 0019). Failures and adoptions keep theirs.
	r.markRegistered(runner, created.UUID, newSecret.Name)
	log.FromContext(ctx).V(1).Info("registered Bitbucket runner", "uuid", created.UUID)
	return ctrl.Result{}, nil
}

// secretInTheWay finishes a registration whose Secret could not be created because one of that
// name exists, which register did not read first. Its Bitbucket runner was just created. A
// Secret this Runner does not control makes it undo the registration and report the Secret. One
// it controls is left from an earlier registration: if that runner still exists (renamed in
// Bitbucket before its UUID was saved), it is adopted and the new one removed; if it is gone,
// the Secret is replaced.
func (r *RunnerReconciler) secretInTheWay(ctx context.Context, scope *reconcileScope, runner *v1alpha1.Runner, snap *runnerlist.Snapshot, created *bitbucket.Runner, newSecret *corev1.Secret) (ctrl.Result, error) {
	secret, err := r.liveSecret(ctx, runner)
	if err != nil {
		return ctrl.Result{}, err
	}
	undo := func(why string) error {
		if err := scope.API.DeleteRunner(ctx, scopeOf(runner), created.UUID); err != nil && !bitbucket.IsNotFound(err) {
			// The next attempt finds it by name and replaces or keeps it as register decides.
			return fmt.Errorf("delete runner %s just registered, %s: %w", created.UUID, why, err)
		}
		r.Store.Forget(scope.Key, created.UUID)
		return nil
	}
	switch {
	case secret == nil:
		// Deleted since: nothing is in the way any more.
	case !metav1.IsControlledBy(secret, runner):
		if err := undo("as its Secret's name is taken"); err != nil {
			return ctrl.Result{}, err
		}
		return r.secretNotControlled(runner, secret), nil
	default:
		if uuid := secret.Annotations[v1alpha1.AnnotationRunnerUUID]; uuid != "" && uuid != created.UUID {
			if old, ok := snap.ByUUID(uuid); ok {
				if err := undo("as the earlier registration it replaces still exists"); err != nil {
					return ctrl.Result{}, err
				}
				log.FromContext(ctx).Info("adopting Bitbucket runner registered before a restart", "uuid", old.UUID)
				r.adopt(runner, old.UUID, secret.Name)
				return ctrl.Result{}, nil
			}
		}
		if err := r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("delete stale runner secret: %w", err)
		}
	}
	if err := r.Create(ctx, newSecret); err != nil {
		return ctrl.Result{}, fmt.Errorf("create runner secret: %w", err)
	}
	r.markRegistered(runner, created.UUID, newSecret.Name)
	return ctrl.Result{}, nil
}

// liveSecret reads the Runner's Secret from the API server (nil when there is none): one
// without the pool label is not in the cache, and one just created may not be yet.
func (r *RunnerReconciler) liveSecret(ctx context.Context, runner *v1alpha1.Runner) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	if err := r.apiReader().Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: runnerpod.SecretName(runner)}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get runner secret: %w", err)
	}
	return secret, nil
}

// secretNotControlled reports a Secret of the runner's Secret name that the Runner does not
// control: its UUID annotation and its credentials say nothing about this Runner.
func (r *RunnerReconciler) secretNotControlled(runner *v1alpha1.Runner, secret *corev1.Secret) ctrl.Result {
	msg := fmt.Sprintf("Secret %s exists but this Runner does not control it; rename or delete it", secret.Name)
	r.eventOnce(runner, ReasonNotControlled, "Register", msg)
	setCondition(runner, v1alpha1.ConditionRegistered, metav1.ConditionFalse, ReasonNotControlled, msg)
	return ctrl.Result{RequeueAfter: time.Minute}
}

// adopt takes over a Bitbucket runner an earlier registration made, whose Secret this Runner
// controls.
func (r *RunnerReconciler) adopt(runner *v1alpha1.Runner, uuid, secretName string) {
	r.markRegistered(runner, uuid, secretName)
	r.event(runner, corev1.EventTypeNormal, "Adopted", "Register", "Adopted Bitbucket runner %s (%s)", runner.Spec.BitbucketName, uuid)
}

func (r *RunnerReconciler) markRegistered(runner *v1alpha1.Runner, uuid, secretName string) {
	now := metav1.NewTime(r.now())
	runner.Status.UUID = uuid
	runner.Status.SecretName = secretName
	runner.Status.RegisteredTime = &now
	setCondition(runner, v1alpha1.ConditionRegistered, metav1.ConditionTrue, ReasonRegistered, "Registered in Bitbucket as "+uuid)
}

// mirror copies the Bitbucket state of the runner into its status. It reports true when the
// runner disappeared from Bitbucket behind the operator's back, after resetting the Runner so
// that it registers again.
func (r *RunnerReconciler) mirror(ctx context.Context, runner *v1alpha1.Runner, snap *runnerlist.Snapshot) bool {
	st := &runner.Status
	bb, ok := snap.ByUUID(st.UUID)
	if !ok {
		if st.RegisteredTime == nil || !snap.At.After(st.RegisteredTime.Time) {
			return false // the snapshot predates the registration
		}
		next := "registering a new one"
		if runner.Spec.Drain {
			next = "removing the Runner"
		}
		r.event(runner, corev1.EventTypeWarning, "RunnerVanished", "Observe", "Bitbucket runner %s no longer exists; %s", st.UUID, next)
		if err := r.deleteOwned(ctx, runner); err != nil {
			log.FromContext(ctx).Error(err, "clean up after vanished runner")
		}
		*st = v1alpha1.RunnerStatus{}
		return true
	}
	step := bb.StepID()
	// Only changes are written: an idle runner's status stays as it is from poll to poll, so
	// a thousand idle runners cost the API server nothing between changes.
	if st.LastObservedTime == nil || st.BitbucketState != string(bb.State.Status) || st.Step != step {
		obs := metav1.NewTime(snap.At)
		st.LastObservedTime = &obs
	}
	st.BitbucketState = string(bb.State.Status)
	if step != "" && step != st.Step {
		st.StepsStarted++
	}
	if step != st.Step {
		// A step started or ended: the scale-down delay counts from the end of the last step,
		// taken as the first observation without it.
		seen := metav1.NewTime(snap.At)
		st.LastStepTime = &seen
	}
	st.Step = step
	var podStart time.Time
	if st.PodStartTime != nil {
		podStart = st.PodStartTime.Time
	}
	if scaling.ServedByPod(bb.State.Status == bitbucket.RunnerStatusOnline, step, bb.State.UpdatedOn, podStart) {
		// The pod works: a pod that ends from now on is a recycle, recreated at once.
		st.PodRestarts, st.NextPodTime = 0, nil
	}
	if bb.State.Status == bitbucket.RunnerStatusOnline || step != "" {
		if st.OnlineTime == nil {
			now := metav1.NewTime(r.now())
			st.OnlineTime = &now
		}
		setCondition(runner, v1alpha1.ConditionOnline, metav1.ConditionTrue, ReasonOnline, "The runner is connected to Bitbucket")
	} else {
		setCondition(runner, v1alpha1.ConditionOnline, metav1.ConditionFalse, ReasonNotOnline, "Bitbucket reports the runner "+string(bb.State.Status))
	}
	return false
}

// reconcilePod keeps one pod running for the runner, replacing pods that ended, with backoff
// when they end before the runner comes ONLINE. It returns the running pod, nil while there is
// none, and how long the next pod waits when it does.
func (r *RunnerReconciler) reconcilePod(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (*corev1.Pod, time.Duration, error) {
	pod := &corev1.Pod{}
	key := types.NamespacedName{Namespace: runner.Namespace, Name: runnerpod.PodName(runner)}
	err := r.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) && runner.Status.PodName == key.Name {
		// The status says this reconciler created the pod, often a moment ago (the reconcile
		// its Secret or its status brings): the cache may not show it yet. A read settles it,
		// where a create would be a write bound to fail.
		err = r.apiReader().Get(ctx, key, pod)
	}
	switch {
	case apierrors.IsNotFound(err):
		if runner.Spec.Drain {
			return nil, 0, nil // a draining runner gets no new pod
		}
		create, next, wait, err := r.podBackoff(ctx, runner)
		if err != nil || !create {
			return nil, wait, err
		}
		return nil, 0, r.createPod(ctx, pool, runner, next)
	case err != nil:
		return nil, 0, fmt.Errorf("get runner pod: %w", err)
	}
	pod, err = r.observePod(ctx, runner, pod)
	return pod, 0, err
}

// podBackoff decides whether the Runner, whose pod is gone, gets its next pod now
// (scaling.RecreatePod) and returns the record to keep once it is created. Otherwise it reports
// the wait in the PodReady condition and an event, and returns how long is left.
func (r *RunnerReconciler) podBackoff(ctx context.Context, runner *v1alpha1.Runner) (bool, scaling.ReplaceBackoff, time.Duration, error) {
	st := &runner.Status
	record := scaling.ReplaceBackoff{Failures: int(st.PodRestarts)}
	if st.NextPodTime != nil {
		record.NotBefore = st.NextPodTime.Time
	}
	now := r.now()
	create, next := scaling.RecreatePod(st.PodStartTime != nil, record, now)
	if create {
		return true, next, 0, nil
	}
	notBefore := metav1.NewTime(next.NotBefore)
	st.NextPodTime = &notBefore
	wait := max(next.NotBefore.Sub(now), time.Second)
	prev := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionPodReady)
	if prev != nil && prev.Reason == ReasonPodRestartBackoff {
		return false, next, wait, nil // said already, for this very wait
	}
	// The cache may not show the pod the last reconcile created yet: only a pod that is really
	// gone waits. Read once, when the wait starts.
	name := runnerpod.PodName(runner)
	if err := r.apiReader().Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: name}, &corev1.Pod{}); !apierrors.IsNotFound(err) {
		if err != nil {
			return false, next, 0, fmt.Errorf("get runner pod: %w", err)
		}
		return false, next, 0, nil // the pod's watch brings the Runner back
	}
	ended := fmt.Sprintf("Runner pod %s was deleted", name)
	if prev != nil && prev.Reason == ReasonPodEnded {
		ended = prev.Message
	}
	msg := fmt.Sprintf("%s before the runner came ONLINE, %d pods in a row; the next is created at %s, %s after the last",
		ended, next.Failures+1, next.NotBefore.UTC().Format(time.RFC3339), next.Wait())
	r.event(runner, corev1.EventTypeWarning, ReasonPodRestartBackoff, "CreatePod", "%s", msg)
	log.FromContext(ctx).Info("runner pod recreation backs off", "restarts", next.Failures, "notBefore", next.NotBefore)
	setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonPodRestartBackoff, truncate(msg, 1024))
	return false, next, wait, nil
}

// observePod reports the runner's existing pod in the status, and replaces one that ended or
// belongs to an earlier registration. It returns the pod while it runs.
func (r *RunnerReconciler) observePod(ctx context.Context, runner *v1alpha1.Runner, pod *corev1.Pod) (*corev1.Pod, error) {
	if !metav1.IsControlledBy(pod, runner) {
		msg := fmt.Sprintf("Pod %s exists but this Runner does not control it; rename or delete it", pod.Name)
		r.eventOnce(runner, ReasonNotControlled, "CreatePod", msg)
		setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonNotControlled, msg)
		return nil, nil
	}
	runner.Status.PodName = pod.Name
	if !pod.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	if uuid := pod.Annotations[v1alpha1.AnnotationRunnerUUID]; uuid != runner.Status.UUID {
		// The pod runs the agent of an earlier registration, which was replaced: it can never
		// connect again.
		r.event(runner, corev1.EventTypeNormal, "ReplacingPod", "ReplacePod", "Runner pod %s belongs to Bitbucket runner %s, not %s; replacing it", pod.Name, uuid, runner.Status.UUID)
		if err := r.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("delete outdated pod %s: %w", pod.Name, err)
		}
		return nil, nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		ended := fmt.Sprintf("Runner pod %s ended (%s%s)", pod.Name, pod.Status.Phase, runnerpod.EndReason(pod))
		r.event(runner, corev1.EventTypeWarning, ReasonPodEnded, "ReplacePod", "%s; replacing it", ended)
		// Kept until the next pod is created: a backoff before it names how this one ended.
		setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonPodEnded, truncate(ended, 1024))
		if err := r.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("delete ended pod %s: %w", pod.Name, err)
		}
		metrics.Cleanups.WithLabelValues(runner.Namespace, runner.Labels[v1alpha1.LabelPool], "pod", "ended").Inc()
		return nil, nil
	}
	switch {
	case runnerpod.Ready(pod):
		// Dated by the pod, not by this reconcile: a PodReady held back (holdPodReady) keeps the
		// time the pod became ready, and so does the connection window that counts from it.
		// (A zero time, from a pod without one, is taken as now.)
		meta.SetStatusCondition(&runner.Status.Conditions, metav1.Condition{
			Type: v1alpha1.ConditionPodReady, Status: metav1.ConditionTrue, Reason: runnerpod.ReasonPodRunning,
			Message: "The runner pod is running and docker-in-docker is up", ObservedGeneration: runner.Generation,
			LastTransitionTime: metav1.NewTime(runnerpod.ReadySince(pod)),
		})
	case runnerpod.Failing(pod) != "":
		reason := runnerpod.Failing(pod)
		if c := meta.FindStatusCondition(runner.Status.Conditions, v1alpha1.ConditionPodReady); c == nil || c.Reason != runnerpod.ReasonPodFailing {
			r.event(runner, corev1.EventTypeWarning, runnerpod.ReasonPodFailing, "StartPod", "Runner pod %s cannot start: %s", pod.Name, reason)
		}
		setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, runnerpod.ReasonPodFailing, runnerpod.WaitingMessage(pod))
	default:
		setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, runnerpod.ReasonPodNotReady, runnerpod.WaitingMessage(pod))
	}
	return pod, nil
}

// createPod creates the runner's pod; restarts is the backoff record to keep once it exists.
func (r *RunnerReconciler) createPod(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, restarts scaling.ReplaceBackoff) error {
	if pool.Spec.Docker.LayerCache != nil {
		if ok, err := r.acquireLayerCache(ctx, pool, runner); err != nil || !ok {
			return err
		}
	}
	pod, err := runnerpod.BuildPod(pool, runner, runner.Status.UUID)
	if err != nil {
		setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonInvalidPodTemplate, err.Error())
		r.event(runner, corev1.EventTypeWarning, ReasonInvalidPodTemplate, "CreatePod", "%v", err)
		return nil // the pool spec must change first; the pool watch brings us back
	}
	if err := controllerutil.SetControllerReference(runner, pod, r.Scheme()); err != nil {
		return fmt.Errorf("own runner pod: %w", err)
	}
	if err := r.Create(ctx, pod); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Ours, not in the cache yet; or someone else's, which the cache never shows.
			return r.checkExistingPod(ctx, runner, pod.Name)
		}
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, "PodRejected", err.Error())
			r.event(runner, corev1.EventTypeWarning, "PodRejected", "CreatePod", "The API server rejected the runner pod: %v", err)
			return nil
		}
		return fmt.Errorf("create runner pod: %w", err)
	}
	now := metav1.NewTime(r.now())
	runner.Status.PodName = pod.Name
	runner.Status.PodStartTime = &now
	runner.Status.PodTemplateHash = pod.Annotations[runnerpod.AnnotationTemplateHash]
	runner.Status.OnlineTime = nil
	runner.Status.StepsStarted = 0
	runner.Status.PodRestarts, runner.Status.NextPodTime = int32(restarts.Failures), nil
	if restarts.Failures > 0 {
		notBefore := metav1.NewTime(restarts.NotBefore)
		runner.Status.NextPodTime = &notBefore
	}
	// Worded as the next reconcile words the new pod (Create returned it as stored, Pending), so
	// that reconcile has nothing to write.
	setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, runnerpod.ReasonPodNotReady, runnerpod.WaitingMessage(pod))
	return nil
}

// reconcileDrain disables a runner the pool wants gone and deletes the Runner once Bitbucket
// confirms it took no step; a runner whose drain was cancelled is enabled again.
func (r *RunnerReconciler) reconcileDrain(ctx context.Context, scope *reconcileScope, runner *v1alpha1.Runner) (ctrl.Result, error) {
	if !runner.Spec.Drain {
		if runner.Status.DisabledTime != nil && !retiring(runner) {
			// A reconcile whose status write the cache does not show yet may have enabled it:
			// only an enabled runner shows ONLINE.
			if state, ok := r.storedState(scope.Key, runner.Status.UUID); !ok || state != bitbucket.RunnerStatusOnline {
				if err := r.setState(ctx, scope, runner, bitbucket.RunnerStatusEnabled); err != nil {
					return retryFlip(ctx, err)
				}
				r.event(runner, corev1.EventTypeNormal, "Reenabled", "Drain", "Drain cancelled; runner enabled again")
			}
			runner.Status.DisabledTime = nil
		}
		return ctrl.Result{}, nil
	}
	wasDisabled := runner.Status.DisabledTime != nil
	idle, res, err := r.disableAndConfirmIdle(ctx, scope, runner)
	if err != nil || !idle {
		return res, err
	}
	if !wasDisabled && runner.Status.UUID != "" {
		// Save the disable first (this reconcile's status patch): the reconcile that
		// unregisters then reads it and neither disables nor looks the runner up again.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	r.event(runner, corev1.EventTypeNormal, "Drained", "Drain", "Runner is disabled and idle; removing it")
	if err := r.Delete(ctx, runner); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("delete drained runner: %w", err)
	}
	return ctrl.Result{}, nil
}

// disableAndConfirmIdle sets the runner DISABLED and reports true once an observation that
// started after that shows no step on it. Bitbucket gives steps only to enabled runners, so from
// then on none can start and the runner may be deleted without killing a build; an observation
// that confirmed it stays conclusive however old it gets. The observation is the scope's shared
// list at its usual pace (the waker brings the runner back right after it): a drain costs one
// PUT, and no list of its own.
func (r *RunnerReconciler) disableAndConfirmIdle(ctx context.Context, scope *reconcileScope, runner *v1alpha1.Runner) (bool, ctrl.Result, error) {
	key := scope.Key
	st := &runner.Status
	if st.UUID == "" {
		return true, ctrl.Result{}, nil
	}
	// A pool polling every few minutes (or stretched by a low budget) would keep its draining
	// runners, and a deleted pool, waiting that long: the confirmation list is shared by every
	// draining runner of the scope, so looking at least this often costs little.
	poll := min(scope.Poll, maxDrainConfirmWait)
	ctx = bitbucket.WithPriority(ctx, bitbucket.PriorityHigh)
	if st.DisabledTime != nil {
		// Only an enabled runner shows ONLINE: a cancelled drain whose status write the cache
		// does not show yet enabled it since, and it must be disabled afresh.
		if state, ok := r.storedState(key, st.UUID); ok && state == bitbucket.RunnerStatusOnline {
			st.DisabledTime = nil
		}
	}
	if st.DisabledTime == nil {
		// The snapshot shows DISABLED when a reconcile whose status write the cache does not
		// show yet already disabled it: DISABLED is sent once.
		if state, ok := r.storedState(key, st.UUID); !ok || state != bitbucket.RunnerStatusDisabled {
			if err := r.setState(ctx, scope, runner, bitbucket.RunnerStatusDisabled); err != nil {
				if bitbucket.IsNotFound(err) {
					r.Store.Forget(key, st.UUID)
					return true, ctrl.Result{}, nil
				}
				res, err := retryFlip(ctx, err)
				return false, res, err
			}
		}
		disabled := disabledTime(r.now())
		st.DisabledTime = &disabled
	}
	snap := r.Store.Peek(key)
	if !confirmsIdle(snap, st.UUID, st.DisabledTime.Time) {
		var err error
		snap, err = r.Store.Get(ctx, key, scope.API, r.now().Add(-poll))
		if err != nil {
			return false, ctrl.Result{}, err
		}
	}
	// Not yet observed since the disable, or seen busy (it finishes its step first, and
	// DISABLED keeps it from taking another): look again at the next shared list.
	next := ctrl.Result{RequeueAfter: max(snap.At.Add(poll).Sub(r.now()), 0) + time.Second}
	if snap.At.Before(st.DisabledTime.Time) {
		return false, next, nil
	}
	bb, ok := snap.ByUUID(st.UUID)
	if !ok {
		return true, ctrl.Result{}, nil
	}
	st.BitbucketState = string(bb.State.Status)
	st.Step = bb.StepID()
	if st.Step != "" || bb.State.Status == bitbucket.RunnerStatusOnline {
		return false, next, nil
	}
	return true, ctrl.Result{}, nil
}

// maxDrainConfirmWait bounds how long a drain waits for the list that confirms it.
const maxDrainConfirmWait = 30 * time.Second

// disabledTime is the DisabledTime of a runner known to be disabled at now: a list that starts
// later sees it so. It is rounded up to the second, because that is all the status keeps: a time
// read back rounded down could pass off a list made before the disable as one made after it, and
// that list may predate a step the runner took just before the disable.
func disabledTime(now time.Time) metav1.Time {
	return metav1.NewTime(now.Truncate(time.Second).Add(time.Second))
}

// confirmsIdle reports a snapshot taken after the runner was disabled that shows it without a
// step and not enabled again, or without the runner.
func confirmsIdle(snap *runnerlist.Snapshot, uuid string, disabled time.Time) bool {
	if snap == nil || snap.At.Before(disabled) {
		return false
	}
	bb, ok := snap.ByUUID(uuid)
	return !ok || (bb.StepID() == "" && bb.State.Status != bitbucket.RunnerStatusOnline)
}

// storedState is the runner's state in the latest snapshot, which holds the operator's own
// state changes as soon as Bitbucket accepted them.
func (r *RunnerReconciler) storedState(key runnerlist.Key, uuid string) (bitbucket.RunnerStatus, bool) {
	bb, ok := r.Store.Peek(key).ByUUID(uuid)
	return bb.State.Status, ok
}

// errFlipTooSoon holds back a state change that would undo one made moments ago; the reconcile
// is retried once the wait is over (see minStateFlipInterval).
type errFlipTooSoon struct{ wait time.Duration }

func (e errFlipTooSoon) Error() string {
	return fmt.Sprintf("runner state changed back within %s; retrying in %s", minStateFlipInterval, e.wait)
}

// retryFlip turns a held-back state change into a requeue, and passes any other error on.
func retryFlip(ctx context.Context, err error) (ctrl.Result, error) {
	var tooSoon errFlipTooSoon
	if errors.As(err, &tooSoon) {
		ctrl.LoggerFrom(ctx).Info("Holding back a runner state change that undoes one made moments ago", "wait", tooSoon.wait)
		return ctrl.Result{RequeueAfter: tooSoon.wait}, nil
	}
	return ctrl.Result{}, err
}

func (r *RunnerReconciler) setState(ctx context.Context, scope *reconcileScope, runner *v1alpha1.Runner, status bitbucket.RunnerStatus) error {
	key := scope.Key
	if wait := r.flips.wait(runner.Status.UUID, status, r.now()); wait > 0 {
		return errFlipTooSoon{wait: wait}
	}
	if err := scope.API.SetRunnerState(ctx, scopeOf(runner), runner.Status.UUID, status); err != nil {
		return fmt.Errorf("set runner %s %s: %w", runner.Status.UUID, status, err)
	}
	r.flips.record(runner.Status.UUID, status, r.now())
	if snap := r.Store.Peek(key); snap != nil {
		if bb, ok := snap.ByUUID(runner.Status.UUID); ok {
			bb.State.Status = status
			if status == bitbucket.RunnerStatusEnabled {
				bb.State.Status = bitbucket.RunnerStatusOnline
			}
			r.Store.Record(key, bb)
		}
	}
	return nil
}

// reconcileDelete unregisters the Bitbucket runner, never while it runs a step.
func (r *RunnerReconciler) reconcileDelete(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(runner, v1alpha1.RunnerFinalizer) {
		return ctrl.Result{}, nil
	}
	var why string
	if pool != nil {
		why = runnerpod.OutOfScope(pool, runner)
	}
	if why == "" && pool != nil && runner.Status.UUID == "" {
		if err := r.recoverRegistration(ctx, runner); err != nil {
			return ctrl.Result{}, err
		}
	}
	switch {
	case why != "":
		// Whatever its status names is not this pool's to delete.
		r.event(runner, corev1.EventTypeWarning, "UnregisterSkipped", "Unregister", "Not unregistering: %s", why)
	case runner.Status.UUID != "":
		if pool == nil {
			r.event(runner, corev1.EventTypeWarning, "UnregisterSkipped", "Unregister", "The pool is gone, so its credentials are unknown; Bitbucket runner %s must be removed by hand", runner.Status.UUID)
		} else {
			before := runner.DeepCopy()
			res, err := throttled(r.unregister(ctx, pool, runner))
			runner.Status.Phase = v1alpha1.RunnerPhaseDeleting
			if perr := r.patchStatus(ctx, before, runner); perr != nil && !apierrors.IsNotFound(perr) {
				err = errors.Join(err, perr)
			}
			if err != nil || !res.IsZero() {
				return res, err
			}
		}
	}
	if pool != nil {
		// Without the pool, its claims go with it (they are the pool's, not the runner's).
		if res, err := r.releaseLayerCache(ctx, pool, runner); err != nil || !res.IsZero() {
			return res, err
		}
	}
	// A patch, not an update: whatever else changed the Runner meanwhile, the finalizer goes
	// without a conflict and a retry.
	patch := client.MergeFrom(runner.DeepCopy())
	controllerutil.RemoveFinalizer(runner, v1alpha1.RunnerFinalizer)
	if err := r.Patch(ctx, runner, patch); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}

func (r *RunnerReconciler) unregister(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner) (ctrl.Result, error) {
	api, err := r.Clients.ForCleanup(ctx, pool)
	if err != nil {
		if _, msg, ok := credentials.Condition(err); ok {
			r.event(runner, corev1.EventTypeWarning, ReasonCredentials, "Unregister", "Cannot unregister the Bitbucket runner: %s", msg)
			return ctrl.Result{RequeueAfter: time.Minute}, nil
		}
		return ctrl.Result{}, err
	}
	scope := newScope(pool, api, r.Clients.ListKey(pool), r.now(), time.Time{})
	key := scope.Key
	snap, err := r.Store.Get(bitbucket.WithPriority(ctx, bitbucket.PriorityHigh), key, api, r.now().Add(-min(scope.Poll, maxDrainConfirmWait)))
	if err != nil {
		return ctrl.Result{}, err
	}
	if why := r.foreignRunner(ctx, pool, runner, snap); why != "" {
		r.event(runner, corev1.EventTypeWarning, "UnregisterSkipped", "Unregister", "Not unregistering: %s", why)
		runner.Status.UUID = ""
		return ctrl.Result{}, r.deleteOwned(ctx, runner)
	}
	idle, res, err := r.disableAndConfirmIdle(ctx, scope, runner)
	if err != nil || !idle {
		return res, err
	}
	// Stop the agent before its registration goes, so it never runs unregistered.
	if err := r.deleteOwned(ctx, runner); err != nil {
		return ctrl.Result{}, err
	}
	if err := api.DeleteRunner(ctx, scopeOf(runner), runner.Status.UUID); err != nil && !bitbucket.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("delete runner %s: %w", runner.Status.UUID, err)
	}
	r.Store.Forget(key, runner.Status.UUID)
	r.event(runner, corev1.EventTypeNormal, "Unregistered", "Unregister", "Deleted Bitbucket runner %s", runner.Status.UUID)
	// Written with the status before the finalizer goes: if removing the finalizer has to be
	// retried, the retry does not disable, look up and delete the runner a second time.
	runner.Status.UUID = ""
	return ctrl.Result{}, nil
}

// deleteOwned deletes the runner's pod and Secret, only if the Runner controls them: an object
// that merely has the name is someone else's. The UID precondition makes sure the object deleted
// is the one checked, not one created under the same name since.
func (r *RunnerReconciler) deleteOwned(ctx context.Context, runner *v1alpha1.Runner) error {
	key := types.NamespacedName{Namespace: runner.Namespace}
	for _, obj := range []client.Object{&corev1.Pod{}, &corev1.Secret{}} {
		key.Name = runnerpod.PodName(runner)
		if _, isSecret := obj.(*corev1.Secret); isSecret {
			key.Name = runnerpod.SecretName(runner)
		}
		if err := r.Get(ctx, key, obj); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("get runner %T %s: %w", obj, key.Name, err)
		}
		if !metav1.IsControlledBy(obj, runner) {
			continue
		}
		uid := obj.GetUID()
		if err := r.Delete(ctx, obj, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete runner %T %s: %w", obj, key.Name, err)
		}
	}
	return nil
}

// recoverRegistration takes the Bitbucket runner's UUID from the Secret the Runner controls when
// the status lost it: the operator stopped after registering the runner and writing its Secret
// but before the status patch, and the Runner is to go before a reconcile could adopt the
// runner (register does that for a Runner that stays). Without it, the Runner would be deleted
// without unregistering, and its Bitbucket runner left behind with no pool to clean it up. The
// UUID is then checked like any other (foreignRunner) before anything is done with it.
func (r *RunnerReconciler) recoverRegistration(ctx context.Context, runner *v1alpha1.Runner) error {
	secret := &corev1.Secret{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: runnerpod.SecretName(runner)}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("get runner secret: %w", err)
	}
	uuid := secret.Annotations[v1alpha1.AnnotationRunnerUUID]
	if uuid == "" || !metav1.IsControlledBy(secret, runner) || !secret.DeletionTimestamp.IsZero() {
		return nil
	}
	log.FromContext(ctx).Info("recovering the registration the status lost, to unregister it", "uuid", uuid)
	runner.Status.UUID = uuid
	runner.Status.SecretName = secret.Name
	return nil
}

// checkExistingPod reports a pod that has the runner's pod name but that the runner does not
// control; one it controls is left to the next reconcile.
func (r *RunnerReconciler) checkExistingPod(ctx context.Context, runner *v1alpha1.Runner, name string) error {
	pod := &corev1.Pod{}
	if err := r.apiReader().Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: name}, pod); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(pod, runner) {
		msg := fmt.Sprintf("Pod %s exists but this Runner does not control it; rename or delete it", pod.Name)
		r.eventOnce(runner, ReasonNotControlled, "CreatePod", msg)
		setCondition(runner, v1alpha1.ConditionPodReady, metav1.ConditionFalse, ReasonNotControlled, msg)
	}
	return nil
}

func (r *RunnerReconciler) apiReader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// refuse reports a Runner that may not act for its pool and does nothing else: no Bitbucket
// call, no pod, no finalizer.
func (r *RunnerReconciler) refuse(ctx context.Context, runner *v1alpha1.Runner, why string) (ctrl.Result, error) {
	log.FromContext(ctx).Info("refusing a Runner outside its pool's scope", "why", why)
	before := runner.DeepCopy()
	r.eventOnce(runner, ReasonOutOfScope, "Register", why)
	setCondition(runner, v1alpha1.ConditionRegistered, metav1.ConditionFalse, ReasonOutOfScope, why)
	runner.Status.Phase = v1alpha1.RunnerPhaseFailed
	runner.Status.ObservedGeneration = runner.Generation
	return ctrl.Result{}, r.patchStatus(ctx, before, runner)
}

// foreignRunner says why the Bitbucket runner the Runner's status names is not the pool's to
// act on, or returns "". It is the pool's when Bitbucket lists it under the pool's marker; or,
// renamed by hand without any pool's marker, when the Secret the Runner controls records its
// UUID (written at registration). A status written by hand can therefore point neither at
// another pool's runner nor at a runner the operator never registered for this Runner.
func (r *RunnerReconciler) foreignRunner(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, snap *runnerlist.Snapshot) string {
	if runner.Status.UUID == "" {
		return ""
	}
	bb, ok := snap.ByUUID(runner.Status.UUID)
	prefix := runnerpod.BitbucketNamePrefix(pool)
	if !ok || strings.HasPrefix(bb.Name, prefix) {
		return ""
	}
	if !poolMarker.MatchString(bb.Name) {
		secret := &corev1.Secret{}
		err := r.Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: runnerpod.SecretName(runner)}, secret)
		if err == nil && metav1.IsControlledBy(secret, runner) && secret.Annotations[v1alpha1.AnnotationRunnerUUID] == runner.Status.UUID {
			return "" // renamed in Bitbucket; registered for this Runner
		}
	}
	return fmt.Sprintf("Bitbucket runner %s is named %q, without the pool's marker %q, and this Runner's Secret does not record it: it is not this pool's", runner.Status.UUID, bb.Name, prefix)
}

// poolMarker matches a name carrying some pool's marker (runnerpod.BitbucketNamePrefix).
var poolMarker = regexp.MustCompile(`^rp-[0-9a-f]{8}-`)

// eventOnce records a warning unless the Runner's conditions show the same already: call it
// before setting the condition, so a Runner refused at every reconcile does not fill the event
// stream.
func (r *RunnerReconciler) eventOnce(runner *v1alpha1.Runner, reason, action, note string) {
	for _, c := range runner.Status.Conditions {
		if c.Reason == reason && c.Status == metav1.ConditionFalse && c.Message == note {
			return
		}
	}
	r.event(runner, corev1.EventTypeWarning, reason, action, "%s", note)
}

func (r *RunnerReconciler) poolOf(ctx context.Context, runner *v1alpha1.Runner) (*v1alpha1.RunnerPool, error) {
	ref := metav1.GetControllerOf(runner)
	if ref == nil || ref.Kind != "RunnerPool" {
		return nil, nil
	}
	pool := &v1alpha1.RunnerPool{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: runner.Namespace, Name: ref.Name}, pool); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get pool %s: %w", ref.Name, err)
	}
	if pool.UID != ref.UID {
		return nil, nil
	}
	return pool, nil
}

func (r *RunnerReconciler) patchStatus(ctx context.Context, before, after *v1alpha1.Runner) error {
	key := client.ObjectKeyFromObject(after)
	if stored, ok := r.held.stored(after); ok {
		// The patch goes from what the API server has, so it carries what was held too.
		before = before.DeepCopy()
		before.Status = stored
	}
	if equalStatus(before.Status, after.Status) {
		r.held.forget(key)
		return nil
	}
	from := after.ResourceVersion
	if err := r.Status().Patch(ctx, after, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("patch runner status: %w", err)
	}
	r.held.forget(key)
	r.written.remember(after, from)
	return nil
}

func (r *RunnerReconciler) event(runner *v1alpha1.Runner, eventType, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(runner, nil, eventType, reason, action, note, args...)
	}
}

func (r *RunnerReconciler) now() time.Time {
	if r.Clock != nil {
		return r.Clock.Now()
	}
	return time.Now()
}

// SetupWithManager registers the reconciler.
func (r *RunnerReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Runner{}).
		Owns(&corev1.Pod{}, builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Owns(&corev1.Secret{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Named("runner")
	if r.Wake != nil {
		b = b.WatchesRawSource(source.Channel(r.Wake, &handler.TypedEnqueueRequestForObject[*v1alpha1.Runner]{}))
	}
	return b.Complete(r)
}

// runnerPhase summarises the status for people and for the pool's counts.
func runnerPhase(runner *v1alpha1.Runner) v1alpha1.RunnerPhase {
	st := runner.Status
	switch {
	case !runner.DeletionTimestamp.IsZero():
		return v1alpha1.RunnerPhaseDeleting
	case st.UUID != "" && (conditionReason(st.Conditions, v1alpha1.ConditionPodReady) == runnerpod.ReasonPodFailing ||
		conditionReason(st.Conditions, v1alpha1.ConditionPodReady) == ReasonPodRestartBackoff):
		return v1alpha1.RunnerPhaseFailed
	case st.UUID == "":
		if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionRegistered); c != nil && c.Status == metav1.ConditionFalse && c.Reason != ReasonRegistrationFailed {
			return v1alpha1.RunnerPhaseFailed
		}
		return v1alpha1.RunnerPhaseRegistering
	case runner.Spec.Drain || st.DisabledTime != nil:
		return v1alpha1.RunnerPhaseDraining
	case st.Step != "":
		return v1alpha1.RunnerPhaseBusy
	case st.BitbucketState == string(bitbucket.RunnerStatusOnline):
		return v1alpha1.RunnerPhaseIdle
	case st.BitbucketState == string(bitbucket.RunnerStatusOffline) && st.OnlineTime != nil:
		return v1alpha1.RunnerPhaseOffline
	}
	return v1alpha1.RunnerPhaseStarting
}
