// Command chaos is `make chaos`: the long reliability run. It starts a local control plane with
// kwok nodes, bbsim playing Bitbucket, and two replicas of bin/manager electing a leader, then
// kills the leader, breaks Bitbucket and Kubernetes and loads twenty pools, checking the
// operator's invariants all along. It prints a summary table, writes test/chaos/results.json and exits
// non-zero when an invariant was violated. Everything listens on 127.0.0.1.
//
// CHAOS_QUICK=1 runs a short version; CHAOS_SOAK=1 the soak (over 100 leader kills); CHAOS_SEED=n
// repeats the random choices of an earlier run; CHAOS_OUT=path writes the results elsewhere;
// CHAOS_PHASES=a,b runs only those phases (and the final deletion), while developing one;
// CHAOS_TMP=dir keeps the logs and dumps there instead of test/chaos/tmp.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// settings size the run; quick mode shrinks the counts and windows, never the grace periods the
// invariants need.
type settings struct {
	quick bool
	soak  bool
	seed  uint64

	killCycles int
	// Leader kills in each cycle while the pools scale up, scale down and are deleted.
	killsUp, killsDown, killsDeletion int
	// faultPhases runs the Bitbucket and Kubernetes fault scenarios (not in soak mode).
	faultPhases     bool
	tenantWindow    time.Duration
	floodDeliveries int
	faultWindow     time.Duration
	stepDuration    [2]time.Duration
	loadPools       int
	loadDuration    time.Duration
	loadKillEvery   [2]time.Duration
	convergeWithin  time.Duration
	deadline        time.Duration
}

func settingsFromEnv() (settings, error) {
	s := settings{
		killCycles:      3,
		killsUp:         2,
		killsDown:       1,
		killsDeletion:   1,
		faultPhases:     true,
		tenantWindow:    2 * time.Minute,
		floodDeliveries: 6000,
		faultWindow:     25 * time.Second,
		stepDuration:    [2]time.Duration{6 * time.Second, 15 * time.Second},
		loadPools:       20,
		loadDuration:    5 * time.Minute,
		loadKillEvery:   [2]time.Duration{35 * time.Second, 60 * time.Second},
		convergeWithin:  5 * time.Minute,
		deadline:        75 * time.Minute,
	}
	if os.Getenv("CHAOS_QUICK") == "1" {
		s.quick = true
		s.killCycles = 1
		s.faultWindow = 10 * time.Second
		s.stepDuration = [2]time.Duration{3 * time.Second, 7 * time.Second}
		s.loadPools = 6
		s.loadDuration = 75 * time.Second
		s.loadKillEvery = [2]time.Duration{25 * time.Second, 40 * time.Second}
		s.tenantWindow = time.Minute
		s.floodDeliveries = 2000
		s.deadline = 40 * time.Minute
	}
	if os.Getenv("CHAOS_SOAK") == "1" {
		// The soak: at least 100 leader kills across scale-up, scale-down, deletion and load
		// (12 cycles of 3+2+2, a load phase with a kill 10-18 s after each new leader, the tenant
		// phase's and the final deletion's), with every invariant checked as in the full run. The fault
		// scenarios run in every full run and add no kills, so the soak leaves them out.
		s.soak, s.quick = true, false
		s.killCycles, s.killsUp, s.killsDown, s.killsDeletion = 12, 3, 2, 2
		s.faultPhases = false
		s.loadDuration = 8 * time.Minute
		s.loadKillEvery = [2]time.Duration{10 * time.Second, 18 * time.Second}
		s.tenantWindow = 90 * time.Second
		s.floodDeliveries = 3000
		s.deadline = 150 * time.Minute
	}
	s.seed = uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("CHAOS_SEED must be a non-negative integer: %w", err)
		}
		s.seed = seed
	}
	return s, nil
}

func modeName(cfg settings) string {
	switch {
	case cfg.soak:
		return "soak"
	case cfg.quick:
		return "quick"
	}
	return "full"
}

func main() {
	code, err := runMain()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		if code == 0 {
			code = 2
		}
	}
	os.Exit(code)
}

func runMain() (int, error) {
	cfg, err := settingsFromEnv()
	if err != nil {
		return 2, err
	}
	root := harness.RepoRoot()
	// CHAOS_TMP keeps a second run (a soak next to a full run, say) from cleaning out the first's.
	tmp := cmp.Or(os.Getenv("CHAOS_TMP"), filepath.Join(root, "test", "chaos", "tmp"))
	if err := cleanTmp(tmp); err != nil {
		return 2, err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return 2, fmt.Errorf("create %s: %w", tmp, err)
	}
	logFile, err := os.Create(filepath.Join(tmp, "chaos.log"))
	if err != nil {
		return 2, fmt.Errorf("create chaos log: %w", err)
	}
	defer logFile.Close()
	ctrllog.SetLogger(logr.Discard())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.deadline)
	defer cancel()

	r := &run{
		cfg:    cfg,
		root:   root,
		tmp:    tmp,
		out:    io.MultiWriter(os.Stdout, logFile),
		rng:    rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x5deece66d)),
		start:  time.Now(),
		attrib: newAttribution(),
		res:    newResults(cfg),
		pools:  map[string]*poolInfo{},
	}
	r.res.say = r.say
	mode := modeName(cfg)
	r.say("chaos run, mode %s, seed %d (repeat the random choices with CHAOS_SEED=%d)", mode, cfg.seed, cfg.seed)

	runErr := r.execute(ctx)
	if runErr != nil {
		r.res.fail("run aborted: %v", runErr)
		r.say("run aborted: %v", runErr)
	}
	r.res.DurationSeconds = round1(time.Since(r.start).Seconds())
	r.res.finish()
	r.printSummary()
	out := cmp.Or(os.Getenv("CHAOS_OUT"), filepath.Join(root, "test", "chaos", "results.json"))
	if err := r.res.write(out, tmp); err != nil {
		return 2, err
	}
	r.say("wrote %s; logs and dumps are in %s", out, tmp)
	if !r.res.Passed {
		return 1, fmt.Errorf("invariants violated; see the summary above and %s", filepath.Join(tmp, "violations.txt"))
	}
	return 0, nil
}

// cleanTmp removes what an earlier run left in test/chaos/tmp, except *.out files: a run started with
// nohup may be writing its own output there.
func cleanTmp(tmp string) error {
	entries, err := os.ReadDir(tmp)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", tmp, err)
	}
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".out" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return fmt.Errorf("clean %s: %w", tmp, err)
		}
	}
	return nil
}

// run is one chaos run: the system under test and everything measured about it.
type run struct {
	cfg   settings
	root  string
	tmp   string
	out   io.Writer
	outMu sync.Mutex
	start time.Time

	rngMu sync.Mutex
	rng   *rand.Rand

	env    *environment
	mon    *monitor
	attrib *attribution
	res    *results

	poolsMu sync.Mutex
	pools   map[string]*poolInfo

	// leasesBefore are the budget Leases that existed before the good tenant's pools.
	leasesBefore map[string]bool
}

func (r *run) say(format string, args ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.out, "[%6s] %s\n", time.Since(r.start).Round(time.Second), fmt.Sprintf(format, args...))
}

// between draws a duration uniformly from [lo, hi].
func (r *run) between(lo, hi time.Duration) time.Duration {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)))
}

func (r *run) intn(n int) int {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	if n <= 0 {
		return 0
	}
	return r.rng.IntN(n)
}

func (r *run) chance(p float64) bool {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return r.rng.Float64() < p
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func round1(v float64) float64 {
	return float64(int64(v*10+0.5)) / 10
}

// execute runs the phases in order. A phase that cannot run (the system failed to start, say)
// aborts the run; invariant violations are recorded and the run goes on, so one report shows
// everything that went wrong.
func (r *run) execute(ctx context.Context) error {
	env, err := startEnvironment(ctx, r)
	if env != nil {
		r.env = env
		defer env.stop(r)
	}
	if err != nil {
		return fmt.Errorf("start the system: %w", err)
	}
	r.mon = newMonitor(r)
	monCtx, stopMonitor := context.WithCancel(ctx)
	monDone := make(chan struct{})
	go func() {
		defer close(monDone)
		r.mon.loop(monCtx)
	}()
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		r.podGC(monCtx)
	}()
	defer func() {
		stopMonitor()
		<-monDone
		<-gcDone
	}()

	phases := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"invalid pools", r.phaseInvalidPools},
		{"manager kills", r.phaseKillCycles},
		{"bitbucket faults", r.phaseBitbucketFaults},
		{"kubernetes faults", r.phaseKubernetesFaults},
		{"tenants", r.phaseTenants},
		{"load", r.phaseLoad},
		{"pool deletion", r.phaseDeleteAll},
	}
	if only := os.Getenv("CHAOS_PHASES"); only != "" {
		// A development aid: only the phases named (comma-separated), then the final deletion,
		// which every leak check needs.
		want := strings.Split(only, ",")
		phases = slices.DeleteFunc(phases, func(p struct {
			name string
			fn   func(context.Context) error
		}) bool {
			return !slices.Contains(want, p.name) && p.name != "pool deletion"
		})
		r.res.mu.Lock()
		r.res.Phases = only
		r.res.mu.Unlock()
	}
	if !r.cfg.faultPhases {
		phases = slices.DeleteFunc(phases, func(p struct {
			name string
			fn   func(context.Context) error
		}) bool {
			return strings.HasSuffix(p.name, " faults")
		})
	}
	var aborted error
	for _, p := range phases {
		if ctx.Err() != nil {
			aborted = ctx.Err()
			break
		}
		r.say("=== phase: %s", p.name)
		if err := p.fn(ctx); err != nil {
			if ctx.Err() != nil {
				aborted = fmt.Errorf("phase %s: %w", p.name, err)
				break
			}
			r.res.fail("phase %s: %v", p.name, err)
			r.say("phase %s failed: %v", p.name, err)
		}
	}
	// The figures and the secret scan are worth having even from an aborted run.
	finalCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if aborted == nil {
		r.mon.final(finalCtx)
	}
	r.finalChecks(finalCtx)
	return aborted
}
