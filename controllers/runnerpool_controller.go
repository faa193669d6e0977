package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/metrics"
	"github.com/runnerpool/runnerpool-operator/internal/observe"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
	"github.com/runnerpool/runnerpool-operator/internal/scaling"
)

// Grace periods, see Timings.
const (
	DefaultOfflineGrace = 2 * time.Minute
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
)

// RunnerPoolReconciler decides how many runners a pool needs and creates or drains Runner
// objects; the Runner reconciler does the work on each runner.
type RunnerPoolReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Clients  *Clients
	Store    *observe.Store
	Queue    *QueueReader
	Timings  Timings
	Now      func() time.Time

	// created remembers Runners this reconciler created that its cache may not show yet, so
	// that a reconcile right after a create never counts too few runners and goes above max.
	created expectations
}

// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runnerpools,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runnerpools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ci.runnerpool.dev,resources=runnerpools/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch

// Reconcile brings one pool closer to its desired state.
func (r *RunnerPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pool := &v1alpha1.RunnerPool{}
	if err := r.Get(ctx, req.NamespacedName, pool); err != nil {
		if apierrors.IsNotFound(err) {
			forgetUndecodable(kindRunnerPool, req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if derr := pool.DecodeError(); derr != nil {
		return r.reportUndecodablePool(ctx, pool, derr)
	}
	forgetUndecodable(kindRunnerPool, pool.Namespace, pool.Name)
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

	before := pool.DeepCopy()
	res, err := r.reconcileNormal(ctx, pool, runners)
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
	now := r.now()
	poll := pool.Spec.Scaling.PollInterval.Duration
	pool.Status.PollInterval = &metav1.Duration{Duration: poll}

	api, err := r.Clients.For(ctx, pool)
	if err == nil {
		poll = r.effectivePoll(pool, api)
		pool.Status.PollInterval = &metav1.Duration{Duration: poll}
		notBefore := now.Add(-poll)
		// A requested poll (webhook, or a user's annotation) needs a list newer than the
		// request; a request from the future (clock skew between replicas) counts as now.
		if requested := pollRequested(pool); requested.After(notBefore) {
			notBefore = requested
			if requested.After(now) {
				notBefore = now
			}
		}
		var snap *observe.Snapshot
		snap, err = r.Store.Get(ctx, r.Clients.ObserveKey(pool), api, notBefore)
		if err == nil {
			observed := metav1.NewTime(snap.At)
			pool.Status.LastObservedTime = &observed
			res, err := r.scale(ctx, pool, api, runners, snap)
			if res.RequeueAfter > poll || res.RequeueAfter == 0 {
				res.RequeueAfter = poll
			}
			return res, err
		}
	}
	if reason, msg, ok := credentialsCondition(err); ok {
		if reason == ReasonInvalidCredentials || reason == ReasonPermissionDenied {
			r.Clients.Invalidate(pool) // read the Secret afresh next time: it may be fixed
		}
		r.reportCredentials(pool, reason, msg)
		r.countOnly(pool, runners, nil)
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
		r.countOnly(pool, runners, nil)
		setReady(pool)
		return ctrl.Result{RequeueAfter: max(res.RequeueAfter, poll)}, nil
	}
	// Bitbucket is unreachable or failing: keep what runs, report it, try at the next poll.
	setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionFalse, ReasonBitbucketError, truncate(err.Error(), 1024))
	r.countOnly(pool, runners, nil)
	setReady(pool)
	log.FromContext(ctx).Error(err, "observe Bitbucket")
	return ctrl.Result{RequeueAfter: poll}, nil
}

// effectivePoll stretches the poll interval when the request budget of the pool's credential
// runs low (scaling.PollInterval), and reports it.
func (r *RunnerPoolReconciler) effectivePoll(pool *v1alpha1.RunnerPool, api BitbucketAPI) time.Duration {
	base := pool.Spec.Scaling.PollInterval.Duration
	poll := base
	if b, ok := api.(interface{ Budget() *bitbucket.Budget }); ok && b.Budget() != nil {
		poll = scaling.PollInterval(base, b.Budget().Remaining(), b.Budget().Limit())
	}
	metrics.PollIntervalSeconds.WithLabelValues(pool.Namespace, pool.Name).Set(poll.Seconds())
	return poll
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

// scale observes, decides and acts.
func (r *RunnerPoolReconciler) scale(ctx context.Context, pool *v1alpha1.RunnerPool, api BitbucketAPI, runners []v1alpha1.Runner, snap *observe.Snapshot) (ctrl.Result, error) {
	if reason, msg := refusedRegistration(runners); reason != "" {
		r.reportCredentials(pool, reason, msg)
	} else {
		setPoolCondition(pool, v1alpha1.ConditionCredentialsValid, metav1.ConditionTrue, ReasonCredentialsAccepted, "Bitbucket accepted the credentials")
	}
	in := r.decisionInput(pool, runners, snap)
	for _, name := range r.created.pending(client.ObjectKeyFromObject(pool), runners, r.now()) {
		in.Runners = append(in.Runners, scaling.Runner{Name: name, State: scaling.Starting, IdleSince: r.now()})
	}
	in.Queued = r.queued(ctx, pool, api)
	decision := scaling.Decide(in)
	r.countOnly(pool, runners, &decision)

	var errs []error
	for i := 0; i < decision.Create; i++ {
		if err := r.createRunner(ctx, pool); err != nil {
			errs = append(errs, err)
			continue
		}
		metrics.ScaleEvents.WithLabelValues(pool.Namespace, pool.Name, "create", "scale_up").Inc()
	}
	byName := map[string]*v1alpha1.Runner{}
	for i := range runners {
		byName[runners[i].Name] = &runners[i]
	}
	for _, name := range decision.Drain {
		errs = append(errs, r.setDrain(ctx, pool, byName[name], true, r.relabelDrainReason(pool, byName[name], snap, drainReason(in, name))))
	}
	for _, name := range decision.Undrain {
		errs = append(errs, r.setDrain(ctx, pool, byName[name], false, "needed_again"))
	}
	for _, name := range decision.Replace {
		runner := byName[name]
		r.event(pool, corev1.EventTypeWarning, "ReplacingRunner", "Replace", "Runner %s failed to start (%s); replacing it", name, runner.Status.Phase)
		if err := r.Delete(ctx, runner); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("delete failed runner %s: %w", name, err))
			continue
		}
		metrics.ScaleEvents.WithLabelValues(pool.Namespace, pool.Name, "replace", "failed_to_start").Inc()
	}

	errs = append(errs, r.removeOrphans(ctx, pool, api, runners, snap))

	if c := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionCredentialsValid); c != nil && c.Status == metav1.ConditionFalse {
		setReady(pool)
		return ctrl.Result{RequeueAfter: pool.Spec.Scaling.PollInterval.Duration}, errors.Join(errs...)
	}
	setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionTrue, ReasonAsExpected,
		fmt.Sprintf("Policy %s wants %d runners", pool.Spec.Scaling.Policy, decision.Desired))
	if p := pool.Status.PollInterval; p != nil && p.Duration > pool.Spec.Scaling.PollInterval.Duration {
		setPoolCondition(pool, v1alpha1.ConditionScalingActive, metav1.ConditionTrue, ReasonBudgetLow,
			fmt.Sprintf("Policy %s wants %d runners; polls are stretched to every %s because the Bitbucket request budget of these credentials runs low", pool.Spec.Scaling.Policy, decision.Desired, p.Duration))
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
	return ctrl.Result{RequeueAfter: pool.Spec.Scaling.PollInterval.Duration}, errors.Join(errs...)
}

// refusedRegistration finds a Runner whose registration Bitbucket refused for its credentials:
// the list works with them, but creating runners does not (a token without runner:write).
func refusedRegistration(runners []v1alpha1.Runner) (reason, message string) {
	for i := range runners {
		c := meta.FindStatusCondition(runners[i].Status.Conditions, v1alpha1.ConditionRegistered)
		if c != nil && c.Status == metav1.ConditionFalse && (c.Reason == ReasonPermissionDenied || c.Reason == ReasonInvalidCredentials) {
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
func (r *RunnerPoolReconciler) removeOrphans(ctx context.Context, pool *v1alpha1.RunnerPool, api BitbucketAPI, runners []v1alpha1.Runner, snap *observe.Snapshot) error {
	known := map[string]bool{}
	for i := range runners {
		known[runners[i].Spec.BitbucketName] = true
		if runners[i].Status.UUID != "" {
			known[runners[i].Status.UUID] = true
		}
	}
	prefix := BitbucketNamePrefix(pool)
	scope := poolScope(pool)
	ctx = bitbucket.WithPriority(ctx, bitbucket.PriorityHigh)
	var errs []error
	for _, bb := range snap.Runners() {
		if !strings.HasPrefix(bb.Name, prefix) || known[bb.UUID] || known[bb.Name] || r.now().Sub(bb.CreatedOn) < r.Timings.withDefaults().OrphanGrace {
			continue
		}
		if bb.Busy() {
			if bb.State.Status != bitbucket.RunnerStatusDisabled {
				if err := api.SetRunnerState(ctx, scope, bb.UUID, bitbucket.RunnerStatusDisabled); err != nil && !bitbucket.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("disable orphaned runner %s: %w", bb.UUID, err))
				}
			}
			continue
		}
		if err := api.DeleteRunner(ctx, scope, bb.UUID); err != nil && !bitbucket.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete orphaned runner %s: %w", bb.UUID, err))
			continue
		}
		r.Store.Forget(r.Clients.ObserveKey(pool), bb.UUID)
		r.event(pool, corev1.EventTypeNormal, "OrphanRemoved", "Cleanup", "Deleted Bitbucket runner %s (%s): it had no Runner", bb.Name, bb.UUID)
		metrics.Cleanups.WithLabelValues(pool.Namespace, pool.Name, "bitbucket_runner", "orphan").Inc()
	}
	return errors.Join(errs...)
}

// queued reads the steps waiting for the pool when the policy or a recent webhook asks for it.
// A queue that cannot be read leaves the pool scaling on its runners alone, and says so.
func (r *RunnerPoolReconciler) queued(ctx context.Context, pool *v1alpha1.RunnerPool, api BitbucketAPI) int {
	now := r.now()
	if r.Queue == nil || !wantsQueue(pool, now) {
		pool.Status.Queued = 0
		metrics.QueuedSteps.WithLabelValues(pool.Namespace, pool.Name).Set(0)
		return 0
	}
	poll := pool.Spec.Scaling.PollInterval.Duration
	if pool.Status.PollInterval != nil {
		poll = pool.Status.PollInterval.Duration
	}
	notBefore := now.Add(-poll)
	if requested := pollRequested(pool); requested.After(notBefore) && !requested.After(now) {
		notBefore = requested
	}
	n, err := r.Queue.Queued(ctx, pool, r.Clients.APIURL(pool), api, notBefore)
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

// decisionInput turns the pool, its Runners and the Bitbucket snapshot into the pure input of
// the scaling decision. The snapshot wins over Runner status, which may lag one reconcile.
func (r *RunnerPoolReconciler) decisionInput(pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner, snap *observe.Snapshot) scaling.Input {
	now := r.now()
	in := scaling.Input{
		Policy:         scaling.Policy(pool.Spec.Scaling.Policy),
		Min:            int(pool.Spec.MinRunners),
		Max:            int(pool.Spec.MaxRunners),
		IdleRunners:    int(pool.Spec.Scaling.IdleRunners),
		ScaleDownDelay: pool.Spec.Scaling.ScaleDownDelay.Duration,
		Now:            now,
	}
	if p := pool.Spec.Scaling.PercentageIdle; p != nil {
		in.Percentage = scaling.PercentageIdleParams{
			ScaleUpThreshold: decimal(p.ScaleUpThreshold, 0.5), ScaleDownThreshold: decimal(p.ScaleDownThreshold, 0.2),
			ScaleUpMultiplier: decimal(p.ScaleUpMultiplier, 1.5), ScaleDownMultiplier: decimal(p.ScaleDownMultiplier, 0.5),
		}
	}
	hash := runnerpod.TemplateHash(pool)
	for i := range runners {
		v := runnerView(pool, &runners[i], snap, now, r.Timings.withDefaults().OfflineGrace)
		_, relabelled := labelsChangedInBitbucket(&runners[i], snap)
		v.Recycle = recycleReason(pool, &runners[i], hash, now) != "" || relabelled
		v.Spent = pool.Spec.Runner.Ephemeral && runners[i].Status.StepsStarted > 0
		in.Runners = append(in.Runners, v)
	}
	return in
}

// recycleReason says why a runner's pod should be replaced once idle, "" if it should not:
// fresh docker storage after maxAge or maxSteps (the weekly `docker system prune -af` of a
// hand-run runner), or a pool change that shapes pods differently.
func recycleReason(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, templateHash string, now time.Time) string {
	st, spec := runner.Status, pool.Spec.Runner
	switch {
	case st.PodStartTime != nil && spec.MaxAge.Duration > 0 && now.Sub(st.PodStartTime.Time) >= spec.MaxAge.Duration:
		return "maxAge"
	case spec.MaxSteps > 0 && st.StepsStarted >= spec.MaxSteps:
		return "maxSteps"
	case st.PodTemplateHash != "" && st.PodTemplateHash != templateHash:
		return "template changed"
	case len(runner.Spec.Labels) > 0 && !slices.Equal(sortedLabels(labelStrings(runner.Spec.Labels)), runnerpod.Labels(pool)):
		// Bitbucket has no call to change a registered runner's labels, so a pool whose labels
		// were edited gets runners registered with the new ones, one idle runner at a time.
		return "labels changed"
	}
	return ""
}

func runnerView(pool *v1alpha1.RunnerPool, runner *v1alpha1.Runner, snap *observe.Snapshot, now time.Time, offlineGrace time.Duration) scaling.Runner {
	st := runner.Status
	v := scaling.Runner{Name: runner.Name, Drain: runner.Spec.Drain, State: scaling.Starting, IdleSince: runner.CreationTimestamp.Time}
	if st.OnlineTime != nil {
		v.IdleSince = st.OnlineTime.Time
	}
	if st.LastStepTime != nil && st.LastStepTime.After(v.IdleSince) {
		v.IdleSince = st.LastStepTime.Time
	}
	// A runner needed again is not drained again before a full scale-down delay: a count that
	// wobbles for one poll must not disable, enable and disable the same runner.
	if t, err := time.Parse(time.RFC3339Nano, runner.Annotations[v1alpha1.AnnotationDrainCancelled]); err == nil && t.After(v.IdleSince) {
		v.IdleSince = t
	}
	bbState, step := st.BitbucketState, st.Step
	var stateSince time.Time
	if bb, ok := snap.ByUUID(st.UUID); ok && st.UUID != "" {
		bbState, step, stateSince = string(bb.State.Status), stepID(bb), bb.State.UpdatedOn
		if st.Step != "" && step == "" && snap.At.After(v.IdleSince) {
			// The step ended after the Runner's status last saw it: idle since this snapshot.
			v.IdleSince = snap.At
		}
	}
	startedAt := runner.CreationTimestamp.Time
	if st.PodStartTime != nil {
		startedAt = st.PodStartTime.Time
	}
	pendingTimeout := pool.Spec.Scaling.PendingTimeout.Duration
	switch {
	case !runner.DeletionTimestamp.IsZero() || runner.Spec.Drain:
		// A runner whose drain the pool cancelled is capacity again at once, even before the
		// Runner controller enables it, so the pool does not create one too many meanwhile.
		v.State = scaling.Draining
		v.Busy = step != ""
		if !runner.DeletionTimestamp.IsZero() {
			v.Drain, v.Deleting = true, true
		}
	case step != "":
		v.State = scaling.Busy
	case bbState == string(bitbucket.RunnerStatusOnline):
		v.State = scaling.Idle
	case st.Phase == v1alpha1.RunnerPhaseFailed && now.Sub(startedAt) > pendingTimeout:
		// Failing pods (image pulls, crash loops) are replaced, at most once per pending
		// timeout, so a broken image does not churn Bitbucket registrations.
		v.State = scaling.Stuck
	case st.OnlineTime != nil && (bbState == string(bitbucket.RunnerStatusOffline) || bbState == string(bitbucket.RunnerStatusUnhealthy)) &&
		!stateSince.IsZero() && now.Sub(stateSince) > offlineGrace:
		// Was connected, lost for longer than a restart takes: replace it.
		v.State = scaling.Stuck
	case st.OnlineTime == nil && conditionReason(st.Conditions, v1alpha1.ConditionPodReady) == ReasonPodRunning && now.Sub(startedAt) > pendingTimeout:
		// The pod runs but its agent never connected (UNREGISTERED): replace it. A runner that
		// did connect is judged by the offline grace above, not by the age of its pod.
		v.State = scaling.Stuck
	default:
		// A runner that came online with its pod had a node: it is not waiting for one.
		v.PendingTooLong = st.OnlineTime == nil && now.Sub(startedAt) > pendingTimeout
	}
	if v.State == scaling.Busy {
		v.Busy = true
	}
	return v
}

// countOnly writes the population counts into the status.
func (r *RunnerPoolReconciler) countOnly(pool *v1alpha1.RunnerPool, runners []v1alpha1.Runner, d *scaling.Decision) {
	var c scaling.Counts
	if d != nil {
		c = d.Counts
		pool.Status.Desired = int32(d.Desired)
	} else {
		views := make([]scaling.Runner, 0, len(runners))
		for i := range runners {
			views = append(views, runnerView(pool, &runners[i], nil, r.now(), r.Timings.withDefaults().OfflineGrace))
		}
		c = scaling.Count(views)
	}
	pool.Status.Replicas = int32(len(runners))
	pool.Status.Busy = int32(c.Busy)
	pool.Status.Idle = int32(c.Idle)
	pool.Status.Ready = int32(c.Busy + c.Idle)
	pool.Status.Starting = int32(c.Starting + c.Stuck)
	pool.Status.Draining = int32(c.Draining)

	for state, n := range map[string]int{"busy": c.Busy, "idle": c.Idle, "starting": c.Starting, "draining": c.Draining, "stuck": c.Stuck} {
		metrics.Runners.WithLabelValues(pool.Namespace, pool.Name, state).Set(float64(n))
	}
	metrics.DesiredRunners.WithLabelValues(pool.Namespace, pool.Name).Set(float64(pool.Status.Desired))
	metrics.MaxRunners.WithLabelValues(pool.Namespace, pool.Name).Set(float64(pool.Spec.MaxRunners))
	metrics.PendingTooLong.WithLabelValues(pool.Namespace, pool.Name).Set(float64(c.PendingTooLong))
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
	case pool.Status.Ready < pool.Spec.MinRunners:
		reason := ReasonRunnersStarting
		if scalingCond != nil && scalingCond.Reason == ReasonPodsPending {
			reason = ReasonPodsPending
		}
		setPoolCondition(pool, v1alpha1.ConditionReady, metav1.ConditionFalse, reason,
			fmt.Sprintf("%d of at least %d runners are ONLINE", pool.Status.Ready, pool.Spec.MinRunners))
	default:
		setPoolCondition(pool, v1alpha1.ConditionReady, metav1.ConditionTrue, ReasonAsExpected,
			fmt.Sprintf("%d runners ONLINE (%d busy, %d idle)", pool.Status.Ready, pool.Status.Busy, pool.Status.Idle))
	}
}

func (r *RunnerPoolReconciler) createRunner(ctx context.Context, pool *v1alpha1.RunnerPool) error {
	name := runnerName(pool)
	runner := &v1alpha1.Runner{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: pool.Namespace,
			Labels:    map[string]string{v1alpha1.LabelPool: pool.Name},
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
		return fmt.Errorf("own runner %s: %w", name, err)
	}
	if err := r.Create(ctx, runner); err != nil {
		return fmt.Errorf("create runner %s: %w", name, err)
	}
	r.created.add(client.ObjectKeyFromObject(pool), name, r.now())
	r.event(pool, corev1.EventTypeNormal, "RunnerCreated", "ScaleUp", "Created runner %s", name)
	return nil
}

// drainReason names why the decision drains a runner, for events and metrics.
func drainReason(in scaling.Input, name string) string {
	for _, r := range in.Runners {
		if r.Name != name {
			continue
		}
		switch {
		case r.Spent:
			return "ephemeral_step_done"
		case r.Recycle:
			return "recycle"
		}
	}
	return "scale_down"
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
		r.countOnly(pool, runners, nil)
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
		if ref := metav1.GetControllerOf(&runner); ref != nil && ref.UID == pool.UID {
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
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager registers the reconciler. Credentials Secrets are not watched (that would
// cache every Secret of the cluster): a pool with bad credentials looks again every
// credentialsRetry instead.
func (r *RunnerPoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.RunnerPool{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&v1alpha1.Runner{}).
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

// BitbucketRunnerName is the Bitbucket name of a pool's runner: a marker made of the pool's UID,
// then the Runner's name. The marker finds the pool's runners in Bitbucket (leftovers of a
// crash included) without mistaking another cluster's pool of the same name for this one.
func BitbucketRunnerName(pool *v1alpha1.RunnerPool, runnerName string) string {
	return BitbucketNamePrefix(pool) + runnerName
}

// BitbucketNamePrefix is the marker every Bitbucket runner of the pool's starts with.
func BitbucketNamePrefix(pool *v1alpha1.RunnerPool) string {
	uid := string(pool.UID)
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return "rp-" + uid + "-"
}

func decimal(d v1alpha1.Decimal, def float64) float64 {
	if d == "" {
		return def
	}
	v, err := strconv.ParseFloat(string(d), 64)
	if err != nil {
		return def
	}
	return v
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
