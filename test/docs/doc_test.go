// Package docs_test keeps the generated and hand-written observability artefacts true to the
// code: docs/reference.md must be what hack/refdocs generates from the CRDs; docs/metrics.md
// must list every metric the Go code defines, with its type and labels; and every metric the
// chart's PrometheusRule, the Grafana dashboard and the documented queries read must exist,
// in PromQL that at least lexes and nests correctly.
//
// Metric definitions are read from the Go source (internal/, controllers/, cmd/, and
// controller-runtime's metrics packages in the module cache) rather than from a registry,
// because a vector metric shows up in a scrape only once a series of it has been set.
package docs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// skipEnv, set to 1, turns a missing bin/helm into a skipped test, as in test/install.
const skipEnv = "RUNNERPOOL_SKIP_PACKAGING"

const (
	chartDir     = "charts/runnerpool-operator"
	metricsDoc   = "docs/metrics.md"
	dashboardRel = chartDir + "/dashboards/runnerpool-operator.json"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func repoPath(path string) string { return filepath.Join(repoRoot(), filepath.FromSlash(path)) }

func readRepoFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(path))
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// helm returns bin/helm, failing the test when it is missing (or skipping it under
// RUNNERPOOL_SKIP_PACKAGING=1).
func helm(t *testing.T) string {
	t.Helper()
	path := repoPath("bin/helm")
	if info, err := os.Stat(path); err == nil && !info.IsDir() && info.Mode().Perm()&0o111 != 0 {
		return path
	}
	if os.Getenv(skipEnv) == "1" {
		t.Skipf("skipping: bin/helm is missing (%s=1); `make tools-extra` builds it", skipEnv)
	}
	t.Fatalf("bin/helm is missing: run `make tools-extra` (or set %s=1 to skip)", skipEnv)
	return ""
}

// helmTemplate renders the chart with extra helm arguments, with helm's own state kept in
// the test's temporary directory.
func helmTemplate(t *testing.T, args ...string) []byte {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(t.Context(), helm(t), append([]string{"template", "runnerpool-operator", chartDir, "--namespace", "runnerpool-system"}, args...)...)
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG=",
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}
