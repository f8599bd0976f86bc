# Tessera build, test and demo targets. `make help` lists them.
SHELL := /bin/bash

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
K8S_VER   := v1.37.2
PKG       := github.com/tessera-gpu/tessera
# The component-base variables make kube-scheduler report the Kubernetes
# library version it is built from instead of v0.0.0-master.
LDFLAGS   := -X $(PKG)/pkg/version.Version=$(VERSION) -X $(PKG)/pkg/version.Commit=$(COMMIT) \
             -X k8s.io/component-base/version.gitVersion=$(K8S_VER) \
             -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
BINARIES  := tessera-scheduler tessera-device-plugin tessera-demo
TEST_FLAGS ?= -count=1 -timeout=30m
FUZZTIME  ?= 30s
DEMO_ARGS ?=

.PHONY: help build demo test test-unit test-integration verify generate fuzz bench clean $(BINARIES)

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: $(BINARIES) ## Build the binaries into bin/.

$(BINARIES):
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/$@ ./cmd/$@

demo: tessera-demo ## Run the demo: a local control plane, fake GPU nodes, a batch of pods.
	./bin/tessera-demo $(DEMO_ARGS)

test: ## Run every test: unit, fuzz seed corpora and the in-process cluster tests.
	$(GO) test $(TEST_FLAGS) ./...

test-unit: ## Run the tests that need no control plane.
	$(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -v /test/)

test-integration: ## Run the in-process cluster tests (etcd + kube-apiserver + tessera-scheduler).
	$(GO) test $(TEST_FLAGS) -v ./test/... 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go'; exit $${PIPESTATUS[0]}

verify: ## Check formatting, vet and generated code.
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	hack/verify-codegen.sh

generate: ## Regenerate deepcopy, clientset, listers and informers.
	hack/update-codegen.sh

fuzz: ## Fuzz each parser for FUZZTIME.
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./pkg/assignment
	$(GO) test -run='^$$' -fuzz=FuzzParsePod -fuzztime=$(FUZZTIME) ./pkg/gpu

bench: ## Run the hot-path microbenchmarks.
	$(GO) test -run='^$$' -bench=. -benchmem ./pkg/device ./plugins/...

clean: ## Remove build output.
	rm -rf bin _output
