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
BINARIES  := tessera-scheduler tessera-device-plugin tessera-demo kubectl-tessera
TEST_FLAGS ?= -count=1 -timeout=30m
# helm renders the chart (make manifests) and the chart tests run it. It is
# built from the Go module proxy into bin/, not added to go.mod.
HELM_VERSION ?= v4.3.1
HELM      := $(CURDIR)/bin/helm
# Where `make images` tags the images. The tag defaults to the chart's
# appVersion, the tag the chart installs, so that `make images` followed by
# `helm install` agree; the binaries still report VERSION (git describe).
IMAGE_REGISTRY ?= ghcr.io/tessera-gpu
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*$$/\1/p' manifests/charts/tessera/Chart.yaml)
IMAGES_DIR ?= _output/images
PLATFORMS ?= linux/amd64 linux/arm64
# Every time in the images is the commit's, so a build is reproducible.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
CONTAINERD_ADDRESS ?= /run/containerd/containerd.sock
FUZZTIME  ?= 30s
# go-nvml's cgo wrappers cover NVML functions its header marks deprecated,
# and gcc warns about each one (a hundred lines) whenever the package is
# compiled afresh. Tessera calls none of them; keep the build quiet.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
DEMO_ARGS ?=

.PHONY: help build demo test test-unit test-integration verify generate manifests images images-load k8s-bins containerd-bins e2e-deps e2e-build old-kubelet e2e e2e-clean release fuzz bench bench-short bench-micro bench-perf bench-machine bench-bound bench-config bench-trace bench-trace-dra bench-trace-ci etcd clean $(BINARIES)

help: ## List the targets.
	@grep -E '^[a-z/-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: $(BINARIES) ## Build the binaries into bin/.

# The scheduler and the kubectl plugin need no C library: link them
# statically, so that they run on any Linux (and in an image without libc).
# The device plugin and the demo need cgo for go-nvml.
tessera-scheduler kubectl-tessera: export CGO_ENABLED=0

$(BINARIES):
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/$@ ./cmd/$@

demo: tessera-demo kubectl-tessera ## Run the demo: a local control plane, fake GPU nodes, a batch of pods.
	./bin/tessera-demo $(DEMO_ARGS)

# The chart tests need helm; with TESSERA_REQUIRE_HELM they fail instead of
# skipping when it is missing.
HELM_TEST_ENV := TESSERA_HELM=$(HELM) TESSERA_REQUIRE_HELM=1

test: bin/helm ## Run every test: unit, fuzz seed corpora and the in-process cluster tests.
	$(HELM_TEST_ENV) $(GO) test $(TEST_FLAGS) ./...

test-unit: ## Run the tests that need no control plane.
	$(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -v /test/)

test-integration: bin/helm ## Run the in-process cluster tests (etcd + kube-apiserver + tessera-scheduler, the chart).
	$(HELM_TEST_ENV) $(GO) test $(TEST_FLAGS) -v ./test/... 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go'; exit $${PIPESTATUS[0]}

verify: bin/helm ## Check formatting, vet, generated code, the chart and manifests/install.
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/
	hack/verify-codegen.sh
	$(HELM) lint --quiet manifests/charts/tessera
	HELM=$(HELM) hack/verify-manifests.sh

generate: ## Regenerate deepcopy, clientset, listers and informers.
	hack/update-codegen.sh

manifests: bin/helm ## Render the Helm chart into manifests/install (kubectl apply -k manifests/install).
	HELM=$(HELM) hack/update-manifests.sh

bin/helm: ## Build helm (HELM_VERSION, v4.3.1) into bin/ (fetches it through the Go module proxy).
	GOBIN=$(CURDIR)/bin $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

images: ## Build both images as multi-arch OCI tarballs in _output/images, without docker (docs/images.md).
	PLATFORMS="$(PLATFORMS)" IMAGE_REGISTRY=$(IMAGE_REGISTRY) IMAGE_TAG=$(IMAGE_TAG) VERSION=$(VERSION) COMMIT=$(COMMIT) \
	  LDFLAGS="$(LDFLAGS)" SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) OUT=$(IMAGES_DIR) GO=$(GO) hack/build-images.sh

images-load: ## Import the images of `make images` into containerd (CONTAINERD_ADDRESS), namespace k8s.io, pinned.
	@command -v ctr >/dev/null || { echo "images-load: ctr (containerd's client) is not installed" >&2; exit 1; }
	for c in tessera-scheduler tessera-device-plugin; do \
	  ctr --address $(CONTAINERD_ADDRESS) -n k8s.io images import --platform linux/$$($(GO) env GOARCH) $(IMAGES_DIR)/$$c.tar || exit 1; \
	  ctr --address $(CONTAINERD_ADDRESS) -n k8s.io images label $(IMAGE_REGISTRY)/$$c:$(IMAGE_TAG) io.cri-containerd.pinned=pinned >/dev/null || exit 1; \
	done

# End-to-end tests on real nodes (test/e2e, docs/e2e.md): the Kubernetes
# binaries are built from the module proxy (hack/k8s pins them), the images
# for this machine's platform only.
E2E_OUT   := _output/e2e
K8S_BINS  := kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
K8S_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VER) -X k8s.io/component-base/version.gitMajor=1 \
               -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VER)
E2E_PACKAGES := runc containernetworking-plugins iproute2 util-linux
# containerd 2.x, built from the module proxy (hack/containerd pins it):
# Debian's 1.6 cannot resolve CDI devices. Without the snapshotters that
# need cgo or kernel features the nodes do not use.
CONTAINERD_VER = $(shell sed -n 's|^[[:space:]]*github.com/containerd/containerd/v2 \(v[0-9.]*\).*|\1|p' hack/containerd/go.mod)
CONTAINERD_TAGS := no_btrfs no_devmapper no_zfs
E2E_FLAGS ?= -test.v

k8s-bins: ## Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl ($(K8S_VER)) into _output/e2e/k8s.
	cd hack/k8s && $(GO) build -ldflags "$(K8S_LDFLAGS)" -o $(CURDIR)/$(E2E_OUT)/k8s/ $(addprefix k8s.io/kubernetes/cmd/,$(K8S_BINS))

containerd-bins: ## Build containerd, ctr and containerd-shim-runc-v2 ($(CONTAINERD_VER), hack/containerd) into _output/e2e/containerd.
	cd hack/containerd && $(GO) build -tags "$(CONTAINERD_TAGS)" -ldflags "-X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD_VER)" \
	  -o $(CURDIR)/$(E2E_OUT)/containerd/ $(addprefix github.com/containerd/containerd/v2/cmd/,containerd ctr containerd-shim-runc-v2)

e2e-deps: ## Install runc and the CNI plugins from Debian when missing (root).
	@missing=$$(for p in $(E2E_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  [ "$$(id -u)" = 0 ] || { echo "e2e: install $$missing (apt-get install), or run as root" >&2; exit 1; }; \
	  echo "e2e: installing $$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

e2e-build: k8s-bins containerd-bins bin/helm etcd kubectl-tessera ## Build everything make e2e runs.
	$(MAKE) images PLATFORMS=linux/$$($(GO) env GOARCH) IMAGES_DIR=$(E2E_OUT)/images
	CGO_ENABLED=0 $(GO) build -trimpath -o $(E2E_OUT)/images/linux_sleeper ./test/e2e/sleeper
	$(E2E_OUT)/images/bin/build-image -name tessera.local/e2e/sleeper:latest -o $(E2E_OUT)/images/sleeper.tar \
	  -binary linux/$$($(GO) env GOARCH)=$(E2E_OUT)/images/linux_sleeper -path /sleeper -user 65532:65532 -created $(SOURCE_DATE_EPOCH)
	$(GO) test -c -tags e2e -o $(E2E_OUT)/e2e.test ./test/e2e

# E2E_KUBELET=<minor> runs the GPU node on the kubelet of an older minor
# (hack/k8s-kubelet-<minor> pins it), as nodes run while a cluster is
# upgraded; the control plane stays $(K8S_VER).
E2E_KUBELET ?=
KUBELET_MINORS := $(patsubst hack/k8s-kubelet-%,%,$(wildcard hack/k8s-kubelet-*))

old-kubelet: ## Build the kubelet of E2E_KUBELET (an older minor: $(KUBELET_MINORS)) into _output/e2e/k8s-<minor>.
	@[ -n "$(E2E_KUBELET)" ] && [ -f hack/k8s-kubelet-$(E2E_KUBELET)/go.mod ] || \
	  { echo "E2E_KUBELET=$(E2E_KUBELET): name a minor pinned in hack/k8s-kubelet-<minor>: $(KUBELET_MINORS)" >&2; exit 1; }
	v=$$(sed -n 's|^[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\).*|\1|p' hack/k8s-kubelet-$(E2E_KUBELET)/go.mod); \
	cd hack/k8s-kubelet-$(E2E_KUBELET) && $(GO) build -ldflags "-X k8s.io/component-base/version.gitVersion=$$v \
	  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(E2E_KUBELET)))" \
	  -o $(CURDIR)/$(E2E_OUT)/k8s-$(E2E_KUBELET)/kubelet k8s.io/kubernetes/cmd/kubelet

e2e: e2e-deps e2e-build $(if $(E2E_KUBELET),old-kubelet) ## Run the end-to-end tests on a real cluster on this machine: real kubelets, containerd, the chart (root); E2E_IMAGES=dir runs those images, E2E_KUBELET=<minor> an older kubelet.
	E2E_IMAGES=$(E2E_IMAGES) hack/e2e.sh $(E2E_FLAGS) $(if $(E2E_KUBELET),-e2e.gpu-kubelet=$(CURDIR)/$(E2E_OUT)/k8s-$(E2E_KUBELET)/kubelet)

e2e-clean: ## Remove what an interrupted make e2e left (saved kernel settings, cgroups).
	hack/e2e.sh --clean

release: bin/helm ## Build every release artifact of VERSION (vX.Y.Z) into _output/release/VERSION and check them (docs/release.md).
	VERSION=$(VERSION) COMMIT=$(COMMIT) LDFLAGS="$(LDFLAGS)" SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	  IMAGE_REGISTRY=$(IMAGE_REGISTRY) HELM=$(HELM) GO=$(GO) hack/release.sh
	VERSION=$(VERSION) HELM=$(HELM) hack/release-check.sh

fuzz: ## Fuzz each parser for FUZZTIME.
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./pkg/assignment
	$(GO) test -run='^$$' -fuzz=FuzzParsePod -fuzztime=$(FUZZTIME) ./pkg/gpu

# Benchmarks (bench/README.md). `make bench` writes bench/results; CI runs
# `make bench-short`, which writes _output/bench-short and fails only when a
# benchmark does not run, never on the times it measures. The throughput
# workloads run PERF_COUNT times in turn, so that drift on a shared machine
# hits the Tessera and the in-tree cases alike.
BENCH_OUT   ?= bench/results
BENCH_TIME  ?= 0.1s
BENCH_COUNT ?= 6
PERF_COUNT  ?= 3
PERF_BENCH  ?= BenchmarkPerfScheduling
PERF_FLAGS  ?=
PERF_LOG    ?= _output/perf.log
PERF_DATA   ?= _output/perf-data
# More data dirs of earlier bench-perf runs to summarize with this one.
PERF_MORE_DATA ?=

bench: ## Run every benchmark (hot path, throughput at 500 and 5,000 nodes, scheduler-bound throughput) into bench/results.
	$(MAKE) bench-micro bench-perf bench-bound bench-machine

bench-short: ## The CI version of bench: hot path 100x once, throughput at 500 nodes once, scheduler-bound at 100 nodes once.
	$(MAKE) bench-micro bench-perf bench-bound BENCH_OUT=_output/bench-short BENCH_TIME=100x BENCH_COUNT=1 PERF_COUNT=1 PERF_FLAGS=-test.short \
	  BOUND_COUNT=1 BOUND_FLAGS=-short
	@cat _output/bench-short/hotpath-summary.md _output/bench-short/perf-summary.md _output/bench-short/bound.txt

# Scheduler-bound throughput (bench/bound): every measured pod is pending
# before the scheduler starts. BOUND_BENCH picks cases, e.g.
# 'SchedulerBound/nodes=1000/fill=90/.*/whole'; -bound.system-spread adds
# Tessera's profile with batching off.
BOUND_BENCH ?= .
BOUND_COUNT ?= 3
BOUND_FLAGS ?=
bench-bound: ## Scheduler-bound throughput, Tessera's profile vs kube-scheduler's default profile, same run.
	@mkdir -p $(BENCH_OUT)
	set -o pipefail; $(GO) test ./bench/bound -run='^$$' -bench='$(BOUND_BENCH)' -benchtime=1x -count=$(BOUND_COUNT) \
	  -timeout=600m $(BOUND_FLAGS) 2>/dev/null | grep -E '^(Benchmark|ok|PASS|FAIL|goos|goarch|pkg|cpu)' | tee $(BENCH_OUT)/bound.txt

bench-micro: ## Hot-path microbenchmarks (PreFilter, Filter, Score per node vs NodeResourcesFit).
	@mkdir -p $(BENCH_OUT)
	set -o pipefail; $(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCH_TIME) -count=$(BENCH_COUNT) \
	  ./pkg/device ./plugins/... | tee $(BENCH_OUT)/hotpath.txt
	$(GO) run ./bench/summarize hotpath $(BENCH_OUT)/hotpath.txt > $(BENCH_OUT)/hotpath-summary.md

bench-perf: etcd ## Scheduling throughput through scheduler_perf (bench/perf), Tessera vs in-tree.
	@mkdir -p $(BENCH_OUT) $(dir $(PERF_LOG))
	rm -rf $(PERF_DATA) && : > $(PERF_LOG)
	$(GO) test -c -o _output/perf.test ./bench/perf
	cd bench/perf && for i in $$(seq $(PERF_COUNT)); do \
	  PATH="$(CURDIR)/bin:$$PATH" ../../_output/perf.test -test.run='^$$' -test.bench='$(PERF_BENCH)' -test.benchtime=1x \
	    -test.timeout=150m $(PERF_FLAGS) -data-items-dir="$(CURDIR)/$(PERF_DATA)" >> "$(CURDIR)/$(PERF_LOG)" 2>&1 \
	  || { tail -n 60 "$(CURDIR)/$(PERF_LOG)"; exit 1; }; done
	$(GO) run ./bench/summarize perf $(BENCH_OUT)/perf.txt $(PERF_DATA) $(PERF_MORE_DATA) > $(BENCH_OUT)/perf-summary.md

# The openb traces are research data read from where they lie; they are
# never copied into the repository.
TRACES    ?= ../shared/traces/openb
TRACE     ?= all
SEEDS     ?= 42-51
STRATEGIES ?= all

# -keep: runs of other strategies and seeds already in bench/results/trace
# stay, so a campaign can be run a few traces or seeds at a time.
bench-trace: ## Replay openb traces (TRACE=all|default|...) with the FGD paper's protocol; results in bench/results/trace.
	$(GO) run ./bench/trace -traces $(TRACES) -trace $(TRACE) -seeds $(SEEDS) -strategies $(STRATEGIES) -keep -out bench/results/trace

# The DRA comparison (docs/dra.md): the same replays with every node a DRA
# node, allocated with Tessera's choice and by the allocator's first fit, on
# every 4th node of the list: a DRA replay never binds, so every allocation
# stays pending in the scheduler's DRA manager and each pod costs more than
# the last (a full-size run had taken 3 minutes for its first 30 % of pods,
# each tenth slower than the one before, when it was stopped).
DRA_TRACES ?= default,multigpu50,gpushare40,gpuspec20
bench-trace-dra: ## Replay openb traces on DRA nodes beside the device plugin (quarter-size cluster); results in bench/results/trace-dra.
	for mode in device-plugin dra dra-first-fit; do \
	  $(GO) run ./bench/trace -traces $(TRACES) -trace $(DRA_TRACES) -seeds 42-44 -strategies fragmentation -node-stride 4 \
	    -mode $$mode -keep -out bench/results/trace-dra/$$mode || exit 1; done

bench-trace-ci: ## Placement-quality guard: default trace, one seed; fails if online fragmentation leaves over 5.5% of GPUs unallocated.
	@if [ -d "$(TRACES)/csv" ]; then \
	  $(GO) run ./bench/trace -traces $(TRACES) -trace default -seeds 42 -strategies fragmentation -max-unallocated fragmentation=5.5; \
	else \
	  echo "bench-trace-ci: SKIPPED: no openb traces at $(TRACES) (set TRACES=...)"; \
	fi

bench-machine: # Record the machine and the command beside the results.
	@{ echo "date: $$(date -u '+%Y-%m-%d %H:%M UTC')"; echo "commit: $(COMMIT)"; \
	   echo "machine: $$(nproc) CPUs, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $$(free -g | awk '/^Mem:/{print $$2}') GiB"; \
	   echo "go: $$($(GO) env GOVERSION)"; \
	   echo "command: make $(MAKECMDGOALS) BENCH_TIME=$(BENCH_TIME) BENCH_COUNT=$(BENCH_COUNT) PERF_COUNT=$(PERF_COUNT)"; \
	 } > $(BENCH_OUT)/machine.txt
	@cat $(BENCH_OUT)/machine.txt $(BENCH_OUT)/hotpath-summary.md $(BENCH_OUT)/perf-summary.md

bench-config: ## Regenerate bench/perf/tessera-scheduler.yaml from the shipped profile.
	{ sed -n '1,7p' bench/perf/tessera-scheduler.yaml; \
	  sed -e 's/^  leaderElect: true$$/  leaderElect: false/' \
	      -e 's/^      inventoryStaleness: 2m0s$$/      inventoryStaleness: 1h0m0s/' config/examples/tessera-scheduler.yaml; \
	} > bench/perf/tessera-scheduler.yaml.tmp && mv bench/perf/tessera-scheduler.yaml.tmp bench/perf/tessera-scheduler.yaml

etcd: ## Build etcd (the version in go.mod) into bin/, for bench-perf.
	$(GO) build -o bin/etcd go.etcd.io/etcd/server/v3

clean: ## Remove build output.
	rm -rf bin _output
