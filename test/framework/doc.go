// Package framework starts a real, local Kubernetes control plane for integration
// tests, end-to-end tests and the demo: etcd and kube-apiserver (through
// controller-runtime's envtest), kube-controller-manager running only the garbage
// collector and the node lifecycle controller, kube-scheduler, and kwok playing the
// kubelet of fake nodes.
//
// Fakes of the client would hide the behaviour the operator depends on: owner
// references that the garbage collector follows, pods that stay Pending because no
// node has room, pods that only become Running once scheduled, deletions that take
// a moment. Here those come from the real components, built from the versions
// pinned in hack/tools/go.mod (make tools).
//
// Options.RealNode adds one node run by a real kubelet with containerd, runc and a CNI bridge
// of its own, where pods really run (docs/adr/0014-real-node.md).
//
// Every process binds 127.0.0.1 only (a real node's kubelet also its bridge's address),
// runs in its own process group, and is stopped by ControlPlane.Stop. Processes left
// behind by a test binary that was killed are reaped by the next Start.
package framework
