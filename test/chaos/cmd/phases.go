package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

const stepsTimeout = 5 * time.Minute

// standing are the pools the fault scenarios run against, one of each kind.
var standingSpecs = []poolSpec{
	{name: "f1", ns: 0, policy: v1alpha1.ScalingPolicyIdleBuffer, min: 1, max: 4, idle: 1},
	{name: "f2", ns: 1, policy: v1alpha1.ScalingPolicyQueue, min: 0, max: 4, idle: 0},
	{name: "f3", ns: 2, policy: v1alpha1.ScalingPolicyPercentageIdle, min: 1, max: 5},
	{name: "f4", ns: 3, policy: v1alpha1.ScalingPolicyIdleBuffer, min: 1, max: 3, idle: 1, ephemeral: true},
}

// standingPools returns the standing pools, creating them the first time.
func (r *run) standingPools(ctx context.Context) ([]*poolInfo, error) {
	r.poolsMu.Lock()
	var out []*poolInfo
	for _, s := range standingSpecs {
		if p, ok := r.pools[r.env.consumerFor(s.ns).namespace+"/"+s.name]; ok {
			out = append(out, p)
		}
	}
	r.poolsMu.Unlock()
	if len(out) == len(standingSpecs) {
		return out, nil
	}
	sc := r.begin("standing pools f1-f4 come up")
	pools, err := r.createPools(ctx, standingSpecs)
	if err != nil {
		return nil, err
	}
	r.converge(ctx, sc, pools)
	r.end(sc)
	return pools, nil
}

// phaseKillCycles creates pools, then kills the leader while they scale up, while they scale down
// and while they are deleted.
func (r *run) phaseKillCycles(ctx context.Context) error {
	for cycle := 1; cycle <= r.cfg.killCycles; cycle++ {
		if err := r.killCycle(ctx, cycle); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) killCycle(ctx context.Context, cycle int) error {
	sc := r.begin(fmt.Sprintf("manager kills, cycle %d", cycle))
	defer r.end(sc)
	specs := []poolSpec{
		{name: fmt.Sprintf("k%da", cycle), ns: cycle, policy: v1alpha1.ScalingPolicyIdleBuffer, min: 1, max: 4, idle: 1},
		{name: fmt.Sprintf("k%db", cycle), ns: cycle + 1, policy: v1alpha1.ScalingPolicyQueue, min: 0, max: 5, idle: 0},
		{name: fmt.Sprintf("k%dc", cycle), ns: cycle + 2, policy: v1alpha1.ScalingPolicyPercentageIdle, min: 1, max: 4},
	}
	pools, err := r.createPools(ctx, specs)
	if err != nil {
		return err
	}
	r.converge(ctx, sc, pools)

	// Scale-up: steps arrive, the leader dies a moment later.
	if err := r.scaleUp(sc, pools, 3, 5); err != nil {
		return err
	}
	if err := sleep(ctx, r.between(300*time.Millisecond, 6*time.Second)); err != nil {
		return err
	}
	if err := r.env.mgrs.killLeader(ctx, "scale-up"); err != nil {
		return err
	}
	// And again moments after each new leader took over, while it catches up on the runners
	// the old one was registering.
	if err := r.killAgain(ctx, "scale-up", r.cfg.killsUp-1, 200*time.Millisecond, 2*time.Second); err != nil {
		return err
	}
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}

	// Scale-down: the steps are done, the scale-down delay (5s) runs out, drains begin.
	if err := sleep(ctx, r.between(time.Second, 9*time.Second)); err != nil {
		return err
	}
	if err := r.env.mgrs.killLeader(ctx, "scale-down"); err != nil {
		return err
	}
	if err := r.killAgain(ctx, "scale-down", r.cfg.killsDown-1, time.Second, 4*time.Second); err != nil {
		return err
	}
	r.converge(ctx, sc, pools)

	// Deletion: runners are busy when the pools go, and the leader dies mid-way. Steps that
	// have not started when their pool goes would wait for ever, so the pools go once all run.
	batch := newBatch()
	if err := r.scaleUp(batch, pools, 1, 2); err != nil {
		return err
	}
	sc.addSteps(batch.ids())
	r.waitStarted(ctx, batch, time.Minute)
	for _, p := range pools {
		if err := r.deleteWithRetry(ctx, p.obj); err != nil {
			return err
		}
	}
	if err := sleep(ctx, r.between(200*time.Millisecond, 4*time.Second)); err != nil {
		return err
	}
	if err := r.env.mgrs.killLeader(ctx, "deletion"); err != nil {
		return err
	}
	if err := r.killAgain(ctx, "deletion", r.cfg.killsDeletion-1, 200*time.Millisecond, 3*time.Second); err != nil {
		return err
	}
	if err := r.deletePools(ctx, pools, 5*time.Minute); err != nil {
		r.res.fail("%v", err)
	}
	if left := r.leftovers(ctx, pools, time.Minute); left != "" {
		sc.note("left after deletion: %s", left)
	}
	return nil
}

// killAgain kills the leader n more times, each a random pause in [lo, hi] after the last new
// leader took over.
func (r *run) killAgain(ctx context.Context, phase string, n int, lo, hi time.Duration) error {
	for range n {
		if err := sleep(ctx, r.between(lo, hi)); err != nil {
			return err
		}
		if err := r.env.mgrs.killLeader(ctx, phase); err != nil {
			return err
		}
	}
	return nil
}

// leftovers waits up to timeout for everything of deleted pools to go, and says what stayed. The
// final check counts leaks; this puts them on the scenario that caused them.
func (r *run) leftovers(ctx context.Context, pools []*poolInfo, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		var parts []string
		s, err := r.takeSample(ctx)
		if err == nil {
			for _, p := range pools {
				if n := len(s.bbWithPrefix(p.prefix)); n > 0 {
					parts = append(parts, fmt.Sprintf("%d Bitbucket runners of %s", n, p.key()))
				}
				pods, secrets := 0, 0
				for _, pod := range s.pods {
					if pod.Namespace == p.namespace && pod.Labels[v1alpha1.LabelPool] == p.name {
						pods++
					}
				}
				for _, sec := range s.secrets {
					if sec.Namespace == p.namespace && sec.Labels[v1alpha1.LabelPool] == p.name {
						secrets++
					}
				}
				if pods+secrets > 0 {
					parts = append(parts, fmt.Sprintf("%d pods and %d secrets of %s", pods, secrets, p.key()))
				}
			}
		}
		if err == nil && len(parts) == 0 {
			return ""
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return err.Error()
			}
			return strings.Join(parts, ", ")
		}
		_ = sleep(ctx, 2*time.Second)
	}
}

// bitbucketFault is a fault bbsim (or the proxy in front of it) can switch on and off.
type bitbucketFault struct {
	name   string
	window time.Duration
	set    func(on bool)
	// bit reports how often the operator met the fault, from the proxy's counts.
	bit func(before, after proxyCounts) string
}

func (r *run) bitbucketFaults() []bitbucketFault {
	sim, px := r.env.sys.BBSim, r.env.proxy
	off := func() { sim.SetFaults(bbsim.Faults{}) }
	w := r.cfg.faultWindow
	return []bitbucketFault{
		{"bitbucket 429 storm with Retry-After", w, func(on bool) {
			if on {
				sim.SetFaults(bbsim.Faults{Force429: true, Seed: int64(r.cfg.seed)})
			} else {
				off()
			}
		}, func(a, b proxyCounts) string { return fmt.Sprintf("%d answers 429", b.TooMany-a.TooMany) }},
		{"bitbucket 5xx burst", w, func(on bool) {
			if on {
				sim.SetFaults(bbsim.Faults{ErrorRate: 0.5, Seed: int64(r.cfg.seed)})
			} else {
				off()
			}
		}, func(a, b proxyCounts) string { return fmt.Sprintf("%d answers 5xx", b.ServerErrors-a.ServerErrors) }},
		{"bitbucket slow answers (3s)", w, func(on bool) {
			if on {
				sim.SetFaults(bbsim.Faults{Latency: 3 * time.Second})
			} else {
				off()
			}
		}, func(a, b proxyCounts) string { return fmt.Sprintf("%d slow answers", b.Requests-a.Requests) }},
		{"bitbucket dropped connections", w, func(on bool) {
			if on {
				sim.SetFaults(bbsim.Faults{DropRate: 0.35, Seed: int64(r.cfg.seed)})
			} else {
				off()
			}
		}, func(a, b proxyCounts) string { return fmt.Sprintf("%d connections dropped", b.Dropped-a.Dropped) }},
		// Tokens must outlive the window several times over for the operator to meet expiry.
		{"bitbucket expired tokens", max(w, 3*tokenTTL), func(on bool) { px.stretchTokens.Store(on) },
			func(a, b proxyCounts) string { return fmt.Sprintf("%d answers 401", b.Unauthorized-a.Unauthorized) }},
	}
}

func (r *run) phaseBitbucketFaults(ctx context.Context) error {
	pools, err := r.standingPools(ctx)
	if err != nil {
		return err
	}
	for _, f := range r.bitbucketFaults() {
		if err := r.faultScenario(ctx, pools, f); err != nil {
			return err
		}
	}
	if err := r.runnerDeletedBehindOurBack(ctx, pools); err != nil {
		return err
	}
	if err := r.runnerLimit(ctx); err != nil {
		return err
	}
	return r.runnerRenamedAndRelabelled(ctx, pools)
}

// faultScenario: steps arrive, the fault is on for its window, then off; the pools must
// converge.
func (r *run) faultScenario(ctx context.Context, pools []*poolInfo, f bitbucketFault) error {
	sc := r.begin(f.name)
	defer r.end(sc)
	if err := r.scaleUp(sc, pools, 2, 3); err != nil {
		return err
	}
	if err := sleep(ctx, r.between(0, 2*time.Second)); err != nil {
		return err
	}
	before := r.env.proxy.counts()
	f.set(true)
	err := sleep(ctx, f.window)
	f.set(false)
	if err != nil {
		return err
	}
	sc.note("%s in %s", f.bit(before, r.env.proxy.counts()), f.window)
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, pools)
	return nil
}

// runnerDeletedBehindOurBack deletes a busy and an idle runner in Bitbucket, as a person in the
// Bitbucket UI would.
func (r *run) runnerDeletedBehindOurBack(ctx context.Context, pools []*poolInfo) error {
	sc := r.begin("bitbucket runner deleted behind our back")
	defer r.end(sc)
	if err := r.enqueue(sc, pools[0], 2, 20*time.Second); err != nil {
		return err
	}
	var victims []bbsim.RunnerView
	if busy := r.waitBusy(ctx, pools[:1], 1, 30*time.Second); len(busy) > 0 {
		victims = append(victims, busy[0])
	}
	for _, rn := range r.env.sys.BBSim.State().Runners {
		if strings.HasPrefix(rn.Name, pools[2].prefix) && rn.Step == "" {
			victims = append(victims, rn)
			break
		}
	}
	for _, v := range victims {
		r.attrib.add(v.UUID, "deleted in Bitbucket by the run")
		if err := r.env.adminDeleteRunner(ctx, v.Workspace, v.UUID); err != nil {
			return err
		}
		r.res.mu.Lock()
		r.res.RunnersDeletedBehindBack++
		r.res.mu.Unlock()
	}
	sc.note("deleted %d runners (busy one: %t)", len(victims), len(victims) > 0 && victims[0].Step != "")
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, pools)
	return nil
}

// runnerRenamedAndRelabelled edits runners in Bitbucket as a person in the Bitbucket UI would
// (bbsim's admin call: the runners API has no update). A runner of f3 is renamed, keeping the
// pool's marker but with a name no Runner knows, which is what an orphan looks like by name:
// it must keep its Runner. A busy and an idle runner of f1 get f3's labels: f3's steps may now
// go to them, and f1 must replace them, the busy one only after its step. The convergence check
// compares every Bitbucket runner's labels with its Runner's, so the pools converge only once
// the relabelled runners are replaced.
func (r *run) runnerRenamedAndRelabelled(ctx context.Context, pools []*poolInfo) error {
	sc := r.begin("bitbucket runner renamed/relabelled behind our back")
	defer r.end(sc)
	sim := r.env.sys.BBSim
	f1, f3 := pools[0], pools[2]
	if err := r.enqueue(sc, f1, 2, 20*time.Second); err != nil {
		return err
	}
	var relabel []bbsim.RunnerView
	if busy := r.waitBusy(ctx, pools[:1], 1, 30*time.Second); len(busy) > 0 {
		relabel = append(relabel, busy[0])
	}
	var rename *bbsim.RunnerView
	for _, rn := range sim.State().Runners {
		switch {
		case strings.HasPrefix(rn.Name, f1.prefix) && rn.Step == "" && len(relabel) == 1:
			relabel = append(relabel, rn)
		case strings.HasPrefix(rn.Name, f3.prefix) && rn.Step == "" && rename == nil:
			rename = &rn
		}
	}
	foreign := []string{"self.hosted", "linux", f3.label}
	busyRelabelled := false
	for _, v := range relabel {
		if _, err := sim.UpdateRunner(v.UUID, bbsim.UpdateRunnerRequest{Labels: foreign}); err != nil {
			return fmt.Errorf("relabel runner %s: %w", v.UUID, err)
		}
		busyRelabelled = busyRelabelled || v.Step != ""
	}
	if rename != nil {
		newName := f3.prefix + "renamed-by-hand"
		if _, err := sim.UpdateRunner(rename.UUID, bbsim.UpdateRunnerRequest{Name: &newName}); err != nil {
			return fmt.Errorf("rename runner %s: %w", rename.UUID, err)
		}
	}
	// Steps of f3 may now land on f1's relabelled runners.
	if err := r.enqueue(sc, f3, 2, r.stepDuration()); err != nil {
		return err
	}
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, pools)

	replaced, renameKept := 0, rename == nil
	if s, err := r.takeSample(ctx); err != nil {
		r.res.fail("rename/relabel: %v", err)
	} else {
		inBB := map[string]bool{}
		for _, b := range s.bb.Runners {
			inBB[b.UUID] = true
		}
		for _, v := range relabel {
			if !inBB[v.UUID] {
				replaced++
			} else {
				r.res.fail("rename/relabel: relabelled runner %s of %s was not replaced", v.UUID, f1.key())
			}
		}
		if rename != nil {
			for _, rn := range s.runners {
				renameKept = renameKept || (rn.Status.UUID == rename.UUID && inBB[rename.UUID])
			}
			// Scaling down after f3's steps may remove the renamed runner through its Runner,
			// like any idle runner; what must never happen is its removal as an orphan.
			if !renameKept {
				if orphaned, err := r.removedAsOrphan(ctx, f3, rename.UUID); err != nil {
					r.res.fail("rename/relabel: %v", err)
				} else if orphaned {
					r.res.fail("rename/relabel: renamed runner %s of %s was removed as an orphan", rename.UUID, f3.key())
				}
			}
		}
	}
	outcome := fmt.Sprintf("run: renamed %d (kept with its Runner, or removed by it when scaling down: %t), relabelled %d (busy one: %t), replaced %d",
		btoi(rename != nil), renameKept, len(relabel), busyRelabelled, replaced)
	sc.note("%s", outcome)
	r.res.mu.Lock()
	r.res.RenameRelabel = outcome
	r.res.mu.Unlock()
	return nil
}

// removedAsOrphan reports whether the pool removed the Bitbucket runner as one without a Runner.
func (r *run) removedAsOrphan(ctx context.Context, p *poolInfo, uuid string) (bool, error) {
	var events eventsv1.EventList
	if err := r.env.c.List(ctx, &events, client.InNamespace(p.namespace)); err != nil {
		return false, fmt.Errorf("list events of %s: %w", p.namespace, err)
	}
	for _, e := range events.Items {
		if e.Reason == "OrphanRemoved" && strings.Contains(e.Note, uuid) {
			return true, nil
		}
	}
	return false, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runnerLimit fills a second workspace up to three runners short of Bitbucket's limit of 100 and
// asks a pool there for five: the pool must stay within its max, report the limit, and converge
// once the other runners are removed.
func (r *run) runnerLimit(ctx context.Context) error {
	sc := r.begin("bitbucket runner limit (100) reached")
	defer r.end(sc)
	const foreign = 97
	var foreignUUIDs []string
	for i := range foreign {
		created, err := r.env.sys.BBSim.CreateRunner(bbsim.CreateRunnerRequest{
			Workspace: limitWorkspaceUUID, Name: fmt.Sprintf("someone-elses-runner-%02d", i), Labels: []string{"self.hosted", "linux", "other"},
		})
		if err != nil {
			return fmt.Errorf("fill the workspace: %w", err)
		}
		foreignUUIDs = append(foreignUUIDs, created.UUID)
	}
	p, err := r.createPool(ctx, poolSpec{name: "limit", ns: 0, policy: v1alpha1.ScalingPolicyIdleBuffer, min: 5, max: 6, idle: 1,
		workspace: limitWorkspaceUUID, repository: limitRepositoryUUID, pendingTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	if err := r.enqueue(sc, p, 3, r.stepDuration()); err != nil {
		return err
	}
	peak := 0
	deadline := time.Now().Add(2 * time.Minute)
	for !r.mon.runnerLimitSeen() && time.Now().Before(deadline) {
		peak = max(peak, r.workspaceRunners(limitWorkspaceUUID))
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	// Let the pool keep trying against the limit (replacing runners that cannot register) for a while.
	for end := time.Now().Add(r.cfg.faultWindow); time.Now().Before(end); {
		peak = max(peak, r.workspaceRunners(limitWorkspaceUUID))
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	limitSeen := r.mon.runnerLimitSeen()
	r.res.mu.Lock()
	r.res.RunnerLimitReported = limitSeen
	r.res.mu.Unlock()
	if !limitSeen {
		r.res.fail("runner limit: no Runner reported RunnerLimitReached within 2 minutes")
	}
	sc.note("limit reported on a Runner: %t; peak %d runners in the workspace", limitSeen, peak)
	for _, id := range foreignUUIDs {
		if err := r.env.adminDeleteRunner(ctx, limitWorkspaceUUID, id); err != nil {
			return err
		}
	}
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, []*poolInfo{p})
	if err := r.deletePools(ctx, []*poolInfo{p}, 3*time.Minute); err != nil {
		r.res.fail("%v", err)
	}
	return nil
}

func (r *run) workspaceRunners(workspace string) int {
	n := 0
	for _, rn := range r.env.sys.BBSim.State().Runners {
		if rn.Workspace == workspace {
			n++
		}
	}
	return n
}

func (r *run) phaseKubernetesFaults(ctx context.Context) error {
	pools, err := r.standingPools(ctx)
	if err != nil {
		return err
	}
	for _, f := range []func(context.Context, []*poolInfo) error{
		r.apiserverRestart, r.podsDeleted, r.podsEvicted, r.nodeRemoved, r.concurrentWriters,
	} {
		if err := f(ctx, pools); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) apiserverRestart(ctx context.Context, pools []*poolInfo) error {
	sc := r.begin("kube-apiserver restarted mid-scale")
	defer r.end(sc)
	if err := r.scaleUp(sc, pools, 2, 4); err != nil {
		return err
	}
	if err := sleep(ctx, r.between(500*time.Millisecond, 3*time.Second)); err != nil {
		return err
	}
	down, err := r.env.apiserver.restart(ctx, r.env.cs)
	if err != nil {
		r.res.mu.Lock()
		r.res.APIServerRestart = "failed: " + err.Error()
		r.res.mu.Unlock()
		return err
	}
	r.res.mu.Lock()
	r.res.APIServerRestart = "run"
	r.res.APIServerDowntimeSeconds = max(r.res.APIServerDowntimeSeconds, round1(down.Seconds()))
	r.res.mu.Unlock()
	sc.note("API unavailable for %s", down.Round(100*time.Millisecond))
	r.say("    kube-apiserver restarted, unavailable for %s", down.Round(100*time.Millisecond))
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, pools)
	return nil
}

// runnerPods lists the runner pods of the pools, busy ones first.
func (r *run) runnerPods(ctx context.Context, pools []*poolInfo) ([]corev1.Pod, error) {
	busy := map[string]bool{}
	for _, rn := range r.busyRunners(pools) {
		busy[rn.UUID] = true
	}
	var busyPods, idlePods []corev1.Pod
	for _, p := range pools {
		var list corev1.PodList
		if err := r.env.c.List(ctx, &list, client.InNamespace(p.namespace), client.MatchingLabels{v1alpha1.LabelPool: p.name}); err != nil {
			return nil, fmt.Errorf("list pods of %s: %w", p.key(), err)
		}
		for _, pod := range list.Items {
			if pod.DeletionTimestamp != nil {
				continue
			}
			if busy[pod.Annotations[v1alpha1.AnnotationRunnerUUID]] {
				busyPods = append(busyPods, pod)
			} else {
				idlePods = append(idlePods, pod)
			}
		}
	}
	r.rngMu.Lock()
	r.rng.Shuffle(len(idlePods), func(i, j int) { idlePods[i], idlePods[j] = idlePods[j], idlePods[i] })
	r.rngMu.Unlock()
	return append(busyPods, idlePods...), nil
}

// podFault removes three runner pods (one busy when there is one) in the given way.
func (r *run) podFault(ctx context.Context, pools []*poolInfo, name string, remove func(context.Context, corev1.Pod) error) error {
	sc := r.begin(name)
	defer r.end(sc)
	if err := r.scaleUp(sc, pools, 1, 3); err != nil {
		return err
	}
	r.waitBusy(ctx, pools, 2, 30*time.Second)
	pods, err := r.runnerPods(ctx, pools)
	if err != nil {
		return err
	}
	removed, kept, err := r.removePods(ctx, pods, name, remove, 3)
	if err != nil {
		return err
	}
	if removed < 3 && kept > 0 {
		// Every pod tried was busy and kept by its disruption budget: once the steps are done,
		// the idle pods go instead, so that the scenario still removes three.
		if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
			r.res.fail("%v", err)
		}
		if pods, err = r.runnerPods(ctx, pools); err != nil {
			return err
		}
		n, k, err := r.removePods(ctx, pods, name, remove, 3-removed)
		if err != nil {
			return err
		}
		removed, kept = removed+n, kept+k
	}
	if kept > 0 {
		sc.note("%d pods, %d busy ones kept by their disruption budget", removed, kept)
	} else {
		sc.note("%d pods", removed)
	}
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, pools)
	return nil
}

// removePods removes up to n of the pods, in order. A pod whose eviction is refused because
// its pool's disruption budget covers it (a busy runner, docs/adr/0024) is kept and counted:
// that refusal is what the budget is for.
func (r *run) removePods(ctx context.Context, pods []corev1.Pod, name string, remove func(context.Context, corev1.Pod) error, n int) (removed, kept int, err error) {
	for _, pod := range pods {
		if removed == n {
			break
		}
		// Attributed before it goes: bbsim fails the step the moment it sees the pod go.
		r.attrib.add(pod.Annotations[v1alpha1.AnnotationRunnerUUID], name)
		err := remove(ctx, pod)
		if apierrors.IsTooManyRequests(err) {
			kept++
			continue
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return removed, kept, fmt.Errorf("%s %s/%s: %w", name, pod.Namespace, pod.Name, err)
		}
		removed++
	}
	return removed, kept, nil
}

func (r *run) podsDeleted(ctx context.Context, pools []*poolInfo) error {
	return r.podFault(ctx, pools, "runner pods deleted by hand", func(ctx context.Context, pod corev1.Pod) error {
		r.res.mu.Lock()
		r.res.PodsDeleted++
		r.res.mu.Unlock()
		return r.env.c.Delete(ctx, &pod)
	})
}

func (r *run) podsEvicted(ctx context.Context, pools []*poolInfo) error {
	return r.podFault(ctx, pools, "runner pods evicted", func(ctx context.Context, pod corev1.Pod) error {
		err := r.env.cs.PolicyV1().Evictions(pod.Namespace).Evict(ctx, &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		})
		if err == nil {
			r.res.mu.Lock()
			r.res.PodsEvicted++
			r.res.mu.Unlock()
		}
		return err
	})
}

// nodeRemoved removes the node running the most runner pods, as if its machine vanished. A new
// node joins first, as an autoscaled node group would replace it.
func (r *run) nodeRemoved(ctx context.Context, pools []*poolInfo) error {
	sc := r.begin("node removed with runners on it")
	defer r.end(sc)
	if err := r.scaleUp(sc, pools, 1, 3); err != nil {
		return err
	}
	r.waitBusy(ctx, pools, 2, 30*time.Second)
	if _, err := r.env.sys.ControlPlane.CreateNodes(ctx, 1, nodeCPU, nodeMemory); err != nil {
		return fmt.Errorf("add a replacement node: %w", err)
	}
	var pods corev1.PodList
	if err := r.env.c.List(ctx, &pods, client.HasLabels{v1alpha1.LabelRunner}); err != nil {
		return fmt.Errorf("list runner pods: %w", err)
	}
	byNode := map[string][]corev1.Pod{}
	for _, pod := range pods.Items {
		if pod.Spec.NodeName != "" {
			byNode[pod.Spec.NodeName] = append(byNode[pod.Spec.NodeName], pod)
		}
	}
	var victim string
	for node, list := range byNode {
		if victim == "" || len(list) > len(byNode[victim]) || (len(list) == len(byNode[victim]) && node < victim) {
			victim = node
		}
	}
	if victim == "" {
		return errors.New("no node runs a runner pod")
	}
	for _, pod := range byNode[victim] {
		r.attrib.add(pod.Annotations[v1alpha1.AnnotationRunnerUUID], "node removed")
	}
	if err := r.env.sys.ControlPlane.DeleteNode(ctx, victim); err != nil {
		return err
	}
	r.res.mu.Lock()
	r.res.NodesRemoved++
	r.res.mu.Unlock()
	sc.note("node %s with %d runner pods", victim, len(byNode[victim]))
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, pools)
	return nil
}

// concurrentWriters rewrites Runners and pools (an annotation, as kubectl annotate or another
// controller would) as fast as it can while the pools scale, so the operator's writes meet
// conflicts.
func (r *run) concurrentWriters(ctx context.Context, pools []*poolInfo) error {
	sc := r.begin("conflicts from concurrent writers")
	defer r.end(sc)
	writeCtx, stop := context.WithCancel(ctx)
	var writes, conflicts atomic.Int64
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.conflictWriter(writeCtx, pools, w, &writes, &conflicts)
		}()
	}
	err := r.scaleUp(sc, pools, 2, 3)
	if err == nil {
		err = sleep(ctx, r.cfg.faultWindow)
	}
	if err == nil {
		err = r.scaleUp(sc, pools, 1, 2)
	}
	if err == nil {
		err = sleep(ctx, r.cfg.faultWindow)
	}
	stop()
	wg.Wait()
	if err != nil {
		return err
	}
	r.res.mu.Lock()
	r.res.ConflictWrites += int(writes.Load())
	r.res.ConflictsHitByWriter += int(conflicts.Load())
	r.res.mu.Unlock()
	sc.note("%d writes, %d of them conflicted", writes.Load(), conflicts.Load())
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, pools)
	return nil
}

func (r *run) conflictWriter(ctx context.Context, pools []*poolInfo, id int, writes, conflicts *atomic.Int64) {
	key := fmt.Sprintf("chaos.runnerpool.dev/writer-%d", id)
	for n := 0; ctx.Err() == nil; n++ {
		p := pools[r.intn(len(pools))]
		var obj client.Object
		if r.chance(0.7) {
			var list v1alpha1.RunnerList
			if err := r.env.c.List(ctx, &list, client.InNamespace(p.namespace), client.MatchingLabels{v1alpha1.LabelPool: p.name}); err != nil || len(list.Items) == 0 {
				_ = sleep(ctx, 50*time.Millisecond)
				continue
			}
			obj = &list.Items[r.intn(len(list.Items))]
		} else {
			pool := &v1alpha1.RunnerPool{}
			if err := r.env.c.Get(ctx, client.ObjectKey{Namespace: p.namespace, Name: p.name}, pool); err != nil {
				continue
			}
			obj = pool
		}
		ann := obj.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[key] = fmt.Sprint(n)
		obj.SetAnnotations(ann)
		err := r.env.c.Update(ctx, obj)
		writes.Add(1)
		if apierrors.IsConflict(err) {
			conflicts.Add(1)
		}
		_ = sleep(ctx, 20*time.Millisecond)
	}
}
