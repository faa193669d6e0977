// Package install_test checks the two ways users install the operator, with the real
// tools they use: the Helm chart in charts/runnerpool-operator (lint, rendered
// output, values schema, README) and the kubectl bundle dist/install.yaml (built
// from config/default with kustomize), and installs both on a local control plane.
//
// helm and kustomize come from `make tools-extra`; a missing one fails the tests
// unless RUNNERPOOL_SKIP_PACKAGING=1. Run `go test ./test/install -update` to
// rewrite the golden files in testdata/ after a deliberate chart change.
package install_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// skipEnv, set to 1, turns a missing helm or kustomize into a skipped test.
const skipEnv = "RUNNERPOOL_SKIP_PACKAGING"

const (
	chartDir    = "charts/runnerpool-operator"
	installYAML = "dist/install.yaml"
	// commandTimeout bounds one helm, kubectl or kustomize run; each takes well
	// under a second here.
	commandTimeout = 30 * time.Second
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// repoRoot is the repository's top directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// repoPath joins a slash-separated path in the repository to its root.
func repoPath(path string) string { return filepath.Join(repoRoot(), filepath.FromSlash(path)) }

func readRepoFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(path))
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// tool returns the path of bin/name, failing the test when it is missing (or
// skipping it under RUNNERPOOL_SKIP_PACKAGING=1).
func tool(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(repoRoot(), "bin", name)
	info, err := os.Stat(path)
	if err == nil && !info.IsDir() && info.Mode().Perm()&0o111 != 0 {
		return path
	}
	if os.Getenv(skipEnv) == "1" {
		t.Skipf("skipping: bin/%s is missing (%s=1); `make tools tools-extra` builds it", name, skipEnv)
	}
	t.Fatalf("bin/%s is missing: run `make tools tools-extra` (or set %s=1 to skip the packaging tests)", name, skipEnv)
	return ""
}

// commandEnv keeps helm's configuration, cache and repositories inside the test and
// points helm and kubectl at kubeconfig (none: no cluster).
func commandEnv(t *testing.T, kubeconfig string) []string {
	t.Helper()
	home := t.TempDir()
	env := os.Environ()
	env = append(env,
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+kubeconfig,
	)
	return env
}

type result struct {
	stdout, stderr string
	err            error
}

// run runs a program from the repository root.
func run(t *testing.T, env []string, program string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, program, args...)
	cmd.Dir = repoRoot()
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// mustRun is run that fails the test when the program fails.
func mustRun(t *testing.T, env []string, program string, args ...string) string {
	t.Helper()
	r := run(t, env, program, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(program), strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}
