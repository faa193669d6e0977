package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

// The burst workload of the issue: 20 steps queued at once on a pool of at most 10 runners.
const (
	burstSteps = 20
	burstMax   = 10
	// burstScaleDownDelay is short so that each run also scales back down, which is when a
	// careless autoscaler kills busy runners.
	burstScaleDownDelay = 30 * time.Second
)

// burstVariant is one way of running the burst.
type burstVariant struct {
	name string
	// webhooks: bbsim tells the operator about new pipelines; otherwise the pool only polls.
	webhooks bool
	// fromZero: a Queue-policy pool with minRunners 0 that starts from no runner at all.
	fromZero bool
	// queue: a Queue-policy pool with the CRD defaults (minRunners 1, one idle runner), polling
	// only, handed 20 single-step pipelines instead of one pipeline of 20 steps; the Bitbucket
	// calls it makes per step started are counted. This is the queue-burst scenario.
	queue bool
}

var burstVariants = []burstVariant{
	{name: "webhook", webhooks: true},
	{name: "poll"},
	{name: "zero", webhooks: true, fromZero: true},
}

// queueBurst is the queue-burst scenario: the burst as a Queue pool sees it.
var queueBurst = burstVariant{name: "queue", queue: true}

// scenario is the variant's scenario name; key the prefix of its figures.
func (v burstVariant) scenario() string {
	if v.queue {
		return "queue-burst"
	}
	return "burst-" + v.name
}

func (v burstVariant) key() string { return strings.ReplaceAll(v.scenario(), "-", "_") }

// runBurst: a pool with minRunners 1 (or a Queue pool at 0), maxRunners 10 and room for all
// of them; once it is ready, 20 steps are queued at once. It measures how long each step waited
// for a runner and how long all of them took.
func runBurst(ctx context.Context, cfg config, v burstVariant, res *results) (safety, error) {
	stepDuration := time.Minute
	if cfg.quick {
		stepDuration = 20 * time.Second
	}
	scenario := v.scenario()
	sys, err := startSystem(ctx, cfg, systemOptions{
		namespace:         benchNamespace,
		scenario:          scenario,
		nodes:             nodesFor(burstMax + 2),
		inProcessOperator: true,
		webhooks:          v.webhooks,
	})
	if err != nil {
		return safety{}, err
	}
	defer sys.stop()

	const label = "burst"
	spec := poolSpec{
		namespace: benchNamespace, name: label, min: 1, max: burstMax,
		policy: v1alpha1.ScalingPolicyIdleBuffer, idleRunners: 1,
		pollInterval: pollIntervalSeconds * time.Second, scaleDownDelay: burstScaleDownDelay,
	}
	if v.fromZero {
		spec.min, spec.policy, spec.idleRunners = 0, v1alpha1.ScalingPolicyQueue, 0
	}
	if v.queue {
		spec.policy = v1alpha1.ScalingPolicyQueue
	}
	pool, err := sys.createPool(ctx, spec)
	if err != nil {
		return safety{}, err
	}
	prefix := controllers.BitbucketNamePrefix(pool)
	if err := waitPoolReady(ctx, sys, pool, prefix, int(spec.min)); err != nil {
		return safety{}, err
	}

	perPipeline := 0 // all steps in one pipeline
	if v.queue {
		perPipeline = 1
	}
	progress("%s: queueing %d steps of %s", scenario, burstSteps, stepDuration)
	callsBefore := callsNow(sys)
	if _, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{
		Count: burstSteps, RunsOn: []string{v1alpha1.LabelSelfHosted, v1alpha1.LabelLinux, label},
		Duration: stepDuration, StepsPerPipeline: perPipeline,
	}); err != nil {
		return safety{}, fmt.Errorf("enqueue: %w", err)
	}
	var calls callCounts
	var peakRunners peak
	var steps []bbsim.StepView
	lastReport := time.Now()
	err = waitFor(ctx, 4*stepDuration+6*time.Minute, 500*time.Millisecond, "all steps to finish", func() (bool, string, error) {
		st := sys.BBSim.State()
		steps = stepsWithLabel(st, label)
		bb := bitbucketRunners(st, prefix)
		peakRunners.see(len(bb))
		objects, err := sys.runnerObjects(ctx, pool)
		if err != nil {
			return false, "", err
		}
		peakRunners.see(objects)
		started, done := 0, 0
		for _, s := range steps {
			if s.StartedAt != nil {
				started++
			}
			if s.Status == "completed" {
				done++
			}
		}
		why := fmt.Sprintf("%d of %d steps started, %d done; %d Runners, %d Bitbucket runners (%d online)", started, burstSteps, done, objects, len(bb), countOnline(bb))
		if time.Since(lastReport) > 15*time.Second {
			progress("%s: %s", scenario, why)
			lastReport = time.Now()
		}
		if done == burstSteps {
			calls = callsNow(sys).minus(callsBefore)
		}
		return done == burstSteps, why, nil
	})
	if err != nil {
		progress("%s: %v", scenario, err)
	}

	waits, allDone := stepWaits(steps, time.Now())
	prefixKey := v.key()
	res.set(prefixKey+"_p50_s", percentile(waits, 50))
	res.set(prefixKey+"_p95_s", percentile(waits, 95))
	res.set(prefixKey+"_max_s", percentile(waits, 100))
	res.set(prefixKey+"_excess_p95_s", percentile(excessWaits(waits, burstMax, stepDuration), 95))
	res.set(prefixKey+"_peak_runners", float64(peakRunners))
	if v.name == "webhook" {
		res.set("burst_all_done_s", allDone)
	} else {
		res.set(prefixKey+"_all_done_s", allDone)
	}
	res.set("burst_step_s", stepDuration.Seconds())
	progress("%s: waits p50 %.1f s, p95 %.1f s, max %.1f s; all done after %.1f s; peak %d runners",
		scenario, percentile(waits, 50), percentile(waits, 95), percentile(waits, 100), allDone, peakRunners)
	if v.queue {
		started := 0
		for _, s := range steps {
			if s.StartedAt != nil {
				started++
			}
		}
		if calls == nil { // not all steps finished: count up to now
			calls = callsNow(sys).minus(callsBefore)
		}
		if started > 0 {
			res.set(prefixKey+"_calls_per_step", calls.sum(isQueueEndpoint)/float64(started))
			res.set(prefixKey+"_runner_calls_per_step", calls.sum(isRunnerEndpoint)/float64(started))
		}
		progress("%s: Bitbucket calls from queueing to the last step's end, %d steps started: %s", scenario, started, calls)
	}

	// Let the pool scale back down to its minimum: the part where busy runners could be killed.
	err = waitFor(ctx, burstScaleDownDelay+3*time.Minute, time.Second, "the pool to scale back down", func() (bool, string, error) {
		objects, err := sys.runnerObjects(ctx, pool)
		if err != nil {
			return false, "", err
		}
		bb := len(bitbucketRunners(sys.BBSim.State(), prefix))
		return objects == int(spec.min) && bb == int(spec.min), fmt.Sprintf("%d Runners, %d Bitbucket runners", objects, bb), nil
	})
	if err != nil {
		progress("%s: %v", scenario, err)
	}
	return finish(ctx, sys, scenario, 3*time.Minute+stepDuration, res)
}

// waitPoolReady waits until a pool with a minimum has its first runner ONLINE, or until a pool
// at zero has observed Bitbucket once.
func waitPoolReady(ctx context.Context, sys *system, pool *v1alpha1.RunnerPool, prefix string, min int) error {
	return waitFor(ctx, 3*time.Minute, 250*time.Millisecond, "the pool to be ready", func() (bool, string, error) {
		if min == 0 {
			current := &v1alpha1.RunnerPool{}
			if err := sys.Client.Get(ctx, keyOf(pool), current); err != nil {
				return false, "", fmt.Errorf("get pool: %w", err)
			}
			return current.Status.LastObservedTime != nil, "not observed yet", nil
		}
		n := countOnline(bitbucketRunners(sys.BBSim.State(), prefix))
		return n >= 1, fmt.Sprintf("%d runners ONLINE", n), nil
	})
}

// stepWaits returns how long each step waited before it started (steps that never started
// count as waiting until now) and how long until the last one finished (NaN if one did not).
func stepWaits(steps []bbsim.StepView, now time.Time) (waits []float64, allDone float64) {
	var first, last time.Time
	done := 0
	for _, s := range steps {
		if first.IsZero() || s.EnqueuedAt.Before(first) {
			first = s.EnqueuedAt
		}
		start := now
		if s.StartedAt != nil {
			start = *s.StartedAt
		}
		waits = append(waits, start.Sub(s.EnqueuedAt).Seconds())
		if s.CompletedAt != nil {
			done++
			if s.CompletedAt.After(last) {
				last = *s.CompletedAt
			}
		}
	}
	if done == 0 || done < len(steps) {
		return waits, math.NaN()
	}
	return waits, last.Sub(first).Seconds()
}

// safety is what a scenario did that it must never do.
type safety struct {
	killed, leaked int
}

// finish records the steps killed so far, deletes every pool and counts what the operator left
// behind.
func finish(ctx context.Context, sys *system, scenario string, timeout time.Duration, res *results) (safety, error) {
	sys.dumpState("bbsim-before-teardown.json")
	took, left, err := sys.teardown(ctx, timeout)
	sys.dumpState("bbsim-after-teardown.json")
	if err != nil {
		return safety{}, err
	}
	s := safety{killed: killedSteps(sys.BBSim.State()), leaked: left.total()}
	progress("%s: pools deleted, cleanup took %.1f s; left: %s; steps killed: %d", scenario, took.Seconds(), left, s.killed)
	key := strings.ReplaceAll(scenario, "-", "_")
	res.extra["busy_killed_"+key] = s.killed
	res.extra["leaked_"+key] = s.leaked
	return s, nil
}
