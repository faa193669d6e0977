// Command bench measures the operator on the real local system (kube-apiserver, scheduler,
// controller manager and kwok nodes, bbsim playing Bitbucket) and writes test/bench/results.json.
// `make bench` runs it; test/bench/README.md explains every figure.
//
// Environment:
//
//	BENCH_SCENARIOS  comma-separated scenarios: ephemeral (or ephemeral-webhook,
//	                 ephemeral-poll, ephemeral-poll5), burst (or burst-webhook, burst-poll, burst-zero), queue-burst, overshoot, api, scale, rss, layercache (real node, root); default all
//	BENCH_QUICK=1    shorter steps and windows, fewer runners for rss: a quick look
//	BENCH_OUT        where to write the results (default test/bench/results.json)
//	BENCH_LOG_DIR    where each scenario keeps its logs (default test/bench/tmp/logs)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/test/harness"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	quick     bool
	scenarios []string
	out       string
	logDir    string
}

// scenario is one measured situation on a fresh system.
type scenario struct {
	name  string
	group string
	run   func(ctx context.Context, cfg config, res *results) (safety, error)
}

func scenarios() []scenario {
	var out []scenario
	for _, v := range burstVariants {
		out = append(out, scenario{name: "burst-" + v.name, group: "burst", run: func(ctx context.Context, cfg config, res *results) (safety, error) {
			return runBurst(ctx, cfg, v, res)
		}})
	}
	out = append(out,
		scenario{name: queueBurst.scenario(), group: queueBurst.scenario(), run: func(ctx context.Context, cfg config, res *results) (safety, error) {
			return runBurst(ctx, cfg, queueBurst, res)
		}},
		scenario{name: "overshoot", group: "overshoot", run: runOvershoot},
	)
	for _, v := range ephemeralVariants {
		out = append(out, scenario{name: v.scenario(), group: "ephemeral", run: func(ctx context.Context, cfg config, res *results) (safety, error) {
			return runEphemeral(ctx, cfg, v, res)
		}})
	}
	return append(out,
		scenario{name: "api", group: "api", run: runAPICost},
		scenario{name: "scale", group: "scale", run: runScale},
		scenario{name: "rss", group: "rss", run: runRSS},
		scenario{name: "layercache", group: "layercache", run: runLayerCache},
	)
}

func loadConfig() (config, error) {
	root := harness.RepoRoot()
	cfg := config{
		quick:  os.Getenv("BENCH_QUICK") == "1",
		out:    envOr("BENCH_OUT", filepath.Join(root, "test", "bench", "results.json")),
		logDir: envOr("BENCH_LOG_DIR", filepath.Join(root, "test", "bench", "tmp", "logs")),
	}
	all := scenarios()
	wanted := strings.TrimSpace(os.Getenv("BENCH_SCENARIOS"))
	if wanted == "" || wanted == "all" {
		for _, s := range all {
			cfg.scenarios = append(cfg.scenarios, s.name)
		}
		return cfg, nil
	}
	for _, w := range strings.Split(wanted, ",") {
		w = strings.TrimSpace(w)
		found := false
		for _, s := range all {
			if (s.name == w || s.group == w) && !slices.Contains(cfg.scenarios, s.name) {
				cfg.scenarios = append(cfg.scenarios, s.name)
			}
			found = found || s.name == w || s.group == w
		}
		if !found && w != "" {
			return cfg, fmt.Errorf("unknown scenario %q in BENCH_SCENARIOS (known: burst, burst-webhook, burst-poll, burst-zero, queue-burst, overshoot, ephemeral, ephemeral-webhook, ephemeral-poll, ephemeral-poll5, api, scale, rss, layercache)", w)
		}
	}
	return cfg, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run() error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if runtime.GOOS != "linux" {
		return errors.New("the benchmark runs on Linux only (kwok control plane, /proc)")
	}
	// The operator's logs go to each scenario's log file; controller-runtime's global logger
	// would otherwise complain on stderr.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mode := "full"
	if cfg.quick {
		mode = "quick"
	}
	res := newResults()
	started := time.Now()
	res.extra["mode"] = mode
	res.extra["scenarios"] = strings.Join(cfg.scenarios, ",")
	res.extra["started_at"] = started.UTC().Format(time.RFC3339)
	res.extra["cpus"] = runtime.NumCPU()
	res.extra["go"] = runtime.Version()
	progress("mode %s, scenarios %s; logs in %s", mode, strings.Join(cfg.scenarios, ","), cfg.logDir)

	var failures []string
	killed, leaked := 0, 0
	for _, s := range scenarios() {
		if !slices.Contains(cfg.scenarios, s.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		progress("=== %s", s.name)
		begin := time.Now()
		safe, err := s.run(ctx, cfg, res)
		if err != nil {
			progress("%s failed: %v", s.name, err)
			failures = append(failures, fmt.Sprintf("%s: %v", s.name, err))
			continue
		}
		killed += safe.killed
		leaked += safe.leaked
		progress("=== %s done in %s", s.name, time.Since(begin).Round(time.Second))
	}
	res.set("busy_killed", float64(killed))
	res.set("leaked", float64(leaked))
	res.extra["duration_s"] = round(time.Since(started).Seconds(), 1)
	if len(failures) > 0 {
		res.extra["failures"] = strings.Join(failures, "; ")
	}
	if err := res.writeJSON(cfg.out); err != nil {
		return err
	}
	res.printTable(os.Stdout, fmt.Sprintf("runnerpool-operator benchmark, mode %s (%s), %d CPUs, %s; results in %s",
		mode, strings.Join(cfg.scenarios, ","), runtime.NumCPU(), time.Since(started).Round(time.Second), cfg.out))
	if len(failures) > 0 {
		return fmt.Errorf("%d scenarios failed: %s", len(failures), strings.Join(failures, "; "))
	}
	return nil
}
