package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

// poolSpec is the shape of a pool the run creates.
type poolSpec struct {
	name           string
	ns             int
	policy         v1alpha1.ScalingPolicy
	min, max, idle int32
	ephemeral      bool
	pollInterval   time.Duration
	workspace      string
	repository     string
	pendingTimeout time.Duration
	// namespace and secret, when set, place the pool outside the chaos-N namespaces (the tenant
	// phase) and name its credentials Secret (default "bitbucket").
	namespace, secret string
	// label, when set, replaces the label derived from the name: the hostile tenant's pools ask
	// for the good tenant's steps.
	label string
}

// poolInfo is a pool the run created.
type poolInfo struct {
	poolSpec
	namespace string
	label     string
	prefix    string
	obj       *v1alpha1.RunnerPool
}

func (p *poolInfo) key() string { return p.namespace + "/" + p.name }

// expected is the number of runners the pool settles at once no step waits or runs and the
// scale-down delay has passed, worked out from the policies' rules rather than read from the
// operator's status.
func (p *poolInfo) expected() int {
	want := int(p.idle)
	if p.policy == v1alpha1.ScalingPolicyPercentageIdle {
		// An idle pool halves down to one runner, and asks for one when it has none.
		want = 1
	}
	return max(int(p.min), min(want, int(p.max)))
}

func labelFor(name string) string {
	return "chaos." + strings.ReplaceAll(name, "-", "")
}

func (r *run) createPool(ctx context.Context, spec poolSpec) (*poolInfo, error) {
	ns := r.env.consumerFor(spec.ns).namespace
	if spec.namespace != "" {
		ns = spec.namespace
	}
	if spec.workspace == "" {
		spec.workspace = bbsim.DefaultWorkspaceUUID
	}
	if spec.policy == "" {
		spec.policy = v1alpha1.ScalingPolicyIdleBuffer
	}
	p := &poolInfo{poolSpec: spec, namespace: ns, label: cmp.Or(spec.label, labelFor(spec.name))}
	pool := &v1alpha1.RunnerPool{
		ObjectMeta: metav1.ObjectMeta{Name: spec.name, Namespace: ns},
		Spec: v1alpha1.RunnerPoolSpec{
			Bitbucket: v1alpha1.BitbucketSpec{
				Workspace:            v1alpha1.BitbucketUUID(spec.workspace),
				CredentialsSecretRef: v1alpha1.SecretReference{Name: cmp.Or(spec.secret, "bitbucket")},
			},
			Labels:     []v1alpha1.RunnerLabel{v1alpha1.RunnerLabel(p.label)},
			MinRunners: spec.min,
			MaxRunners: spec.max,
			Scaling: v1alpha1.ScalingSpec{
				Policy:         spec.policy,
				IdleRunners:    spec.idle,
				PollInterval:   metav1.Duration{Duration: cmp.Or(spec.pollInterval, 5*time.Second)},
				ScaleDownDelay: metav1.Duration{Duration: 5 * time.Second},
			},
			Runner: v1alpha1.RunnerContainerSpec{Ephemeral: spec.ephemeral},
		},
	}
	if spec.pendingTimeout > 0 {
		pool.Spec.Scaling.PendingTimeout = metav1.Duration{Duration: spec.pendingTimeout}
	}
	switch spec.policy {
	case v1alpha1.ScalingPolicyQueue:
		repo := spec.repository
		if repo == "" {
			repo = bbsim.DefaultRepositoryUUID
		}
		pool.Spec.Scaling.Repositories = []string{repo}
	case v1alpha1.ScalingPolicyPercentageIdle:
		pool.Spec.Scaling.PercentageIdle = &v1alpha1.PercentageIdleSpec{
			ScaleUpThreshold: "0.5", ScaleDownThreshold: "0.2", ScaleUpMultiplier: "1.5", ScaleDownMultiplier: "0.5",
		}
	}
	if err := r.env.c.Create(ctx, pool); err != nil {
		return nil, fmt.Errorf("create pool %s: %w", spec.name, err)
	}
	p.obj = pool
	p.prefix = controllers.BitbucketNamePrefix(pool)
	if r.mon != nil {
		r.mon.rememberPool(pool)
	}
	r.poolsMu.Lock()
	r.pools[p.key()] = p
	r.poolsMu.Unlock()
	return p, nil
}

func (r *run) createPools(ctx context.Context, specs []poolSpec) ([]*poolInfo, error) {
	var out []*poolInfo
	for _, s := range specs {
		p, err := r.createPool(ctx, s)
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// deletePools deletes pools and waits until they are gone.
func (r *run) deletePools(ctx context.Context, pools []*poolInfo, timeout time.Duration) error {
	for _, p := range pools {
		if err := r.deleteWithRetry(ctx, p.obj); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, p := range pools {
			err := r.env.c.Get(ctx, client.ObjectKey{Namespace: p.namespace, Name: p.name}, &v1alpha1.RunnerPool{})
			if !apierrors.IsNotFound(err) {
				left = append(left, p.key())
			}
		}
		if len(left) == 0 {
			r.poolsMu.Lock()
			for _, p := range pools {
				delete(r.pools, p.key())
			}
			r.poolsMu.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pools %v are not gone %s after their deletion", left, timeout)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

func (r *run) deleteWithRetry(ctx context.Context, obj client.Object) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := r.env.c.Delete(ctx, obj)
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("delete %s: %w", obj.GetName(), err)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

// enqueue adds steps for a pool to bbsim, recorded in the scenario.
func (r *run) enqueue(sc *scenario, p *poolInfo, count int, duration time.Duration) error {
	req := bbsim.EnqueueRequest{Count: count, RunsOn: []string{p.label}, Duration: duration}
	if p.workspace != bbsim.DefaultWorkspaceUUID {
		req.Workspace, req.Repository = p.workspace, p.repository
	}
	ids, err := r.env.sys.BBSim.Enqueue(req)
	if err != nil {
		return fmt.Errorf("enqueue %d steps for %s: %w", count, p.key(), err)
	}
	sc.addSteps(ids)
	return nil
}

func (r *run) stepDuration() time.Duration {
	return r.between(r.cfg.stepDuration[0], r.cfg.stepDuration[1])
}

// scaleUp enqueues a few steps for every pool.
func (r *run) scaleUp(sc *scenario, pools []*poolInfo, lo, hi int) error {
	for _, p := range pools {
		n := lo + r.intn(hi-lo+1)
		if n == 0 {
			continue
		}
		for range n {
			if err := r.enqueue(sc, p, 1, r.stepDuration()); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitSteps waits until every step of the scenario has completed.
func (r *run) waitSteps(ctx context.Context, sc *scenario, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pending := 0
		st := r.env.sys.BBSim.State()
		want := sc.stepSet()
		for _, s := range st.Steps {
			if want[s.UUID] && s.Status != "completed" {
				pending++
			}
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d steps of %s not completed after %s", pending, sc.name, timeout)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

// newBatch collects the steps of one action, to wait for them apart from the scenario's others.
func newBatch() *scenario { return &scenario{steps: map[string]bool{}} }

func (sc *scenario) ids() []string {
	var out []string
	for id := range sc.stepSet() {
		out = append(out, id)
	}
	return out
}

// waitStarted waits until every step of the batch has started (or ended).
func (r *run) waitStarted(ctx context.Context, batch *scenario, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	want := batch.stepSet()
	for {
		queued := 0
		for _, s := range r.env.sys.BBSim.State().Steps {
			if want[s.UUID] && s.Status == "queued" {
				queued++
			}
		}
		if queued == 0 || time.Now().After(deadline) {
			if queued > 0 {
				r.say("    %d steps still queued after %s", queued, timeout)
			}
			return
		}
		if sleep(ctx, 500*time.Millisecond) != nil {
			return
		}
	}
}

// busyRunners lists the Bitbucket runners of the pools that run a step.
func (r *run) busyRunners(pools []*poolInfo) []bbsim.RunnerView {
	var out []bbsim.RunnerView
	for _, rn := range r.env.sys.BBSim.State().Runners {
		for _, p := range pools {
			if strings.HasPrefix(rn.Name, p.prefix) && rn.Step != "" {
				out = append(out, rn)
			}
		}
	}
	return out
}

func (r *run) waitBusy(ctx context.Context, pools []*poolInfo, n int, timeout time.Duration) []bbsim.RunnerView {
	deadline := time.Now().Add(timeout)
	for {
		busy := r.busyRunners(pools)
		if len(busy) >= n || time.Now().After(deadline) {
			return busy
		}
		if sleep(ctx, 500*time.Millisecond) != nil {
			return busy
		}
	}
}

// converge waits until the pools settle at their expected state and records the check.
func (r *run) converge(ctx context.Context, sc *scenario, pools []*poolInfo) bool {
	start := time.Now()
	deadline := start.Add(r.cfg.convergeWithin)
	var last string
	for {
		ok, why := r.convergedNow(ctx, pools)
		if ok {
			took := time.Since(start)
			sc.converged = append(sc.converged, took)
			r.res.mu.Lock()
			r.res.ConvergenceChecks++
			r.res.MaxConvergeSeconds = max(r.res.MaxConvergeSeconds, round1(took.Seconds()))
			r.res.mu.Unlock()
			return true
		}
		last = why
		if time.Now().After(deadline) || ctx.Err() != nil {
			sc.notConverged++
			r.res.mu.Lock()
			r.res.ConvergenceChecks++
			r.res.mu.Unlock()
			r.res.violation(violationNotConverged, fmt.Sprintf("%s: not converged %s after the fault ended: %s (%s)", sc.name, r.cfg.convergeWithin, last, r.limitHitsNote()))
			return false
		}
		_ = sleep(ctx, 2*time.Second)
	}
}

// convergedNow is the desired state: no step of the pools waits or runs; each pool has exactly
// its expected number of Runners, all Idle, not draining, each with its pod running and its
// Secret; Bitbucket has exactly those runners with the pool's marker, all ONLINE; and the pool's
// status says so.
func (r *run) convergedNow(ctx context.Context, pools []*poolInfo) (bool, string) {
	s, err := r.takeSample(ctx)
	if err != nil {
		return false, err.Error()
	}
	labels := map[string]string{}
	for _, p := range pools {
		labels[p.label] = p.key()
	}
	for _, st := range s.bb.Steps {
		if st.Status == "completed" {
			continue
		}
		for _, l := range st.RunsOn {
			if pool, ok := labels[l]; ok {
				return false, fmt.Sprintf("step %s of pool %s is %s", st.UUID, pool, st.Status)
			}
		}
	}
	pods := map[string]corev1.Pod{}
	for _, p := range s.pods {
		pods[p.Namespace+"/"+p.Name] = p
	}
	secrets := map[string]bool{}
	for _, sec := range s.secrets {
		secrets[sec.Namespace+"/"+sec.Name] = true
	}
	for _, p := range pools {
		var obj *v1alpha1.RunnerPool
		for i := range s.pools {
			if s.pools[i].Namespace == p.namespace && s.pools[i].Name == p.name {
				obj = &s.pools[i]
			}
		}
		if obj == nil {
			return false, fmt.Sprintf("pool %s is gone", p.key())
		}
		want := p.expected()
		owned := s.ownedRunners(obj)
		if len(owned) != want {
			return false, fmt.Sprintf("pool %s has %d Runners (%s), want %d", p.key(), len(owned), phases(owned), want)
		}
		uuids := map[string]bool{}
		labels := map[string][]string{}
		for _, rn := range owned {
			if rn.DeletionTimestamp != nil || rn.Spec.Drain || rn.Status.Phase != v1alpha1.RunnerPhaseIdle {
				return false, fmt.Sprintf("Runner %s/%s is %s (drain %t, deleting %t)", rn.Namespace, rn.Name, rn.Status.Phase, rn.Spec.Drain, rn.DeletionTimestamp != nil)
			}
			pod, ok := pods[rn.Namespace+"/"+rn.Name]
			if !ok || pod.Status.Phase != corev1.PodRunning {
				return false, fmt.Sprintf("Runner %s/%s has no running pod", rn.Namespace, rn.Name)
			}
			if !secrets[rn.Namespace+"/"+rn.Status.SecretName] {
				return false, fmt.Sprintf("Runner %s/%s has no Secret", rn.Namespace, rn.Name)
			}
			uuids[rn.Status.UUID] = true
			labels[rn.Status.UUID] = sortedLabels(rn.Spec.Labels)
		}
		bb := s.bbWithPrefix(p.prefix)
		if len(bb) != want {
			return false, fmt.Sprintf("pool %s has %d Bitbucket runners, want %d", p.key(), len(bb), want)
		}
		for _, b := range bb {
			if !uuids[b.UUID] || b.Status != bbsim.StatusOnline {
				return false, fmt.Sprintf("Bitbucket runner %s of pool %s is %s (known to a Runner: %t)", b.UUID, p.key(), b.Status, uuids[b.UUID])
			}
			// A runner relabelled in Bitbucket no longer takes the pool's steps: it must be replaced.
			if have := slices.Sorted(slices.Values(b.Labels)); !slices.Equal(have, labels[b.UUID]) {
				return false, fmt.Sprintf("Bitbucket runner %s of pool %s has labels %v, its Runner %v", b.UUID, p.key(), have, labels[b.UUID])
			}
		}
		ready := meta.FindStatusCondition(obj.Status.Conditions, v1alpha1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionTrue || obj.Status.ObservedGeneration != obj.Generation || int(obj.Status.Replicas) != want {
			return false, fmt.Sprintf("pool %s status is not settled (ready %v, replicas %d)", p.key(), ready, obj.Status.Replicas)
		}
	}
	return true, ""
}

func sortedLabels(labels []v1alpha1.RunnerLabel) []string {
	out := make([]string, 0, len(labels))
	for _, l := range labels {
		out = append(out, string(l))
	}
	slices.Sort(out)
	return out
}

func phases(runners []v1alpha1.Runner) string {
	var out []string
	for _, rn := range runners {
		ph := string(rn.Status.Phase)
		if rn.DeletionTimestamp != nil {
			ph += "/deleting"
		}
		out = append(out, ph)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// attribution remembers which runners the run itself broke (pods deleted or evicted, nodes
// removed, runners deleted in Bitbucket), so that steps failing on them are not blamed on the
// operator.
type attribution struct {
	mu      sync.Mutex
	touches map[string][]touch
}

type touch struct {
	at   time.Time
	what string
}

// attributionWindow is how long after a fault a step failing on the runner is blamed on it:
// bbsim fails the step when it sees the pod go, within seconds.
const attributionWindow = 2 * time.Minute

func newAttribution() *attribution { return &attribution{touches: map[string][]touch{}} }

func (a *attribution) add(runnerUUID, what string) {
	if runnerUUID == "" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.touches[runnerUUID] = append(a.touches[runnerUUID], touch{time.Now(), what})
}

func (a *attribution) explain(runnerUUID string, failedAt time.Time) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range a.touches[runnerUUID] {
		if !failedAt.Before(t.at.Add(-2*time.Second)) && failedAt.Before(t.at.Add(attributionWindow)) {
			return t.what, true
		}
	}
	return "", false
}

// stepStats classify steps.
type stepStats struct {
	total, ok, failedUs, failedInjected, busyKilled, unfinished int
	waits                                                       []time.Duration
	failures                                                    []string
}

func (s stepStats) maxWait() time.Duration {
	if len(s.waits) == 0 {
		return 0
	}
	return slices.Max(s.waits)
}

func (s stepStats) percentile(p float64) time.Duration { return percentile(s.waits, p) }

// percentile is the nearest-rank p-quantile of durations (0 for none).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	w := slices.Clone(ds)
	slices.Sort(w)
	return w[min(len(w)-1, int(float64(len(w))*p))]
}

// classify sorts steps (only those in ids, or all when ids is nil) into successful, failed by
// the operator, failed by a fault the run injected, and unfinished. A failure the run did not
// cause on that runner is the operator's: the agents of bbsim only fail a step when their runner
// is deleted or their pod goes. busyKilled are those failures where the runner was deleted or its
// pod removed while it ran the step.
func (r *run) classify(snap bbsim.Snapshot, ids map[string]bool) stepStats {
	var st stepStats
	for _, s := range snap.Steps {
		if ids != nil && !ids[s.UUID] {
			continue
		}
		st.total++
		if wait, ok := stepWait(snap, s); ok {
			st.waits = append(st.waits, wait)
		}
		if s.Status != "completed" {
			st.unfinished++
			continue
		}
		if s.Result == bbsim.ResultSuccessful {
			st.ok++
			continue
		}
		completed := snap.Now
		if s.CompletedAt != nil {
			completed = *s.CompletedAt
		}
		if _, ok := r.attrib.explain(s.Runner, completed); ok {
			st.failedInjected++
			continue
		}
		st.failedUs++
		if strings.Contains(s.Reason, "was deleted while running") || strings.Contains(s.Reason, "went offline while running") {
			st.busyKilled++
		}
		st.failures = append(st.failures, fmt.Sprintf("step %s (runs-on %v) failed at %s on runner %s: %s %s",
			s.UUID, s.RunsOn, completed.Format("15:04:05.000"), s.Runner, s.Result, s.Reason))
	}
	return st
}

// stepWait is how long the step waited for a runner: until it started, or until the snapshot
// when it still waits. A step that completed without starting (cancelled) waited for nothing.
func stepWait(snap bbsim.Snapshot, s bbsim.StepView) (time.Duration, bool) {
	switch {
	case s.StartedAt != nil:
		return s.StartedAt.Sub(s.EnqueuedAt), true
	case s.Status != "completed":
		return snap.Now.Sub(s.EnqueuedAt), true
	}
	return 0, false
}

// scenario is one row of the report: what was done, and what it cost.
type scenario struct {
	name             string
	start            time.Time
	killsBefore      int
	violationsBefore int

	mu           sync.Mutex
	steps        map[string]bool
	converged    []time.Duration
	notConverged int
	notes        []string
}

func (r *run) begin(name string) *scenario {
	_, kills, _, _ := r.env.mgrs.stats()
	r.say("--- %s", name)
	return &scenario{name: name, start: time.Now(), killsBefore: kills, violationsBefore: r.res.violationCount(), steps: map[string]bool{}}
}

func (sc *scenario) addSteps(ids []string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, id := range ids {
		sc.steps[id] = true
	}
}

func (sc *scenario) stepSet() map[string]bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	out := make(map[string]bool, len(sc.steps))
	for k := range sc.steps {
		out[k] = true
	}
	return out
}

func (sc *scenario) note(format string, args ...any) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.notes = append(sc.notes, fmt.Sprintf(format, args...))
}

// end closes a scenario and adds its row to the report.
func (r *run) end(sc *scenario) stepStats {
	_, kills, _, _ := r.env.mgrs.stats()
	stats := r.classify(r.env.sys.BBSim.State(), sc.stepSet())
	row := scenarioRow{
		name: sc.name, kills: kills - sc.killsBefore,
		steps: stats.total, ok: stats.ok, failedUs: stats.failedUs, failedInjected: stats.failedInjected, unfinished: stats.unfinished,
		maxWait: stats.maxWait(), violations: r.res.violationCount() - sc.violationsBefore,
	}
	sc.mu.Lock()
	switch {
	case sc.notConverged > 0:
		row.converged = "NO"
	case len(sc.converged) > 0:
		row.converged = fmt.Sprintf("yes (%s)", slices.Max(sc.converged).Round(time.Second))
	default:
		row.converged = "-"
	}
	row.note = strings.Join(sc.notes, "; ")
	sc.mu.Unlock()
	r.res.addScenario(row)
	r.say("    %s: %d kills, steps %d ok / %d failed by us / %d failed by injected faults, converged %s, %d violations, took %s",
		sc.name, row.kills, row.ok, row.failedUs, row.failedInjected, row.converged, row.violations, time.Since(sc.start).Round(time.Second))
	return stats
}
