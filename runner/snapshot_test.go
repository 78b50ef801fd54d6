package runner

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
)

// A record as snapshot_process writes it: 5 integers and the command name.
var testRecord = &btf.Struct{Name: "process", Size: 36, Members: []btf.Member{
	{Name: "pid", Type: typedef("gadget_pid", u32T), Offset: 0},
	{Name: "tid", Type: typedef("gadget_tid", u32T), Offset: 32},
	{Name: "ppid", Type: typedef("gadget_ppid", u32T), Offset: 64},
	{Name: "uid", Type: typedef("gadget_uid", u32T), Offset: 96},
	{Name: "gid", Type: typedef("gadget_gid", u32T), Offset: 128},
	{Name: "comm", Type: &btf.Array{Type: typedef("gadget_comm", charT), Index: u32T, Nelems: 16}, Offset: 160},
}}

func TestSplitRecords(t *testing.T) {
	d, err := newDecoder(testRecord)
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{{"pid", "gadget_pid", uint32(1)}, {"tid", "gadget_tid", uint32(1)}, {"ppid", "gadget_ppid", uint32(0)},
			{"uid", "gadget_uid", uint32(0)}, {"gid", "gadget_gid", uint32(0)}, {"comm", "gadget_comm", "systemd"}},
		{{"pid", "gadget_pid", uint32(4242)}, {"tid", "gadget_tid", uint32(4243)}, {"ppid", "gadget_ppid", uint32(1)},
			{"uid", "gadget_uid", uint32(1000)}, {"gid", "gadget_gid", uint32(100)}, {"comm", "gadget_comm", "fifteen-chars-x"}},
	}
	// What an iterator writes: the records back to back, as bpf_seq_write
	// copies them.
	var out []byte
	for _, ev := range want {
		rec := make([]byte, 36)
		for i := range 5 {
			binary.NativeEndian.PutUint32(rec[4*i:], ev[i].Value.(uint32))
		}
		copy(rec[20:], ev[5].Value.(string))
		out = append(out, rec...)
	}

	records, err := splitRecords(out, d.size)
	if err != nil || len(records) != len(want) {
		t.Fatalf("split %d bytes into %d records (%v), want %d", len(out), len(records), err, len(want))
	}
	for i, rec := range records {
		ev, err := d.decode(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ev, want[i]) {
			t.Errorf("record %d: %v, want %v", i, ev, want[i])
		}
	}
	if records, err := splitRecords(nil, d.size); err != nil || len(records) != 0 {
		t.Errorf("no output: %d records, %v; want none and no error", len(records), err)
	}
	for _, tc := range []struct {
		out  []byte
		size uint32
		err  string
	}{
		{out[:50], 36, "wrote 50 bytes, not a whole number of 36-byte records"},
		{append(slices.Clone(out), 0), 36, "wrote 73 bytes, not a whole number of 36-byte records"},
		{out, 0, "wrote 72 bytes, not a whole number of 0-byte records"},
	} {
		if _, err := splitRecords(tc.out, tc.size); err == nil || err.Error() != tc.err {
			t.Errorf("%d bytes in %d-byte records: got %v, want %q", len(tc.out), tc.size, err, tc.err)
		}
	}
}

func TestParseSnapshotProcess(t *testing.T) {
	g, err := parseGadget(loadSpec(t, gadgetELF(t, "snapshot_process")))
	if err != nil {
		t.Fatal(err)
	}
	if g.snapshot == nil || g.snapshot.name != "processes" || !slices.Equal(g.snapshot.programs, []string{"snapshot_tasks"}) {
		t.Fatalf("snapshotter %+v, want processes with program snapshot_tasks", g.snapshot)
	}
	want := program{name: "snapshot_tasks", section: "iter/task", kind: attachIter, target: "task"}
	if len(g.attach) != 1 || g.attach[0] != want {
		t.Errorf("attach plan %+v, want [%+v]", g.attach, want)
	}
	// The gadget's struct is the one TestSplitRecords decodes.
	d, err := newDecoder(testRecord)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(g.decoder.fields, d.fields, func(a, b fieldDecoder) bool {
		return a.name == b.name && a.tag == b.tag && a.offset == b.offset && a.size == b.size
	}) || g.decoder.size != d.size {
		t.Errorf("record decoder %+v, want %+v", g.decoder, d)
	}
}

// TestSnapshotProcess takes snapshots with and without show_threads and
// finds this process, one of its threads and a child in them.
func TestSnapshotProcess(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "snapshot_process")
	if kernel, err := btf.LoadKernelSpec(); err != nil {
		t.Skipf("no kernel BTF: %v", err)
	} else if err := kernel.TypeByName("bpf_iter_task", new(*btf.Func)); err != nil {
		t.Skipf("this kernel has no task iterator (Linux 5.8 or later): %v", err)
	}
	requireNothingHeld(t)

	// A child of this process, so that its ppid and comm are known.
	sleep := exec.Command("sleep", "30")
	if err := sleep.Start(); err != nil {
		t.Skipf("no sleep to start: %v", err)
	}
	defer sleep.Wait()
	defer sleep.Process.Kill()
	var during map[kernelObject]bool
	var heldErr error
	for _, threads := range []bool{false, true} {
		var events []Event
		var out bytes.Buffer
		params := map[string]string{}
		if threads {
			params["show_threads"] = "true"
		}
		res, err := run(context.Background(), "snapshot_process", elf, Options{
			Output: &out, Format: FormatJSON, Timeout: 10 * time.Second, Params: params,
			OnEvent: func(ev Event) {
				if during == nil && heldErr == nil {
					during, heldErr = heldBPFObjects()
				}
				events = append(events, ev)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		self, child, ownThreads := false, false, 0
		for _, ev := range events {
			pid, _ := ev.Value("pid")
			tid, _ := ev.Value("tid")
			if !threads && pid != tid {
				t.Errorf("record for thread %v of process %v without show_threads", tid, pid)
			}
			switch {
			case pid == uint32(os.Getpid()) && tid == pid:
				self = true
				checkFields(t, ev, map[string]any{"ppid": uint32(os.Getppid()), "uid": uint32(os.Getuid()),
					"gid": uint32(os.Getgid()), "comm": testComm(t)})
			case pid == uint32(os.Getpid()):
				ownThreads++
			case pid == uint32(sleep.Process.Pid):
				child = true
				checkFields(t, ev, map[string]any{"ppid": uint32(os.Getpid()), "comm": "sleep"})
			}
		}
		if !self || !child || (threads && ownThreads == 0) {
			t.Errorf("show_threads %v: this process found %v, its child %v, its other threads %d, in %d records",
				threads, self, child, ownThreads, len(events))
		}
		if res.Events != uint64(len(events)) || strings.Count(out.String(), "\n") != len(events) {
			t.Errorf("stats %+v, %d records, %d output lines", *res, len(events), strings.Count(out.String(), "\n"))
		}
	}

	// A filter and --max-events apply to records as to events.
	var out bytes.Buffer
	res, err := run(context.Background(), "snapshot_process", elf, Options{Output: &out, Fields: []string{"comm", "ppid"},
		Filters: []Filter{{Field: "pid", Value: strconv.Itoa(sleep.Process.Pid)}}})
	if err != nil || out.String() != fmt.Sprintf("COMM            PPID\nsleep           %d\n", os.Getpid()) || res.Events-res.Filtered != 1 {
		t.Errorf("snapshot filtered to the child (%v):\n%s", err, out.String())
	}
	res, err = run(context.Background(), "snapshot_process", elf, Options{Output: io.Discard, MaxEvents: 3})
	if err != nil || res.Events != 3 {
		t.Errorf("snapshot with MaxEvents 3: %v, stats %+v", err, res)
	}
	// While printing: the program, .rodata and .bss (the links are closed once read).
	if heldErr != nil {
		t.Errorf("BPF objects held while reading: %v", heldErr)
	}
	checkReleased(t, during, 1, 2)
}

// TestSnapshotRefusedClearly: an iterator the kernel does not have (as on
// kernels before 5.8, or one named wrong) is refused with its name, before
// anything is printed, and nothing stays loaded.
func TestSnapshotRefusedClearly(t *testing.T) {
	requireRoot(t)
	elf := rename(t, gadgetELF(t, "snapshot_process"), "iter/task", "iter/tsk")
	requireNothingHeld(t)
	before := listKernelObjects(t)
	var out bytes.Buffer
	_, err := run(context.Background(), "snapshot_process", elf, Options{Output: &out, Timeout: 10 * time.Second})
	want := `load: program snapshot_tasks (section iter/tsk_) is a BPF iterator over "tsk_", which this kernel does not have (no bpf_iter_tsk_ in its BTF; BPF iterators need Linux 5.8 or later)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got error %v, want one containing %q", err, want)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q before refusing", out.String())
	}
	// The maps the refused load created are freed.
	left := leftInKernel(t, func(obj kernelObject) bool { return !before[obj] })
	if held := ownBPFObjects(t); len(held) != 0 || len(left) != 0 {
		t.Errorf("after the refusal the process holds %v, and the kernel has new objects %v", held, left)
	}
}
