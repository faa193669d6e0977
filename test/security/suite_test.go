// Package security_test checks the operator's security promises on the local system (a real
// control plane with kwok nodes, bbsim playing Bitbucket, the operator in-process): no secret
// ever shows in its logs, events, statuses or metrics; it works with exactly the RBAC the Helm
// chart grants, in both of the chart's modes; its webhook receiver refuses what it must; and
// runner pools come up without a privileged daemon where the runtime allows it.
//
// The RBAC test renders the chart with bin/helm and applies it with bin/kubectl; a missing tool
// fails it unless RUNNERPOOL_SKIP_PACKAGING=1. Missing control plane binaries fail every test
// unless RUNNERPOOL_SKIP_CONTROLPLANE=1.
package security_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/framework"
	"github.com/runnerpool/runnerpool-operator/test/harness"
)

// skipPackagingEnv, set to 1, turns a missing bin/helm or bin/kubectl into a skipped test, as
// in test/install.
const skipPackagingEnv = "RUNNERPOOL_SKIP_PACKAGING"

// startTimeout bounds bringing a local system up; it takes seconds.
const startTimeout = 2 * time.Minute

var (
	sharedOnce sync.Once
	shared     *harness.System
	sharedErr  error
)

// capturedLogs receives the logs of controller-runtime's and client-go's global loggers while
// a test captures them; nil discards.
var capturedLogs atomic.Pointer[logBuffer]

func TestMain(m *testing.M) {
	global := funcr.New(func(prefix, args string) {
		if b := capturedLogs.Load(); b != nil {
			b.add(prefix + " " + args)
		}
	}, funcr.Options{Verbosity: 10})
	ctrllog.SetLogger(global)
	klog.SetLogger(global)
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	os.Exit(code)
}

// sharedSystem is one local system without an operator, for the tests that run the operator
// their own way. It lives until the package's tests end.
func sharedSystem(t *testing.T) *harness.System {
	t.Helper()
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		shared, sharedErr = harness.Start(ctx, harness.Options{
			NoManager: true,
			BBSim:     bbsim.Options{ConnectDelay: 200 * time.Millisecond},
		})
	})
	skipOrFail(t, sharedErr)
	return shared
}

// startSystem brings up a local system for one test and stops it when the test ends.
func startSystem(t *testing.T, opts harness.Options) *harness.System {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	sys, err := harness.Start(ctx, opts)
	skipOrFail(t, err)
	t.Cleanup(sys.Stop)
	return sys
}

func skipOrFail(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, framework.ErrBinariesMissing) && os.Getenv(framework.SkipEnv) == "1" {
		t.Skipf("skipping: %v (%s=1)", err, framework.SkipEnv)
	}
	t.Fatalf("start local system: %v", err)
}

// tool returns bin/name, failing the test when it is missing (or skipping it under
// RUNNERPOOL_SKIP_PACKAGING=1).
func tool(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(harness.RepoRoot(), "bin", name)
	if info, err := os.Stat(path); err == nil && !info.IsDir() && info.Mode().Perm()&0o111 != 0 {
		return path
	}
	if os.Getenv(skipPackagingEnv) == "1" {
		t.Skipf("skipping: bin/%s is missing (%s=1); `make tools tools-extra` builds it", name, skipPackagingEnv)
	}
	t.Fatalf("bin/%s is missing: run `make tools tools-extra` (or set %s=1 to skip)", name, skipPackagingEnv)
	return ""
}

// randomSecret is a fresh hex secret: no other text in a capture can contain it by chance,
// and no encoding but base64 changes it.
func randomSecret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// logBuffer collects log lines from any goroutine.
type logBuffer struct {
	mu    sync.Mutex
	lines strings.Builder
	count int
}

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines.WriteString(line)
	b.lines.WriteByte('\n')
	b.count++
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lines.String()
}

// logger writes every line, at every verbosity up to 10, into the buffer. E2E_VERBOSE=1
// also prints them.
func (b *logBuffer) logger() logr.Logger {
	verbose := os.Getenv("E2E_VERBOSE") == "1"
	return funcr.New(func(prefix, args string) {
		line := prefix + " " + args
		b.add(line)
		if verbose {
			fmt.Fprintln(os.Stderr, line)
		}
	}, funcr.Options{Verbosity: 10})
}

// eventually polls cond until it holds or the timeout passes, then fails with the last reason.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	framework.Eventually(t, timeout, what, cond)
}

// onlineRunners counts the simulator's runners whose name starts with prefix, and how many of
// them are ONLINE.
func onlineRunners(sys *harness.System, prefix string) (total, online int) {
	for _, r := range sys.BBSim.State().Runners {
		if strings.HasPrefix(r.Name, prefix) {
			total++
			if r.Status == "ONLINE" {
				online++
			}
		}
	}
	return total, online
}

func getPool(t *testing.T, sys *harness.System, ns, name string) *v1alpha1.RunnerPool {
	t.Helper()
	pool := &v1alpha1.RunnerPool{}
	if err := sys.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, pool); err != nil {
		t.Fatalf("get pool %s/%s: %v", ns, name, err)
	}
	return pool
}
