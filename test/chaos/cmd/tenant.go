package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/bbwebhook"
	"github.com/runnerpool/runnerpool-operator/internal/bitbucket"
	"github.com/runnerpool/runnerpool-operator/internal/budgetstore"
)

// The tenant phase's namespaces. The monitor's invariants skip the hostile one: its Runners and
// Secrets are forgeries the run made, not the operator's objects.
const (
	tenantGoodNamespace    = "tenant-good"
	tenantHostileNamespace = "tenant-hostile"
	// bogusLeases is how many budget Leases of credentials nobody uses the run makes by hand.
	bogusLeases = 200
)

// tenantCredentials are the good tenant's own: an OAuth consumer and a user with an app
// password.
type tenantCredentials struct {
	consumer       consumer
	user, password string
}

// Limits of the tenant figures. With a baseline p95 of a second or so, 20 % is less than the
// spread of one runner's start, so "within 20 %" also allows tenantWaitSlack.
const (
	tenantWaitRatio = 1.2
	tenantWaitSlack = 500 * time.Millisecond
	// The manager's memory during the flood may grow by half or tenantRSSSlackMiB over the
	// baseline window's peak, whichever is more: the Go heap doubles before it collects, and a
	// bounded receiver stays well inside that.
	tenantRSSRatio    = 1.5
	tenantRSSSlackMiB = 64
)

// phaseTenants runs a good tenant's steady steps first alone (the baseline window), then next to
// a hostile tenant (the hostile window): bad credentials for the good tenant's consumer and user,
// pools asking for its steps, forged Runners and Secrets naming its runners, an undecodable
// pool, a webhook flood and hand-edited budget Leases. The leader is killed once in each window,
// so that the windows compare like with like. The good tenant's steps must all run, their queue
// wait p95 stay within 20 % of the baseline, none of its runners may be deleted or disabled by
// the hostile side, and the manager's memory stays bounded.
func (r *run) phaseTenants(ctx context.Context) error {
	sc := r.begin("tenants: a hostile tenant next to a good one")
	defer r.end(sc)
	good, err := r.goodTenant(ctx)
	if err != nil {
		return err
	}
	r.converge(ctx, sc, good)
	goodLeases := r.newBudgetLeases(ctx, 30*time.Second)

	r.say("    tenants: baseline window of %s, the good tenant alone", r.cfg.tenantWindow)
	base, err := r.tenantWindow(ctx, sc, good, "baseline", func() error { return r.env.mgrs.killLeader(ctx, "tenant") })
	if err != nil {
		return err
	}

	harm := newHarmWatch(r, good)
	harmCtx, stopHarm := context.WithCancel(ctx)
	harmDone := make(chan struct{})
	go func() {
		defer close(harmDone)
		harm.loop(harmCtx)
	}()
	defer func() {
		stopHarm()
		<-harmDone
	}()

	hostile, err := r.hostileTenant(ctx, good)
	if err != nil {
		return err
	}
	floodCtx, stopFlood := context.WithCancel(ctx)
	floodDone := make(chan floodStats, 1)
	go func() { floodDone <- r.webhookFlood(floodCtx, r.cfg.floodDeliveries, r.cfg.tenantWindow*4/5) }()
	r.say("    tenants: hostile window of %s: bad credentials, forged Runners and Secrets, an undecodable pool, %d webhook deliveries, hand-edited budget Leases", r.cfg.tenantWindow, r.cfg.floodDeliveries)
	hw, err := r.tenantWindow(ctx, sc, good, "hostile", func() error {
		edited, err := r.editBudgetLeases(ctx, goodLeases)
		if err != nil {
			return err
		}
		sc.note("%d budget Leases edited by hand, %d made by hand", edited, bogusLeases)
		// A new leader loads the edited Leases.
		return r.env.mgrs.killLeader(ctx, "tenant")
	})
	stopFlood()
	flood := <-floodDone
	if err != nil {
		return err
	}
	sc.note("flood: %s", flood)

	all := newBatch()
	all.addSteps(base.steps.ids())
	all.addSteps(hw.steps.ids())
	if err := r.waitSteps(ctx, all, stepsTimeout); err != nil {
		r.res.fail("tenants: %v", err)
	}
	hostileNote := r.hostileOutcome(ctx, hostile)
	sc.note("%s", hostileNote)
	r.cleanUpHostile(ctx, sc, hostile)
	stopHarm()
	<-harmDone

	snap := r.env.sys.BBSim.State()
	baseStats := r.classify(snap, base.steps.stepSet())
	hostileStats := r.classify(snap, hw.steps.stepSet())
	allStats := r.classify(snap, all.stepSet())
	harmed := harm.result()
	r.writeTenantWaits(snap, base, hw)
	baseP95, hostileP95 := baseStats.percentile(0.95), hostileStats.percentile(0.95)
	res := r.res
	res.mu.Lock()
	res.TenantGoodStepsTotal = allStats.total
	res.TenantGoodStepsRun = allStats.ok
	res.TenantGoodWaitP95 = round1(hostileP95.Seconds())
	res.TenantGoodWaitP95Baseline = round1(baseP95.Seconds())
	res.TenantGoodRunnersHarmed = len(harmed)
	res.TenantManagerRSSBeforeMiB = round1(base.maxRSSMiB)
	res.TenantManagerRSSMiB = round1(hw.maxRSSMiB)
	res.TenantWebhookDeliveries = flood.sent
	res.TenantWebhookAnswers = flood.String()
	res.TenantHostile = hostileNote
	res.mu.Unlock()

	if allStats.ok != allStats.total {
		r.res.violation(violationTenantStepsNotRun, fmt.Sprintf("%d of the good tenant's %d steps ran (%d unfinished, %d failed)",
			allStats.ok, allStats.total, allStats.unfinished, allStats.total-allStats.ok-allStats.unfinished))
	}
	if limit := max(time.Duration(float64(baseP95)*tenantWaitRatio), baseP95+tenantWaitSlack); hostileP95 > limit {
		r.res.violation(violationTenantWait, fmt.Sprintf("the good tenant's queue wait p95 was %s next to the hostile tenant, %s alone (limit %s)",
			hostileP95.Round(100*time.Millisecond), baseP95.Round(100*time.Millisecond), limit.Round(100*time.Millisecond)))
	}
	for _, h := range harmed {
		r.res.violation(violationTenantHarmed, h)
	}
	if limit := max(base.maxRSSMiB*tenantRSSRatio, base.maxRSSMiB+tenantRSSSlackMiB); base.maxRSSMiB > 0 && hw.maxRSSMiB > limit {
		r.res.violation(violationTenantMemory, fmt.Sprintf("manager RSS reached %.0f MiB during the flood, %.0f MiB before (limit %.0f MiB)", hw.maxRSSMiB, base.maxRSSMiB, limit))
	}
	sc.note("good steps %d/%d ran; wait p95 %s (baseline %s); %d runners harmed; RSS %.0f MiB (baseline %.0f MiB)",
		allStats.ok, allStats.total, hostileP95.Round(100*time.Millisecond), baseP95.Round(100*time.Millisecond), len(harmed), hw.maxRSSMiB, base.maxRSSMiB)

	if err := r.deletePools(ctx, good, 5*time.Minute); err != nil {
		r.res.fail("%v", err)
	}
	if left := r.leftovers(ctx, good, time.Minute); left != "" {
		sc.note("left after deletion: %s", left)
	}
	return nil
}

// goodTenant creates the good tenant: its namespace, its two credentials and two pools, one of
// each credential kind (an IdleBuffer pool on the OAuth consumer, a Queue pool on the user).
func (r *run) goodTenant(ctx context.Context) ([]*poolInfo, error) {
	t := r.env.tenant
	for _, ns := range []string{tenantGoodNamespace, tenantHostileNamespace} {
		if err := r.env.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "bitbucket", Namespace: tenantGoodNamespace},
			StringData: map[string]string{v1alpha1.SecretKeyClientID: t.consumer.id, v1alpha1.SecretKeyClientSecret: t.consumer.secret}},
		{ObjectMeta: metav1.ObjectMeta{Name: "bitbucket-user", Namespace: tenantGoodNamespace},
			StringData: map[string]string{v1alpha1.SecretKeyUsername: t.user, v1alpha1.SecretKeyPassword: t.password}},
	}
	for _, s := range secrets {
		if err := r.env.c.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create secret %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	r.leasesBefore = r.budgetLeaseNames(ctx)
	return r.createPools(ctx, []poolSpec{
		{name: "builds", namespace: tenantGoodNamespace, policy: v1alpha1.ScalingPolicyIdleBuffer, min: 1, max: 6, idle: 2},
		{name: "queue", namespace: tenantGoodNamespace, secret: "bitbucket-user", policy: v1alpha1.ScalingPolicyQueue, min: 0, max: 4},
	})
}

// window is what one tenant window measured.
type window struct {
	name      string
	steps     *scenario
	maxRSSMiB float64
	// start and midway are when the window began and when its midway action (the leader
	// kill) began, for the table of waits.
	start, midway time.Time
}

// tenantWindow runs the good tenant's steady stream of steps for the window, sampling the
// managers' memory every second; midway it calls midway (a leader kill).
func (r *run) tenantWindow(ctx context.Context, sc *scenario, good []*poolInfo, name string, midway func() error) (window, error) {
	w := window{name: name, steps: newBatch(), start: time.Now()}
	end := time.Now().Add(r.cfg.tenantWindow)
	killAt := time.Now().Add(r.between(r.cfg.tenantWindow*2/5, r.cfg.tenantWindow*3/5))
	nextStep := time.Now()
	for time.Now().Before(end) {
		if err := ctx.Err(); err != nil {
			return w, err
		}
		w.maxRSSMiB = max(w.maxRSSMiB, r.env.mgrs.rssMiB())
		if !time.Now().Before(nextStep) {
			p := good[r.intn(len(good))]
			// Short steps often: about 100 per window, so that the p95 the windows compare is
			// the fifth-slowest step rather than the third, and one unlucky step moves it less.
			if err := r.enqueue(w.steps, p, 1, r.between(2*time.Second, 6*time.Second)); err != nil {
				return w, err
			}
			nextStep = time.Now().Add(r.between(500*time.Millisecond, 1500*time.Millisecond))
		}
		if midway != nil && !time.Now().Before(killAt) {
			// The kill waits for the next leader; memory is sampled around it, not during.
			w.midway = time.Now()
			if err := midway(); err != nil {
				return w, fmt.Errorf("%s window: %w", name, err)
			}
			midway = nil
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return w, err
		}
	}
	sc.addSteps(w.steps.ids())
	return w, nil
}

// writeTenantWaits writes every good step of both windows to tenant-waits.txt in the run's
// directory, with when it was queued relative to its window's start and to the leader kill,
// slowest first: what the wait p95 is made of.
func (r *run) writeTenantWaits(snap bbsim.Snapshot, windows ...window) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "window\twait\tqueued at\tafter the kill\truns-on\trunner")
	for _, w := range windows {
		type waited struct {
			step bbsim.StepView
			wait time.Duration
		}
		ids := w.steps.stepSet()
		var steps []waited
		for _, s := range snap.Steps {
			if wait, ok := stepWait(snap, s); ok && ids[s.UUID] {
				steps = append(steps, waited{s, wait})
			}
		}
		slices.SortFunc(steps, func(a, b waited) int { return cmp.Compare(b.wait, a.wait) })
		for _, s := range steps {
			fmt.Fprintf(tw, "%s\t%.1fs\t%.1fs\t%.1fs\t%s\t%s\n", w.name, s.wait.Seconds(), s.step.EnqueuedAt.Sub(w.start).Seconds(),
				s.step.EnqueuedAt.Sub(w.midway).Seconds(), strings.Join(s.step.RunsOn, ","), s.step.Runner)
		}
	}
	_ = tw.Flush()
	_ = os.WriteFile(filepath.Join(r.tmp, "tenant-waits.txt"), []byte(b.String()), 0o644)
}

// hostile is what the hostile tenant made, to report on and remove.
type hostile struct {
	pools   []*poolInfo
	runners []string
	secrets []string
}

// hostileTenant creates, in its own namespace, everything a hostile or careless tenant can:
// Secrets with the good tenant's OAuth client id and username but wrong secrets, under the same
// Secret names; pools named like the good tenant's and asking for its steps; an undecodable
// pool; Runners that name the good tenant's runners (UUID, Bitbucket name prefix, Runner name)
// and point at its pool as an owner that is not their controller; Secrets named and labelled
// like the good tenant's runner Secrets.
func (r *run) hostileTenant(ctx context.Context, good []*poolInfo) (*hostile, error) {
	t := r.env.tenant
	h := &hostile{}
	wrongSecret, wrongPassword := randomHex(32), randomHex(24)
	r.env.secrets.add(wrongSecret, "pool credentials")
	r.env.secrets.add(wrongPassword, "pool credentials")
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "bitbucket", Namespace: tenantHostileNamespace},
			StringData: map[string]string{v1alpha1.SecretKeyClientID: t.consumer.id, v1alpha1.SecretKeyClientSecret: wrongSecret}},
		{ObjectMeta: metav1.ObjectMeta{Name: "bitbucket-user", Namespace: tenantHostileNamespace},
			StringData: map[string]string{v1alpha1.SecretKeyUsername: strings.ToUpper(t.user), v1alpha1.SecretKeyPassword: wrongPassword}},
	} {
		if err := r.env.c.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create secret %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	pools, err := r.createPools(ctx, []poolSpec{
		{name: "builds", namespace: tenantHostileNamespace, label: good[0].label, policy: v1alpha1.ScalingPolicyQueue, min: 1, max: 4},
		{name: "queue", namespace: tenantHostileNamespace, secret: "bitbucket-user", label: good[1].label, policy: v1alpha1.ScalingPolicyQueue, min: 0, max: 4},
	})
	h.pools = pools
	if err != nil {
		return h, err
	}
	// The monitor's convergence and mapping checks are for the operator's pools, not these.
	r.poolsMu.Lock()
	for _, p := range pools {
		delete(r.pools, p.key())
	}
	r.poolsMu.Unlock()
	if err := r.createUndecodablePool(ctx); err != nil {
		return h, err
	}

	// The forgeries copy live runners of the good tenant.
	var goodRunners v1alpha1.RunnerList
	if err := r.env.c.List(ctx, &goodRunners, client.InNamespace(tenantGoodNamespace)); err != nil {
		return h, fmt.Errorf("list the good tenant's Runners: %w", err)
	}
	var victims []v1alpha1.Runner
	for _, rn := range goodRunners.Items {
		if rn.Status.UUID != "" && rn.DeletionTimestamp == nil {
			victims = append(victims, rn)
		}
	}
	if len(victims) == 0 {
		return h, fmt.Errorf("the good tenant has no registered Runner to forge")
	}
	goodPool := good[0].obj
	ownerRef := metav1.OwnerReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "RunnerPool", Name: goodPool.Name, UID: goodPool.UID}
	for i, v := range victims[:min(3, len(victims))] {
		forged := &v1alpha1.Runner{
			ObjectMeta: metav1.ObjectMeta{Namespace: tenantHostileNamespace, Labels: map[string]string{v1alpha1.LabelPool: goodPool.Name}},
			Spec:       v1alpha1.RunnerSpec{Workspace: v.Spec.Workspace, Repository: v.Spec.Repository, BitbucketName: v.Spec.BitbucketName, Labels: v.Spec.Labels},
		}
		switch i {
		case 0:
			// The good Runner's own name, in the other namespace, owned (not controlled) by the
			// good pool; the garbage collector soon removes it, as its owner is not in its
			// namespace, and the operator must not act for it meanwhile.
			forged.Name = v.Name
			forged.OwnerReferences = []metav1.OwnerReference{ownerRef}
		default:
			forged.Name = fmt.Sprintf("forged-%d", i)
			forged.Spec.BitbucketName = good[0].prefix + fmt.Sprintf("forged-%d", i)
		}
		if err := r.env.c.Create(ctx, forged); err != nil {
			return h, fmt.Errorf("create forged Runner %s: %w", forged.Name, err)
		}
		h.runners = append(h.runners, forged.Name)
		// Status: the good runner's UUID, Secret and pod, as if it were this Runner's.
		patch := client.MergeFrom(forged.DeepCopy())
		forged.Status = v1alpha1.RunnerStatus{UUID: v.Status.UUID, Phase: v1alpha1.RunnerPhaseIdle, SecretName: v.Status.SecretName, PodName: v.Status.PodName}
		if err := r.env.c.Status().Patch(ctx, forged, patch); err != nil && !apierrors.IsNotFound(err) {
			return h, fmt.Errorf("forge the status of Runner %s: %w", forged.Name, err)
		}
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: v.Status.SecretName, Namespace: tenantHostileNamespace,
				Labels:      map[string]string{v1alpha1.LabelPool: goodPool.Name, v1alpha1.LabelRunner: v.Name},
				Annotations: map[string]string{v1alpha1.AnnotationRunnerUUID: v.Status.UUID},
			},
			StringData: map[string]string{"OAUTH_CLIENT_ID": "forged", "OAUTH_CLIENT_SECRET": "forged"},
		}
		if v.Status.SecretName != "" && !slices.Contains(h.secrets, secret.Name) {
			if err := r.env.c.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
				return h, fmt.Errorf("create forged Secret %s: %w", secret.Name, err)
			}
			h.secrets = append(h.secrets, secret.Name)
		}
	}
	// Ask the operator to act on the forgeries: drain one, delete another (its finalizer
	// would unregister the good runner if the operator trusted the status).
	for i, name := range h.runners {
		rn := &v1alpha1.Runner{}
		if err := r.env.c.Get(ctx, client.ObjectKey{Namespace: tenantHostileNamespace, Name: name}, rn); apierrors.IsNotFound(err) {
			// The garbage collector removes a Runner whose owner is not in its namespace.
			continue
		} else if err != nil {
			return h, fmt.Errorf("get forged Runner %s: %w", name, err)
		}
		if i%2 == 0 {
			patch := client.MergeFrom(rn.DeepCopy())
			rn.Spec.Drain = true
			if err := r.env.c.Patch(ctx, rn, patch); err != nil && !apierrors.IsNotFound(err) {
				return h, fmt.Errorf("drain forged Runner %s: %w", name, err)
			}
		} else if err := r.env.c.Delete(ctx, rn); err != nil && !apierrors.IsNotFound(err) {
			return h, fmt.Errorf("delete forged Runner %s: %w", name, err)
		}
	}
	return h, nil
}

// createUndecodablePool creates a pool whose schemaless affinity the API server accepts and the
// operator cannot decode, as the e2e decode test does.
func (r *run) createUndecodablePool(ctx context.Context) error {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "RunnerPool",
		"metadata": map[string]any{"name": "unreadable", "namespace": tenantHostileNamespace},
		"spec": map[string]any{
			"bitbucket":  map[string]any{"workspace": bbsim.DefaultWorkspaceUUID, "credentialsSecretRef": map[string]any{"name": "bitbucket"}},
			"maxRunners": int64(2),
			"template":   map[string]any{"affinity": map[string]any{"nodeAffinity": "anywhere"}},
		},
	}}
	if err := r.env.c.Create(ctx, u); err != nil {
		return fmt.Errorf("create the undecodable pool: %w", err)
	}
	return nil
}

// hostileOutcome says what the operator made of the hostile pools: which report their
// credentials invalid, and how many steps the good tenant's labels sent to them.
func (r *run) hostileOutcome(ctx context.Context, h *hostile) string {
	var parts []string
	for _, p := range h.pools {
		pool := &v1alpha1.RunnerPool{}
		if err := r.env.c.Get(ctx, client.ObjectKey{Namespace: p.namespace, Name: p.name}, pool); err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", p.key(), err))
			continue
		}
		cv := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionCredentialsValid)
		state := "no CredentialsValid condition"
		if cv != nil {
			state = fmt.Sprintf("CredentialsValid=%s %s", cv.Status, cv.Reason)
		}
		parts = append(parts, fmt.Sprintf("%s %s, %d Runners, queued %d", p.key(), state, pool.Status.Replicas, pool.Status.Queued))
	}
	var forged v1alpha1.RunnerList
	if err := r.env.c.List(ctx, &forged, client.InNamespace(tenantHostileNamespace)); err == nil {
		withFinalizer := 0
		for _, rn := range forged.Items {
			if len(rn.Finalizers) > 0 {
				withFinalizer++
			}
		}
		parts = append(parts, fmt.Sprintf("forged Runners left %d (%d with a finalizer)", len(forged.Items), withFinalizer))
	}
	return "hostile: " + strings.Join(parts, "; ")
}

// cleanUpHostile removes what the hostile tenant made. A forged Runner the operator put its
// finalizer on and does not let go within a minute is noted and released by hand.
func (r *run) cleanUpHostile(ctx context.Context, sc *scenario, h *hostile) {
	c := r.env.c
	for _, p := range h.pools {
		_ = r.deleteWithRetry(ctx, p.obj)
	}
	_ = c.Delete(ctx, &v1alpha1.RunnerPool{ObjectMeta: metav1.ObjectMeta{Namespace: tenantHostileNamespace, Name: "unreadable"}})
	for _, name := range h.runners {
		_ = c.Delete(ctx, &v1alpha1.Runner{ObjectMeta: metav1.ObjectMeta{Namespace: tenantHostileNamespace, Name: name}})
	}
	for _, name := range h.secrets {
		_ = c.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tenantHostileNamespace, Name: name}})
	}
	var leases coordinationv1.LeaseList
	if err := c.List(ctx, &leases, client.InNamespace(leaderNamespace), client.MatchingLabels{labelBogusLease: "true"}); err == nil {
		for i := range leases.Items {
			_ = c.Delete(ctx, &leases.Items[i])
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var runners v1alpha1.RunnerList
		var pools unstructured.UnstructuredList
		pools.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("RunnerPoolList"))
		errR := c.List(ctx, &runners, client.InNamespace(tenantHostileNamespace))
		errP := c.List(ctx, &pools, client.InNamespace(tenantHostileNamespace))
		if errR == nil && errP == nil && len(runners.Items) == 0 && len(pools.Items) == 0 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			var stuck []string
			for _, rn := range runners.Items {
				stuck = append(stuck, "Runner "+rn.Name)
				r.dropFinalizers(ctx, &rn)
			}
			for _, u := range pools.Items {
				stuck = append(stuck, "RunnerPool "+u.GetName())
				r.dropFinalizers(ctx, &u)
			}
			sc.note("hostile objects not gone a minute after their deletion, released by hand: %s", strings.Join(stuck, ", "))
			return
		}
		_ = sleep(ctx, 2*time.Second)
	}
}

func (r *run) dropFinalizers(ctx context.Context, obj client.Object) {
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`))
	if err := r.env.c.Patch(ctx, obj, patch); err != nil && !apierrors.IsNotFound(err) {
		r.res.fail("release %s/%s: %v", obj.GetNamespace(), obj.GetName(), err)
	}
}

// labelBogusLease marks the budget Leases the run made by hand, to remove them afterwards.
const labelBogusLease = "chaos.runnerpool.dev/bogus"

func (r *run) budgetLeaseNames(ctx context.Context) map[string]bool {
	var leases coordinationv1.LeaseList
	out := map[string]bool{}
	if err := r.env.c.List(ctx, &leases, client.InNamespace(leaderNamespace), client.HasLabels{budgetstore.LabelBudget}); err != nil {
		return out
	}
	for _, l := range leases.Items {
		out[l.Name] = true
	}
	return out
}

// newBudgetLeases waits for the budget Leases of the good tenant's credentials: the ones that
// appeared since its pools were created.
func (r *run) newBudgetLeases(ctx context.Context, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		var out []string
		for name := range r.budgetLeaseNames(ctx) {
			if !r.leasesBefore[name] {
				out = append(out, name)
			}
		}
		if len(out) >= 2 || time.Now().After(deadline) || ctx.Err() != nil {
			slices.Sort(out)
			return out
		}
		_ = sleep(ctx, time.Second)
	}
}

// editBudgetLeases edits the good tenant's budget Leases by hand and adds bogus ones, in the
// ways clamping must make harmless: minutes far in the future and from hours ago with absurd
// counts, unknown fields, a block that ended long ago; and Leases of credentials nobody uses,
// unreadable or holding a full hour. An edit inside the window with a plausible count is a
// different matter: clamping lets it spend up to one hour's budget (ADR 0018), which an
// administrator who can write Leases in the operator's namespace may do on purpose.
func (r *run) editBudgetLeases(ctx context.Context, names []string) (int, error) {
	now := time.Now().UTC()
	edited := 0
	for _, name := range names {
		lease := &coordinationv1.Lease{}
		if err := r.env.c.Get(ctx, client.ObjectKey{Namespace: leaderNamespace, Name: name}, lease); err != nil {
			continue
		}
		state, err := bitbucket.ParseBudgetState(lease.Annotations[budgetstore.AnnotationState])
		if err != nil || len(state.Counts) == 0 {
			continue
		}
		text := editedBudgetState(state, now)
		patch := client.MergeFrom(lease.DeepCopy())
		lease.Annotations[budgetstore.AnnotationState] = text
		if err := r.env.c.Patch(ctx, lease, patch); err != nil {
			return edited, fmt.Errorf("edit budget lease %s: %w", name, err)
		}
		edited++
	}
	for i := range bogusLeases {
		var text string
		switch i % 4 {
		case 0:
			text = "v1;start=not-a-time;counts=1"
		case 1:
			text = "v9;start=" + now.Format(time.RFC3339) + ";counts=5"
		case 2:
			text = fmt.Sprintf("v1;start=%s;counts=1000000;blocked=%s", now.Truncate(time.Minute).Format(time.RFC3339), now.Add(1000*time.Hour).Format(time.RFC3339))
		default:
			text = strings.Repeat("x", 4096)
		}
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
			Name: budgetstore.LeaseName(fmt.Sprintf("%064x", i+1)), Namespace: leaderNamespace,
			Labels:      map[string]string{budgetstore.LabelBudget: "true", labelBogusLease: "true"},
			Annotations: map[string]string{budgetstore.AnnotationState: text},
		}}
		if err := r.env.c.Create(ctx, lease); err != nil && !apierrors.IsAlreadyExists(err) {
			return edited, fmt.Errorf("create bogus budget lease: %w", err)
		}
	}
	return edited, nil
}

// editedBudgetState is a hand edit of a saved budget that clamping must make harmless: the real
// minutes stay; two hours of absurd counts go four hours before them (past the window, and past
// the 120 minutes a record may hold), minutes of absurd and negative counts an hour ahead (past
// the clock skew allowed), a block that ended in 2001 and an unknown field.
func editedBudgetState(state bitbucket.BudgetState, now time.Time) string {
	var counts []string
	for range 120 {
		counts = append(counts, "99999999999999999999")
	}
	for range 120 {
		counts = append(counts, "0")
	}
	for _, c := range state.Counts {
		counts = append(counts, strconv.Itoa(c))
	}
	end := state.Start.Add(time.Duration(len(state.Counts)) * time.Minute)
	for range max(int(now.Add(time.Hour).Sub(end)/time.Minute), 0) {
		counts = append(counts, "0")
	}
	counts = append(counts, "1000000", "-5", "1000000")
	return fmt.Sprintf("v1;start=%s;counts=%s;blocked=2001-01-01T00:00:00Z;owner=someone-else",
		state.Start.Add(-240*time.Minute).UTC().Format(time.RFC3339), strings.Join(counts, ","))
}

// harmWatch finds the good tenant's runners deleted or disabled by someone other than their own
// pool: a Bitbucket runner that goes DISABLED or away, a runner Secret that goes, while its
// Runner is neither draining nor being deleted, and has not drained in the last minute (a
// drain it cancelled leaves its runner disabled until the Runner is reconciled; one it finished
// removes the runner before the Runner shows it). Each must persist over harmConfirm samples
// (the lists are taken one after the other, and a drain is written before the runner is
// disabled), so a pool's own scale-down is never counted.
type harmWatch struct {
	r    *run
	good []*poolInfo

	mu      sync.Mutex
	seen    map[string]bool // Bitbucket runners and Secrets seen alive
	suspect map[string]int
	// lastDrain is when each good Runner was last seen draining or disabled by itself.
	lastDrain map[string]time.Time
	harmed    map[string]string
}

const harmConfirm = 3

func newHarmWatch(r *run, good []*poolInfo) *harmWatch {
	return &harmWatch{r: r, good: good, seen: map[string]bool{}, suspect: map[string]int{}, harmed: map[string]string{}, lastDrain: map[string]time.Time{}}
}

func (h *harmWatch) loop(ctx context.Context) {
	for ctx.Err() == nil {
		h.check(ctx)
		_ = sleep(ctx, time.Second)
	}
}

func (h *harmWatch) check(ctx context.Context) {
	c := h.r.env.c
	var runners v1alpha1.RunnerList
	if err := c.List(ctx, &runners, client.InNamespace(tenantGoodNamespace)); err != nil {
		return
	}
	var secrets corev1.SecretList
	if err := c.List(ctx, &secrets, client.InNamespace(tenantGoodNamespace), client.HasLabels{v1alpha1.LabelRunner}); err != nil {
		return
	}
	bb := h.r.env.sys.BBSim.State()
	// Runners the good pools themselves are removing, or that are still coming up.
	settled := map[string]v1alpha1.Runner{}
	h.mu.Lock()
	for _, rn := range runners.Items {
		if rn.Spec.Drain || rn.Status.DisabledTime != nil {
			h.lastDrain[rn.Name] = time.Now()
		}
		if at, err := time.Parse(time.RFC3339, rn.Annotations[v1alpha1.AnnotationDrainCancelled]); err == nil && at.After(h.lastDrain[rn.Name]) {
			h.lastDrain[rn.Name] = at
		}
	}
	h.mu.Unlock()
	for _, rn := range runners.Items {
		if rn.DeletionTimestamp == nil && !rn.Spec.Drain && rn.Status.UUID != "" {
			settled[rn.Status.UUID] = rn
		}
	}
	bbByUUID := map[string]bbsim.RunnerView{}
	for _, b := range bb.Runners {
		bbByUUID[b.UUID] = b
	}
	secretNames := map[string]bool{}
	for _, s := range secrets.Items {
		if s.DeletionTimestamp == nil {
			secretNames[s.Name] = true
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	current := map[string]bool{}
	for uuid, rn := range settled {
		b, inBB := bbByUUID[uuid]
		switch {
		case inBB && !b.Disabled:
			h.seen["bb:"+uuid] = true
		case inBB && b.Disabled && !h.drainedLately(rn):
			// A Runner that drained lately may have disabled it itself, for a drain since
			// cancelled and not yet undone.
			h.flag(current, "disabled:"+uuid, fmt.Sprintf("Bitbucket runner %s of Runner %s/%s was disabled while the Runner was not draining", uuid, rn.Namespace, rn.Name))
		case h.seen["bb:"+uuid] && !inBB && !h.drainedLately(rn):
			h.flag(current, "deleted:"+uuid, fmt.Sprintf("Bitbucket runner %s of Runner %s/%s was deleted while the Runner was neither draining nor deleted", uuid, rn.Namespace, rn.Name))
		}
		if name := rn.Status.SecretName; name != "" {
			if secretNames[name] {
				h.seen["secret:"+name] = true
			} else if h.seen["secret:"+name] && !h.drainedLately(rn) {
				h.flag(current, "secret:"+name, fmt.Sprintf("Secret %s/%s of Runner %s was deleted while the Runner was neither draining nor deleted", rn.Namespace, name, rn.Name))
			}
		}
	}
	for key := range h.suspect {
		if !current[key] {
			delete(h.suspect, key)
		}
	}
}

// drainedLately reports whether the Runner was draining, or recorded a disable or a cancelled
// drain, in the last minute. The caller holds h.mu.
func (h *harmWatch) drainedLately(rn v1alpha1.Runner) bool {
	return time.Since(h.lastDrain[rn.Name]) < time.Minute
}

func (h *harmWatch) flag(current map[string]bool, key, detail string) {
	current[key] = true
	h.suspect[key]++
	if h.suspect[key] >= harmConfirm {
		if _, ok := h.harmed[key]; !ok {
			h.harmed[key] = detail
		}
	}
}

func (h *harmWatch) result() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, d := range h.harmed {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// floodStats counts the flood's deliveries by answer.
type floodStats struct {
	sent    int
	byCode  map[int]int
	errors  int
	elapsed time.Duration
}

func (f floodStats) String() string {
	codes := make([]int, 0, len(f.byCode))
	for c := range f.byCode {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d x %d", f.byCode[c], c))
	}
	if f.errors > 0 {
		parts = append(parts, fmt.Sprintf("%d without an answer", f.errors))
	}
	return fmt.Sprintf("%d deliveries in %s (%s)", f.sent, f.elapsed.Round(time.Second), strings.Join(parts, ", "))
}

// webhookFlood sends n deliveries to the replicas' webhook receivers, spread over both: signed
// ones for unknown workspaces and repositories, with garbage UUIDs, with bodies that are not
// JSON, and some for the real repository (each a wake the budget must absorb); unsigned ones,
// wrongly signed ones, and large ones.
func (r *run) webhookFlood(ctx context.Context, n int, spread time.Duration) floodStats {
	start := time.Now()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer hc.CloseIdleConnections()
	// Paced over spread, so that the memory samples see the receivers under the flood rather
	// than after a burst of a second.
	work := make(chan int)
	go func() {
		defer close(work)
		t := time.NewTicker(max(spread/time.Duration(n), time.Microsecond))
		defer t.Stop()
		for i := 1; i <= n; i++ {
			select {
			case <-ctx.Done():
				return
			case work <- i:
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	var mu sync.Mutex
	stats := floodStats{byCode: map[int]int{}}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				rep := r.env.mgrs.replicas[(i+w)%len(r.env.mgrs.replicas)]
				code, err := r.deliver(ctx, hc, "http://"+rep.webhookAddr+"/webhooks/bitbucket", i)
				mu.Lock()
				stats.sent++
				if err != nil {
					stats.errors++
				} else {
					stats.byCode[code]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stats.elapsed = time.Since(start)
	return stats
}

// deliver sends the i-th delivery of the flood.
func (r *run) deliver(ctx context.Context, hc *http.Client, url string, i int) (int, error) {
	secret := []byte(r.env.webhookSecret)
	event := bbwebhook.EventCommitStatusCreated
	ws, repo := fmt.Sprintf("{%s}", uuidLike(i)), fmt.Sprintf("{%s}", uuidLike(i+7))
	sign, body := true, []byte(nil)
	switch i % 20 {
	case 0, 1, 2, 3, 4, 5: // unknown workspace and repository
	case 6, 7, 8: // garbage UUIDs
		ws, repo = strings.Repeat("{not-a-uuid", 1+i%5)+"}", "{"+strings.Repeat("é", 40)+"}"
	case 9: // the real repository: a wake
		ws, repo = bbsim.DefaultWorkspaceUUID, bbsim.DefaultRepositoryUUID
	case 10, 11, 12, 13: // unsigned
		sign = false
	case 14, 15: // signed with a wrong secret
		secret = []byte("not-the-secret")
	case 16: // not JSON
		body = []byte("\x00\xff{{{" + strings.Repeat("[", 1000))
	case 17: // large and unsigned
		sign, body = false, bytes.Repeat([]byte("a"), 1<<20)
	case 18: // an event the receiver does not act on
		event = "repo:fork"
	default: // push for an unknown repository
		event = bbwebhook.EventPush
	}
	if body == nil {
		body = []byte(fmt.Sprintf(`{"repository":{"uuid":%q,"full_name":"w%d/r%d","workspace":{"uuid":%q,"slug":"w%d"}},"commit_status":{"state":"INPROGRESS"}}`, repo, i, i, ws, i))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Event-Key", event)
	req.Header.Set("X-Request-UUID", uuidLike(i+1_000_000))
	if sign {
		req.Header.Set(bbwebhook.SignatureHeader, bbwebhook.Sign(secret, body))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, nil
}

// uuidLike makes a distinct UUID-shaped string from i.
func uuidLike(i int) string {
	h := fmt.Sprintf("%032x", uint64(i)*0x9e3779b97f4a7c15)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// rssMiB is the largest resident set of the running replicas, from /proc.
func (m *managers) rssMiB() float64 {
	var out float64
	for _, rep := range m.replicas {
		rep.mu.Lock()
		cmd := rep.cmd
		rep.mu.Unlock()
		if cmd == nil || cmd.Process == nil || !rep.alive() {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
				if err == nil {
					out = max(out, kb/1024)
				}
			}
		}
	}
	return out
}
