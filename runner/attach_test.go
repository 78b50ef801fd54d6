package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func TestParseSection(t *testing.T) {
	for _, tc := range []struct {
		section     string
		want        program
		unsupported bool   // errUnsupportedAttach expected
		err         string // other error expected
	}{
		{section: "tracepoint/sched/sched_process_exec",
			want: program{kind: attachTracepoint, group: "sched", target: "sched_process_exec"}},
		{section: "raw_tracepoint/sched_switch", want: program{kind: attachRawTracepoint, target: "sched_switch"}},
		{section: "raw_tp/sys_enter", want: program{kind: attachRawTracepoint, target: "sys_enter"}},
		{section: "tp_btf/sched_process_fork", want: program{kind: attachBTFTracepoint, target: "sched_process_fork"}},
		{section: "iter/task", want: program{kind: attachIter, target: "task"}},
		{section: "iter/", unsupported: true},
		{section: "iter/bpf_map_elem", unsupported: true},
		{section: "tracepoint/sched", err: "want tracepoint/<category>/<name>"},
		{section: "tracepoint/sched/", err: "want tracepoint/<category>/<name>"},
		{section: "tracepoint/a/b/c", err: "want tracepoint/<category>/<name>"},
		{section: "raw_tp/", unsupported: true},
		{section: "kprobe/bprm_execve", want: program{kind: attachKprobe, target: "bprm_execve"}},
		{section: "kretprobe/do_sys_openat2", want: program{kind: attachKretprobe, target: "do_sys_openat2"}},
		{section: "fentry/do_unlinkat", want: program{kind: attachFentry, target: "do_unlinkat"}},
		{section: "fexit/do_unlinkat", want: program{kind: attachFexit, target: "do_unlinkat"}},
		{section: "uprobe//usr/lib/libc.so.6:malloc",
			want: program{kind: attachUprobe, path: "/usr/lib/libc.so.6", target: "malloc"}},
		{section: "uretprobe//bin/bash:readline", want: program{kind: attachUretprobe, path: "/bin/bash", target: "readline"}},
		{section: "kprobe/", unsupported: true},
		{section: "kprobe/do_sys_open+0x10", err: "want kprobe/<kernel function>"},
		{section: "fexit/btrfs:btrfs_sync_file", err: "want fexit/<kernel function>"},
		{section: "uprobe/bin/bash:readline", err: "want uprobe/<absolute path>:<symbol>"},
		{section: "uprobe//bin/bash", err: "want uprobe/<absolute path>:<symbol>"},
		{section: "uretprobe//bin/bash:", err: "want uretprobe/<absolute path>:<symbol>"},
		{section: "kprobe.multi/do_*", unsupported: true},
		{section: "lsm/bprm_check_security", unsupported: true},
		{section: "raw_tracepoint.w/bpf_test_finish", unsupported: true},
		{section: "socket", want: program{kind: attachSocketFilter}},
		{section: "socket/udp", want: program{kind: attachSocketFilter}},
		{section: "socketfilter", unsupported: true},
	} {
		t.Run(tc.section, func(t *testing.T) {
			p, err := parseSection(tc.section)
			switch {
			case tc.unsupported:
				if !errors.Is(err, errUnsupportedAttach) || !strings.Contains(err.Error(), tc.section) {
					t.Fatalf("got error %v, want %v naming the section", err, errUnsupportedAttach)
				}
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got error %v, want one containing %q", err, tc.err)
				}
			default:
				tc.want.section = tc.section
				if err != nil || p != tc.want {
					t.Fatalf("got %+v, %v; want %+v", p, err, tc.want)
				}
			}
		})
	}
}

// An unsupported section must stop a run before anything reaches the kernel.
func TestRunRefusesUnsupportedSection(t *testing.T) {
	elf := traceExecELF(t)
	for _, section := range []string{
		"kprobe.multi/do_execveat_common",
		// Loading this would fail (no such kernel function), so the
		// planner's error proves no load was tried.
		"lsm/bpfleet_no_such_function",
	} {
		t.Run(section, func(t *testing.T) {
			patched := rename(t, elf, "tracepoint/sched/sched_process_exec", section)
			before := ownBPFObjects(t)
			stats, err := run(context.Background(), "patched", patched, Options{})
			if !errors.Is(err, errUnsupportedAttach) || !strings.Contains(err.Error(), section) {
				t.Fatalf("got error %v, want %v naming section %s", err, errUnsupportedAttach, section)
			}
			if !strings.HasPrefix(err.Error(), "run gadget patched: program trace_sched_process_exec: ") {
				t.Errorf("error %q does not say which gadget and program", err)
			}
			if stats != nil {
				t.Errorf("stats %+v for a gadget that never loaded, want nil", *stats)
			}
			if after := ownBPFObjects(t); len(after) != len(before) {
				t.Errorf("process holds BPF objects %v after the run, %v before", after, before)
			}
		})
	}
}

// On a kernel without kprobes (this project's CI host), a kprobe gadget loads,
// then fails to attach with an error naming the missing feature, and the run
// leaves nothing behind.
func TestRunKprobeWithoutKprobes(t *testing.T) {
	requireRoot(t)
	if err := probesSupported("kprobe"); err == nil {
		t.Skip("this kernel has kprobes; the testbed's guests run the kprobe gadget")
	}
	elf := gadgetELF(t, "trace_kprobe_exec")
	before := ownBPFObjects(t)
	stats, err := run(context.Background(), "trace_kprobe_exec", elf, Options{})
	if err == nil {
		t.Fatal("kprobe gadget ran on a kernel without kprobes")
	}
	const prefix = "run gadget trace_kprobe_exec: attach trace_bprm_execve (section kprobe/bprm_execve): " +
		"kprobes are not supported by this kernel (CONFIG_KPROBES)"
	if !strings.HasPrefix(err.Error(), prefix) || !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("got error %q, want one starting %q and wrapping ebpf.ErrNotSupported", err, prefix)
	}
	// Loaded but never attached: it never ran, so there are no stats to report.
	if stats != nil {
		t.Errorf("stats %+v, want nil for a gadget that never attached", stats)
	}
	if after := ownBPFObjects(t); len(after) != len(before) {
		t.Errorf("process holds BPF objects %v after the run, %v before", after, before)
	}
}

// uprobeTargetPlaceholder is the path testdata/attach_kinds.bpf.c probes;
// the test puts its target binary's path, of the same length, in its place.
const uprobeTargetPlaceholder = "/UPROBE_TARGET_PATH_PLACEHOLDER_PADDED_TO_LEAVE_ROOM_FOR_A_TEMPORARY_DIRECTORY_0123456789"

// uprobeTargetSource is the binary attach_kinds probes: it calls the probed
// function once, with its PID, so each call can be told from the others.
const uprobeTargetSource = `#include <unistd.h>

__attribute__((noinline)) unsigned long bpfleet_probe_target(unsigned long x)
{
	__asm__ volatile("");
	return 3 * x + 7;
}

int main(void)
{
	return bpfleet_probe_target(getpid()) == 0;
}
`

// uprobeTarget compiles uprobeTargetSource for this host, at a path as long
// as uprobeTargetPlaceholder whose name starts with 15 unique characters
// (its processes' comm).
func uprobeTarget(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	name := uniqueName("bpfleet-")[:15]
	pad := len(uprobeTargetPlaceholder) - len(dir) - len("/") - len(name)
	if pad < 0 {
		t.Skipf("temporary directory %s is too long for the uprobe section", dir)
	}
	src := filepath.Join(dir, "target.c")
	if err := os.WriteFile(src, []byte(uprobeTargetSource), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+strings.Repeat("x", pad))
	if err := runTool("clang", "-O2", "-o", path, src); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunAttachKinds loads and attaches one program per section type this
// host supports besides tracepoints (tested with the built-in gadgets) and
// checks that each fires on what the test does: exec a binary, which calls
// the probed function once.
func TestRunAttachKinds(t *testing.T) {
	requireRoot(t)
	target := uprobeTarget(t)
	elf := rename(t, testdataELF(t, "attach_kinds"), uprobeTargetPlaceholder, target)
	comm := filepath.Base(target)[:15]
	requireNothingHeld(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onFirst, found := atFirstEvent(comm, nil)
	onEvent, events := collect()
	done := runNamed(ctx, "attach_kinds", elf, Options{
		Output:  io.Discard,
		Timeout: time.Minute,
		Params:  map[string]string{"target_pid": strconv.Itoa(os.Getpid())},
		OnEvent: func(ev Event) { onFirst(ev); onEvent(ev) },
	})
	stop := execLoop(t, target)
	defer stop()
	f := waitWhileRunning(t, found, done, "an event for "+comm)
	// The events of the first process whose exec and call every program saw, by program.
	byPID := map[uint32]map[string]Event{}
	var pid uint32
	waitEvent(t, events, done, "events of every program for one process", func(ev Event) bool {
		p, _ := ev.Value("pid")
		prog, _ := ev.Value("prog")
		pid = p.(uint32)
		if byPID[pid] == nil {
			byPID[pid] = map[string]Event{}
		}
		byPID[pid][prog.(string)] = ev
		return len(byPID[pid]) == 4
	})
	cancel()
	res := wait(t, done, "the run to end")
	pids := stop()
	if res.err != nil || f.err != nil {
		t.Fatal(res.err, f.err)
	}
	if !containsPID(pids, int(pid)) {
		t.Errorf("pid %d is not one of the processes started: %v", pid, pids)
	}

	for _, tc := range []struct {
		prog  string
		value uint64 // exec: old_pid; uprobe: the argument; uretprobe: the return value
		file  string // exec: the path executed
	}{
		{prog: "raw_tp", value: uint64(pid), file: target},
		{prog: "tp_btf", value: uint64(pid), file: target},
		{prog: "uprobe", value: uint64(pid)},
		{prog: "uretprobe", value: 3*uint64(pid) + 7},
	} {
		t.Run(tc.prog, func(t *testing.T) {
			checkFields(t, byPID[pid][tc.prog], map[string]any{
				"pid": pid, "comm": comm, "prog": tc.prog, "value": tc.value, "filename": tc.file,
			})
		})
	}
	if res.stats.Lost != 0 {
		t.Errorf("stats %+v, want no losses", *res.stats)
	}
	// Four programs; the ring buffer, gadget_heap, .bss (the lost-sample
	// counter) and .rodata (target_pid).
	checkReleased(t, f.held, 4, 4)
}

func TestProbesSupported(t *testing.T) {
	sysfs, tracefs := t.TempDir(), t.TempDir()
	oldSysfs, oldTracefs := sysfsEventSources, tracefsDirs
	t.Cleanup(func() { sysfsEventSources, tracefsDirs = oldSysfs, oldTracefs })
	sysfsEventSources, tracefsDirs = sysfs, []string{tracefs}

	for _, typ := range []string{"kprobe", "uprobe"} {
		err := probesSupported(typ)
		config := map[string]string{"kprobe": "CONFIG_KPROBES", "uprobe": "CONFIG_UPROBES"}[typ]
		if !errors.Is(err, ebpf.ErrNotSupported) || !strings.HasPrefix(err.Error(), typ+"s are not supported by this kernel ("+config+")") {
			t.Errorf("%s with neither PMU nor tracefs: got %v", typ, err)
		}
	}
	if err := os.WriteFile(filepath.Join(tracefs, "uprobe_events"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := probesSupported("uprobe"); err != nil {
		t.Errorf("uprobe with uprobe_events in tracefs: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(sysfs, "kprobe"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sysfs, "kprobe", "type"), []byte("6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := probesSupported("kprobe"); err != nil {
		t.Errorf("kprobe with the PMU: %v", err)
	}
}

// TestRunFentryRefusedClearly: where the kernel refuses BPF trampolines on
// kernel functions (this project's CI host, whose ftrace refuses function
// hooks even to root), the error names the program and the reason instead of
// cilium/ebpf's memlock hint, and nothing stays loaded.
func TestRunFentryRefusedClearly(t *testing.T) {
	requireRoot(t)
	elf := rename(t, gadgetELF(t, "trace_kprobe_exec"), "kprobe/bprm_execve", "fentry/bprm_execve")
	before := ownBPFObjects(t)
	_, err := run(context.Background(), "fentry_exec", elf, Options{Timeout: time.Second})
	if err == nil {
		t.Skip("this kernel loads fentry programs; the testbed's x86_64 guest covers them")
	}
	const prefix = "run gadget fentry_exec: load: fentry program trace_bprm_execve (section fentry/bprm_execve) is refused by this kernel: "
	if !errors.Is(err, unix.EPERM) || !strings.HasPrefix(err.Error(), prefix) || strings.Contains(err.Error(), "MEMLOCK") {
		t.Fatalf("got error %q, want EPERM starting %q, without the memlock hint", err, prefix)
	}
	ftrace := filepath.Join(tracefsDir, "available_filter_functions")
	if f, ferr := os.Open(ftrace); errors.Is(ferr, unix.EPERM) {
		want := prefix + "ftrace refuses to hook kernel functions, which BPF trampolines attach through (open " + ftrace +
			": operation not permitted): operation not permitted"
		if err.Error() != want {
			t.Errorf("got error\n%s\nwant\n%s", err, want)
		}
	} else if ferr == nil {
		f.Close()
	}
	if after := ownBPFObjects(t); len(after) != len(before) {
		t.Errorf("process holds BPF objects %v after the run, %v before", after, before)
	}
}

// TestTrampolineRefusal checks the reasons given for an fentry/fexit program
// refused with EPERM on kernels this host is not, and that the error names
// the program that failed.
func TestTrampolineRefusal(t *testing.T) {
	tracefs := t.TempDir()
	oldLockdown, oldTracefs := lockdownFile, tracefsDirs
	t.Cleanup(func() { lockdownFile, tracefsDirs = oldLockdown, oldTracefs })
	lockdownFile, tracefsDirs = filepath.Join(t.TempDir(), "lockdown"), []string{tracefs}
	ftrace := filepath.Join(tracefs, "available_filter_functions")
	// setFiles writes the lockdown file and available_filter_functions, or
	// removes those given as "".
	setFiles := func(lockdown, functions string) {
		t.Helper()
		for path, contents := range map[string]string{lockdownFile: lockdown, ftrace: functions} {
			os.Remove(path)
			if contents != "" {
				if err := os.WriteFile(path, []byte(contents), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	for _, tc := range []struct {
		name      string
		lockdown  string // contents of the lockdown file; none when empty
		functions string // contents of available_filter_functions; none when empty
		want      string
	}{
		{name: "no dynamic ftrace",
			want: "the kernel has no dynamic ftrace (CONFIG_DYNAMIC_FTRACE: no available_filter_functions in tracefs), which BPF trampolines attach through"},
		{name: "lockdown", lockdown: "none integrity [confidentiality]\n", functions: "bprm_execve\n",
			want: "the kernel is locked down (lockdown: confidentiality)"},
		{name: "function not hookable", lockdown: "[none] integrity confidentiality\n", functions: "do_unlinkat\nbprm_execve_x\n",
			want: "ftrace cannot hook bprm_execve (not in " + ftrace + ")"},
		{name: "no reason found", lockdown: "none [integrity] confidentiality\n", functions: "do_unlinkat\nbprm_execve [binfmt]\n",
			want: "bpfleet cannot tell why (lockdown: integrity; ftrace can hook bprm_execve)"},
		{name: "lockdown unknown", functions: "bprm_execve\n",
			want: "bpfleet cannot tell why (lockdown: unknown; ftrace can hook bprm_execve)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setFiles(tc.lockdown, tc.functions)
			if got := trampolineRefusal("bprm_execve"); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}

	// cilium/ebpf loads programs in no fixed order: the error names the one it reports.
	setFiles("", "bprm_execve\n")
	plan := []program{
		{name: "on_entry", section: "fentry/do_unlinkat", kind: attachFentry, target: "do_unlinkat"},
		{name: "on_exit", section: "fexit/bprm_execve", kind: attachFexit, target: "bprm_execve"},
	}
	err := loadError(plan, &coreTarget{}, fmt.Errorf("program on_exit: load program: %w (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", unix.EPERM))
	const want = "load: fexit program on_exit (section fexit/bprm_execve) is refused by this kernel: " +
		"bpfleet cannot tell why (lockdown: unknown; ftrace can hook bprm_execve): operation not permitted"
	if !errors.Is(err, unix.EPERM) || err.Error() != want {
		t.Errorf("got %q, want %q wrapping EPERM", err, want)
	}
}
