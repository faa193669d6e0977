package framework_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/runnerpool/runnerpool-operator/test/framework"
)

const (
	eventually   = 30 * time.Second
	pollInterval = 50 * time.Millisecond
)

// One control plane serves every case: starting it is the expensive part.
func TestControlPlane(t *testing.T) {
	cp := framework.StartForTest(t, framework.Options{Nodes: -1})
	clientset, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatalf("create clientset: %v", err)
	}
	ctx := t.Context()
	nodeNames, err := cp.CreateNodes(ctx, 2, resource.MustParse("4"), resource.MustParse("8Gi"))
	if err != nil {
		t.Fatalf("create nodes: %v", err)
	}

	t.Run("fake nodes are ready, sized and untainted", func(t *testing.T) {
		for _, name := range nodeNames {
			node, err := clientset.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get node %s: %v", name, err)
			}
			if len(node.Spec.Taints) != 0 {
				t.Errorf("node %s taints = %v, want none", name, node.Spec.Taints)
			}
			if got := node.Status.Allocatable.Cpu(); got.Cmp(resource.MustParse("4")) != 0 {
				t.Errorf("node %s allocatable cpu = %s, want 4", name, got)
			}
			if got := node.Labels[corev1.LabelArchStable]; got != "amd64" {
				t.Errorf("node %s arch label = %q, want amd64", name, got)
			}
		}
	})

	t.Run("a pod with a native sidecar runs, is ready, and can be deleted", func(t *testing.T) {
		pod := createPod(t, clientset, "runner", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")})
		running := waitForPod(t, clientset, pod.Name, func(pod *corev1.Pod) bool {
			return pod.Status.Phase == corev1.PodRunning && podReady(pod)
		})
		if !slices.Contains(nodeNames, running.Spec.NodeName) {
			t.Errorf("pod scheduled to %q, want one of %v", running.Spec.NodeName, nodeNames)
		}
		for _, status := range append(running.Status.InitContainerStatuses, running.Status.ContainerStatuses...) {
			if !status.Ready || status.State.Running == nil || status.Started == nil || !*status.Started {
				t.Errorf("container %s: ready=%v running=%v started=%v, want ready, running and started",
					status.Name, status.Ready, status.State.Running != nil, status.Started)
			}
		}
		if n := len(running.Status.InitContainerStatuses) + len(running.Status.ContainerStatuses); n != 2 {
			t.Errorf("got %d container statuses, want 2 (sidecar and runner)", n)
		}

		// Through kubectl, as a user would, which also proves the kubeconfig file.
		kubectl := exec.CommandContext(ctx, filepath.Join(binDir(t), "kubectl"), "--kubeconfig", cp.KubeconfigPath,
			"delete", "pod", pod.Name, "--namespace", pod.Namespace, "--wait=true", "--timeout=30s")
		if out, err := kubectl.CombinedOutput(); err != nil {
			t.Fatalf("kubectl delete pod: %v\n%s", err, out)
		}
		if _, err := clientset.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("get deleted pod: err = %v, want not found", err)
		}
	})

	t.Run("a pod larger than any node stays pending", func(t *testing.T) {
		pod := createPod(t, clientset, "oversized", corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("9Gi")})
		unschedulable := waitForPod(t, clientset, pod.Name, func(pod *corev1.Pod) bool {
			for _, condition := range pod.Status.Conditions {
				if condition.Type == corev1.PodScheduled && condition.Reason == corev1.PodReasonUnschedulable {
					return true
				}
			}
			return false
		})
		if unschedulable.Status.Phase != corev1.PodPending || unschedulable.Spec.NodeName != "" {
			t.Errorf("oversized pod phase=%s node=%q, want Pending and unbound", unschedulable.Status.Phase, unschedulable.Spec.NodeName)
		}
	})

	t.Run("deleting an owner deletes its dependents", func(t *testing.T) {
		configMaps := clientset.CoreV1().ConfigMaps(metav1.NamespaceDefault)
		owner, err := configMaps.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create owner: %v", err)
		}
		_, err = configMaps.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: "dependent",
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
			}},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create dependent: %v", err)
		}
		if err := configMaps.Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete owner: %v", err)
		}
		err = wait.PollUntilContextTimeout(ctx, pollInterval, eventually, true, func(ctx context.Context) (bool, error) {
			_, err := configMaps.Get(ctx, "dependent", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Fatalf("dependent still exists after its owner was deleted: %v", err)
		}
	})

	t.Run("deleting a node takes its pods with it", func(t *testing.T) {
		extra, err := cp.CreateNodes(ctx, 1, resource.MustParse("2"), resource.MustParse("2Gi"),
			framework.WithNodeLabels(map[string]string{"pool": "doomed"}))
		if err != nil {
			t.Fatalf("create node: %v", err)
		}
		pod := podSpec("on-doomed-node", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")})
		pod.Spec.NodeSelector = map[string]string{"pool": "doomed"}
		if _, err := clientset.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod: %v", err)
		}
		waitForPod(t, clientset, pod.Name, func(pod *corev1.Pod) bool { return pod.Status.Phase == corev1.PodRunning })
		if err := cp.DeleteNode(ctx, extra[0]); err != nil {
			t.Fatalf("delete node: %v", err)
		}
		if _, err := clientset.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("pod on deleted node: err = %v, want not found", err)
		}
	})

	if err := cp.CheckHealth(); err != nil {
		t.Errorf("control plane program died: %v", err)
	}
}

func TestStopLeavesNothingRunning(t *testing.T) {
	cp := framework.StartForTest(t, framework.Options{Nodes: -1})
	kubeconfig := cp.KubeconfigPath
	if err := cp.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// Every program was started with a path inside the work directory, which is
	// also where the kubeconfig lives.
	if leftovers := processesMentioning(t, filepath.Dir(kubeconfig)+"/"); len(leftovers) > 0 {
		t.Errorf("processes still running after Stop: %v", leftovers)
	}
}

// processesMentioning lists the command lines of processes that contain needle.
func processesMentioning(t *testing.T, needle string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc to inspect processes: %v", err)
	}
	var found []string
	for _, entry := range entries {
		if _, err := strconv.Atoi(entry.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), needle) {
			found = append(found, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

func podSpec(name string, requests corev1.ResourceList) *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{
				Name: "docker", Image: "docker:dind", RestartPolicy: &always,
			}},
			Containers: []corev1.Container{{
				Name: "runner", Image: "runner:latest",
				Resources: corev1.ResourceRequirements{Requests: requests},
			}},
		},
	}
}

func createPod(t *testing.T, clientset kubernetes.Interface, name string, requests corev1.ResourceList) *corev1.Pod {
	t.Helper()
	pod, err := clientset.CoreV1().Pods(metav1.NamespaceDefault).Create(t.Context(), podSpec(name, requests), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return pod
}

func waitForPod(t *testing.T, clientset kubernetes.Interface, name string, condition func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(t.Context(), pollInterval, eventually, true, func(ctx context.Context) (bool, error) {
		pod, err := clientset.CoreV1().Pods(metav1.NamespaceDefault).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = pod
		return condition(pod), nil
	})
	if err != nil {
		t.Fatalf("wait for pod %s: %v; last seen status: %s", name, err, describe(last))
	}
	return last
}

func podReady(pod *corev1.Pod) bool {
	for _, condition := range pod.Status.Conditions {
		if condition.Type == corev1.PodReady {
			return condition.Status == corev1.ConditionTrue
		}
	}
	return false
}

func describe(pod *corev1.Pod) string {
	if pod == nil {
		return "none"
	}
	var conditions []string
	for _, condition := range pod.Status.Conditions {
		conditions = append(conditions, fmt.Sprintf("%s=%s(%s)", condition.Type, condition.Status, condition.Reason))
	}
	return fmt.Sprintf("phase=%s node=%q conditions=[%s]", pod.Status.Phase, pod.Spec.NodeName, strings.Join(conditions, " "))
}

func binDir(t *testing.T) string {
	t.Helper()
	dir, err := framework.ResolveBinDir("")
	if err != nil {
		t.Fatalf("resolve bin directory: %v", err)
	}
	return dir
}
