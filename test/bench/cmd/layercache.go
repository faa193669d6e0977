package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/runnerpool/runnerpool-operator/test/harness"
	"github.com/runnerpool/runnerpool-operator/test/realnode"
)

// layerCacheTest is the real-node test that builds one image twice, in two runners' pods that
// hold the same layer cache claim one after the other. Its build times are the figures: a
// kwok node runs no daemon, so this is the one scenario on the real node (a kubelet with
// containerd and runc, docs/adr/0014-real-node.md), and the test's own assertions (the
// second runner holds the first one's claim, both layers come from the cache) keep the
// figures honest.
const layerCacheTest = "TestTheLayerCacheKeepsBuildLayersForTheNextRunner"

func runLayerCache(ctx context.Context, cfg config, res *results) (safety, error) {
	if os.Geteuid() != 0 {
		return safety{}, errors.New("the layer cache is measured on a real node, which needs root (as `make test` does)")
	}
	logDir := filepath.Join(cfg.logDir, "layercache")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return safety{}, fmt.Errorf("create log directory %s: %w", logDir, err)
	}
	figuresFile := filepath.Join(logDir, "figures.json")
	_ = os.Remove(figuresFile)
	logFile, err := os.Create(filepath.Join(logDir, "test.log"))
	if err != nil {
		return safety{}, fmt.Errorf("create test log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "-run", "^"+layerCacheTest+"$", "./test/realnode")
	cmd.Dir = harness.RepoRoot()
	cmd.Env = append(os.Environ(), realnode.LayerCacheFiguresEnv+"="+figuresFile)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Run(); err != nil {
		return safety{}, fmt.Errorf("%s on the real node: %w (see %s)", layerCacheTest, err, logFile.Name())
	}
	raw, err := os.ReadFile(figuresFile)
	if err != nil {
		return safety{}, fmt.Errorf("read the test's figures: %w", err)
	}
	var figures realnode.LayerCacheFigures
	if err := json.Unmarshal(raw, &figures); err != nil {
		return safety{}, fmt.Errorf("read the test's figures: %w", err)
	}
	res.set("layercache_cold_build_s", figures.ColdBuildSeconds)
	res.set("layercache_warm_build_s", figures.WarmBuildSeconds)
	res.set("layercache_saved_s", figures.ColdBuildSeconds-figures.WarmBuildSeconds)
	progress("layercache: the same image built in %.1f s on a new claim, %.1f s on the claim the runner before left",
		figures.ColdBuildSeconds, figures.WarmBuildSeconds)
	return safety{}, nil
}
