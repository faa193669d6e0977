package framework

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// SkipEnv, set to 1, turns a missing control plane binary into a skipped test
// instead of a failure. `make test` builds the binaries first, so it is unset
// there; it is for running a quick `go test ./...` without them.
const SkipEnv = "RUNNERPOOL_SKIP_CONTROLPLANE"

// startTimeout bounds StartForTest; a start takes seconds. One with a real node takes a minute
// at most on a busy machine (images imported, the kubelet registered and Ready), after waiting
// for the real nodes of other tests, one at a time, to go.
const (
	startTimeout         = 2 * time.Minute
	startTimeoutRealNode = 15 * time.Minute
)

// StartForTest starts a control plane for tb and stops it when tb ends. When tb
// failed, the end of every program's log is written to the test log. Missing
// binaries fail the test unless SkipEnv is 1.
func StartForTest(tb testing.TB, opts Options) *ControlPlane {
	tb.Helper()
	timeout := startTimeout
	if opts.RealNode != nil {
		timeout = startTimeoutRealNode
	}
	ctx, cancel := context.WithTimeout(tb.Context(), timeout)
	defer cancel()
	begin := time.Now()
	cp, err := Start(ctx, opts)
	if errors.Is(err, ErrBinariesMissing) && os.Getenv(SkipEnv) == "1" {
		tb.Skipf("skipping: %v (%s=1)", err, SkipEnv)
	}
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Logf("control plane started in %s", time.Since(begin).Round(time.Millisecond))
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("control plane logs (%s):\n%s", cp.logDir, cp.logTails(30))
		}
		if err := cp.Stop(); err != nil {
			tb.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}

// Eventually polls cond every quarter second until it holds, and fails tb with cond's last
// reason when timeout passes or the test's context ends first.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s: %s", timeout, what, why)
		}
		select {
		case <-tb.Context().Done():
			tb.Fatalf("waiting for %s: %v", what, tb.Context().Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ExpectNothingLeft waits until nothing of the given pods (of every pod, when none is given)
// is left on the real node: no running container, no mount, no cgroup. It fails tb with what
// is left after timeout.
func (n *RealNode) ExpectNothingLeft(tb testing.TB, timeout time.Duration, pods ...types.UID) {
	tb.Helper()
	Eventually(tb, timeout, "nothing of the pods left on the real node", func() (bool, string) {
		left := n.Leftovers(pods...)
		return len(left) == 0, strings.Join(left, "; ")
	})
}
