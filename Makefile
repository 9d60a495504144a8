# kata-submount-guard. `make help` lists the targets.

GO        ?= go
BIN       ?= bin
# Test assets (guest kernels, the Rust virtiofsd, crictl) live outside the repo.
KSG_CACHE ?= /var/cache/kata-submount-guard
export KSG_CACHE

BINARIES := containerd-shim-kata-v2 kata-runtime kata-virtiofsd
REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.revision=$(REVISION) -X github.com/kata-submount-guard/kata-submount-guard/internal/buildinfo.revision=$(REVISION)

.PHONY: all build image inspect setup test test-with-syslog test-without-syslog unit-test integration e2e bench fuzz lint clean help

all: build

build: ## build the three binaries into bin/ (static, without cgo)
	@mkdir -p $(BIN)
	# Without cgo: kata-virtiofsd's sandbox drops capabilities in all threads
	# (fssandbox), and a static shim starts ~0.7 ms sooner (BENCHMARKS.md).
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

IMAGE ?= ghcr.io/kata-submount-guard/kata-submount-guard-deploy:latest
image: build ## the kata-deploy companion image as an OCI archive, bin/kata-submount-guard-image.tar, named IMAGE (no Docker daemon; ctr -n k8s.io images import)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/kata-submount-guard-deploy
	$(GO) run ./deploy/image -o $(BIN)/kata-submount-guard-image.tar -name "$(IMAGE)" \
	  $(addprefix $(BIN)/,$(BINARIES)) $(BIN)/kata-submount-guard-deploy

KERNELS ?=
inspect: build ## the main job: inspect guest kernel images, KERNELS="PATH..." (default: Debian's kernels, fetched once into KSG_CACHE)
	@set -e; k="$(KERNELS)"; \
	if [ -z "$$k" ]; then test/setup/40-debian-kernel.sh >&2; k=$$(ls -d $(KSG_CACHE)/debian-kernels/*/vmlinu[xz] $(KSG_CACHE)/debian-kernels/*/Image.gz); fi; \
	$(BIN)/kata-runtime guest-kernel inspect $$k

setup: ## install what the tests need (Debian packages, crictl, Rust virtiofsd, kernels, Kata's own shims), cached in KSG_CACHE; idempotent
	@set -e; for step in test/setup/[0-9]*.sh; do echo "==> $$step"; "$$step"; done

test: setup build lint ## set up, then run every test: unit (-race), containerd integration, Kata's own code, the VM suite, then the syslog-facing suites with and without a syslog
	KSG_INTEGRATION=1 KSG_E2E=1 $(GO) test -race -count=1 -timeout 80m ./...
	@$(MAKE) --no-print-directory test-with-syslog test-without-syslog

# The suites whose programs log to the local syslog daemon (/dev/log). They
# pass either way; these targets run them both ways whatever the host has.
SYSLOG_SUITES := ./cmd/kata-virtiofsd/... ./shim/... ./virtcontainers/virtiofsd/... ./test/testutil/... ./test/e2e/harness/
test-with-syslog: ## the suites that talk to syslog, as on a host with a syslog daemon at /dev/log (a private one; the host's is untouched)
	@if [ "$$(id -u)" != 0 ] && [ "$$CI" != true ]; then echo "$@: skipped: needs root (a private mount namespace)"; exit 0; fi; \
	set -x; $(GO) run ./test/testutil/with-syslog -- $(GO) test -race -count=1 $(SYSLOG_SUITES)

test-without-syslog: ## the same suites as on a host without one (no /dev/log in a private /dev)
	@if [ "$$(id -u)" != 0 ] && [ "$$CI" != true ]; then echo "$@: skipped: needs root (a private mount namespace)"; exit 0; fi; \
	set -x; $(GO) run ./test/testutil/with-syslog -none -- $(GO) test -race -count=1 $(SYSLOG_SUITES)

unit-test: ## run the unit tests only (no containerd, no VMs)
	$(GO) test -race -count=1 ./...

integration: build ## run the containerd integration tests only (root; crictl from test/setup)
	KSG_INTEGRATION=1 $(GO) test -count=1 -timeout 30m -v ./test/integration/...

.PHONY: bench-shim
bench-shim: ## median shim start->address, ours vs the stand-in delegate alone (BENCHMARKS.md)
	KSG_INTEGRATION=1 $(GO) test -run '^$$' -bench BenchmarkShimStart -benchtime 300x -timeout 30m ./test/integration/

.PHONY: bench-daemon-direct
BENCH_DIRECT_FLAGS ?=
bench-daemon-direct: build ## our virtio-fs daemon vs Rust and C virtiofsd driven from the host, no guest (root; about 8 minutes; BENCHMARKS.md)
	$(GO) run ./test/bench/daemondirect -kata-virtiofsd $(BIN)/kata-virtiofsd $(BENCH_DIRECT_FLAGS)

.PHONY: bench-daemon
bench-daemon: ## our virtio-fs daemon vs Rust and C virtiofsd in TCG guests (root; BENCHMARKS.md)
	test/e2e/daemon/bench-daemon.sh

.PHONY: k8s
k8s: ## run the one-node Kubernetes tests only (root; test/setup/80-kubernetes.sh builds Kubernetes once)
	KSG_INTEGRATION=1 $(GO) test -count=1 -timeout 20m -v ./test/k8s/...

e2e: build ## run the VM truth table only
	KSG_E2E=1 $(GO) test -count=1 -timeout 60m -v ./test/e2e/...

bench: build ## run the benchmarks recorded in BENCHMARKS.md
	$(GO) test -run '^$$' -bench . -benchmem ./...

FUZZTIME ?= 30s
fuzz: ## run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 3s $$pkg; \
	  done; \
	done

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## remove bin/
	rm -rf $(BIN)

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'
