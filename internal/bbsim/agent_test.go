package bbsim

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

const podNamespace = "ci"

// Nodes of the fake cluster: one kwok plays, one that runs real containers.
const (
	kwokNode = "kwok-node"
	realNode = "real-node"
)

// agentEnv is a simulator watching a fake cluster.
type agentEnv struct {
	*testEnv
	cs  kubernetes.Interface
	ctx context.Context
}

func newAgentEnv(t *testing.T) *agentEnv {
	t.Helper()
	e := newEnv(t, Options{ConnectDelay: time.Second})
	cs := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: kwokNode, Annotations: map[string]string{kwokNodeAnnotation: kwokNodeValue}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: realNode}},
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.sim.WatchPods(ctx, cs, podNamespace) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchPods: %v", err)
		}
	})
	return &agentEnv{testEnv: e, cs: cs, ctx: ctx}
}

// runnerSecret stores a runner's OAuth client as the operator would.
func (a *agentEnv) runnerSecret(name, clientID, clientSecret string) {
	a.t.Helper()
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: podNamespace},
		Data:       map[string][]byte{"client-id": []byte(clientID), "client-secret": []byte(clientSecret)},
	}
	if _, err := a.cs.CoreV1().Secrets(podNamespace).Create(a.ctx, secret, metav1.CreateOptions{}); err != nil {
		a.t.Fatal(err)
	}
}

func fromSecret(name, key string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key,
	}}
}

// startPod creates a runner pod shaped like the operator's (dind as a native
// sidecar, runner first among the containers) on the kwok node and marks it Running.
func (a *agentEnv) startPod(name, runnerUUID, secretName string) {
	a.t.Helper()
	a.startPodOn(kwokNode, name, runnerUUID, secretName)
}

func (a *agentEnv) startPodOn(node, name, runnerUUID, secretName string) {
	a.t.Helper()
	always := corev1.ContainerRestartPolicyAlways
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: podNamespace},
		Spec: corev1.PodSpec{
			NodeName:       node,
			InitContainers: []corev1.Container{{Name: "docker", Image: "docker:dind", RestartPolicy: &always}},
			Containers: []corev1.Container{{
				Name: "runner", Image: "runner:1",
				Env: []corev1.EnvVar{
					{Name: envAccountUUID, Value: DefaultWorkspaceUUID},
					{Name: envRunnerUUID, Value: runnerUUID},
					{Name: envClientID, ValueFrom: fromSecret(secretName, "client-id")},
					{Name: envClientSecret, ValueFrom: fromSecret(secretName, "client-secret")},
				},
			}},
		},
	}
	created, err := a.cs.CoreV1().Pods(podNamespace).Create(a.ctx, pod, metav1.CreateOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	a.setPhase(created, corev1.PodRunning)
}

func (a *agentEnv) setPhase(pod *corev1.Pod, phase corev1.PodPhase) {
	a.t.Helper()
	pod = pod.DeepCopy()
	pod.Status.Phase = phase
	state := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	if phase != corev1.PodRunning {
		state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "runner", Ready: phase == corev1.PodRunning, State: state}}
	if _, err := a.cs.CoreV1().Pods(podNamespace).UpdateStatus(a.ctx, pod, metav1.UpdateOptions{}); err != nil {
		a.t.Fatal(err)
	}
}

func (a *agentEnv) pod(name string) *corev1.Pod {
	a.t.Helper()
	pod, err := a.cs.CoreV1().Pods(podNamespace).Get(a.ctx, name, metav1.GetOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	return pod
}

// waitForAgent waits until the watcher has seen the pod running.
func (a *agentEnv) waitForAgent(podName string) {
	a.t.Helper()
	eventually(a.t, "agent for pod "+podName, func() bool {
		for _, ag := range a.sim.State().Agents {
			if ag.Pod == podNamespace+"/"+podName {
				return true
			}
		}
		return false
	})
}

func (a *agentEnv) agent(podName string) AgentView {
	a.t.Helper()
	for _, ag := range a.sim.State().Agents {
		if ag.Pod == podNamespace+"/"+podName {
			return ag
		}
	}
	a.t.Fatalf("no agent for pod %s", podName)
	return AgentView{}
}

func TestRunningPodConnectsAfterTheDelayAndGoesOfflineWhenItEnds(t *testing.T) {
	endings := map[string]func(a *agentEnv){
		"pod deleted": func(a *agentEnv) {
			if err := a.cs.CoreV1().Pods(podNamespace).Delete(a.ctx, "runner-a", metav1.DeleteOptions{}); err != nil {
				a.t.Fatal(err)
			}
		},
		"pod succeeded": func(a *agentEnv) { a.setPhase(a.pod("runner-a"), corev1.PodSucceeded) },
		"pod failed":    func(a *agentEnv) { a.setPhase(a.pod("runner-a"), corev1.PodFailed) },
	}
	for name, end := range endings {
		t.Run(name, func(t *testing.T) {
			a := newAgentEnv(t)
			r, err := a.sim.CreateRunner(CreateRunnerRequest{Name: "a", Labels: []string{"self.hosted", "linux"}})
			if err != nil {
				t.Fatal(err)
			}
			a.runnerSecret("runner-a", r.ClientID, r.ClientSecret)
			a.startPod("runner-a", r.UUID, "runner-a")
			a.waitForAgent("runner-a")

			a.advance(time.Second - time.Millisecond)
			if got := a.runner(r.UUID).Status; got != StatusUnregistered {
				t.Fatalf("connected before the delay: %s", got)
			}
			a.advance(time.Millisecond)
			if got := a.runner(r.UUID); got.Status != StatusOnline || got.AgentPod != podNamespace+"/runner-a" {
				t.Fatalf("after the delay: %+v", got)
			}

			ids := a.enqueue(EnqueueRequest{Count: 1, Duration: time.Hour})
			end(a)
			eventually(t, "runner offline", func() bool { return a.runner(r.UUID).Status == StatusOffline })
			if st := a.step(ids[0]); st.Result != ResultError {
				t.Errorf("step on a vanished runner: %+v", st)
			}
		})
	}
}

func TestPodWithWrongCredentialsStaysUnregistered(t *testing.T) {
	a := newAgentEnv(t)
	r, err := a.sim.CreateRunner(CreateRunnerRequest{Name: "a", Labels: []string{"self.hosted", "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	a.runnerSecret("runner-a", r.ClientID, "not-the-secret")
	a.startPod("runner-a", r.UUID, "runner-a")
	a.waitForAgent("runner-a")
	a.advance(time.Second)
	got := a.runner(r.UUID)
	if got.Status != StatusUnregistered || !strings.Contains(got.AgentIssue, "invalid OAuth client credentials") {
		t.Fatalf("runner with a wrong secret: %+v", got)
	}
}

func TestPodWithMissingSecretConnectsOnceTheSecretExists(t *testing.T) {
	a := newAgentEnv(t)
	r, err := a.sim.CreateRunner(CreateRunnerRequest{Name: "a", Labels: []string{"self.hosted", "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	a.startPod("runner-a", r.UUID, "runner-a")
	a.waitForAgent("runner-a")
	a.advance(time.Second)
	if got := a.runner(r.UUID); got.Status != StatusUnregistered || !strings.Contains(got.AgentIssue, "secret") {
		t.Fatalf("runner without its secret: %+v", got)
	}

	a.runnerSecret("runner-a", r.ClientID, r.ClientSecret)
	// Any pod event (here a status touch) makes the watcher read the secret again.
	pod := a.pod("runner-a")
	pod.Status.Message = "touched"
	if _, err := a.cs.CoreV1().Pods(podNamespace).UpdateStatus(a.ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "credentials re-read", func() bool { return a.agent("runner-a").Issue == "" && !a.agent("runner-a").Connected })
	a.advance(time.Second)
	if got := a.runner(r.UUID); got.Status != StatusOnline {
		t.Fatalf("runner after its secret appeared: %+v", got)
	}
}

func TestSecondPodForTheSameRunnerDoesNotConnect(t *testing.T) {
	a := newAgentEnv(t)
	r, err := a.sim.CreateRunner(CreateRunnerRequest{Name: "a", Labels: []string{"self.hosted", "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	a.runnerSecret("runner-a", r.ClientID, r.ClientSecret)
	a.startPod("first", r.UUID, "runner-a")
	a.waitForAgent("first")
	a.advance(time.Second)
	a.startPod("second", r.UUID, "runner-a")
	a.waitForAgent("second")
	a.advance(time.Second)

	if got := a.runner(r.UUID); got.Status != StatusOnline || got.AgentPod != podNamespace+"/first" {
		t.Fatalf("runner: %+v", got)
	}
	second := a.agent("second")
	if second.Connected || !strings.Contains(second.Issue, "is already in use") {
		t.Fatalf("second pod: %+v", second)
	}
}

func TestPodsWithoutRunnerEnvAreIgnored(t *testing.T) {
	a := newAgentEnv(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: podNamespace},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	}
	created, err := a.cs.CoreV1().Pods(podNamespace).Create(a.ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.setPhase(created, corev1.PodRunning)
	// A runner pod created afterwards is seen, so the first event was processed too.
	r, err := a.sim.CreateRunner(CreateRunnerRequest{Name: "a", Labels: []string{"self.hosted", "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	a.runnerSecret("runner-a", r.ClientID, r.ClientSecret)
	a.startPod("runner-a", r.UUID, "runner-a")
	a.waitForAgent("runner-a")
	if agents := a.sim.State().Agents; len(agents) != 1 {
		t.Fatalf("agents: %+v", agents)
	}
}

func TestPodsOnRealNodesAreLeftToTheirAgents(t *testing.T) {
	a := newAgentEnv(t)
	real, err := a.sim.CreateRunner(CreateRunnerRequest{Name: "real", Labels: []string{"self.hosted", "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	a.runnerSecret("runner-real", real.ClientID, real.ClientSecret)
	a.startPodOn(realNode, "runner-real", real.UUID, "runner-real")
	// A pod on the kwok node, created afterwards, is seen: the first was processed too.
	emulated, err := a.sim.CreateRunner(CreateRunnerRequest{Name: "emulated", Labels: []string{"self.hosted", "linux"}})
	if err != nil {
		t.Fatal(err)
	}
	a.runnerSecret("runner-emulated", emulated.ClientID, emulated.ClientSecret)
	a.startPod("runner-emulated", emulated.UUID, "runner-emulated")
	a.waitForAgent("runner-emulated")
	a.advance(time.Second)

	if agents := a.sim.State().Agents; len(agents) != 1 {
		t.Fatalf("agents: %+v", agents)
	}
	if got := a.runner(real.UUID); got.Status != StatusUnregistered {
		t.Fatalf("runner on the real node: %+v", got)
	}
	if got := a.runner(emulated.UUID); got.Status != StatusOnline {
		t.Fatalf("runner on the kwok node: %+v", got)
	}
}
