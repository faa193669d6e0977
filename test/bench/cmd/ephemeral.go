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
	// ephemeralSettle is how long the pool stays idle, its runners ONLINE, before the burst: a
	// real burst meets a pool whose runners connected long ago, when the operator no longer
	// re-lists quickly for freshly connected runners (a minute after their pod became ready)
	// and only the pool's poll, or a webhook, refreshes the runner list.
	ephemeralSettle = 90 * time.Second
)

// ephemeralVariant is one way of telling the operator about the burst.
type ephemeralVariant struct {
	name string
	// webhooks: bbsim tells the operator about new pipelines; otherwise the pool only polls.
	webhooks bool
	// poll is the pool's spec.scaling.pollInterval.
	poll time.Duration
	// key prefixes the variant's figures.
	key string
}

var ephemeralVariants = []ephemeralVariant{
	{name: "webhook", webhooks: true, poll: pollIntervalSeconds * time.Second, key: "ephemeral"},
	{name: "poll", poll: pollIntervalSeconds * time.Second, key: "ephemeral_poll"},
	// 5 s is the shortest poll interval the CRD accepts.
	{name: "poll5", poll: 5 * time.Second, key: "ephemeral_poll5"},
}

func (v ephemeralVariant) scenario() string { return "ephemeral-" + v.name }

// runEphemeral queues the burst on an ephemeral pool and counts the runners that ran more than
// one step, and how long after its step started each runner was seen disabled.
func runEphemeral(ctx context.Context, cfg config, v ephemeralVariant, res *results) (safety, error) {
	steps := ephemeralSteps
	if cfg.quick {
		steps = 15
	}
	scenario := v.scenario()
	sys, err := startSystem(ctx, cfg, systemOptions{
		scenario: scenario, namespace: benchNamespace, nodes: nodesFor(ephemeralMax + 2), inProcessOperator: true, webhooks: v.webhooks,
	})
	if err != nil {
		return safety{}, err
	}
	defer sys.stop()

	const label = "ephemeral"
	spec := poolSpec{
		namespace: benchNamespace, name: label, min: 2, max: ephemeralMax,
		policy: v1alpha1.ScalingPolicyIdleBuffer, idleRunners: 2,
		pollInterval: v.poll, scaleDownDelay: 30 * time.Second, ephemeral: true,
	}
	pool, err := sys.createPool(ctx, spec)
	if err != nil {
		return safety{}, err
	}
	prefix := controllers.BitbucketNamePrefix(pool)
	err = waitFor(ctx, 3*time.Minute, 250*time.Millisecond, "the pool's runners to be ONLINE", func() (bool, string, error) {
		n := countOnline(bitbucketRunners(sys.BBSim.State(), prefix))
		return n >= int(spec.min), fmt.Sprintf("%d runners ONLINE", n), nil
	})
	if err != nil {
		return safety{}, err
	}
	progress("%s: %d runners ONLINE; leaving the pool idle for %s", scenario, spec.min, ephemeralSettle)
	select {
	case <-ctx.Done():
		return safety{}, ctx.Err()
	case <-time.After(ephemeralSettle):
	}
	// The burst starts right after a runner list: the worst moment, as the idle runners' first
	// steps are seen only by the next list, a whole poll later without a webhook. Left to
	// chance, the start would fall at the same point of the poll cycle in every run (the settle
	// is a multiple of both poll intervals, counted from when the runners connected).
	lists := func() int { return sys.BBSim.State().Calls[listEndpoint] }
	before := lists()
	if err := waitFor(ctx, 2*v.poll, 20*time.Millisecond, "a runner list", func() (bool, string, error) {
		return lists() > before, "no list yet", nil
	}); err != nil {
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
	res.set("ephemeral_step_s", ephemeralStep.Seconds())
	res.set(v.key+"_steps", float64(len(all)))
	res.set(v.key+"_runners", float64(len(byRunner)))
	res.set(v.key+"_multi_step_runners", float64(multi))
	res.set(v.key+"_extra_steps", float64(extra))
	res.set(v.key+"_disable_p50_s", percentile(disableLatency, 50))
	res.set(v.key+"_disable_p95_s", percentile(disableLatency, 95))
	res.set(v.key+"_disable_max_s", percentile(disableLatency, 100))
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
