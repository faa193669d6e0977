package framework

import (
	"errors"
	"io"
	"net"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// A real node is one node of the control plane run by a real kubelet with containerd, runc and
// a CNI bridge, beside the kwok nodes (docs/adr/0014-real-node.md).
const (
	// DefaultRealNodeName names the real node unless told otherwise.
	DefaultRealNodeName = "real-node"
	// RealNodeLabel is on the real node, so pods can select it.
	RealNodeLabel      = "runnerpool.dev/test-node"
	RealNodeLabelValue = "real"
	// RealNodeTaint keeps pods off the real node unless they tolerate it: a pod there really
	// runs, and its images must have been loaded (LoadImages).
	RealNodeTaint = "runnerpool.dev/real-node"
)

// ErrRealNodeUnavailable is returned (wrapped) when this machine cannot run a real node: not
// Linux, not root, or a program missing. Tests fail with it; they never skip.
var ErrRealNodeUnavailable = errors.New("cannot run a real node here")

// RealNodeOptions configure the real node Start runs when Options.RealNode is set.
type RealNodeOptions struct {
	// Name is the node's name; empty means DefaultRealNodeName.
	Name string
	// PauseImage is the reference of the pod sandbox image and PauseArchive the OCI archive
	// it is loaded from before the kubelet starts. Both are required: nothing is pulled.
	PauseImage   string
	PauseArchive string
	// Images are more OCI archives loaded before the kubelet starts; LoadImages loads others
	// later.
	Images []string
}

// RealNode is the running real node: a kubelet, its private containerd and a CNI bridge of
// its own. Pods on it reach the API server at the kubernetes Service's ClusterIP and the
// test's own servers at IP (the host end of the bridge, also the node's address).
type RealNode struct {
	name       string
	cp         *ControlPlane
	dir        string
	state      realNodeState
	containerd *component
	kubelet    *component
	lock       io.Closer

	stopOnce sync.Once
	stopErr  error
}

// realNodeState is what a real node changes on the machine outside its directory, written
// there before each change, so that Stop, or the next Start after a killed test, undoes it.
type realNodeState struct {
	Bridge     string `json:"bridge"`
	Gateway    string `json:"gateway"`
	Subnet     string `json:"subnet"`
	Network    string `json:"network"`
	CgroupRoot string `json:"cgroupRoot"`
	// NATRule is the rule's iptables arguments after the table and the operation.
	NATRule []string `json:"natRule,omitempty"`
	// Sysctls are the kernel settings the kubelet changes, as they were before it;
	// KubeletSet are the values it gives them.
	Sysctls          map[string]string `json:"sysctls,omitempty"`
	KubeletSet       map[string]string `json:"kubeletSet,omitempty"`
	KubeletRoot      string            `json:"kubeletRoot"`
	ContainerdSocket string            `json:"containerdSocket"`
}

// Name is the node's name.
func (n *RealNode) Name() string { return n.name }

// IP is the node's address and the host end of its bridge: a server a pod must reach listens
// there.
func (n *RealNode) IP() net.IP { return net.ParseIP(n.state.Gateway) }

// Toleration lets a pod onto the real node.
func (n *RealNode) Toleration() corev1.Toleration {
	return corev1.Toleration{Key: RealNodeTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
}

// RealNode is the control plane's real node, nil unless Options.RealNode was set.
func (cp *ControlPlane) RealNode() *RealNode { return cp.realNode }
