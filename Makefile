# agentry — run `make help` for the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO          ?= go
BIN         ?= $(CURDIR)/bin
TOOLS_DIR   ?= $(CURDIR)/.tools
GOTEST_FLAGS ?= -count=1 -timeout=40m
# hack/tools.sh prints the assets folder on its last line; it builds nothing
# that is already cached.
ASSETS       = $(shell AGENTRY_TOOLS_DIR=$(TOOLS_DIR) hack/tools.sh helm | tail -n1)
CONTROLLER_GEN = $(ASSETS)/controller-gen

BINARIES := agentry-manager agentry-agent agentry-server

.PHONY: help
help: ## List every target with what it does.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Build the pinned Kubernetes, etcd, controller-gen and helm binaries into .tools/ (skips what is cached).
	@AGENTRY_TOOLS_DIR=$(TOOLS_DIR) hack/tools.sh helm >/dev/null

.PHONY: build
build: ## Build agentry-manager, agentry-agent and agentry-server into bin/.
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/agentry-manager ./cmd/manager
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/agentry-agent ./cmd/agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $(BIN)/agentry-server ./cmd/server

.PHONY: generate
generate: ## Regenerate deepcopy code for the API types.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: manifests
manifests: ## Regenerate CRDs and RBAC into config/ from the Go markers.
	$(CONTROLLER_GEN) rbac:roleName=agentry-manager crd:generateEmbeddedObjectMeta=true paths="./api/...;./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	$(GO) run ./hack/crdtrim config/crd/bases/agentry.dev_agentpools.yaml
	rm -f charts/agentry/crds/*.yaml && cp config/crd/bases/*.yaml charts/agentry/crds/
	cp config/rbac/role.yaml charts/agentry/files/role.yaml

.PHONY: verify-generated
verify-generated: generate manifests ## Fail if generated files differ from what is checked in.
	@if [ -n "$$(git status --porcelain -- api config charts)" ]; then \
	  git status --short -- api config charts; git --no-pager diff --stat -- api config charts; \
	  echo "generated files are stale: run 'make generate manifests' and commit"; exit 1; fi

.PHONY: vet
vet: ## Check formatting (gofmt) and run go vet on every package.
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$unformatted" ]; then echo "not gofmt'ed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

.PHONY: unit
unit: ## Run the tests that need no cluster (fast).
	$(GO) test $(GOTEST_FLAGS) ./internal/... ./cmd/...

.PHONY: e2e
e2e: tools ## Run the end-to-end suite on a small real cluster with the process-backed node.
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) test $(GOTEST_FLAGS) -v ./test/e2e/...

.PHONY: test
test: tools verify-generated vet build ## Everything CI runs: tools, generated-file check, vet, build, all tests incl. envtest and e2e.
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) test $(GOTEST_FLAGS) $$($(GO) list ./... | grep -v /test/e2e)
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) test $(GOTEST_FLAGS) -v ./test/e2e/...

.PHONY: demo
demo: tools ## Run agentry locally: cluster, server, operator, sample pool, three sample jobs; then tear down.
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) run ./hack/demo

# Flags: BENCH_FLAGS for hack/benchall (e.g. -quick), BENCH_SERVER_FLAGS,
# BENCH_AGENT_FLAGS and BENCH_MANAGER_FLAGS for each program.
.PHONY: bench
bench: tools ## Run every benchmark one after another (server, agent, manager; several minutes) and print one table; see docs/benchmarks.md.
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) run ./hack/benchall $(BENCH_FLAGS) $(if $(BENCH_SERVER_FLAGS),-server-flags "$(BENCH_SERVER_FLAGS)") $(if $(BENCH_AGENT_FLAGS),-agent-flags "$(BENCH_AGENT_FLAGS)") $(if $(BENCH_MANAGER_FLAGS),-manager-flags "$(BENCH_MANAGER_FLAGS)")

.PHONY: bench-server
bench-server: ## Benchmark agentry-server alone: 10,000 idle long-poll sessions, queue→delivery p50/p99, jobs/s, RSS.
	$(GO) run ./hack/bench $(BENCH_SERVER_FLAGS)

.PHONY: bench-agent
bench-agent: ## Benchmark agentry-agent alone: start→session, RSS while printing 100 MB, log MB/s.
	$(GO) run ./hack/bench-agent $(BENCH_AGENT_FLAGS)

.PHONY: bench-manager
bench-manager: tools ## Benchmark agentry-manager alone on the local stack: three 100-job bursts' latencies (the median burst's), agents started − jobs, RSS with 1,000 Agents.
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) run ./hack/bench-manager $(BENCH_MANAGER_FLAGS)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 10s).
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-10s} $$pkg; \
	  done; \
	done

.PHONY: clean
clean: ## Remove bin/ (the .tools cache is kept; delete it by hand to rebuild the tools).
	rm -rf $(BIN)
