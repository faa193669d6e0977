package framework_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/runnerpool/runnerpool-operator/test/framework"
	"github.com/runnerpool/runnerpool-operator/test/images"
)

// The real node registers Ready with its label and taint, runs a pod whose image was loaded
// (a real container, an address on the node's bridge, its ServiceAccount token and
// kube-root-ca.crt mounted), and a deleted pod leaves nothing on it.
func TestRealNodeRunsPods(t *testing.T) {
	bin := filepath.Join("..", "..", "bin")
	if err := images.Pause.Check(bin); err != nil {
		t.Fatal(err)
	}
	cp := framework.StartForTest(t, framework.Options{Nodes: -1, RealNode: &framework.RealNodeOptions{
		PauseImage:   images.Pause.Ref,
		PauseArchive: images.Pause.Archive(bin),
	}})
	node := cp.RealNode()
	ctx := t.Context()
	clientset, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	n, err := clientset.CoreV1().Nodes().Get(ctx, node.Name(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels[framework.RealNodeLabel] != framework.RealNodeLabelValue {
		t.Errorf("node labels %v lack %s=%s", n.Labels, framework.RealNodeLabel, framework.RealNodeLabelValue)
	}
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != framework.RealNodeTaint {
		t.Errorf("node taints %v, want only %s", n.Spec.Taints, framework.RealNodeTaint)
	}
	if len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Address != node.IP().String() {
		t.Errorf("node addresses %v, want %s", n.Status.Addresses, node.IP())
	}

	// The pause image is the one image every node has: a pod of it just sleeps.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: metav1.NamespaceDefault},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{framework.RealNodeLabel: framework.RealNodeLabelValue},
			Tolerations:  []corev1.Toleration{node.Toleration()},
			Containers: []corev1.Container{{
				Name: "sleep", Image: images.Pause.Ref, ImagePullPolicy: corev1.PullNever,
			}},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
	framework.Eventually(t, 30*time.Second, "the default ServiceAccount", func() (bool, string) {
		_, err := clientset.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	created, err := clientset.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 2*time.Minute, "the pod running on the real node", func() (bool, string) {
		p, err := clientset.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		running := p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 &&
			strings.HasPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
		return running && p.Spec.NodeName == node.Name() && p.Status.PodIP != "",
			fmt.Sprintf("phase %s on %q, IP %q, statuses %+v", p.Status.Phase, p.Spec.NodeName, p.Status.PodIP, p.Status.ContainerStatuses)
	})
	if left := node.Leftovers(created.UID); len(left) == 0 {
		t.Error("a running pod shows nothing on the node")
	}
	if err := clientset.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	node.ExpectNothingLeft(t, time.Minute, created.UID)
}
