package runner

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// floodBurst is how many events the flood gadget sends per exec: about
// 840 KiB of records, more than a CPU's perf buffer holds.
const floodBurst = 2000

// floodSource is a gadget in the style of older Inspektor Gadget gadgets,
// which declare their tracer map as a perf event array. It sends
// floodBurst events on every exec.
const floodSource = `#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <gadget/macros.h>
#include <gadget/types.h>

struct event {
	gadget_pid pid;
	__u32 seq;
	gadget_comm comm[TASK_COMM_LEN];
	char pad[384];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

GADGET_TRACER(flood, events, event);

SEC("tracepoint/sched/sched_process_exec")
int flood(void *ctx)
{
	struct event ev = {};

	ev.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	for (__u32 i = 0; i < ` + "BURST" + `; i++) {
		ev.seq = i;
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
`

// floodELF builds floodSource against this kernel's vmlinux.h.
func floodELF(t *testing.T) []byte {
	t.Helper()
	requireToolchain(t)
	src := filepath.Join(t.TempDir(), "flood.bpf.c")
	code := bytes.ReplaceAll([]byte(floodSource), []byte("BURST"), fmt.Appendf(nil, "%d", floodBurst))
	if err := os.WriteFile(src, code, 0o644); err != nil {
		t.Fatal(err)
	}
	elf, err := buildGadget(src, "flood.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	return elf
}

// pinnedExecLoop is execLoop on one CPU: the processes it starts inherit the
// affinity of the thread that forks them, so their exec events all go to
// that CPU's perf buffer.
func pinnedExecLoop(t *testing.T, path string) (stop func() []int) {
	t.Helper()
	pin := func() error {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			return fmt.Errorf("CPU affinity: %w", err)
		}
		cpu := 0
		for !set.IsSet(cpu) {
			cpu++
		}
		set.Zero()
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pin to CPU %d: %w", cpu, err)
		}
		return nil
	}
	return startedPIDs(execEvery(t, pin, func(int) (string, error) { return path, nil }))
}

// TestRunPerfEventArray runs a gadget whose tracer map is a perf event
// array and makes its CPU's buffer overflow: the events that fit are
// decoded, and those the kernel dropped are counted in Stats.Lost.
func TestRunPerfEventArray(t *testing.T) {
	requireRoot(t)
	elf := floodELF(t)
	probe := probeBinary(t)
	comm := filepath.Base(probe)

	onEvent, found := atFirstEvent(comm, func() {
		// Hold the reader while the program sends the rest of its burst:
		// far more than the buffer of its CPU holds.
		time.Sleep(300 * time.Millisecond)
	}, "events")
	opts := Options{Output: io.Discard, Timeout: 2 * time.Second, OnEvent: onEvent}
	done := runNamed(context.Background(), "flood", elf, opts)
	stop := pinnedExecLoop(t, probe)
	f := waitWhileRunning(t, found, done, "an event for "+comm)
	// The run goes on until the timeout, long enough for later execs on the
	// same CPU to find room and the kernel to report what it dropped.
	res := wait(t, done, "the run to end")
	pids := stop()
	if res.err != nil || f.err != nil {
		t.Fatal(res.err, f.err)
	}
	t.Logf("stats %+v", *res.stats)

	if typ := f.maps["events"].Type; typ != ebpf.PerfEventArray {
		t.Errorf("map events is a %s, want a PerfEventArray", typ)
	}
	pid, _ := f.ev.Value("pid")
	if p, ok := pid.(uint32); !ok || !containsPID(pids, int(p)) {
		t.Errorf("pid %v is not one of the probes started: %v", pid, pids)
	}
	// The reader saw the burst's first event before anything else of it.
	checkFields(t, f.ev, map[string]any{"seq": uint32(0)})
	// perfBufferPerCPU holds about 620 of the burst's 424-byte records; the
	// reader took one before it stopped.
	if want := uint64(floodBurst - perfBufferPerCPU/424 - 1); res.stats.Lost < want {
		t.Errorf("stats %+v, want at least %d lost", *res.stats, want)
	}
	if fitted := uint64(perfBufferPerCPU/424 - 1); res.stats.Events < fitted {
		t.Errorf("stats %+v: fewer events than the %d of the first burst that fitted", *res.stats, fitted)
	}
	// Its program, the perf event array and .bss (the marker variables).
	checkReleased(t, f.held, 1, 2)
}
