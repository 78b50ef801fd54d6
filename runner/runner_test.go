package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading eBPF programs needs root")
	}
}

type result struct {
	stats *Stats
	err   error
}

// runAsync runs the gadget on its own goroutine, as a caller's Ctrl-C handler would see it.
func runAsync(ctx context.Context, elf []byte, opts Options) <-chan result {
	done := make(chan result, 1)
	go func() {
		stats, err := run(ctx, "trace_exec", elf, opts)
		done <- result{stats, err}
	}()
	return done
}

func wait[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitWhileRunning waits for c unless the run ends first.
func waitWhileRunning[T any](t *testing.T, c <-chan T, done <-chan result, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case res := <-done:
		t.Fatalf("run ended (stats %+v, error %v) before %s", *res.stats, res.err, what)
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// probeBinary copies /bin/true under a unique name of 15 characters, the most
// a comm holds, so its events can be told apart from everything else.
func probeBinary(t *testing.T) string {
	t.Helper()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	path := filepath.Join(t.TempDir(), "bpfleet-"+hex.EncodeToString(suffix)[:7])
	prog, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skipf("no /bin/true to copy: %v", err)
	}
	if err := os.WriteFile(path, prog, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunTraceExec(t *testing.T) {
	requireRoot(t)
	elf := traceExecELF(t)
	probe := probeBinary(t)
	comm := filepath.Base(probe)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	found := make(chan Event, 1)
	var out bytes.Buffer
	done := runAsync(ctx, elf, Options{
		Output:  &out,
		Format:  FormatJSON,
		Timeout: time.Minute,
		OnEvent: func(ev Event) {
			if c, _ := ev.Value("comm"); c == comm {
				select {
				case found <- ev:
					cancel()
				default:
				}
			}
		},
	})
	stop := execLoop(t, probe)
	ev := waitWhileRunning(t, found, done, "an event for "+comm)
	res := wait(t, done, "the run to end")
	pids := stop()
	if res.err != nil {
		t.Fatal(res.err)
	}

	pid, _ := ev.Value("pid")
	if p, ok := pid.(uint32); !ok || !containsPID(pids, int(p)) {
		t.Errorf("pid %v is not one of the probes started: %v", pid, pids)
	}
	for name, want := range map[string]any{
		"ppid":     uint32(os.Getpid()),
		"uid":      uint32(os.Getuid()), // 0: the tests run as root
		"gid":      uint32(os.Getgid()),
		"filename": probe,
	} {
		if got, _ := ev.Value(name); got != want {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}
	ts, _ := ev.Value("timestamp")
	if age := time.Since(ts.(time.Time)); age < 0 || age > 30*time.Second {
		t.Errorf("timestamp %v is %v old", ts, age)
	}
	if res.stats.Events == 0 || res.stats.Lost != 0 {
		t.Errorf("stats %+v, want events and no losses", *res.stats)
	}

	// The same event as printed: JSON keyed by the struct's member names.
	var printed bool
	for line := range strings.Lines(out.String()) {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		if obj["comm"] == comm && obj["filename"] == probe && obj["pid"] == float64(pid.(uint32)) &&
			obj["timestamp"] == ts.(time.Time).Format(timeLayout) {
			printed = true
		}
	}
	if !printed {
		t.Errorf("event for pid %v not in the output:\n%s", pid, out.String())
	}
}

func containsPID(pids []int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

// TestRunReleasesKernelObjects checks that however a run ends, the programs
// and maps it created leave the kernel. It identifies them by the
// descriptors this process holds while the gadget runs, so BPF objects that
// other processes create meanwhile do not disturb the count.
func TestRunReleasesKernelObjects(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name        string
		gadget      string
		opts        Options
		cancel      bool // cancel the context while the gadget runs, as on Ctrl-C
		progs, maps int  // held while running
	}{
		// trace_exec: its program, the ring buffer, gadget_heap (used on
		// kernels without ring buffers) and the .bss map.
		{name: "timeout", gadget: "trace_exec", opts: Options{Timeout: 300 * time.Millisecond}, progs: 1, maps: 3},
		{name: "context cancelled", gadget: "trace_exec", cancel: true, progs: 1, maps: 3},
		{name: "max events", gadget: "trace_exec", opts: Options{MaxEvents: 2}, progs: 1, maps: 3},
		// trace_open (the loader of /bin/true opens files): two programs, the
		// start hash, the ring buffer, gadget_heap, .bss and .rodata holding
		// the parameters.
		{name: "params and filter", gadget: "trace_open", progs: 2, maps: 5, opts: Options{
			MaxEvents: 2,
			Params:    map[string]string{"start_max_entries": "512", "prefix": "/"},
			Fields:    []string{"fname"},
			Filters:   []Filter{{Field: "error", Value: "0"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			elf := gadgetELF(t, tc.gadget)
			requireNothingHeld(t)
			baseline := listKernelObjects(t)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// What this process holds and what the kernel lists, at the first event.
			type snapshot struct{ held, kernel map[kernelObject]bool }
			running := make(chan snapshot, 1)
			var snapErr error
			opts := tc.opts
			opts.Output = io.Discard
			opts.OnEvent = func(Event) {
				if len(running) == 0 && snapErr == nil {
					var s snapshot
					if s.held, snapErr = heldBPFObjects(); snapErr == nil {
						s.kernel, snapErr = kernelObjects()
					}
					running <- s
				}
			}
			done := runNamed(ctx, tc.gadget, elf, opts)
			stop := execLoop(t, "/bin/true")
			defer stop()

			during := waitWhileRunning(t, running, done, "a first event")
			if tc.cancel {
				cancel()
			}
			res := wait(t, done, "the run to end")
			if res.err != nil || snapErr != nil {
				t.Fatal(res.err, snapErr)
			}
			if tc.opts.MaxEvents != 0 && res.stats.Events != uint64(tc.opts.MaxEvents) {
				t.Errorf("%d events, want %d", res.stats.Events, tc.opts.MaxEvents)
			}

			for obj := range during.held {
				if !during.kernel[obj] || baseline[obj] {
					t.Errorf("%s %d held during the run: in kernel %v, in baseline %v", obj.kind, obj.id, during.kernel[obj], baseline[obj])
				}
			}
			checkReleased(t, during.held, tc.progs, tc.maps)
			t.Logf("kernel objects: %d before, %d during the run", len(baseline), len(during.kernel))
		})
	}
}

// A gadget that loads but fails to attach must not leave anything behind.
func TestRunReleasesOnAttachError(t *testing.T) {
	requireRoot(t)
	elf := rename(t, traceExecELF(t), "tracepoint/sched/sched_process_exec", "tracepoint/sched/no_such_tracepoint")
	_, err := run(context.Background(), "trace_exec", elf, Options{Output: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "attach trace_sched_process_exec (section tracepoint/sched/no_such_tracepoint)") {
		t.Fatalf("got error %v, want an attach error naming program and section", err)
	}
	if held := ownBPFObjects(t); len(held) != 0 {
		t.Errorf("process still holds %v after the failed run", held)
	}
}
