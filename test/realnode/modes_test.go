package realnode

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
)

// Each docker mode a pool may ask for either runs a step on this node or is refused with the
// reason, where the user looks: docs/security.md says which and why.
func TestEachDockerModeRunsAStepOrIsRefused(t *testing.T) {
	for _, tc := range []struct {
		mode v1alpha1.DockerMode
		// refused is the API server's answer to the pool; failing, what the Runner's PodReady
		// condition says of a pod that cannot start; neither: a step runs.
		refused string
		failing []string
	}{
		{mode: v1alpha1.DockerModePrivileged},
		{
			mode: v1alpha1.DockerModeRootless,
			// rootlesskit's slirp4netns opens /dev/net/tun as the rootless user; this node's is
			// crw------- root, and a privileged container gets the node's device as it is.
			failing: []string{"last exit code 1: ", "open: Permission denied", "setting up tap tap0"},
		},
		{
			mode: v1alpha1.DockerModeUnprivileged,
			// No sandboxed runtime (Sysbox, Kata) on this node, nor on most: without one the
			// pool is refused before any pod is made.
			refused: "spec: Invalid value: docker.mode Unprivileged needs template.runtimeClassName: dockerd cannot start unprivileged outside a sandboxed runtime",
		},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			begin := time.Now()
			defer func() { t.Logf("took %s", time.Since(begin).Round(time.Millisecond)) }()
			ns := namespace(t)
			dumpOnFailure(t, ns)
			pool := realPool(ns, strings.ToLower(string(tc.mode)), 1, 1)
			pool.Spec.Docker.Mode = tc.mode
			err := sys.Client.Create(t.Context(), pool)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("pool in mode %s: got %v, want refused with %q", tc.mode, err, tc.refused)
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.failing) > 0 {
				checkRunnerPodFailing(t, pool, tc.failing)
				return
			}
			rp := waitOnline(t, pool, 1)[0]
			checkSidecarOrder(t, rp.pod)
			step := enqueue(t, pool, `echo "uid=$(id -u) mode=`+string(tc.mode)+`"; cat input.txt`, map[string]string{"input.txt": "shared"})
			done := waitStep(t, step, time.Minute)
			checkSucceeded(t, done)
			if !strings.Contains(done.Log, "\nshared") {
				t.Fatalf("the step did not see the working directory's file:\n%s", done.Log)
			}
			t.Logf("step log: %s", strings.TrimSpace(done.Log))
		})
	}
}

// checkRunnerPodFailing waits until the pool's Runner says its pod cannot start, with each of want
// in the reason its PodReady condition gives, and a warning event.
func checkRunnerPodFailing(t *testing.T, pool *v1alpha1.RunnerPool, want []string) {
	t.Helper()
	eventually(t, time.Minute, "the runner to say why its pod cannot start", func() (bool, string) {
		runners := &v1alpha1.RunnerList{}
		if err := sys.Client.List(t.Context(), runners, client.InNamespace(pool.Namespace)); err != nil {
			return false, err.Error()
		}
		if len(runners.Items) != 1 {
			return false, fmt.Sprintf("%d runners", len(runners.Items))
		}
		c := meta.FindStatusCondition(runners.Items[0].Status.Conditions, v1alpha1.ConditionPodReady)
		if c == nil {
			return false, "no PodReady condition"
		}
		events := &corev1.EventList{}
		if err := sys.Client.List(t.Context(), events, client.InNamespace(pool.Namespace)); err != nil {
			return false, err.Error()
		}
		evented := slices.ContainsFunc(events.Items, func(e corev1.Event) bool {
			return e.Type == corev1.EventTypeWarning && e.Reason == "PodFailing" && e.InvolvedObject.Name == runners.Items[0].Name
		})
		says := !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(c.Message, w) })
		if c.Reason == "PodFailing" && says && evented {
			t.Logf("runner %s: PodReady %s: %s", runners.Items[0].Name, c.Reason, c.Message)
			return true, ""
		}
		return false, fmt.Sprintf("PodReady %s: %s (event: %v)", c.Reason, c.Message, evented)
	})
}
