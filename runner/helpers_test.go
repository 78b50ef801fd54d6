package runner

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// Helpers the integration tests share: the BPF objects a run holds and
// leaves behind, and processes that trigger exec events.

// kernelObject is a BPF program or map, by kernel ID.
type kernelObject struct {
	kind string // "prog" or "map"
	id   uint32
}

// kernelObjects lists every BPF program and map in the kernel.
func kernelObjects() (map[kernelObject]bool, error) {
	objs := make(map[kernelObject]bool)
	progID, err := ebpf.ProgramGetNextID(0)
	for ; err == nil; progID, err = ebpf.ProgramGetNextID(progID) {
		objs[kernelObject{"prog", uint32(progID)}] = true
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list programs: %w", err)
	}
	mapID, err := ebpf.MapGetNextID(0)
	for ; err == nil; mapID, err = ebpf.MapGetNextID(mapID) {
		objs[kernelObject{"map", uint32(mapID)}] = true
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list maps: %w", err)
	}
	return objs, nil
}

// heldBPFObjects lists the BPF programs and maps this process holds, from
// the prog_id and map_id lines of /proc/self/fdinfo (bpf_link descriptors
// name their program too). Tests call it while a run goes on, from
// OnEvent, to learn which objects the run created: other processes' BPF
// objects do not disturb that.
func heldBPFObjects() (map[kernelObject]bool, error) {
	fds, err := os.ReadDir("/proc/self/fdinfo")
	if err != nil {
		return nil, err
	}
	held := make(map[kernelObject]bool)
	for _, fd := range fds {
		f, err := os.Open(filepath.Join("/proc/self/fdinfo", fd.Name()))
		if err != nil {
			continue // closed since the directory was read
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			key, value, _ := strings.Cut(s.Text(), ":")
			kind, ok := map[string]string{"prog_id": "prog", "map_id": "map"}[key]
			if !ok {
				continue
			}
			id, err := strconv.ParseUint(strings.TrimSpace(value), 10, 32)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("fdinfo %s: %q: %w", fd.Name(), s.Text(), err)
			}
			held[kernelObject{kind, uint32(id)}] = true
		}
		f.Close()
	}
	return held, nil
}

func ownBPFObjects(t *testing.T) map[kernelObject]bool {
	t.Helper()
	held, err := heldBPFObjects()
	if err != nil {
		t.Fatal(err)
	}
	return held
}

func listKernelObjects(t *testing.T) map[kernelObject]bool {
	t.Helper()
	objs, err := kernelObjects()
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// requireNothingHeld stops the test if this process already holds a BPF
// object, which would be counted as the run's.
func requireNothingHeld(t *testing.T) {
	t.Helper()
	if held := ownBPFObjects(t); len(held) != 0 {
		t.Fatalf("process already holds BPF objects %v", held)
	}
}

// checkReleased checks a run's lifecycle: while it ran this process held
// (during) progs programs and maps maps, after it the process holds no
// BPF object, and the kernel has freed every one of those.
func checkReleased(t *testing.T, during map[kernelObject]bool, progs, maps int) {
	t.Helper()
	var p, m int
	for obj := range during {
		if obj.kind == "prog" {
			p++
		} else {
			m++
		}
	}
	if p != progs || m != maps {
		t.Errorf("run held %d programs and %d maps, want %d and %d: %v", p, m, progs, maps, during)
	}
	if after := ownBPFObjects(t); len(after) != 0 {
		t.Errorf("process still holds %v after the run", after)
	}
	if left := leftInKernel(t, func(obj kernelObject) bool { return during[obj] }); len(left) != 0 {
		t.Errorf("still in the kernel after the run: %v", left)
	}
}

// leftInKernel waits up to 5 seconds for the kernel to have none of the
// programs and maps that left reports, and returns those it still has
// then. The kernel drops a program's references to its maps after an RCU
// grace period, so a map can outlive the last descriptor to it a moment.
func leftInKernel(t *testing.T, left func(kernelObject) bool) []kernelObject {
	t.Helper()
	var found []kernelObject
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		found = found[:0]
		for obj := range listKernelObjects(t) {
			if left(obj) {
				found = append(found, obj)
			}
		}
		if len(found) == 0 || time.Now().After(deadline) {
			return found
		}
	}
}

// startedProcess is a process an exec loop started.
type startedProcess struct {
	path string
	pid  int
}

// execEvery starts a process every 50 ms and waits for it, until the
// returned stop function is called, so that a gadget started concurrently
// surely sees an exec once it is attached. next prepares the n-th exec
// (from 0) and returns the path to run. setup, if not nil, runs first on
// the loop's OS thread, which stays locked to it and ends with it: the
// processes inherit what setup sets there. stop returns what was started;
// errors fail the test.
func execEvery(t *testing.T, setup func() error, next func(n int) (string, error)) (stop func() []startedProcess) {
	t.Helper()
	var (
		procs []startedProcess
		errs  []error
		quit  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		if setup != nil {
			runtime.LockOSThread()
			if err := setup(); err != nil {
				errs = append(errs, err)
				return
			}
		}
		for n := 0; ; n++ {
			path, err := next(n)
			if err == nil {
				cmd := exec.Command(path)
				if err = cmd.Start(); err == nil {
					procs = append(procs, startedProcess{path, cmd.Process.Pid})
					if err = cmd.Wait(); err != nil {
						err = fmt.Errorf("%s: %w", path, err)
					}
				}
			}
			if err != nil {
				errs = append(errs, err)
			}
			select {
			case <-quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return sync.OnceValue(func() []startedProcess {
		close(quit)
		<-done
		if err := errors.Join(errs...); err != nil {
			t.Errorf("exec loop: %v", err)
		}
		return procs
	})
}

// execLoop execs path every 50 ms (see execEvery); stop returns the PIDs.
func execLoop(t *testing.T, path string) (stop func() []int) {
	t.Helper()
	return startedPIDs(execEvery(t, nil, func(int) (string, error) { return path, nil }))
}

// startedPIDs turns an exec loop's stop function into one that returns
// the PIDs it started.
func startedPIDs(stop func() []startedProcess) func() []int {
	return func() []int {
		var pids []int
		for _, p := range stop() {
			pids = append(pids, p.pid)
		}
		return pids
	}
}

// firstEvent is what a test sees at the first event of its probe: the
// event, the BPF objects this process held then, and the kernel's
// information on the gadget's maps that were asked for, by name.
type firstEvent struct {
	ev   Event
	held map[kernelObject]bool
	maps map[string]*ebpf.MapInfo
	err  error
}

// atFirstEvent returns an OnEvent function that records the first event
// whose comm is comm (see firstEvent), sends it on the returned channel and
// then calls then, if not nil, still on Run's goroutine.
func atFirstEvent(comm string, then func(), maps ...string) (func(Event), <-chan firstEvent) {
	found := make(chan firstEvent, 1)
	return func(ev Event) {
		if c, _ := ev.Value("comm"); c != comm || len(found) > 0 {
			return
		}
		f := firstEvent{ev: ev, maps: map[string]*ebpf.MapInfo{}}
		f.held, f.err = heldBPFObjects()
		for _, name := range maps {
			if f.err == nil {
				f.maps[name], f.err = heldMap(name)
			}
		}
		found <- f
		if then != nil {
			then()
		}
	}, found
}
