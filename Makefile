# kube-ipvs: the two commands are `make demo` and `make test` (see README.md).

GO ?= go
FUZZTIME ?= 30s

.PHONY: build test test-unit fuzz test-vm test-apiserver prepare-vm tools bench demo

build:
	CGO_ENABLED=0 $(GO) build -o bin/kube-ipvs ./cmd/kube-ipvs

# The whole suite, as CI runs it.
test: test-unit fuzz test-vm test-apiserver

test-unit:
	$(GO) vet ./...
	$(GO) test -race ./...

fuzz:
	$(GO) test ./proxier -run '^$$' -fuzz FuzzBuildService -fuzztime $(FUZZTIME)

prepare-vm:
	test/vm/prepare.sh

test-vm: prepare-vm
	$(GO) test -tags vmtest -count=1 -v -timeout 20m ./test/vm

tools:
	test/tools/build.sh

test-apiserver: tools
	$(GO) test -tags apiserver -count=1 -v -timeout 20m ./test/controlplane ./test/deploy

bench:
	$(GO) test ./proxier -run '^$$' -bench . -benchmem

demo:
	@echo "make demo arrives with issue 4" >&2; exit 1
