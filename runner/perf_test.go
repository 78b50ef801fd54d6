package runner

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
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

// ringbufLostBurst and ringbufLostRecord are the number of events
// testdata/ringbuf_lost.bpf.c sends per burst and the room each takes in its
// ring buffer: the 8-byte record header and the 32-byte struct event.
const (
	ringbufLostBurst  = 1000
	ringbufLostRecord = 8 + 32
)

// TestRunRingBufferLost makes a one-page ring buffer overflow while the
// reader is held in OnEvent, and checks that every event the gadget was
// triggered to send is either read or counted in Stats.Lost, from the
// gadget's events_lost_samples.
func TestRunRingBufferLost(t *testing.T) {
	requireRoot(t)
	elf := testdataELF(t, "ringbuf_lost")
	requireNothingHeld(t)
	page := os.Getpagesize()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	onFirst, found := atFirstEvent(testComm(t), func() { <-release }, "events")
	onEvent, events := collect()
	done := runNamed(ctx, "ringbuf_lost", elf, Options{
		Output:  io.Discard,
		Timeout: time.Minute,
		Params:  map[string]string{"target_pid": strconv.Itoa(os.Getpid()), "events_max_entries": strconv.Itoa(page)},
		OnEvent: func(ev Event) { onEvent(ev); onFirst(ev) },
	})
	// getpgid(n) is the n-th burst; the call only has to enter the kernel.
	var bursts uint64
	burst := func() error {
		bursts++
		unix.Getpgid(int(bursts))
		return nil
	}
	stopBursts := triggerLoop(t, burst)
	f := waitWhileRunning(t, found, done, "the first burst")
	stopBursts()
	// The reader is held at the first event: these find the ring buffer full
	// but for the record it read.
	burst()
	burst()
	close(release)
	// Bursts before the first one seen came before the program was attached.
	first, _ := f.ev.Value("call")
	fired := bursts - first.(uint64) + 1

	// nextCall returns the call of the next event read, or false after d without one.
	nextCall := func(d time.Duration) (uint64, bool) {
		select {
		case ev := <-events:
			call, _ := ev.Value("call")
			return call.(uint64), true
		case res := <-done:
			t.Fatalf("run ended (stats %+v, error %v) before the mark", res.stats, res.err)
		case <-time.After(d):
		}
		return 0, false
	}
	// A mark (getpgid(0)) ends the run: once it is read, so is everything
	// sent before it. Sent while the ring buffer is still full, it is lost
	// (and counted), so let the reader go quiet first and send marks until
	// one arrives.
	for _, ok := nextCall(50 * time.Millisecond); ok; _, ok = nextCall(50 * time.Millisecond) {
	}
	var marks uint64
	for seen := false; !seen; {
		unix.Getpgid(0)
		marks++
		for !seen {
			call, ok := nextCall(time.Second)
			if !ok {
				break
			}
			seen = call == 0
		}
	}
	cancel()
	res := wait(t, done, "the run to end")
	if res.err != nil || f.err != nil {
		t.Fatal(res.err, f.err)
	}
	t.Logf("stats %+v after %d bursts and %d marks", *res.stats, fired, marks)

	if m := f.maps["events"]; m.Type != ebpf.RingBuf || m.MaxEntries != uint32(page) {
		t.Errorf("map events is a %s of %d bytes, want a RingBuf of %d", m.Type, m.MaxEntries, page)
	}
	checkFields(t, f.ev, map[string]any{"pid": uint32(os.Getpid()), "seq": uint32(0)})
	// What the ring buffer holds, the record the reader took before it was
	// held (which made room for one more), and the mark.
	if want := uint64(page/ringbufLostRecord + 1 + 1); res.stats.Events != want {
		t.Errorf("%d events read, want %d", res.stats.Events, want)
	}
	if sent := fired*ringbufLostBurst + marks; res.stats.Lost == 0 || res.stats.Events+res.stats.Lost != sent {
		t.Errorf("stats %+v: want the %d events sent either read or lost, and some lost", *res.stats, sent)
	}
	// Its program; the ring buffer, gadget_heap, .bss (the lost-sample
	// counter) and .rodata (the parameters).
	checkReleased(t, f.held, 1, 4)
}
