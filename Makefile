# kube-ipvs: the two commands are `make demo` and `make test` (see README.md).

GO ?= go
FUZZTIME ?= 30s

.PHONY: build test test-unit fuzz test-vm test-apiserver test-e2e prepare-vm tools bench bench-vm demo

# What `kube-ipvs version` prints.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)

build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/kube-ipvs ./cmd/kube-ipvs

# The whole suite, as CI runs it.
test: test-unit fuzz test-vm test-apiserver test-e2e

test-unit:
	$(GO) vet ./...
	$(GO) test -race ./...

fuzz:
	$(GO) test ./proxier -run '^$$' -fuzz '^FuzzBuildService$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proxier -run '^$$' -fuzz '^FuzzBuildNorthSouth$$' -fuzztime $(FUZZTIME)

prepare-vm:
	test/vm/prepare.sh

test-vm: prepare-vm
	$(GO) test -tags vmtest -count=1 -v -timeout 30m ./test/vm

tools:
	test/tools/build.sh

test-apiserver: tools
	$(GO) test -tags apiserver -count=1 -v -timeout 20m ./test/controlplane ./test/deploy

# kube-ipvs in the VM against a real kube-apiserver on the host (test/vm/e2e).
test-e2e: prepare-vm tools
	$(GO) test -tags vmtest -count=1 -v -timeout 30m ./test/vm/e2e

bench:
	$(GO) test ./proxier ./metrics -run '^$$' -bench . -benchmem

# kube-ipvs beside upstream kube-proxy (IPVS mode) and a netlink floor, on
# the VM's kernel against a real kube-apiserver (test/vm/bench/README.md).
# Long: one VM boot per proxy, situation and size. Not part of `make test`.
BENCH_SERVICES ?= 1000,5000
BENCH_ENDPOINTS ?= 5
BENCH_FLAGS ?=
bench-vm: prepare-vm tools
	$(GO) run -tags vmtest ./test/vm/bench -services $(BENCH_SERVICES) -endpoints $(BENCH_ENDPOINTS) $(BENCH_FLAGS)

# A real apiserver, a VM with a real IPVS kernel, kube-ipvs, three pods and a
# Service; about 30 seconds once the one-time builds are cached.
demo:
	@test/demo/demo.sh
