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
GADGETS := trace_exec trace_open trace_tcpconnect trace_signal
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
# kernel; they need root. Every fuzz target then runs for BPFLEET_FUZZTIME (default 10s).
test: build vet
	BPFLEET_BUILD=$(BUILD) $(GO) test $(GO_TEST_FLAGS) ./...
	scripts/fuzz.sh

demo: build
	BPFLEET_BUILD=$(BUILD) scripts/demo.sh

clean:
	rm -rf $(BUILD)
