//go:build tools

// Package tools pins the binaries the tests and the local demo run: a real
// control plane (kube-apiserver, kube-scheduler, kube-controller-manager,
// kubectl, etcd), kwok for fake nodes, and the code generators.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
