package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/controllers"
)

// listEndpoint is the runner list of a workspace: the one call per poll per scope.
const listEndpoint = "GET /internal/workspaces/{ws}/pipelines-config/runners"

// callCounts are Bitbucket API calls per endpoint pattern.
type callCounts map[string]float64

func callsNow(sys *system) callCounts {
	out := callCounts{}
	for endpoint, n := range sys.BBSim.State().Calls {
		out[endpoint] = float64(n)
	}
	return out
}

// minus returns c - earlier, endpoint by endpoint.
func (c callCounts) minus(earlier callCounts) callCounts {
	out := callCounts{}
	for endpoint, n := range c {
		if d := n - earlier[endpoint]; d != 0 {
			out[endpoint] = d
		}
	}
	return out
}

// scaled returns c * f.
func (c callCounts) scaled(f float64) callCounts {
	out := callCounts{}
	for endpoint, n := range c {
		out[endpoint] = n * f
	}
	return out
}

// sum adds the calls of the endpoints keep selects (all when nil).
func (c callCounts) sum(keep func(endpoint string) bool) float64 {
	total := 0.0
	for endpoint, n := range c {
		if keep == nil || keep(endpoint) {
			total += n
		}
	}
	return total
}

func (c callCounts) String() string {
	var parts []string
	for _, endpoint := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s: %.1f", endpoint, c[endpoint]))
	}
	return strings.Join(parts, "; ")
}

func isRunnerEndpoint(endpoint string) bool {
	return strings.Contains(endpoint, "/pipelines-config/runners")
}
func isQueueEndpoint(endpoint string) bool { return strings.HasPrefix(endpoint, "GET /2.0/") }

// runAPICost measures the Bitbucket calls of steady pools (an IdleBuffer pool with runners and
// a Queue pool at zero, in one workspace), then of creating and removing runners.
func runAPICost(ctx context.Context, cfg config, res *results) (safety, error) {
	idlePolls, added := 8, 8
	if cfg.quick {
		idlePolls, added = 4, 5
	}
	const scenario = "api"
	poll := pollIntervalSeconds * time.Second
	sys, err := startSystem(ctx, cfg, systemOptions{scenario: scenario, namespace: benchNamespace, nodes: nodesFor(added + 4), inProcessOperator: true, webhooks: true})
	if err != nil {
		return safety{}, err
	}
	defer sys.stop()

	const base = 2
	pool, err := sys.createPool(ctx, poolSpec{
		namespace: benchNamespace, name: "steady", min: base, max: base + int32(added),
		policy: v1alpha1.ScalingPolicyIdleBuffer, idleRunners: 1, pollInterval: poll, scaleDownDelay: 15 * time.Second,
	})
	if err != nil {
		return safety{}, err
	}
	queuePool, err := sys.createPool(ctx, poolSpec{
		namespace: benchNamespace, name: "queued", min: 0, max: 5,
		policy: v1alpha1.ScalingPolicyQueue, pollInterval: poll, scaleDownDelay: 15 * time.Second,
	})
	if err != nil {
		return safety{}, err
	}
	prefix := controllers.BitbucketNamePrefix(pool)
	if err := waitRunners(ctx, sys, pool, prefix, base, 3*time.Minute); err != nil {
		return safety{}, err
	}
	if err := waitPoolReady(ctx, sys, queuePool, "", 0); err != nil {
		return safety{}, err
	}
	// Past the start-up: the runners' quick connection rechecks are over.
	progress("%s: pools steady; settling, then counting calls over %d polls", scenario, idlePolls)
	if err := sleep(ctx, 2*poll); err != nil {
		return safety{}, err
	}

	before, start := callsNow(sys), time.Now()
	if err := sleep(ctx, time.Duration(idlePolls)*poll); err != nil {
		return safety{}, err
	}
	idle, idleFor := callsNow(sys).minus(before), time.Since(start)
	polls := idleFor.Seconds() / poll.Seconds()
	idleRate := idle.scaled(1 / idleFor.Seconds())                       // calls per second, per endpoint
	res.set("api_calls_per_idle_poll", idle.sum(isRunnerEndpoint)/polls) // one workspace: one scope
	res.set("api_queue_calls_per_idle_poll", idle.sum(isQueueEndpoint)/polls)
	progress("%s: idle over %.1f polls: %s", scenario, polls, idle)

	// Scale up by `added` runners, from the moment the pool is asked until they are all ONLINE
	// and one more poll has passed; the idle rate over that time is taken off.
	progress("%s: adding %d runners", scenario, added)
	perCreate, listPerCreate, err := measureChange(ctx, sys, pool, prefix, base+added, added, idleRate, poll)
	if err != nil {
		return safety{}, err
	}
	res.set("api_calls_per_runner_created", perCreate.sum(nil))
	res.set("api_list_calls_per_runner_created", max(0, listPerCreate))
	progress("%s: per runner created: %s", scenario, perCreate)

	progress("%s: removing %d runners", scenario, added)
	perRemove, _, err := measureChange(ctx, sys, pool, prefix, base, added, idleRate, poll)
	if err != nil {
		return safety{}, err
	}
	res.set("api_calls_per_runner_removed", perRemove.sum(nil))
	res.set("api_calls_per_runner", max(perCreate.sum(nil), perRemove.sum(nil)))
	progress("%s: per runner removed: %s", scenario, perRemove)
	return finish(ctx, sys, scenario, 3*time.Minute, res)
}

// measureChange sets the pool's minimum to target, waits until it has exactly target runners
// (ONLINE ones when scaling up), one poll more, and returns the calls per runner changed above
// the idle rate, and the runner lists among them.
func measureChange(ctx context.Context, sys *system, pool *v1alpha1.RunnerPool, prefix string, target, changed int, idleRate callCounts, poll time.Duration) (callCounts, float64, error) {
	before, start := callsNow(sys), time.Now()
	current := &v1alpha1.RunnerPool{}
	if err := sys.Client.Get(ctx, keyOf(pool), current); err != nil {
		return nil, 0, fmt.Errorf("get pool: %w", err)
	}
	patch := client.MergeFrom(current.DeepCopy())
	current.Spec.MinRunners = int32(target)
	if err := sys.Client.Patch(ctx, current, patch); err != nil {
		return nil, 0, fmt.Errorf("set minRunners to %d: %w", target, err)
	}
	if err := waitRunners(ctx, sys, pool, prefix, target, 5*time.Minute); err != nil {
		return nil, 0, err
	}
	if err := sleep(ctx, poll); err != nil {
		return nil, 0, err
	}
	took := time.Since(start)
	extra := callsNow(sys).minus(before)
	for endpoint, rate := range idleRate {
		extra[endpoint] -= rate * took.Seconds()
	}
	perRunner := extra.scaled(1 / float64(changed))
	return perRunner, perRunner[listEndpoint], nil
}

// waitRunners waits until the pool has exactly n Runners and n Bitbucket runners, all ONLINE.
func waitRunners(ctx context.Context, sys *system, pool *v1alpha1.RunnerPool, prefix string, n int, timeout time.Duration) error {
	return waitFor(ctx, timeout, 250*time.Millisecond, fmt.Sprintf("%d runners ONLINE", n), func() (bool, string, error) {
		objects, err := sys.runnerObjects(ctx, pool)
		if err != nil {
			return false, "", err
		}
		bb := bitbucketRunners(sys.BBSim.State(), prefix)
		on := countOnline(bb)
		return objects == n && len(bb) == n && on == n, fmt.Sprintf("%d Runners, %d Bitbucket runners, %d ONLINE", objects, len(bb), on), nil
	})
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
