package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
)

// loadKinds are the pools added for the load phase, in turn.
var loadKinds = []poolSpec{
	{policy: v1alpha1.ScalingPolicyIdleBuffer, min: 1, max: 4, idle: 1},
	{policy: v1alpha1.ScalingPolicyQueue, min: 0, max: 4, idle: 0},
	{policy: v1alpha1.ScalingPolicyPercentageIdle, min: 1, max: 4},
	{policy: v1alpha1.ScalingPolicyIdleBuffer, min: 0, max: 4, idle: 1},
	{policy: v1alpha1.ScalingPolicyIdleBuffer, min: 0, max: 3, idle: 1, ephemeral: true},
}

// operatorCalls counts the API calls the operator's credentials made, as bbsim counted them.
func operatorCalls(snap bbsim.Snapshot) (calls, limitHits int) {
	for cred, byEndpoint := range snap.CallsByCredential {
		if !strings.HasPrefix(cred, "oauth:chaos-consumer-") {
			continue
		}
		for _, n := range byEndpoint {
			calls += n
		}
	}
	for cred, n := range snap.RateLimitHits {
		if strings.HasPrefix(cred, "oauth:chaos-consumer-") {
			limitHits += n
		}
	}
	return calls, limitHits
}

func credentialsOverLimit(snap bbsim.Snapshot) int {
	n := 0
	for cred, hits := range snap.RateLimitHits {
		if strings.HasPrefix(cred, "oauth:chaos-consumer-") && hits > 0 {
			n++
		}
	}
	return n
}

// phaseLoad runs many pools under a steady stream of steps while Bitbucket faults come and go and
// the leader is killed now and then.
func (r *run) phaseLoad(ctx context.Context) error {
	standing, err := r.standingPools(ctx)
	if err != nil {
		return err
	}
	var specs []poolSpec
	for i := 0; len(standing)+len(specs) < r.cfg.loadPools; i++ {
		s := loadKinds[i%len(loadKinds)]
		// The CRD's default poll interval: many pools polling at the 5s minimum would measure the
		// request budget rather than the operator.
		s.name, s.ns, s.pollInterval = fmt.Sprintf("l%02d", i+1), i+len(standing), 15*time.Second
		specs = append(specs, s)
	}
	sc := r.begin(fmt.Sprintf("load: %d pools, steady steps, faults on and off", r.cfg.loadPools))
	added, err := r.createPools(ctx, specs)
	if err != nil {
		r.end(sc)
		return err
	}
	pools := append(append([]*poolInfo{}, standing...), added...)
	r.converge(ctx, sc, pools)

	callsBefore, _ := operatorCalls(r.env.sys.BBSim.State())
	loadStart := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, r.cfg.loadDuration)
	defer stopLoad()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var enqueueErr error
	windows := 0
	wg.Add(3)
	go func() {
		defer wg.Done()
		for loadCtx.Err() == nil {
			for _, p := range pools {
				n := 0
				switch {
				case r.chance(1.0 / 150):
					n = 3
				case r.chance(1.0 / 15):
					n = 1
				}
				for range n {
					if err := r.enqueue(sc, p, 1, r.between(5*time.Second, 25*time.Second)); err != nil {
						mu.Lock()
						enqueueErr = err
						mu.Unlock()
					}
				}
			}
			_ = sleep(loadCtx, time.Second)
		}
	}()
	go func() {
		defer wg.Done()
		faults := r.bitbucketFaults()
		for {
			if sleep(loadCtx, r.between(10*time.Second, 25*time.Second)) != nil {
				return
			}
			f := faults[r.intn(len(faults))]
			window := r.between(10*time.Second, 25*time.Second)
			if strings.Contains(f.name, "expired") {
				window = 3 * tokenTTL
			}
			r.say("    load: %s for %s", f.name, window.Round(time.Second))
			f.set(true)
			mu.Lock()
			windows++
			mu.Unlock()
			err := sleep(loadCtx, window)
			f.set(false)
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			if sleep(loadCtx, r.between(r.cfg.loadKillEvery[0], r.cfg.loadKillEvery[1])) != nil {
				return
			}
			if err := r.env.mgrs.killLeader(ctx, "load"); err != nil && ctx.Err() == nil {
				r.res.fail("%v", err)
			}
		}
	}()
	wg.Wait()
	loadEnd := time.Now()
	callsAfter, _ := operatorCalls(r.env.sys.BBSim.State())
	r.say("    load over after %s; waiting for the last steps and for the pools to settle", loadEnd.Sub(loadStart).Round(time.Second))
	if enqueueErr != nil {
		r.res.fail("load: %v", enqueueErr)
	}
	if err := r.waitSteps(ctx, sc, stepsTimeout); err != nil {
		r.res.fail("%v", err)
	}
	r.converge(ctx, sc, pools)
	stats := r.end(sc)

	res := r.res
	res.mu.Lock()
	defer res.mu.Unlock()
	res.LoadPools = len(pools)
	res.LoadSeconds = round1(loadEnd.Sub(loadStart).Seconds())
	res.LoadStepsEnqueued = stats.total
	res.LoadStepsCompleted = stats.ok
	res.LoadStepsFailedByUs = stats.failedUs
	res.LoadStepsFailedInjected = stats.failedInjected
	res.LoadMaxQueueWaitSeconds = round1(stats.maxWait().Seconds())
	res.LoadP95QueueWaitSeconds = round1(stats.percentile(0.95).Seconds())
	res.LoadAPICalls = callsAfter - callsBefore
	res.LoadAPICallsPerMinute = round1(float64(callsAfter-callsBefore) / loadEnd.Sub(loadStart).Minutes())
	res.LoadFaultWindows = windows
	return nil
}

// limitHitsNote says how many calls of which credentials bbsim refused for the hourly limit,
// the context of a pool that cannot converge or go.
func (r *run) limitHitsNote() string {
	snap := r.env.sys.BBSim.State()
	var parts []string
	for cred, n := range snap.RateLimitHits {
		if strings.HasPrefix(cred, "oauth:chaos-consumer-") && n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", strings.TrimPrefix(cred, "oauth:"), n))
		}
	}
	if len(parts) == 0 {
		return "no call was refused for Bitbucket's hourly limit"
	}
	sort.Strings(parts)
	return "calls refused for Bitbucket's hourly limit of 1,000 per credential: " + strings.Join(parts, ", ")
}

// phaseDeleteAll deletes every pool while some runners are busy, killing the leader twice on the
// way, and waits until they are gone.
func (r *run) phaseDeleteAll(ctx context.Context) error {
	sc := r.begin("every pool deleted, leader killed twice meanwhile")
	defer r.end(sc)
	r.poolsMu.Lock()
	var pools []*poolInfo
	for _, p := range r.pools {
		pools = append(pools, p)
	}
	r.poolsMu.Unlock()
	batch := newBatch()
	for _, p := range pools {
		if r.chance(0.5) {
			if err := r.enqueue(batch, p, 1, r.between(8*time.Second, 15*time.Second)); err != nil {
				return err
			}
		}
	}
	sc.addSteps(batch.ids())
	r.waitStarted(ctx, batch, time.Minute)
	for _, p := range pools {
		if err := r.deleteWithRetry(ctx, p.obj); err != nil {
			return err
		}
	}
	killsDone := make(chan struct{})
	go func() {
		defer close(killsDone)
		for _, wait := range [][2]time.Duration{{500 * time.Millisecond, 5 * time.Second}, {3 * time.Second, 12 * time.Second}} {
			if sleep(ctx, r.between(wait[0], wait[1])) != nil {
				return
			}
			if err := r.env.mgrs.killLeader(ctx, "deletion"); err != nil && ctx.Err() == nil {
				r.res.fail("%v", err)
			}
		}
	}()
	err := r.deletePools(ctx, pools, 5*time.Minute)
	<-killsDone
	if err != nil {
		r.res.violation(violationDeletionStuck, fmt.Sprintf("%v (%s)", err, r.limitHitsNote()))
		// Tell "waits for Bitbucket's hourly limit" from "stuck for good": lift the limit and
		// give the operator a few more minutes.
		r.env.sys.BBSim.SetHourlyLimit(-1)
		r.say("    pools not gone after 5 minutes; bbsim's hourly limit lifted, waiting 4 more minutes")
		if err := r.deletePools(ctx, pools, 4*time.Minute); err != nil {
			sc.note("not gone even after the hourly limit was lifted: %v", err)
		} else {
			sc.note("gone only after bbsim's hourly limit was lifted")
		}
		r.res.mu.Lock()
		r.res.HourlyLimitLifted = true
		r.res.mu.Unlock()
	}
	if left := r.leftovers(ctx, pools, time.Minute); left != "" {
		sc.note("left after deletion: %s", left)
	}
	return nil
}
