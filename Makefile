# runnerpool-operator: every developer entry point.
SHELL := /usr/bin/env bash -o pipefail
.DEFAULT_GOAL := help

GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Tool versions and the rules that build them live in hack/tools.mk.
include hack/tools.mk

.PHONY: help
help: ## Show the targets.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build manager, bbsim and runnerpoolctl into bin/.
	$(GO) build -o $(BIN)/manager ./cmd/manager
	$(GO) build -o $(BIN)/bbsim ./cmd/bbsim
	$(GO) build -o $(BIN)/runnerpoolctl ./cmd/runnerpoolctl

.PHONY: run
run: tools build ## Local control plane + bbsim + operator + sample pool + demo workload, live. Ctrl-C stops it all.
	@$(GO) build -o $(BIN)/demo ./hack/demo
	@$(BIN)/demo

## Images: OCI archives in bin/images, built without a container engine or a registry (docs/adr/0013-images-without-a-registry.md).

VERSION ?= $(shell awk '$$1 == "appVersion:" { gsub(/"/, "", $$2); print $$2 }' charts/runnerpool-operator/Chart.yaml)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
IMAGEBUILD := GO=$(GO) $(GO) run ./hack/imagebuild -bin $(BIN) -version $(VERSION) -revision $(REVISION)

.PHONY: image
image: ## Build the manager image, tagged as the chart's default image, into bin/images/manager.tar.
	$(IMAGEBUILD) manager

.PHONY: images
images: ## Build every image into bin/images: manager, pause, dind, step, runner-standin (Debian packages cached per machine).
	$(IMAGEBUILD)

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet.
	$(GO) vet ./...

.PHONY: unit
unit: ## Unit tests only (no control plane).
	$(GO) test -count=1 ./api/... ./internal/... ./cmd/...

.PHONY: node-prereqs
node-prereqs: ## Install what the real test node runs beside its kubelet: Debian's containerd, runc, CNI plugins and iptables (as root; installs only what is missing).
	@hack/node-prereqs.sh

.PHONY: test
test: tools tools-extra tools-node node-prereqs images vet ## Every test: unit, integration and end-to-end against a real control plane and a real node (as root; its images from make images).
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	KUBEBUILDER_ASSETS=$(BIN) $(GO) test -count=1 -timeout 40m ./...

CONTROLLER_GEN_ARGS := crd rbac:roleName=runnerpool-operator paths=./api/... paths=./controllers/... \
	output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
# The secure metrics endpoint's TokenReview and SubjectAccessReview rights: a ClusterRole of
# their own, since an install that watches some namespaces grants the rules above in Roles.
METRICS_AUTH_GEN_ARGS := rbac:roleName=runnerpool-operator-metrics-auth paths=./internal/operator/... \
	output:rbac:artifacts:config=config/rbac/metrics_auth

.PHONY: generate
generate: tools tools-extra ## Regenerate deepcopy, CRDs and RBAC (controller-gen), then the chart's copies and dist/install.yaml.
	$(BIN)/controller-gen object:headerFile=hack/boilerplate.go.txt paths=./api/...
	$(BIN)/controller-gen $(CONTROLLER_GEN_ARGS)
	$(GO) run ./hack/crdbounds config/crd/bases
	$(BIN)/controller-gen $(METRICS_AUTH_GEN_ARGS)
	$(MAKE) packaging docs

.PHONY: manifests
manifests: generate ## Alias of generate.

## Packaging: the Helm chart and the kubectl bundle (docs/adr/0007-install.md).

CHART_DIR := charts/runnerpool-operator

.PHONY: chart-sync
chart-sync: ## Copy the CRDs and RBAC rules from config/ into the chart and regenerate its README values table.
	rm -f $(CHART_DIR)/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART_DIR)/crds/
	cp config/rbac/role.yaml config/rbac/leader_election_role.yaml $(CHART_DIR)/files/rbac/
	cp config/rbac/metrics_auth/role.yaml $(CHART_DIR)/files/rbac/metrics_auth_role.yaml
	$(GO) run ./hack/chart -chart $(CHART_DIR)

.PHONY: build-installer
build-installer: tools-extra ## Write dist/install.yaml, the kubectl bundle, from config/default.
	@mkdir -p dist
	$(BIN)/kustomize build config/default > dist/install.yaml.tmp && mv dist/install.yaml.tmp dist/install.yaml

.PHONY: packaging
packaging: chart-sync build-installer ## Bring the chart and dist/install.yaml up to date with config/ (then commit them).

.PHONY: chart-lint
chart-lint: tools-extra ## helm lint the chart.
	$(BIN)/helm lint --strict $(CHART_DIR)

.PHONY: test-install
test-install: tools tools-extra ## The install tests only: chart, bundle, and both installed on a local control plane.
	KUBEBUILDER_ASSETS=$(BIN) $(GO) test -count=1 ./test/install/... ./hack/chart/...

.PHONY: docs
docs: ## Regenerate docs/reference.md, the API reference, from the CRDs in config/crd/bases.
	$(GO) run ./hack/refdocs

## Benchmark: the figures of test/bench/README.md, measured on a local control plane with bbsim.

.PHONY: bench
bench: tools build tools-node images ## Measure burst, overshoot, API cost, scale, memory and the layer cache (on the real node, as root); print them and write test/bench/results.json (BENCH_SCENARIOS=burst,... BENCH_QUICK=1).
	KUBEBUILDER_ASSETS=$(BIN) $(GO) run ./test/bench/cmd

## Chaos: the long reliability run (test/chaos/README.md).

.PHONY: chaos
chaos: tools build ## Kill the manager, break Bitbucket and Kubernetes, load 20 pools; check the invariants, print a summary, write test/chaos/results.json (CHAOS_QUICK=1 short run, CHAOS_SOAK=1 over 100 leader kills, CHAOS_SEED=n repeats one).
	KUBEBUILDER_ASSETS=$(BIN) $(GO) run ./test/chaos/cmd
