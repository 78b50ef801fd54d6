package runner

import (
	"context"
	"errors"
	"strings"
	"testing"
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
		{section: "tracepoint/sched", err: "want tracepoint/<category>/<name>"},
		{section: "tracepoint/sched/", err: "want tracepoint/<category>/<name>"},
		{section: "tracepoint/a/b/c", err: "want tracepoint/<category>/<name>"},
		{section: "raw_tp/", unsupported: true},
		{section: "kprobe/do_execveat_common", unsupported: true},
		{section: "fentry/do_unlinkat", unsupported: true},
		{section: "raw_tracepoint.w/bpf_test_finish", unsupported: true},
		{section: "socket", unsupported: true},
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
		"kprobe/do_execveat_common",
		// Loading this would fail (no such kernel function, and fentry is
		// refused on this host), so the planner's error proves no load was tried.
		"fentry/bpfleet_no_such_function",
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
			if stats == nil || *stats != (Stats{}) {
				t.Errorf("stats %+v, want zero", stats)
			}
			if after := ownBPFObjects(t); len(after) != len(before) {
				t.Errorf("process holds BPF objects %v after the run, %v before", after, before)
			}
		})
	}
}
