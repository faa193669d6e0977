package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

// The ephemeral workload: a burst of short steps on an ephemeral pool. Bitbucket hands a runner
// its next step as soon as one ends, so a runner not disabled before its step ends takes another.
const (
	ephemeralSteps = 30
	ephemeralMax   = 10
	// ephemeralStep is shorter than the poll interval: the case where the list sees a step late.
	ephemeralStep = 5 * time.Second
)

// runEphemeral queues the burst on an ephemeral pool (webhooks on, the default 15 s poll) and
// counts the runners that ran more than one step, and how long after its step started each
// runner was seen disabled.
func runEphemeral(ctx context.Context, cfg config, res *results) (safety, error) {
	steps := ephemeralSteps
	if cfg.quick {
		steps = 15
	}
	const scenario = "ephemeral"
	sys, err := startSystem(ctx, cfg, systemOptions{
		scenario: scenario, nodes: nodesFor(ephemeralMax + 2), inProcessOperator: true, webhooks: true,
	})
	if err != nil {
		return safety{}, err
	}
	defer sys.stop()

	const ns, label = "bench", "ephemeral"
	if err := sys.createNamespace(ctx, ns, bbsim.DefaultClientID, bbsim.DefaultClientSecret); err != nil {
		return safety{}, err
	}
	spec := poolSpec{
		namespace: ns, name: label, min: 2, max: ephemeralMax,
		policy: v1alpha1.ScalingPolicyIdleBuffer, idleRunners: 2,
		pollInterval: pollIntervalSeconds * time.Second, scaleDownDelay: 30 * time.Second, ephemeral: true,
	}
	pool, err := sys.createPool(ctx, spec)
	if err != nil {
		return safety{}, err
	}
	prefix := controllers.BitbucketNamePrefix(pool)
	if err := waitPoolReady(ctx, sys, pool, prefix, int(spec.min)); err != nil {
		return safety{}, err
	}
	progress("%s: queueing %d steps of %s on an ephemeral pool", scenario, steps, ephemeralStep)
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: steps, RunsOn: []string{v1alpha1.LabelSelfHosted, v1alpha1.LabelLinux, label}, Duration: ephemeralStep}); err != nil {
		return safety{}, fmt.Errorf("enqueue: %w", err)
	}
	// disabledSeen is when each runner was first seen disabled, sampled every 200 ms.
	disabledSeen := map[string]time.Time{}
	var all []bbsim.StepView
	lastReport := time.Now()
	err = waitFor(ctx, 10*time.Minute, 200*time.Millisecond, "all steps to finish", func() (bool, string, error) {
		st := sys.BBSim.State()
		now := time.Now()
		for _, r := range bitbucketRunners(st, prefix) {
			if _, ok := disabledSeen[r.UUID]; !ok && r.Disabled {
				disabledSeen[r.UUID] = now
			}
		}
		all = stepsWithLabel(st, label)
		done := 0
		for _, s := range all {
			if s.Status == "completed" {
				done++
			}
		}
		why := fmt.Sprintf("%d of %d steps done", done, steps)
		if time.Since(lastReport) > 15*time.Second {
			progress("%s: %s", scenario, why)
			lastReport = time.Now()
		}
		return done == steps, why, nil
	})
	if err != nil {
		progress("%s: %v", scenario, err)
	}

	byRunner := map[string][]bbsim.StepView{}
	for _, s := range all {
		if s.Runner != "" {
			byRunner[s.Runner] = append(byRunner[s.Runner], s)
		}
	}
	multi, extra := 0, 0
	var disableLatency []float64
	for uuid, ss := range byRunner {
		if len(ss) > 1 {
			multi++
			extra += len(ss) - 1
		}
		sort.Slice(ss, func(i, j int) bool { return startOf(ss[i]).Before(startOf(ss[j])) })
		if seen, ok := disabledSeen[uuid]; ok && ss[0].StartedAt != nil {
			disableLatency = append(disableLatency, seen.Sub(*ss[0].StartedAt).Seconds())
		}
	}
	res.set("ephemeral_steps", float64(len(all)))
	res.set("ephemeral_step_s", ephemeralStep.Seconds())
	res.set("ephemeral_runners", float64(len(byRunner)))
	res.set("ephemeral_multi_step_runners", float64(multi))
	res.set("ephemeral_extra_steps", float64(extra))
	res.set("ephemeral_disable_p95_s", percentile(disableLatency, 95))
	progress("%s: %d steps on %d runners; %d runners ran more than one step (%d extra steps); disabled p50 %.1f s, p95 %.1f s, max %.1f s after their step started",
		scenario, len(all), len(byRunner), multi, extra, percentile(disableLatency, 50), percentile(disableLatency, 95), percentile(disableLatency, 100))
	return finish(ctx, sys, scenario, 3*time.Minute, res)
}

func startOf(s bbsim.StepView) time.Time {
	if s.StartedAt == nil {
		return time.Time{}
	}
	return *s.StartedAt
}
