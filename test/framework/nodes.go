package framework

import (
	"context"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// NodeOption adjusts a fake node before it is created.
type NodeOption func(*corev1.Node)

// WithNodeLabels adds labels to the fake nodes, replacing defaults with the same
// key (kubernetes.io/arch=arm64 makes arm64 nodes).
func WithNodeLabels(labels map[string]string) NodeOption {
	return func(node *corev1.Node) {
		maps.Copy(node.Labels, labels)
		if arch, ok := labels[corev1.LabelArchStable]; ok {
			node.Status.NodeInfo.Architecture = arch
		}
	}
}

// CreateNodes creates n fake nodes with the given CPU and memory (capacity and
// allocatable alike, DefaultPodsPerNode pods) and waits until each is Ready and
// free of the not-ready taint, i.e. schedulable. The nodes carry no taint of their
// own, so pods need no toleration. It returns the node names.
func (cp *ControlPlane) CreateNodes(ctx context.Context, n int, cpu, memory resource.Quantity, opts ...NodeOption) ([]string, error) {
	names := make([]string, 0, n)
	for range n {
		node := fakeNode(fmt.Sprintf("kwok-node-%d", cp.nodeSeq.Add(1)), cpu, memory)
		for _, opt := range opts {
			opt(node)
		}
		if _, err := cp.clientset.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return names, fmt.Errorf("create node %s: %w", node.Name, err)
		}
		names = append(names, node.Name)
	}
	for _, name := range names {
		err := cp.waitFor(ctx, "node "+name+" to be schedulable", func(ctx context.Context) (bool, error) {
			node, err := cp.clientset.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, fmt.Errorf("get node %s: %w", name, err)
			}
			return nodeSchedulable(node), nil
		})
		if err != nil {
			return names, err
		}
	}
	return names, nil
}

// DeleteNode removes a fake node as if its machine vanished: the pods bound to it
// are deleted at once (in a real cluster the pod garbage collector would do it
// some time later), then the node.
func (cp *ControlPlane) DeleteNode(ctx context.Context, name string) error {
	pods, err := cp.clientset.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", name).String(),
	})
	if err != nil {
		return fmt.Errorf("list pods on node %s: %w", name, err)
	}
	immediately := metav1.DeleteOptions{GracePeriodSeconds: new(int64)}
	for _, pod := range pods.Items {
		err := cp.clientset.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, immediately)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s/%s on node %s: %w", pod.Namespace, pod.Name, name, err)
		}
	}
	if err := cp.clientset.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete node %s: %w", name, err)
	}
	return nil
}

func fakeNode(name string, cpu, memory resource.Quantity) *corev1.Node {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    cpu,
		corev1.ResourceMemory: memory,
		corev1.ResourcePods:   *resource.NewQuantity(DefaultPodsPerNode, resource.DecimalSI),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{FakeNodeAnnotation: FakeNodeAnnotationValue},
			Labels: map[string]string{
				corev1.LabelArchStable: "amd64",
				corev1.LabelOSStable:   "linux",
				corev1.LabelHostname:   name,
				"type":                 "kwok",
			},
		},
		// The API server keeps a node's status on create, as a registering
		// kubelet's; kwok's node-initialize stage keeps these resources.
		Status: corev1.NodeStatus{
			Capacity:    resources,
			Allocatable: resources.DeepCopy(),
			NodeInfo:    corev1.NodeSystemInfo{Architecture: "amd64", OperatingSystem: "linux"},
		},
	}
}

func nodeSchedulable(node *corev1.Node) bool {
	ready := false
	for _, condition := range node.Status.Conditions {
		if condition.Type == corev1.NodeReady {
			ready = condition.Status == corev1.ConditionTrue
		}
	}
	for _, taint := range node.Spec.Taints {
		if taint.Key == corev1.TaintNodeNotReady || taint.Key == corev1.TaintNodeUnreachable {
			return false
		}
	}
	return ready && !node.Spec.Unschedulable
}
