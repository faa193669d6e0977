# Tools the tests and the demo run, built from pinned versions and cached per
# machine (see hack/tools/cached-install.sh and docs/adr/0004-test-control-plane.md).
# Included by the Makefile, which defines GO and BIN.

TOOLS_MODULE := $(CURDIR)/hack/tools
CACHED_INSTALL := $(CURDIR)/hack/tools/cached-install.sh

# Pinned by hack/tools/go.mod: the control plane, kwok and controller-gen.
CONTROL_PLANE_PACKAGES := \
	go.etcd.io/etcd/server/v3 \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubectl \
	sigs.k8s.io/kwok/cmd/kwok \
	sigs.k8s.io/controller-tools/cmd/controller-gen

# Kubernetes programs report the version they are built from (kubectl version,
# /version, Helm's kubeVersion checks), as the upstream release build does; a
# plain `go install` would call them v0.0.0-master. Read from hack/tools/go.mod
# when the rule runs, so `make help` does not pay for it.
KUBE_VERSION = $(shell awk '$$1 == "k8s.io/kubernetes" { print $$2 }' $(TOOLS_MODULE)/go.mod)
KUBE_VERSION_LDFLAGS = $(foreach pkg,k8s.io/component-base/version k8s.io/client-go/pkg/version, \
	-X $(pkg).gitVersion=$(KUBE_VERSION) \
	-X $(pkg).gitMajor=$(word 1,$(subst ., ,$(patsubst v%,%,$(KUBE_VERSION)))) \
	-X $(pkg).gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION))) \
	-X $(pkg).gitTreeState=clean)

# Used later by packaging and the chart tests; pinned here.
HELM_VERSION ?= v3.22.0
# v5.8.3 needs go 1.27; v5.8.2 is the newest that builds with go 1.26.
KUSTOMIZE_VERSION ?= v5.8.2
GOTESTSUM_VERSION ?= v1.13.0

.PHONY: tools
tools: ## Put the control plane, kwok and controller-gen into bin/ (built once per machine, then cached).
	@GO=$(GO) $(CACHED_INSTALL) -n control-plane -b $(BIN) -m $(TOOLS_MODULE) -r server:etcd -- \
		-ldflags "$(strip $(KUBE_VERSION_LDFLAGS))" $(CONTROL_PLANE_PACKAGES)

# The real node's kubelet (docs/adr/0014-real-node.md): the same pinned k8s.io/kubernetes and
# version ldflags as the control plane, in a cache entry of its own so that adding it did not
# invalidate the control plane's.
KUBELET_PACKAGE := k8s.io/kubernetes/cmd/kubelet

.PHONY: tools-node
tools-node: ## Put the kubelet of the real test node into bin/ (built once per machine, then cached).
	@GO=$(GO) $(CACHED_INSTALL) -n kubelet -b $(BIN) -m $(TOOLS_MODULE) -- \
		-ldflags "$(strip $(KUBE_VERSION_LDFLAGS))" $(KUBELET_PACKAGE)

.PHONY: tools-extra
tools-extra: ## Put helm, kustomize and gotestsum into bin/ (built once per machine, then cached).
	@GO=$(GO) $(CACHED_INSTALL) -n helm -b $(BIN) -- helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@GO=$(GO) $(CACHED_INSTALL) -n kustomize -b $(BIN) -- sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@GO=$(GO) $(CACHED_INSTALL) -n gotestsum -b $(BIN) -- gotest.tools/gotestsum@$(GOTESTSUM_VERSION)
