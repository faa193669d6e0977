//go:build !linux

package framework

import (
	"context"
	"fmt"
	"io"
	"runtime"

	"k8s.io/apimachinery/pkg/types"
)

// A real node needs Linux: containerd, runc, cgroups and network namespaces.

func checkRealNodeHost(string) (string, error) {
	return "", fmt.Errorf("%w: a kubelet and containerd need Linux, not %s", ErrRealNodeUnavailable, runtime.GOOS)
}

func lockRealNode(context.Context) (io.Closer, error) {
	_, err := checkRealNodeHost("")
	return nil, err
}

func (cp *ControlPlane) startRealNode(context.Context, string, RealNodeOptions) (*RealNode, error) {
	_, err := checkRealNodeHost("")
	return nil, err
}

// LoadImages imports OCI image archives into the node's containerd.
func (n *RealNode) LoadImages(context.Context, ...string) error {
	_, err := checkRealNodeHost("")
	return err
}

// Leftovers lists what is left on the node of the given pods.
func (n *RealNode) Leftovers(...types.UID) []string { return nil }

// Stop ends the node.
func (n *RealNode) Stop() error { return nil }

// ContainerLog returns what the kubelet has logged of a container.
func (n *RealNode) ContainerLog(string, string, types.UID, string) ([]byte, error) {
	_, err := checkRealNodeHost("")
	return nil, err
}
