package runner

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
)

// trace_exec_nocore is the exec tracer for kernels without BTF: it must
// carry no CO-RE relocation, which such a kernel could not resolve.

// coreRelocations counts the CO-RE relocations of every program in a
// gadget ELF.
func coreRelocations(t *testing.T, elf []byte) int {
	t.Helper()
	n := 0
	for _, prog := range loadSpec(t, elf).Programs {
		for i := range prog.Instructions {
			if btf.CORERelocationMetadata(&prog.Instructions[i]) != nil {
				n++
			}
		}
	}
	return n
}

func TestTraceExecNoCOREHasNoCORERelocations(t *testing.T) {
	// The CO-RE trace_exec reads task_struct, so the count is not vacuously 0.
	if n := coreRelocations(t, traceExecELF(t)); n == 0 {
		t.Fatal("trace_exec has no CO-RE relocations: the check below could not tell")
	}
	if n := coreRelocations(t, gadgetELF(t, "trace_exec_nocore")); n != 0 {
		t.Errorf("trace_exec_nocore has %d CO-RE relocation(s), want none", n)
	}
}

func TestRunTraceExecNoCORE(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_exec_nocore")
	probe := probeBinary(t)
	dir := filepath.Dir(probe)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	found := make(chan Event, 1)
	done := runNamed(ctx, "trace_exec_nocore", elf, Options{
		Output:  io.Discard,
		Timeout: time.Minute,
		OnEvent: func(ev Event) {
			if f, _ := ev.Value("filename"); strings.HasPrefix(fmt.Sprint(f), dir+"/") {
				select {
				case found <- ev:
					cancel()
				default:
				}
			}
		},
	})
	stop := execLinks(t, filepath.Join(dir, "p"), probe)
	ev := waitWhileRunning(t, found, done, "an event for a probe in "+dir)
	res := wait(t, done, "the run to end")
	started := stop()
	if res.err != nil {
		t.Fatal(res.err)
	}

	var names []string
	for _, f := range ev {
		names = append(names, f.Name)
	}
	if want := []string{"timestamp", "pid", "uid", "gid", "comm", "filename"}; !slices.Equal(names, want) {
		t.Errorf("fields %v, want %v", names, want)
	}
	// pid and filename come from the hand-declared tracepoint record: the
	// PID of the very process started from that path means its offsets and
	// the __data_loc decoding are right.
	filename, _ := ev.Value("filename")
	pid, ok := started[filename.(string)]
	if !ok {
		t.Fatalf("filename %q is not a path a probe was started from: %v", filename, started)
	}
	checkFields(t, ev, map[string]any{
		"pid":  uint32(pid),
		"comm": filepath.Base(filename.(string)),
		"uid":  uint32(os.Getuid()),
		"gid":  uint32(os.Getgid()),
	})
	ts, _ := ev.Value("timestamp")
	if age := time.Since(ts.(time.Time)); age < 0 || age > 30*time.Second {
		t.Errorf("timestamp %v is %v old", ts, age)
	}
	if res.stats.Lost != 0 {
		t.Errorf("stats %+v, want no losses", *res.stats)
	}
}

// execLinks execs binary every 50 ms (see execEvery), each time through a
// new hard link prefix<n>, so that an exec event's filename tells which
// process it was. stop returns the PIDs by path.
func execLinks(t *testing.T, prefix, binary string) (stop func() map[string]int) {
	t.Helper()
	loop := execEvery(t, nil, func(n int) (string, error) {
		path := prefix + strconv.Itoa(n)
		return path, os.Link(binary, path)
	})
	return func() map[string]int {
		byPath := map[string]int{}
		for _, p := range loop() {
			byPath[p.path] = p.pid
		}
		return byPath
	}
}
