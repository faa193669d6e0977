package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

const (
	overshootMax   = 10
	overshootSteps = 30
)

// runOvershoot: a pool of at most 10 runners on nodes with room for only 5 runner pods, and 30
// long steps waiting. It watches, for the whole window, how many runners the pool creates, how
// many pods wait for a node, and how many runners never connect.
func runOvershoot(ctx context.Context, cfg config, res *results) (safety, error) {
	stepDuration, window := 5*time.Minute, 12*time.Minute
	if cfg.quick {
		stepDuration, window = time.Minute, 3*time.Minute
	}
	const scenario = "overshoot"
	sys, err := startSystem(ctx, cfg, systemOptions{
		scenario:  scenario,
		namespace: benchNamespace,
		// A runner pod requests 4Gi (docker, 1x step) + 512Mi (runner): five fit in 24Gi, a sixth
		// does not. CPU (1.25 per pod) is not the limit.
		nodes:             []harness.NodeGroup{{Count: 1, CPU: resource.MustParse("16"), Memory: resource.MustParse("24Gi")}},
		inProcessOperator: true,
		webhooks:          true,
	})
	if err != nil {
		return safety{}, err
	}
	defer sys.stop()

	const label = "overshoot"
	pool, err := sys.createPool(ctx, poolSpec{
		namespace: benchNamespace, name: label, min: 1, max: overshootMax,
		policy: v1alpha1.ScalingPolicyIdleBuffer, idleRunners: 1,
		pollInterval: pollIntervalSeconds * time.Second, scaleDownDelay: burstScaleDownDelay,
	})
	if err != nil {
		return safety{}, err
	}
	prefix := controllers.BitbucketNamePrefix(pool)
	if err := waitPoolReady(ctx, sys, pool, prefix, 1); err != nil {
		return safety{}, err
	}
	progress("%s: queueing %d steps of %s, watching for %s", scenario, overshootSteps, stepDuration, window)
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: overshootSteps, RunsOn: []string{v1alpha1.LabelSelfHosted, v1alpha1.LabelLinux, label}, Duration: stepDuration}); err != nil {
		return safety{}, fmt.Errorf("enqueue: %w", err)
	}

	var peakObjects, peakBitbucket, peakPending peak
	everOnline := map[string]bool{} // Bitbucket runner UUID -> seen ONLINE
	done := 0
	end := time.Now().Add(window)
	lastReport := time.Now()
	for time.Now().Before(end) {
		st := sys.BBSim.State()
		bb := bitbucketRunners(st, prefix)
		peakBitbucket.see(len(bb))
		for _, r := range bb {
			everOnline[r.UUID] = everOnline[r.UUID] || online(r)
		}
		objects, err := sys.runnerObjects(ctx, pool)
		if err != nil {
			return safety{}, err
		}
		peakObjects.see(objects)
		pods, err := sys.poolPods(ctx, pool)
		if err != nil {
			return safety{}, err
		}
		pending := 0
		for _, p := range pods {
			if p.Status.Phase == corev1.PodPending {
				pending++
			}
		}
		peakPending.see(pending)
		done = 0
		for _, s := range stepsWithLabel(st, label) {
			if s.Status == "completed" {
				done++
			}
		}
		if time.Since(lastReport) > 30*time.Second {
			progress("%s: %d Runners, %d Bitbucket runners (%d online), %d pods Pending, %d steps done", scenario, objects, len(bb), countOnline(bb), pending, done)
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return safety{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	neverOnline := 0
	for _, was := range everOnline {
		if !was {
			neverOnline++
		}
	}
	res.set("overshoot_max", float64(max(peakObjects, peakBitbucket)))
	res.set("overshoot_peak_runners", float64(peakObjects))
	res.set("overshoot_peak_bitbucket_runners", float64(peakBitbucket))
	res.set("overshoot_peak_pending_pods", float64(peakPending))
	res.set("overshoot_never_online", float64(neverOnline))
	res.set("overshoot_steps_done", float64(done))
	res.set("overshoot_window_s", window.Seconds())
	res.set("overshoot_step_s", stepDuration.Seconds())
	progress("%s: peak %d Runners, %d Bitbucket runners, %d Pending pods; %d of %d runners never ONLINE; %d steps done",
		scenario, peakObjects, peakBitbucket, peakPending, neverOnline, len(everOnline), done)
	// Deleting the pool lets busy runners finish their step first.
	return finish(ctx, sys, scenario, stepDuration+3*time.Minute, res)
}
