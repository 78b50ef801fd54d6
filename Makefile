# bpfleet — build, test and demo. `make demo` runs the main job; `make test` runs the tests.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:/usr/sbin:/sbin
GO      ?= go
BUILD   := $(CURDIR)/build
BIN     := $(BUILD)/bin
GOARCH  := $(shell $(GO) env GOARCH)
BPF_ARCH_amd64 := x86
BPF_ARCH_arm64 := arm64
BPF_ARCH_arm   := arm
GADGETS := trace_exec trace_open trace_tcpconnect trace_signal trace_kprobe_exec trace_fentry_exec trace_exec_nocore top_file snapshot_process trace_udp
GADGET_OBJS := $(GADGETS:%=$(BUILD)/gadgets/%.bpf.o)
GO_TEST_FLAGS ?= -count=1 -timeout 20m

.PHONY: all deps build binaries gadgets test vet demo clean

all: build

deps:
	@scripts/deps.sh
	@$(GO) mod download

build: deps binaries gadgets

binaries:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags=-s -o $(BIN)/bpfleet ./cmd/bpfleet
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags=-s -o $(BIN)/bpfleetctl ./cmd/bpfleetctl

gadgets: $(GADGET_OBJS)

# The kernel's own BTF gives the types every gadget is compiled against (CO-RE relocates them
# at load time on other kernels).
$(BUILD)/include/vmlinux.h:
	@mkdir -p $(@D)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/gadgets/%.bpf.o: gadgets/%/program.bpf.c $(wildcard gadgets/include/gadget/*.h) $(BUILD)/include/vmlinux.h
	@mkdir -p $(@D)
	clang -target bpf -O2 -g -D__TARGET_ARCH_$(BPF_ARCH_$(GOARCH)) -I$(BUILD)/include -Igadgets/include -c $< -o $@
	llvm-strip -g $@

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# Integration tests use the binaries and gadgets built above, a real Mosquitto and the real
# kernel; they need root. Every fuzz target then runs BPFLEET_FUZZTIME inputs (default 100000x; scripts/fuzz.sh).
test: build vet
	scripts/interop-tools.sh >/dev/null
	ig=$$(GO=$(GO) scripts/ig-image.sh) && BPFLEET_IG_TRACE_OPEN=$$ig BPFLEET_INTEROP=1 BPFLEET_BUILD=$(BUILD) $(GO) test $(GO_TEST_FLAGS) ./...
	GO=$(GO) scripts/store32.sh
	scripts/fuzz.sh
	$(MAKE) testbed

demo: build
	BPFLEET_BUILD=$(BUILD) scripts/demo.sh

# Interoperability with the real cosign CLI (cmd/bpfleet/interop_test.go), against a registry on
# loopback in a private network namespace; also part of `make test`. The first install of cosign
# and crane builds them from source (about 4 minutes and 3 GB of Go caches on 2 cores); later
# runs reuse them from ~/.cache/bpfleet/tools and take seconds.
.PHONY: interop
interop: build
	scripts/interop-tools.sh >/dev/null
	BPFLEET_INTEROP=1 BPFLEET_BUILD=$(BUILD) $(GO) test $(GO_TEST_FLAGS) -run 'TestCosign' -v ./cmd/bpfleet/

clean:
	rm -rf $(BUILD)

# ---- Cross-compilation, firmware images and the QEMU testbed (firmware/, testbed/) ----------
# `make cross`: static stripped binaries per architecture in build/cross/<arch>/, sizes checked,
#   and the 10 biggest contributors (by module) to the arm64 bpfleet binary.
# `make firmware FIRMWARE_ARCH=arm64 ROOT=root.cbor DEVICE_ID=d FLEET=f BROKER=tcp://h:p
#   [LAYOUTS="dir..."] [PROVISION="delta.cbor..."] [KERNEL_MODULES=.../lib/modules/<release>] [ADDRESS=cidr GATEWAY=ip]`:
#   a device initramfs in build/firmware/<arch>/initrd.gz; PROVISION lists sealed deltas the agent
#   applies offline at its first start (bpfleetctl firmware build --provision) (KERNEL_MODULES defaults to the
#   testbed's cached Debian kernel for that arch, when there is one).
# `make testbed`: boots amd64 and arm64 firmware under QEMU (TCG) in a private network namespace
#   and checks the whole scenario, then arm64's production firmware (bpfleet-init, built with
#   `bpfleetctl firmware build`); `make testbed-all` adds armv7. Kernels are cached in
#   $(BPFLEET_CACHE).
CROSS_ARCHES    := amd64 arm64 arm
CROSS           := $(BUILD)/cross
ARM64_BUDGET    := 24000000
BPFLEET_CACHE   ?= /var/cache/bpfleet
FIRMWARE_ARCH   ?= arm64
DEB_FLAVOUR_amd64 := amd64
DEB_FLAVOUR_arm64 := arm64
DEB_FLAVOUR_arm   := armmp
KERNEL_MODULES  ?= $(lastword $(wildcard $(BPFLEET_CACHE)/kernels/linux-image-*-$(DEB_FLAVOUR_$(FIRMWARE_ARCH))*/lib/modules/*))
# The testbed's budget is 10 minutes, enforced as go test's timeout; testbed-all adds a third
# kernel and armv7's slower boot.
TESTBED_FLAGS   ?= -count=1 -v
TESTBED_TIMEOUT ?= 10m
TESTBED_ALL_TIMEOUT ?= 15m

.PHONY: cross firmware testbed testbed-all testbed-deps

cross:
	@set -e; for a in $(CROSS_ARCHES); do \
		for p in cmd/bpfleet cmd/bpfleetctl firmware/cmd/bpfleet-init; do \
			CGO_ENABLED=0 GOOS=linux GOARCH=$$a GOARM=7 $(GO) build -trimpath -ldflags=-s -o $(CROSS)/$$a/$$(basename $$p) ./$$p; \
		done; \
	done
	@for a in $(CROSS_ARCHES); do for f in $(CROSS)/$$a/*; do \
		stat -c "%s $$a $$(basename $$f)" $$f | awk '{ printf "%-8s %-14s %6.1f MB\n", $$2, $$3, $$1 / 1e6 }'; done; done
	@size=$$(stat -c %s $(CROSS)/arm64/bpfleet); if [ $$size -gt $(ARM64_BUDGET) ]; then \
		echo "bpfleet for arm64 is $$size bytes, over the $(ARM64_BUDGET)-byte budget"; exit 1; fi
	@# Dependency cost: the same arm64 build with its symbol table (-w drops only DWARF), summed
	@# by module by firmware/cmd/binsize (docs/performance.md, "Dependency cost").
	@CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags=-w -o $(CROSS)/symbols/arm64/bpfleet ./cmd/bpfleet
	@$(GO) run ./firmware/cmd/binsize -n 10 $(CROSS)/symbols/arm64/bpfleet

firmware: cross
	@if [ -z "$(ROOT)" ] || [ -z "$(DEVICE_ID)" ] || [ -z "$(FLEET)" ] || [ -z "$(BROKER)" ]; then \
		echo "usage: make firmware FIRMWARE_ARCH=arm64 ROOT=root.cbor DEVICE_ID=id FLEET=fleet BROKER=tcp://host:port [LAYOUTS=...] [PROVISION=...] [KERNEL_MODULES=dir] [ADDRESS=cidr GATEWAY=ip]"; exit 2; fi
	@mkdir -p $(BUILD)/firmware/$(FIRMWARE_ARCH)
	$(CROSS)/$(GOARCH)/bpfleetctl firmware build --arch $(FIRMWARE_ARCH) \
		--init $(CROSS)/$(FIRMWARE_ARCH)/bpfleet-init --agent $(CROSS)/$(FIRMWARE_ARCH)/bpfleet \
		--root $(ROOT) --device-id $(DEVICE_ID) --fleet $(FLEET) --broker $(BROKER) \
		$(foreach l,$(LAYOUTS),--layout $(l)) $(foreach p,$(PROVISION),--provision $(p)) $(if $(KERNEL_MODULES),--kernel-modules $(KERNEL_MODULES)) \
		$(if $(ADDRESS),--address $(ADDRESS) --gateway $(GATEWAY)) -o $(BUILD)/firmware/$(FIRMWARE_ARCH)/initrd.gz

# What the testbed needs beyond `make deps`: QEMU, depmod and xz (kernels are downloaded, never installed).
testbed-deps:
	@missing=; for t in qemu-system-x86_64:qemu-system-x86 qemu-system-aarch64:qemu-system-arm qemu-system-arm:qemu-system-arm \
		depmod:kmod xz:xz-utils; do command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

testbed: deps testbed-deps
	BPFLEET_TESTBED=1 BPFLEET_BUILD=$(BUILD) BPFLEET_CACHE=$(BPFLEET_CACHE) $(GO) test -timeout $(TESTBED_TIMEOUT) $(TESTBED_FLAGS) -run TestScenario ./testbed/

testbed-all: deps testbed-deps
	BPFLEET_TESTBED=1 BPFLEET_TESTBED_ARCHES="amd64 arm64 arm" BPFLEET_BUILD=$(BUILD) BPFLEET_CACHE=$(BPFLEET_CACHE) \
		$(GO) test -timeout $(TESTBED_ALL_TIMEOUT) $(TESTBED_FLAGS) -run TestScenario ./testbed/

# Benchmarks, not part of `make test`: every figure that says bpfleet is fast and small, with
# its reference and goal (docs/performance.md). Needs root; about 3–4 minutes, including the
# QEMU testbed's boot-to-first-event rows for the arches whose Debian kernel is cached (`make
# test` caches amd64 and arm64, about 45 s; `make testbed-all` armv7 too, 30 s more), plus
# about 6 once to issue the catch-up history (cached in build/bench-cache). Knobs:
# BPFLEET_BENCH_* (BPFLEET_BENCH_QEMU=0 skips the QEMU rows).
.PHONY: bench
bench: build
	BPFLEET_BUILD=$(BUILD) $(GO) run ./bench -out bench/results.json
