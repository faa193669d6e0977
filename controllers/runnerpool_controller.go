package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
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

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/credentials"
	"github.com/runnerpool/runnerpool-operator/internal/metrics"
	"github.com/runnerpool/runnerpool-operator/internal/runnerlist"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
	"github.com/runnerpool/runnerpool-operator/internal/stepqueue"
)

// Grace periods, see Timings.
const (
	DefaultOfflineGrace = scaling.DefaultOfflineGrace
	DefaultOrphanGrace  = 2 * time.Minute
)

// Timings are grace periods the tests shorten.
type Timings struct {
	// OfflineGrace is how long a runner that was ONLINE may stay OFFLINE or UNHEALTHY (an agent
	// restart, a network blip) before it is replaced.
	OfflineGrace time.Duration
	// OrphanGrace is how old a Bitbucket runner with the pool's marker but no Runner must be
	// before it is removed; younger ones may be between their create and their Runner's status.
	OrphanGrace time.Duration
}

func (t Timings) withDefaults() Timings {
	if t.OfflineGrace <= 0 {
		t.OfflineGrace = DefaultOfflineGrace
	}
	if t.OrphanGrace <= 0 {
		t.OrphanGrace = DefaultOrphanGrace
	}
	return t
}

// Pool condition reasons.
const (
	ReasonAsExpected          = "AsExpected"
	ReasonScalingUp           = "ScalingUp"
	ReasonBitbucketError      = "BitbucketUnavailable"
	ReasonRunnersStarting     = "RunnersStarting"
	ReasonPodsPending         = "PodsPending"
	ReasonDeleting            = "Deleting"
	ReasonCredentialsNotReady = "CredentialsNotValid"
	ReasonRateLimited         = "RateLimited"
	ReasonThrottled           = "Throttled" // event: Bitbucket answers the credentials with 429
	ReasonBudgetLow           = "RequestBudgetLow"
	ReasonReplaceBackoff      = "ReplaceBackoff" // event: failed runners wait their turn to be replaced
	ReasonInvalidSchedule     = "InvalidSchedule"
	ReasonOutsideSchedules    = "OutsideSchedules"
	ReasonWindowActive        = "WindowActive"
)

// RunnerPoolReconciler decides how many runners a pool needs and creates or drains Runner
// objects; the Runner reconciler does the work on each runner.
type RunnerPoolReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Clients  *credentials.Clients
	Store    *runnerlist.Store
	Queue    *stepqueue.Reader
	Timings  Timings
	// Clock is the real clock unless a test sets one.
	Clock clock.PassiveClock

	// created remembers Runners this reconciler created that its cache may not show yet, so
	// that a reconcile right after a create never counts too few runners and goes above max.
	created expectations
	// wakes spaces out the reconciles that Runner changes cause.
	wakes poolWakes
}

// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runnerpools,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runnerpools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runnerpools/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch

// Reconcile brings one pool closer to its desired state.
func (r *RunnerPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pool := &v1alpha1.RunnerPool{}
	if err := r.Get(ctx, req.NamespacedName, pool); err != nil {
		if apierrors.IsNotFound(err) {
			forgetUndecodable(kindRunnerPool, req.Namespace, req.Name)
			r.wakes.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if derr := pool.DecodeError(); derr != nil {
		return r.reportUndecodablePool(ctx, pool, derr)
	}
	forgetUndecodable(kindRunnerPool, pool.Namespace, pool.Name)
	r.wakes.started(req.NamespacedName, r.now())
	runners, err := r.runnersOf(ctx, pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	if bad := firstUndecodable(runners); bad != nil {
		return r.reportUndecodableRunners(ctx, pool, bad)
	}
	if !pool.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, pool, runners)
	}
	if controllerutil.AddFinalizer(pool, v1alpha1.PoolFinalizer) {
		if err := r.Update(ctx, pool); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}

	if terr := runnerpod.Validate(pool); terr != nil {
		return r.reportInvalidPodTemplate(ctx, pool, terr)
	}

	before := pool.DeepCopy()
	res, err := r.reconcileNormal(ctx, pool, runners)
	if cerr := r.tidyLayerCache(ctx, pool, runners); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if berr := r.ensureDisruptionBudget(ctx, pool); berr != nil {
		err = errors.Join(err, berr)
	}
	pool.Status.ObservedGeneration = pool.Generation
	pool.Status.Selector = labels.SelectorFromSet(labels.Set{v1alpha1.LabelPool: pool.Name}).String()
	if !equalStatus(before.Status, pool.Status) {
		if perr := r.Status().Patch(ctx, pool, client.MergeFrom(before)); perr != nil {
			err = errors.Join(err, fmt.Errorf("patch pool status: %w", perr))
		}
	}
	return res, err
}

func (r *RunnerPoolReconciler) reconcileNormal(ctx context.Context, pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner) (ctrl.Result, error) {
	poll := pool.Spec.Scaling.PollInterval.Duration
	pool.Status.PollInterval = &metav1.Duration{Duration: poll}

	api, err := r.Clients.For(ctx, pool)
	var key runnerlist.Key
	if err == nil {
		key = r.Clients.ListKey(pool)
		scope := newScope(pool, api, key, r.now(), scaling.PollRequested(pool))
		poll = scope.Poll
		pool.Status.PollInterval = &metav1.Duration{Duration: poll}
		metrics.PollIntervalSeconds.WithLabelValues(pool.Namespace, pool.Name).Set(poll.Seconds())
		scope.Snapshot, err = r.Store.Get(ctx, scope.Key, api, scope.NotBefore)
		if err == nil {
			// The pool's own credential listed the scope (a credential's own key is never
			// served a list made with another): from now on it shares the scope's list.
			r.Clients.Listed(scope.Key)
			observed := metav1.NewTime(scope.Snapshot.At)
			pool.Status.LastObservedTime = &observed
			res, err := r.scale(ctx, pool, scope, runners)
			if res.RequeueAfter > poll || res.RequeueAfter == 0 {
				res.RequeueAfter = poll
			}
			return res, err
		}
	}
	if reason, msg, ok := credentials.Condition(err); ok {
		if reason == credentials.ReasonInvalidCredentials || reason == credentials.ReasonPermissionDenied {
			r.Clients.Invalidate(pool) // read the Secret afresh next time: it may be fixed
			r.Store.Drop(key)
		}
		// Whatever the status said about runners came from Bitbucket with these credentials:
		// with them refused, it shows only what the cluster itself knows.
		pool.Status.Queued = 0
		r.reportCredentials(pool, reason, msg)
		r.countOnly(pool, runners)
		return ctrl.Result{RequeueAfter: credentialsRetry}, nil
	}
	if res, terr := throttled(ctrl.Result{}, err); terr == nil {
		// Bitbucket asked us to wait: runners keep running, the pool polls again after the wait.
		setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonRateLimited,
			fmt.Sprintf("Bitbucket's request limit is reached for these credentials; polling again in %s", res.RequeueAfter.Round(time.Second)))
		if th := bitbucket.ThrottleOf(api); th.Strikes > 0 {
			setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonRateLimited, th.Message())
			r.event(pool, corev1.EventTypeWarning, ReasonThrottled, "Observe", "%s", th.Message())
		}
		r.countOnly(pool, runners)
		setReady(pool)
		return ctrl.Result{RequeueAfter: max(res.RequeueAfter, poll)}, nil
	}
	// Bitbucket is unreachable or failing: keep what runs, report it, try at the next poll.
	setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonBitbucketError, truncate(err.Error(), 1024))
	r.countOnly(pool, runners)
	setReady(pool)
	log.FromContext(ctx).Error(err, "observe Bitbucket")
	return ctrl.Result{RequeueAfter: poll}, nil
}

func (r *RunnerPoolReconciler) reportCredentials(pool *v1alpha1.RunnerPool, reason, msg string) {
	prev := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionCredentialsValid)
	if prev == nil || prev.Status != metav1.ConditionFalse || prev.Reason != reason {
		r.event(pool, corev1.EventTypeWarning, reason, "ReadCredentials", "%s", msg)
	}
	setPoolCondition(pool, v1alpha1.ConditionCredentialsValid, metav1.ConditionFalse, reason, msg)
	setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonCredentialsNotReady, "Scaling waits for valid credentials")
	setReady(pool)
}

// scale plans the pool from the observation (scaling.PlanPool), carries the plan out and
// reports it. The pool requeues at its own interval, so time-based decisions (scale-down delay,
// pending timeout) are on time; the observations it uses are at the effective poll pace.
func (r *RunnerPoolReconciler) scale(ctx context.Context, pool *v1alpha1.RunnerPool, scope *reconcileScope, runners []v1alpha1.Runner) (ctrl.Result, error) {
	if reason, msg := refusedRegistration(runners); reason != "" {
		r.reportCredentials(pool, reason, msg)
	} else if r.Clients.PoolProven(pool) {
		// Accepted only when the pool's own credential listed its scope: a list another
		// credential made says nothing about this one (ADR 0021, chaos finding 4).
		setPoolCondition(pool, v1alpha1.ConditionCredentialsValid, metav1.ConditionTrue, credentials.ReasonCredentialsAccepted, "Bitbucket accepted the credentials")
	}
	schedule := r.schedule(pool, scope.Now)
	obs := scaling.Observation{
		Schedule:     schedule,
		Pool:         pool,
		Runners:      runners,
		Snapshot:     scope.Snapshot,
		Unseen:       r.created.pending(client.ObjectKeyFromObject(pool), runners, scope.Now),
		TemplateHash: scope.TemplateHash(),
		OfflineGrace: r.Timings.OfflineGrace,
		Now:          scope.Now,
	}
	// How the runners count does not depend on the queue; whether the queue is worth a read
	// depends on how they count.
	plan := scaling.PlanPool(obs)
	if obs.Queued = r.queued(ctx, pool, scope, plan.Counts); obs.Queued > 0 {
		plan = scaling.PlanPool(obs)
	}
	pool.Status.Desired = int32(plan.Desired)
	metrics.DesiredRunners.WithLabelValues(pool.Namespace, pool.Name).Set(float64(pool.Status.Desired))

	created, err := r.carryOut(ctx, pool, scope, runners, plan)
	// The Runners just created are counted in this reconcile's status write: counted by the
	// next one, they would cost the pool a second write for the same news.
	r.writeCounts(pool, plan.Summary.Created(created))
	r.reportScaling(pool, scope, runners, plan.Decision)
	res := ctrl.Result{RequeueAfter: pool.Spec.Scaling.PollInterval.Duration}
	if schedule != nil && !schedule.NextBoundary.IsZero() {
		// Look again the moment a window opens or closes, not up to a poll later.
		res.RequeueAfter = min(res.RequeueAfter, max(schedule.NextBoundary.Sub(r.now()), time.Second))
	}
	return res, err
}

// schedule evaluates the pool's schedules and reports the window in force in the status and
// the Scheduled condition. Nil without schedules, and when a time zone is unknown: the pool
// then scales with its spec's values, and the condition says why.
func (r *RunnerPoolReconciler) schedule(pool *v1alpha1.RunnerPool, now time.Time) *scaling.Schedule {
	if len(pool.Spec.Schedules) == 0 {
		pool.Status.Schedule = nil
		meta.RemoveStatusCondition(&pool.Status.Conditions, v1alpha1.ConditionScheduled)
		return nil
	}
	s, err := scaling.EvaluateSchedules(pool, now)
	st := &v1alpha1.ScheduleStatus{Active: s.Active, MinRunners: s.MinRunners, IdleRunners: s.IdleRunners}
	if !s.NextChange.IsZero() {
		next := metav1.NewTime(s.NextChange)
		st.NextChange = &next
	}
	pool.Status.Schedule = st
	if err != nil {
		prev := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionScheduled)
		if prev == nil || prev.Reason != ReasonInvalidSchedule {
			r.event(pool, corev1.EventTypeWarning, ReasonInvalidSchedule, "Schedule", "%v; scaling with spec.minRunners and spec.scaling.idleRunners", err)
		}
		setPoolCondition(pool, v1alpha1.ConditionScheduled, metav1.ConditionFalse, ReasonInvalidSchedule,
			truncate(err.Error(), 1024)+"; scaling with spec.minRunners and spec.scaling.idleRunners")
		return nil
	}
	if s.Active == "" {
		setPoolCondition(pool, v1alpha1.ConditionScheduled, metav1.ConditionFalse, ReasonOutsideSchedules,
			fmt.Sprintf("No schedule window is in force: minRunners %d, idleRunners %d", s.MinRunners, s.IdleRunners))
	} else {
		setPoolCondition(pool, v1alpha1.ConditionScheduled, metav1.ConditionTrue, ReasonWindowActive,
			fmt.Sprintf("Window %s is in force: minRunners %d, idleRunners %d", s.Active, s.MinRunners, s.IdleRunners))
	}
	return &s
}

// carryOut acts on the plan: creates Runners, sets or clears their drain, deletes the stuck
// ones, and removes orphaned Bitbucket runners. It returns how many Runners it created.
func (r *RunnerPoolReconciler) carryOut(ctx context.Context, pool *v1alpha1.RunnerPool, scope *reconcileScope, runners []v1alpha1.Runner, plan scaling.Plan) (int, error) {
	decision := plan.Decision
	created, err := r.createRunners(ctx, pool, decision.Create)
	errs := []error{err}
	byName := map[string]*v1alpha1.Runner{}
	for i := range runners {
		byName[runners[i].Name] = &runners[i]
	}
	for _, name := range decision.Drain {
		rp := plan.Runners[name]
		if rp.Reason == scaling.ReasonLabelsChanged {
			r.warnRelabelled(pool, byName[name], rp.BitbucketLabels)
		}
		errs = append(errs, r.setDrain(ctx, pool, byName[name], true, rp.Reason))
	}
	for _, name := range decision.Undrain {
		errs = append(errs, r.setDrain(ctx, pool, byName[name], false, plan.Runners[name].Reason))
	}
	replace, err := r.replaceBackoff(ctx, pool, decision.Replace, scope.Now)
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range replace {
		runner := byName[name]
		r.event(pool, corev1.EventTypeWarning, "ReplacingRunner", "Replace", "Runner %s failed to start (%s); replacing it", name, runner.Status.Phase)
		if err := r.Delete(ctx, runner); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("delete failed runner %s: %w", name, err))
			continue
		}
		metrics.ScaleEvents.WithLabelValues(pool.Namespace, pool.Name, "replace", plan.Runners[name].Reason).Inc()
	}

	errs = append(errs, r.removeOrphans(ctx, pool, scope, runners))
	return created, errors.Join(errs...)
}

// replaceBackoff picks the stuck runners to replace now (scaling.ReplaceBackoff: one at a time,
// further apart with each failure in a row) and saves the backoff in the pool's annotation, so
// a restarted operator keeps it. The others wait, counted against max, so no extra runner is
// created for them meanwhile.
func (r *RunnerPoolReconciler) replaceBackoff(ctx context.Context, pool *v1alpha1.RunnerPool, stuck []string, now time.Time) ([]string, error) {
	state := scaling.ParseReplaceBackoff(pool.Annotations[v1alpha1.AnnotationReplaceBackoff])
	n, next := state.Replace(len(stuck), now)
	if n > 0 && len(stuck) > n {
		// Once per replacement, not at every poll that waits.
		r.event(pool, corev1.EventTypeWarning, ReasonReplaceBackoff, "Replace", "%d more runners failed to start; %d replaced in a row, the next is replaced at %s",
			len(stuck)-n, next.Failures, next.NotBefore.UTC().Format(time.RFC3339))
	}
	if next.String() != pool.Annotations[v1alpha1.AnnotationReplaceBackoff] {
		patch := client.MergeFrom(pool.DeepCopy())
		if pool.Annotations == nil {
			pool.Annotations = map[string]string{}
		}
		if v := next.String(); v != "" {
			pool.Annotations[v1alpha1.AnnotationReplaceBackoff] = v
		} else {
			delete(pool.Annotations, v1alpha1.AnnotationReplaceBackoff)
		}
		// Only the metadata is sent: the status patch that follows is computed from a copy
		// taken before, and carries no annotations.
		if err := r.Patch(ctx, pool.DeepCopy(), patch); err != nil {
			// Without the record the backoff could be lost: replace nothing this time.
			return nil, fmt.Errorf("save replace backoff: %w", err)
		}
	}
	return stuck[:n], nil
}

// reportScaling sets the ScalingActive and Ready conditions after a decision.
func (r *RunnerPoolReconciler) reportScaling(pool *v1alpha1.RunnerPool, scope *reconcileScope, runners []v1alpha1.Runner, decision scaling.Decision) {
	if c := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionCredentialsValid); c != nil && c.Status == metav1.ConditionFalse {
		setReady(pool)
		return
	}
	var prevReason string
	if c := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionScalingActive); c != nil {
		prevReason = c.Reason
	}
	setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionTrue, ReasonAsExpected,
		fmt.Sprintf("Policy %s wants %d runners", pool.Spec.Scaling.Policy, decision.Desired))
	if scope.Poll > pool.Spec.Scaling.PollInterval.Duration {
		setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionTrue, ReasonBudgetLow,
			fmt.Sprintf("Policy %s wants %d runners; polls are stretched to every %s because the Bitbucket request budget of these credentials runs low", pool.Spec.Scaling.Policy, decision.Desired, scope.Poll))
	}
	// A snapshot still fresh enough can carry a throttled credential through the scale path; the
	// 429 streak says more to the user than the stretched polls it causes.
	if th := bitbucket.ThrottleOf(scope.API); th.Strikes > 0 {
		if prevReason != ReasonRateLimited {
			// The error path reports it too; a pool that keeps planning on a fresh list would
			// otherwise show the condition without the event.
			r.event(pool, corev1.EventTypeWarning, ReasonThrottled, "Observe", "%s", th.Message())
		}
		setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonRateLimited, th.Message())
	}
	if n := countRegistrationReason(runners, ReasonRunnerLimitReached); n > 0 {
		setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonRunnerLimitReached,
			fmt.Sprintf("Bitbucket refused %d runners: its limit of %d runners per workspace or repository is reached (all pools and other tools count)", n, v1alpha1.MaxRunnersPerScope))
	}
	if decision.Counts.PendingTooLong > 0 {
		msg := fmt.Sprintf("%d runner pods have waited for a node longer than %s; the pool does not add runners for them", decision.Counts.PendingTooLong, pool.Spec.Scaling.PendingTimeout.Duration)
		prev := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionScalingActive)
		if prev == nil || prev.Reason != ReasonPodsPending {
			r.event(pool, corev1.EventTypeWarning, ReasonPodsPending, "Scale", "%s", msg)
		}
		setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonPodsPending, msg)
	}
	setReady(pool)
}

// refusedRegistration finds a Runner whose registration Bitbucket refused for its credentials:
// the list works with them, but creating runners does not (a token without runner:write).
func refusedRegistration(runners []v1alpha1.Runner) (reason, message string) {
	for i := range runners {
		c := meta.FindStatusCondition(runners[i].Status.Conditions, v1alpha1.ConditionRegistered)
		if c != nil && c.Status == metav1.ConditionFalse && (c.Reason == credentials.ReasonPermissionDenied || c.Reason == credentials.ReasonInvalidCredentials) {
			return c.Reason, c.Message
		}
	}
	return "", ""
}

// countRegistrationReason counts Runners whose registration failed for the reason.
func countRegistrationReason(runners []v1alpha1.Runner, reason string) int {
	n := 0
	for i := range runners {
		if c := meta.FindStatusCondition(runners[i].Status.Conditions, v1alpha1.ConditionRegistered); c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason {
			n++
		}
	}
	return n
}

// removeOrphans deletes Bitbucket runners that carry the pool's marker but have no Runner: what
// a crash or a hand-deleted Runner leaves behind. Each still counts against Bitbucket's limit of
// 100. A busy one is only disabled, and goes once idle.
func (r *RunnerPoolReconciler) removeOrphans(ctx context.Context, pool *v1alpha1.RunnerPool, scope *reconcileScope, runners []v1alpha1.Runner) error {
	api := scope.API
	known := map[string]bool{}
	for i := range runners {
		known[runners[i].Spec.BitbucketName] = true
		if runners[i].Status.UUID != "" {
			known[runners[i].Status.UUID] = true
		}
	}
	prefix := BitbucketNamePrefix(pool)
	bbScope := poolScope(pool)
	ctx = bitbucket.WithPriority(ctx, bitbucket.PriorityHigh)
	var errs []error
	for _, bb := range scope.Snapshot.Runners() {
		if !strings.HasPrefix(bb.Name, prefix) || known[bb.UUID] || known[bb.Name] || scope.Now.Sub(bb.CreatedOn) < r.Timings.withDefaults().OrphanGrace {
			continue
		}
		if bb.Busy() {
			if bb.State.Status != bitbucket.RunnerStatusDisabled {
				if err := api.SetRunnerState(ctx, bbScope, bb.UUID, bitbucket.RunnerStatusDisabled); err != nil && !bitbucket.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("disable orphaned runner %s: %w", bb.UUID, err))
				}
			}
			continue
		}
		if err := api.DeleteRunner(ctx, bbScope, bb.UUID); err != nil && !bitbucket.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete orphaned runner %s: %w", bb.UUID, err))
			continue
		}
		r.Store.Forget(r.Clients.ListKey(pool), bb.UUID)
		r.event(pool, corev1.EventTypeNormal, "OrphanRemoved", "Cleanup", "Deleted Bitbucket runner %s (%s): it had no Runner", bb.Name, bb.UUID)
		metrics.Cleanups.WithLabelValues(pool.Namespace, pool.Name, "bitbucket_runner", "orphan").Inc()
	}
	return errors.Join(errs...)
}

// queued reads the steps waiting for the pool when the policy, a saturated pool or a recent
// webhook asks for it (scaling.ReadsQueue).
// A queue that cannot be read leaves the pool scaling on its runners alone, and says so.
func (r *RunnerPoolReconciler) queued(ctx context.Context, pool *v1alpha1.RunnerPool, scope *reconcileScope, counts scaling.Counts) int {
	budgetLow := scope.Poll > pool.Spec.Scaling.PollInterval.Duration
	if r.Queue == nil || !scaling.ReadsQueue(pool, scope.Now, counts, budgetLow) {
		pool.Status.Queued = 0
		metrics.QueuedSteps.WithLabelValues(pool.Namespace, pool.Name).Set(0)
		return 0
	}
	var (
		n   int
		err error
	)
	qr, ok := scope.API.(bitbucket.QueueReader)
	if !ok {
		err = errors.New("the Bitbucket client cannot read pipelines")
	} else {
		n, err = r.Queue.Queued(ctx, pool, r.Clients.APIURL(pool), qr, scope.NotBefore)
	}
	if err != nil {
		log.FromContext(ctx).Info("cannot read the step queue; scaling on runners alone", "error", err.Error())
		setPoolCondition(pool, v1alpha1.ConditionQueueRead, metav1.ConditionFalse, "QueueUnavailable", truncate(err.Error(), 1024))
		return int(pool.Status.Queued)
	}
	setPoolCondition(pool, v1alpha1.ConditionQueueRead, metav1.ConditionTrue, ReasonAsExpected, fmt.Sprintf("%d steps waiting for this pool", n))
	pool.Status.Queued = int32(n)
	metrics.QueuedSteps.WithLabelValues(pool.Namespace, pool.Name).Set(float64(n))
	return n
}

// countOnly writes the population counts into the status when the pool cannot decide
// (Bitbucket cannot be read, the credentials fail, the pool is being deleted).
func (r *RunnerPoolReconciler) countOnly(pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner) {
	r.writeCounts(pool, scaling.Summarize(pool, runners, r.now(), r.Timings.OfflineGrace))
	metrics.DesiredRunners.WithLabelValues(pool.Namespace, pool.Name).Set(float64(pool.Status.Desired))
}

// writeCounts writes the pool's population into its status and metrics.
func (r *RunnerPoolReconciler) writeCounts(pool *v1alpha1.RunnerPool, s scaling.Summary) {
	pool.Status.Replicas = int32(s.Replicas)
	pool.Status.Busy = int32(s.Busy)
	pool.Status.Idle = int32(s.Idle)
	pool.Status.Ready = int32(s.Ready)
	pool.Status.Starting = int32(s.Starting)
	pool.Status.Draining = int32(s.Draining)

	for state, n := range map[string]int{"busy": s.Busy, "idle": s.Idle, "starting": s.Counts.Starting, "draining": s.Draining, "stuck": s.Stuck} {
		metrics.Runners.WithLabelValues(pool.Namespace, pool.Name, state).Set(float64(n))
	}
	metrics.MaxRunners.WithLabelValues(pool.Namespace, pool.Name).Set(float64(pool.Spec.MaxRunners))
	metrics.PendingTooLong.WithLabelValues(pool.Namespace, pool.Name).Set(float64(s.PendingTooLong))
}

// setReady summarises the pool: Ready when the credentials work and at least the minimum
// number of runners is ONLINE.
func setReady(pool *v1alpha1.RunnerPool) {
	creds := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionCredentialsValid)
	scalingCond := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionScalingActive)
	switch {
	case creds != nil && creds.Status == metav1.ConditionFalse:
		setPoolCondition(pool, v1alpha1.ConditionReady, metav1.ConditionFalse, creds.Reason, creds.Message)
	case scalingCond != nil && scalingCond.Status == metav1.ConditionFalse && scalingCond.Reason == ReasonBitbucketError:
		setPoolCondition(pool, v1alpha1.ConditionReady, metav1.ConditionFalse, scalingCond.Reason, scalingCond.Message)
	case pool.Status.Ready < minRunners(pool):
		reason := ReasonRunnersStarting
		if scalingCond != nil && scalingCond.Reason == ReasonPodsPending {
			reason = ReasonPodsPending
		}
		setPoolCondition(pool, v1alpha1.ConditionReady, metav1.ConditionFalse, reason,
			fmt.Sprintf("%d of at least %d runners are ONLINE", pool.Status.Ready, minRunners(pool)))
	default:
		setPoolCondition(pool, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonAsExpected,
			fmt.Sprintf("%d runners ONLINE (%d busy, %d idle)", pool.Status.Ready, pool.Status.Busy, pool.Status.Idle))
	}
}

// maxParallelCreates bounds the Runner creates one pool reconcile has in flight: a pool scaling
// from 0 to 100 does not wait for 100 round trips in a row, and the API server never sees more
// than this many creates from one pool at once (the Runner reconciler's workers bound the
// Bitbucket registrations and pod creates that follow).
const maxParallelCreates = 10

// createRunners creates n Runners, up to maxParallelCreates at a time, and returns how many it
// created. Each create is recorded in the expectations before the next reconcile can run (the
// pool's reconciles never overlap), so the pool never counts too few and goes above max.
//
// One event tells of the whole batch: an event per Runner would cost an API server write per
// runner for what the pool's status (replicas, starting) and the Runners themselves show.
func (r *RunnerPoolReconciler) createRunners(ctx context.Context, pool *v1alpha1.RunnerPool, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	errs := make([]error, n)
	names := make([]string, n)
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxParallelCreates)
	for i := range n {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			if names[i], errs[i] = r.createRunner(ctx, pool); errs[i] == nil {
				metrics.ScaleEvents.WithLabelValues(pool.Namespace, pool.Name, "create", "scale_up").Inc()
			}
		}()
	}
	wg.Wait()
	names = slices.DeleteFunc(names, func(s string) bool { return s == "" })
	if len(names) > 0 {
		r.event(pool, corev1.EventTypeNormal, "RunnerCreated", "ScaleUp", "%s", createdNote(names, n))
	}
	return len(names), errors.Join(errs...)
}

// maxNamesInEvent bounds the Runner names one event lists; an event note holds 1 kB at most.
const maxNamesInEvent = 10

// createdNote is the note of the event for a batch of Runners created out of the n wanted.
func createdNote(names []string, wanted int) string {
	slices.Sort(names)
	list := strings.Join(names[:min(len(names), maxNamesInEvent)], ", ")
	if len(names) > maxNamesInEvent {
		list += fmt.Sprintf(" and %d more", len(names)-maxNamesInEvent)
	}
	note := fmt.Sprintf("Created %d runners: %s", len(names), list)
	if len(names) == 1 {
		note = "Created runner " + list
	}
	if len(names) < wanted {
		note += fmt.Sprintf(" (%d of %d creates failed; retrying)", wanted-len(names), wanted)
	}
	return note
}

// minRunners is the pool's minimum now: spec.minRunners, or what a schedule window in force
// raises it to.
func minRunners(pool *v1alpha1.RunnerPool) int32 {
	if s := pool.Status.Schedule; s != nil {
		return min(s.MinRunners, pool.Spec.MaxRunners)
	}
	return pool.Spec.MinRunners
}

// createRunner creates one Runner and returns its name.
func (r *RunnerPoolReconciler) createRunner(ctx context.Context, pool *v1alpha1.RunnerPool) (string, error) {
	name := runnerName(pool)
	runner := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: pool.Namespace,
			Labels:    map[string]string{v1alpha1.LabelPool: pool.Name},
			// Set at creation, so the Runner reconciler does not spend a write adding it; it
			// still adds it to a Runner made without it.
			Finalizers: []string{v1alpha1.RunnerFinalizer},
		},
		Spec: v1alpha1.RunnerSpec{
			Workspace:     pool.Spec.Bitbucket.Workspace,
			Repository:    pool.Spec.Bitbucket.Repository,
			BitbucketName: BitbucketRunnerName(pool, name),
		},
	}
	for _, l := range runnerpod.Labels(pool) {
		runner.Spec.Labels = append(runner.Spec.Labels, v1alpha1.RunnerLabel(l))
	}
	if err := controllerutil.SetControllerReference(pool, runner, r.Scheme()); err != nil {
		return "", fmt.Errorf("own runner %s: %w", name, err)
	}
	if err := r.Create(ctx, runner); err != nil {
		return "", fmt.Errorf("create runner %s: %w", name, err)
	}
	r.created.add(client.ObjectKeyFromObject(pool), name, r.now())
	return name, nil
}

func (r *RunnerPoolReconciler) setDrain(ctx context.Context, pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, drain bool, reason string) error {
	if runner == nil || runner.Spec.Drain == drain {
		return nil
	}
	patch := client.MergeFrom(runner.DeepCopy())
	runner.Spec.Drain = drain
	if !drain {
		if runner.Annotations == nil {
			runner.Annotations = map[string]string{}
		}
		runner.Annotations[v1alpha1.AnnotationDrainCancelled] = r.now().UTC().Format(time.RFC3339Nano)
	}
	if err := r.Patch(ctx, runner, patch); err != nil {
		return fmt.Errorf("set drain=%t on runner %s: %w", drain, runner.Name, err)
	}
	if drain {
		r.event(pool, corev1.EventTypeNormal, "DrainingRunner", "ScaleDown", "Draining runner %s (%s)", runner.Name, reason)
		metrics.ScaleEvents.WithLabelValues(pool.Namespace, pool.Name, "drain", reason).Inc()
	} else {
		r.event(pool, corev1.EventTypeNormal, "KeepingRunner", "ScaleUp", "Runner %s is needed again; drain cancelled", runner.Name)
		metrics.ScaleEvents.WithLabelValues(pool.Namespace, pool.Name, "undrain", reason).Inc()
	}
	return nil
}

// reconcileDelete removes every runner (each drains: a busy one finishes its step first) and
// lets the pool go once none is left.
func (r *RunnerPoolReconciler) reconcileDelete(ctx context.Context, pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(pool, v1alpha1.PoolFinalizer) {
		return ctrl.Result{}, nil
	}
	if len(runners) > 0 {
		for i := range runners {
			if runners[i].DeletionTimestamp.IsZero() {
				if err := r.Delete(ctx, &runners[i]); client.IgnoreNotFound(err) != nil {
					return ctrl.Result{}, fmt.Errorf("delete runner %s: %w", runners[i].Name, err)
				}
			}
		}
		before := pool.DeepCopy()
		r.countOnly(pool, runners)
		pool.Status.Desired = 0
		setPoolCondition(pool, v1alpha1.ConditionReady, metav1.ConditionFalse, ReasonDeleting,
			fmt.Sprintf("Waiting for %d runners to drain and unregister", len(runners)))
		if !equalStatus(before.Status, pool.Status) {
			if err := r.Status().Patch(ctx, pool, client.MergeFrom(before)); err != nil {
				return ctrl.Result{}, fmt.Errorf("patch pool status: %w", err)
			}
		}
		return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
	}
	patch := client.MergeFrom(pool.DeepCopy())
	controllerutil.RemoveFinalizer(pool, v1alpha1.PoolFinalizer)
	if err := r.Patch(ctx, pool, patch); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
	}
	metrics.ForgetPool(pool.Namespace, pool.Name)
	r.created.forget(client.ObjectKeyFromObject(pool))
	r.wakes.forget(client.ObjectKeyFromObject(pool))
	if r.Queue != nil {
		r.Queue.Forget(client.ObjectKeyFromObject(pool))
	}
	return ctrl.Result{}, nil
}

func (r *RunnerPoolReconciler) runnersOf(ctx context.Context, pool *v1alpha1.RunnerPool) ([]v1alpha1.Runner, error) {
	var list v1alpha1.RunnerList
	if err := r.List(ctx, &list, client.InNamespace(pool.Namespace), client.MatchingLabels{v1alpha1.LabelPool: pool.Name}); err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	out := list.Items[:0]
	for _, runner := range list.Items {
		// A Runner outside the pool's scope is refused by the Runner reconciler: it is not one
		// of the pool's runners, and the plan neither counts nor drains it.
		if ref := metav1.GetControllerOf(&runner); ref != nil && ref.UID == pool.UID && (runner.DecodeError() != nil || runnerpod.OutOfScope(pool, &runner) == "") {
			out = append(out, runner)
		}
	}
	return out, nil
}

func (r *RunnerPoolReconciler) event(pool *v1alpha1.RunnerPool, eventType, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(pool, nil, eventType, reason, action, note, args...)
	}
}

func (r *RunnerPoolReconciler) now() time.Time {
	if r.Clock != nil {
		return r.Clock.Now()
	}
	return time.Now()
}

// SetupWithManager registers the reconciler. Credentials Secrets are not watched (that would
// cache every Secret of the cluster): a pool with bad credentials looks again every
// credentialsRetry instead.
func (r *RunnerPoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.RunnerPool{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&v1alpha1.Runner{}, r.wakes.handler(r.now)).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		// A runner pod that goes may leave a layer cache claim to free (layercache.TidyClaims).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(poolOfPod), builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Named("runnerpool").
		Complete(r)
}

// credentialsRetry is how soon a pool whose credentials failed tries again: soon enough that
// fixing the Secret shows at once, slow enough to cost Bitbucket nothing that matters.
const credentialsRetry = 15 * time.Second

// runnerName is a fresh Runner name: the pool's name (shortened so pod names and label values
// stay within 63 characters) and a random suffix.
func runnerName(pool *v1alpha1.RunnerPool) string {
	prefix := pool.Name
	if len(prefix) > 50 {
		// A cut right after a dot would leave ".-", which no object name may contain.
		prefix = strings.TrimRight(prefix[:50], ".")
	}
	return prefix + "-" + utilrand.String(5)
}

// BitbucketRunnerName is the Bitbucket name of a pool's runner (runnerpod.BitbucketRunnerName).
func BitbucketRunnerName(pool *v1alpha1.RunnerPool, runnerName string) string {
	return runnerpod.BitbucketRunnerName(pool, runnerName)
}

// BitbucketNamePrefix is the marker every Bitbucket runner of the pool's starts with
// (runnerpod.BitbucketNamePrefix).
func BitbucketNamePrefix(pool *v1alpha1.RunnerPool) string {
	return runnerpod.BitbucketNamePrefix(pool)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
