package runner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
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
	// It was loaded, so it has stats, and nothing in them.
	if stats == nil || *stats != (Stats{Kind: KindTracer}) {
		t.Errorf("stats %+v, want a tracer's, all zero", stats)
	}
	if after := ownBPFObjects(t); len(after) != len(before) {
		t.Errorf("process holds BPF objects %v after the run, %v before", after, before)
	}
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

// TestRunFentryRefusedClearly: where the kernel refuses BPF tracing programs (this host's
// lockdown), the error says so instead of cilium/ebpf's memlock hint, and nothing stays loaded.
func TestRunFentryRefusedClearly(t *testing.T) {
	requireRoot(t)
	elf := rename(t, gadgetELF(t, "trace_kprobe_exec"), "kprobe/bprm_execve", "fentry/bprm_execve")
	before := ownBPFObjects(t)
	_, err := run(context.Background(), "fentry_exec", elf, Options{Timeout: time.Second})
	if err == nil {
		t.Skip("this kernel loads fentry programs; the testbed's x86_64 guest covers them")
	}
	if strings.Contains(err.Error(), "operation not permitted") && !strings.Contains(err.Error(), "fentry programs (section fentry/bprm_execve) are refused by this kernel") {
		t.Fatalf("EPERM without the explanation: %v", err)
	}
	if after := ownBPFObjects(t); len(after) != len(before) {
		t.Errorf("process holds BPF objects %v after the run, %v before", after, before)
	}
}
