package realnode

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/runnerpool/runnerpool-operator/api/v1alpha1"
	"github.com/runnerpool/runnerpool-operator/internal/bbsim"
	"github.com/runnerpool/runnerpool-operator/internal/runnerpod"
)

// onlineTimeout bounds a runner pod's start on the real node: scheduling, dind up behind its
// startup probe, the step image loaded into it, the stand-in connected.
const onlineTimeout = 2 * time.Minute

// runnerPod is a runner pod whose stand-in is ONLINE in bbsim.
type runnerPod struct {
	pod    *corev1.Pod
	runner bbsim.RunnerView
}

// waitOnline waits until pool has want runner pods running on the real node, each with its
// stand-in connected and ONLINE, and returns them sorted by pod name.
func waitOnline(t *testing.T, pool *v1alpha1.RunnerPool, want int) []runnerPod {
	t.Helper()
	var out []runnerPod
	eventually(t, onlineTimeout, fmt.Sprintf("%d runner pods of %s ONLINE on the real node", want, pool.Name), func() (bool, string) {
		out = out[:0]
		pods := &corev1.PodList{}
		if err := sys.Client.List(t.Context(), pods, client.InNamespace(pool.Namespace), client.MatchingLabels{v1alpha1.LabelPool: pool.Name}); err != nil {
			return false, err.Error()
		}
		runners := map[string]bbsim.RunnerView{}
		for _, r := range sys.BBSim.State().Runners {
			runners[r.UUID] = r
		}
		var seen []string
		for i := range pods.Items {
			pod := &pods.Items[i]
			r := runners[pod.Annotations[v1alpha1.AnnotationRunnerUUID]]
			seen = append(seen, fmt.Sprintf("%s on %q %s (runner %s, real agent %v)", pod.Name, pod.Spec.NodeName, pod.Status.Phase, r.Status, r.RealAgent))
			if pod.DeletionTimestamp == nil && pod.Status.Phase == corev1.PodRunning && r.RealAgent && r.Status == "ONLINE" {
				out = append(out, runnerPod{pod: pod, runner: r})
			}
		}
		return len(out) == want, strings.Join(seen, "; ")
	})
	sort.Slice(out, func(i, j int) bool { return out[i].pod.Name < out[j].pod.Name })
	for _, rp := range out {
		if rp.pod.Spec.NodeName != sys.ControlPlane.RealNode().Name() {
			t.Fatalf("runner pod %s runs on %q, not on the real node", rp.pod.Name, rp.pod.Spec.NodeName)
		}
	}
	return out
}

// statusOf returns the status of a container (or init container) of pod.
func statusOf(t *testing.T, pod *corev1.Pod, name string) corev1.ContainerStatus {
	t.Helper()
	for _, s := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("pod %s has no status for container %s", pod.Name, name)
	return corev1.ContainerStatus{}
}

// waitStep waits until a step is completed and returns it.
func waitStep(t *testing.T, uuid string, timeout time.Duration) bbsim.StepView {
	t.Helper()
	var step bbsim.StepView
	eventually(t, timeout, "step "+uuid+" to complete", func() (bool, string) {
		var err error
		if step, err = sys.BBSim.Step(uuid); err != nil {
			return false, err.Error()
		}
		return step.Status == "completed", fmt.Sprintf("%s on runner %q", step.Status, step.Runner)
	})
	return step
}

// waitStepRunning waits until a step runs and returns the runner that took it.
func waitStepRunning(t *testing.T, uuid string) string {
	t.Helper()
	var runner string
	eventually(t, time.Minute, "step "+uuid+" to run", func() (bool, string) {
		step, err := sys.BBSim.Step(uuid)
		if err != nil {
			return false, err.Error()
		}
		runner = step.Runner
		return step.Status == "running", step.Status
	})
	return runner
}

// checkSucceeded fails unless the step succeeded with exit code 0.
func checkSucceeded(t *testing.T, step bbsim.StepView) {
	t.Helper()
	if step.Result != "SUCCESSFUL" || step.ExitCode == nil || *step.ExitCode != 0 {
		code := "none"
		if step.ExitCode != nil {
			code = fmt.Sprint(*step.ExitCode)
		}
		t.Fatalf("step %s: result %s (%s), exit code %s, log:\n%s", step.UUID, step.Result, step.Reason, code, step.Log)
	}
}

// checkSidecarOrder checks on the API what the kubelet reports of a running runner pod: dind
// is a native sidecar (an init container that keeps running) that started, and passed its
// startup probe, before the runner container started.
func checkSidecarOrder(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	var sidecar *corev1.Container
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == runnerpod.DockerContainerName {
			sidecar = &pod.Spec.InitContainers[i]
		}
	}
	if sidecar == nil || sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("pod %s: dind is not an init container with restartPolicy Always", pod.Name)
	}
	docker, runner := statusOf(t, pod, runnerpod.DockerContainerName), statusOf(t, pod, runnerpod.RunnerContainerName)
	if docker.State.Running == nil || docker.Started == nil || !*docker.Started || docker.RestartCount != 0 {
		t.Fatalf("pod %s: dind sidecar not running and started once: %+v", pod.Name, docker)
	}
	if runner.State.Running == nil || runner.RestartCount != 0 {
		t.Fatalf("pod %s: runner container not running: %+v", pod.Name, runner)
	}
	dockerStart, runnerStart := docker.State.Running.StartedAt, runner.State.Running.StartedAt
	if runnerStart.Before(&dockerStart) {
		t.Fatalf("pod %s: runner started at %s, before dind at %s", pod.Name, runnerStart, dockerStart)
	}
	t.Logf("pod %s: dind sidecar started %s, runner %s", pod.Name, dockerStart.Format(time.RFC3339), runnerStart.Format(time.RFC3339))
}

// getPod reads a pod again.
func getPod(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	fresh := &corev1.Pod{}
	if err := sys.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), fresh); err != nil {
		t.Fatal(err)
	}
	return fresh
}

// podGone reports whether pod is no longer in the API.
func podGone(t *testing.T, pod *corev1.Pod) bool {
	t.Helper()
	err := sys.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), &corev1.Pod{})
	return client.IgnoreNotFound(err) == nil && err != nil
}
