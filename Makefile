# nfhost: `make lab` runs the namespace lab, `make test` passes the tests.
GO      ?= go
BIN     := bin
CONSUL   = $(shell scripts/install-consul.sh)

.PHONY: all build deps test test-unit test-kernel test-kernels test-vagrant check check-generated generate lab bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	scripts/deps.sh

# Unit tests need no root; kernel and e2e tests need root and skip loudly
# without it. NFHOST_REQUIRE_CONSUL makes a missing Consul a failure, and
# NFHOST_REQUIRE_TOOLS one of promtool, prometheus or tmux.
test: deps check check-generated build
	NFHOST_REQUIRE_CONSUL=1 NFHOST_REQUIRE_TOOLS=1 NFHOST_CONSUL=$(CONSUL) $(GO) test -count=1 -timeout 20m ./...

test-unit:
	$(GO) test -count=1 -short ./cmd/... ./nsd/... ./internal/... ./firewall/lang/... ./dos/detect/...

test-kernel: deps
	NFHOST_REQUIRE_CONSUL=1 NFHOST_CONSUL=$(CONSUL) $(GO) test -count=1 ./routing/... ./dos/... ./tunnels/... ./firewall/... ./e2e/...

# nsd's kernel tests inside VMs on the kernels operators run: Debian 12's
# 6.1 (linux-image-cloud-amd64) and 6.12 (bookworm-security; Debian 13's
# too), one VM at a time under qemu TCG (internal/vmtest TestKernels). The
# summary per kernel goes to $(KERNELS_OUT). make test runs a few-minute
# subset of it (TestKernels' defaults, TestKernelGREInVM,
# TestKernelGREThroughConsulInVM).
KERNELS         ?= linux-image-cloud-amd64 linux-image-6.12-cloud-amd64
KERNEL_PACKAGES ?= ./tunnels ./routing ./firewall ./dos ./nsd ./e2e:^(TestKernelGREThroughConsul|TestGREBackendRefused)$$
KERNELS_OUT     ?= $(CURDIR)/test-kernels.txt
test-kernels: deps
	NFHOST_TEST_KERNELS="$(KERNELS)" NFHOST_TEST_KERNEL_PACKAGES="$(KERNEL_PACKAGES)" NFHOST_TEST_KERNELS_OUT=$(KERNELS_OUT) \
	  NFHOST_REQUIRE_CONSUL=1 NFHOST_CONSUL=$(CONSUL) $(GO) test -count=1 -timeout 6h -v -run '^TestKernels$$' ./internal/vmtest/

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 ./internal/layering/

# BPF C is compiled by bpf2go (a go tool in go.mod) with Debian's clang;
# the generated Go and objects are committed so that go build needs no clang.
generate:
	$(GO) generate ./dos/... ./tunnels/...

# CI proves the committed objects reproduce from the C sources.
check-generated: generate
	@git diff --quiet -- dos/ tunnels/ || { git diff --stat -- dos/ tunnels/; \
	  echo "generated BPF files differ from the committed ones: run 'make generate' and commit"; exit 1; }

lab: deps build
	scripts/lab.sh

# The lab on VMs (libvirt, emulated CPUs): the box is built once and cached
# (scripts/vagrant-box.sh), the VMs are destroyed afterwards. Not part of
# make test (tens of minutes here); make test validates the Vagrantfile and
# runs the provisioning in namespaces (e2e TestVagrantfile, TestLabProvisioning).
test-vagrant: deps build
	scripts/vagrant-lab.sh

bench: deps build
	scripts/bench.sh

clean:
	rm -rf $(BIN)
