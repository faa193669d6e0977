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
build: ## Build manager and bbsim into bin/.
	$(GO) build -o $(BIN)/manager ./cmd/manager
	$(GO) build -o $(BIN)/bbsim ./cmd/bbsim

.PHONY: run
run: tools build ## Local control plane + bbsim + operator + sample pool + demo workload, live. Ctrl-C stops it all.
	$(GO) run ./hack/demo

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet.
	$(GO) vet ./...

.PHONY: unit
unit: ## Unit tests only (no control plane).
	$(GO) test -count=1 ./api/... ./internal/... ./cmd/...

.PHONY: test
test: tools vet ## Every test: unit, integration and end-to-end against a real control plane.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	KUBEBUILDER_ASSETS=$(BIN) $(GO) test -count=1 -timeout 25m ./...

CONTROLLER_GEN_ARGS := crd rbac:roleName=runnerpool-operator paths=./api/... paths=./controllers/... \
	output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: tools ## Regenerate deepcopy, CRDs and RBAC with controller-gen (never edit those files by hand).
	$(BIN)/controller-gen object:headerFile=hack/boilerplate.go.txt paths=./api/...
	$(BIN)/controller-gen $(CONTROLLER_GEN_ARGS)

.PHONY: manifests
manifests: generate ## Alias of generate.
