package realnode

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
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
const onlineTimeout = time.Minute

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
		keepLogs(t, rp.pod)
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

// dumpOnFailure logs, when the test fails, what the operator and bbsim show of the namespace's
// pools, runners and pods.
func dumpOnFailure(t *testing.T, namespace string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx := context.Background()
		pools := &v1alpha1.RunnerPoolList{}
		_ = sys.Client.List(ctx, pools, client.InNamespace(namespace))
		for _, p := range pools.Items {
			t.Logf("pool %s: %+v", p.Name, p.Status)
		}
		runners := &v1alpha1.RunnerList{}
		_ = sys.Client.List(ctx, runners, client.InNamespace(namespace))
		for _, r := range runners.Items {
			t.Logf("runner %s: spec %+v status %+v", r.Name, r.Spec, r.Status)
		}
		pods := &corev1.PodList{}
		_ = sys.Client.List(ctx, pods, client.InNamespace(namespace))
		for _, p := range pods.Items {
			t.Logf("pod %s: deleting %v phase %s", p.Name, p.DeletionTimestamp != nil, p.Status.Phase)
			for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
				if last := s.LastTerminationState.Terminated; last != nil {
					t.Logf("pod %s, container %s: last ended with exit code %d: %s", p.Name, s.Name, last.ExitCode, last.Message)
				}
			}
		}
		for _, r := range sys.BBSim.State().Runners {
			t.Logf("bbsim runner %+v", r)
		}
		events := &corev1.EventList{}
		_ = sys.Client.List(ctx, events, client.InNamespace(namespace))
		for _, e := range events.Items {
			t.Logf("event %s %s %s: %s", e.InvolvedObject.Name, e.Type, e.Reason, e.Message)
		}
	})
}

// keepLogs copies the logs of pod's containers from the node while the pod lives and writes
// them to the test's log if the test fails: a runner pod is gone by the time a failure is
// examined.
func keepLogs(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	node := sys.ControlPlane.RealNode()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	logs := map[string][]byte{}
	done := make(chan struct{})
	copyLogs := func() {
		for _, name := range []string{runnerpod.DockerContainerName, runnerpod.RunnerContainerName} {
			if data, err := node.ContainerLog(pod.Namespace, pod.Name, pod.UID, name); err == nil {
				mu.Lock()
				logs[name] = data
				mu.Unlock()
			}
		}
	}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			copyLogs()
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			for name, data := range logs {
				t.Logf("pod %s, container %s:\n%s", pod.Name, name, data)
			}
		}
	})
}
