// Package realnode runs runner pods, as the operator builds them, on the real node of the test
// control plane (docs/adr/0014-real-node.md): a real kubelet, containerd and runc run the
// docker-in-docker sidecar and the runner stand-in (docs/adr/0015-runner-standin.md), which
// comes ONLINE in bbsim and runs each step as a real container of that daemon.
//
// One control plane, one real node, one bbsim and one in-process operator serve every test of
// the package; each test has a namespace and pools of its own.
package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/test/framework"
	"github.com/runnerpool/runnerpool-operator/test/harness"
	"github.com/runnerpool/runnerpool-operator/test/images"
)

var sys *harness.System

// startTimeout covers the control plane, the real node and the images it loads (dind is the
// largest, about 130 MB).
const startTimeout = 6 * time.Minute

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// testLogger prints the operator's logs when E2E_VERBOSE=1.
func testLogger() logr.Logger {
	if os.Getenv("E2E_VERBOSE") == "1" {
		return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
	}
	return logr.Discard()
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	logger := testLogger()
	ctrllog.SetLogger(logger)
	bin := filepath.Join(harness.RepoRoot(), "bin")
	archives := []string{images.Dind.Archive(bin), images.RunnerStandin.Archive(bin)}
	for _, archive := range append([]string{images.Pause.Archive(bin)}, archives...) {
		if _, err := os.Stat(archive); err != nil {
			// Never a skip: a real-node test that cannot run fails with its reason.
			fmt.Fprintf(os.Stderr, "real-node tests cannot run: %v (run `make images`)\n", err)
			return 1
		}
	}
	begin := time.Now()
	var err error
	sys, err = harness.Start(ctx, harness.Options{
		Nodes:  -1,
		Logger: logger,
		RealNode: &framework.RealNodeOptions{
			PauseImage:   images.Pause.Ref,
			PauseArchive: images.Pause.Archive(bin),
			Images:       archives,
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "real-node tests cannot run: start the control plane with a real node:", err)
		return 1
	}
	defer sys.Stop()
	fmt.Fprintf(os.Stderr, "control plane and real node %s started in %s\n", sys.ControlPlane.RealNode().Name(), time.Since(begin).Round(time.Millisecond))
	return m.Run()
}

// namespace creates a fresh namespace with a valid credentials Secret for one test.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.Trim(strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), "-")
	if len(name) > 50 {
		name = strings.Trim(name[:50], "-")
	}
	if err := sys.CreateNamespace(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	return name
}

// realPool is a pool whose runner pods land on the real node: the stand-in as the runner,
// our dind as the daemon, both loaded into the node's containerd and never pulled. Its steps
// select it by its own label (runs-on), so pools of different tests never share steps.
func realPool(namespace, name string, minRunners, maxRunners int32) *v1alpha1.RunnerPool {
	pool := harness.Pool(namespace, name, minRunners, maxRunners)
	node := sys.ControlPlane.RealNode()
	grace := int64(30)
	// Not zero: the field is omitted when zero, and the API server's default is 5 minutes.
	pool.Spec.Scaling.ScaleDownDelay = metav1.Duration{Duration: time.Second}
	pool.Spec.Runner = v1alpha1.RunnerContainerSpec{
		Image:           images.RunnerStandin.Ref,
		ImagePullPolicy: corev1.PullNever,
		StepSize:        "1x",
		Env:             []corev1.EnvVar{{Name: "BITBUCKET_URL", Value: sys.BBSimURL}},
		// The node has two cores: the default requests (250m + 1) would fit one runner.
		Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m")}},
	}
	pool.Spec.Docker = v1alpha1.DockerSpec{
		Mode:      v1alpha1.DockerModePrivileged,
		Image:     images.Dind.Ref,
		Resources: &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}},
	}
	pool.Spec.Template = v1alpha1.PodTemplateOverrides{
		NodeSelector:                  map[string]string{framework.RealNodeLabel: framework.RealNodeLabelValue},
		Tolerations:                   []corev1.Toleration{node.Toleration()},
		TerminationGracePeriodSeconds: &grace,
	}
	return pool
}

// runsOn is the runs-on of a step meant for pool.
func runsOn(pool *v1alpha1.RunnerPool) []string {
	return []string{"self.hosted", "linux", string(pool.Spec.Labels[0])}
}

// enqueue queues one step for pool and returns its UUID.
func enqueue(t *testing.T, pool *v1alpha1.RunnerPool, script string, files map[string]string) string {
	t.Helper()
	ids, err := sys.BBSim.Enqueue(bbsim.EnqueueRequest{Count: 1, RunsOn: runsOn(pool), Script: script, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	return ids[0]
}

// eventually polls cond until it holds or the timeout passes, then fails with the last reason.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	framework.Eventually(t, timeout, what, cond)
}

// createPool creates pool and deletes it when the test ends, so that its pods do not use the
// node's two cores while later tests run.
func createPool(t *testing.T, pool *v1alpha1.RunnerPool) {
	t.Helper()
	if err := sys.Client.Create(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.Client.Delete(context.Background(), pool); client.IgnoreNotFound(err) != nil {
			t.Errorf("delete pool %s: %v", pool.Name, err)
		}
	})
}
