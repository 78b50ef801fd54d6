package runner

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// snippetPrelude lets a few lines of gadget C compile without vmlinux.h, so
// that the marker tests build in milliseconds; they are only parsed, never
// loaded.
const snippetPrelude = `
typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32;
typedef unsigned long long __u64; typedef signed char __s8; typedef short __s16;
typedef int __s32; typedef long long __s64;
typedef __u16 __be16; typedef __u32 __be32; typedef __u32 __wsum;
enum { BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_ARRAY = 2, BPF_MAP_TYPE_RINGBUF = 27 };
#include <bpf/bpf_helpers.h>
#include <gadget/macros.h>
#include <gadget/types.h>
char LICENSE[] SEC("license") = "GPL";
`

// snippetELF compiles snippetPrelude and src with the gadgets' headers.
func snippetELF(t *testing.T, src string) []byte {
	t.Helper()
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skipf("building gadgets needs clang: %v", err)
	}
	dir := t.TempDir()
	c, obj := filepath.Join(dir, "snippet.bpf.c"), filepath.Join(dir, "snippet.bpf.o")
	if err := os.WriteFile(c, []byte(snippetPrelude+src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := clangBPF(c, obj); err != nil {
		t.Fatal(err)
	}
	elf, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	return elf
}

// Pieces of the snippets below.
const (
	rowMap = `
struct row_key { __u32 pid; char name[8]; };
struct row_value { _Bool active; __u32 state; __s64 delta; __u64 total; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16);
	__type(key, struct row_key); __type(value, struct row_value); } rows SEC(".maps");
`
	tracepointProg = `SEC("tracepoint/sched/sched_process_exec") int on_exec(void *ctx) { return 0; }
`
	recStruct = "struct rec { __u32 pid; gadget_comm comm[16]; };\n"
)

// iterProgs defines iterator programs it_a (iter/task), it_b (iter/task_file)
// and it_c (iter/bpf_map), those of them named in names, and struct rec.
func iterProgs(names ...string) string {
	src := recStruct
	for _, p := range [][2]string{{"it_a", "task"}, {"it_b", "task_file"}, {"it_c", "bpf_map"}} {
		if slices.Contains(names, p[0]) {
			src += `SEC("iter/` + p[1] + `") int ` + p[0] + "(void *ctx) { return 0; }\n"
		}
	}
	return src
}

var allIters = iterProgs("it_a", "it_b", "it_c")

func TestParseMapIter(t *testing.T) {
	g, err := parseGadget(loadSpec(t, snippetELF(t, rowMap+tracepointProg+"GADGET_MAPITER(rows, rows);\n")))
	if err != nil {
		t.Fatal(err)
	}
	if g.mapIter == nil || g.mapIter.name != "rows" || g.mapIter.mapName != "rows" || g.snapshot != nil || g.events != "" {
		t.Fatalf("parsed %+v, want the map iterator rows of map rows", g)
	}
	var names []string
	for _, f := range g.decoder.fields {
		names = append(names, f.name)
	}
	if want := []string{"pid", "name", "active", "state", "delta", "total"}; !slices.Equal(names, want) {
		t.Errorf("fields %v, want the key's then the value's: %v", names, want)
	}
	// The value's bool comes first, but rows sort by its first integer.
	if g.decoder.size != 12+24 || g.decoder.fields[3].offset != 12+4 || g.mapIter.sortBy != 3 {
		t.Errorf("row of %d bytes, state at %d, sorted by field %d; want 36 bytes, 16, field 3 (state)",
			g.decoder.size, g.decoder.fields[3].offset, g.mapIter.sortBy)
	}
	if len(g.attach) != 1 || g.attach[0].kind != attachTracepoint {
		t.Errorf("attach plan %+v, want the tracepoint", g.attach)
	}
}

func TestParseSnapshotter(t *testing.T) {
	for _, tc := range []struct {
		marker string
		want   []string
	}{
		{"GADGET_SNAPSHOTTER(procs, rec, it_b);", []string{"it_b"}},
		{"GADGET_SNAPSHOTTER(procs, rec, it_c, it_a);", []string{"it_c", "it_a"}},
		{"GADGET_SNAPSHOTTER(procs, rec, it_b, it_c, it_a);", []string{"it_b", "it_c", "it_a"}},
	} {
		t.Run(strings.Join(tc.want, ","), func(t *testing.T) {
			g, err := parseGadget(loadSpec(t, snippetELF(t, iterProgs(tc.want...)+tc.marker+"\n")))
			if err != nil {
				t.Fatal(err)
			}
			if g.snapshot == nil || g.snapshot.name != "procs" || !slices.Equal(g.snapshot.programs, tc.want) {
				t.Fatalf("snapshotter %+v, want procs with programs %v in that order", g.snapshot, tc.want)
			}
			if g.decoder.size != 20 || len(g.decoder.fields) != 2 {
				t.Errorf("record of %d bytes and %d fields, want struct rec", g.decoder.size, len(g.decoder.fields))
			}
			for _, p := range g.attach {
				if p.kind != attachIter || !slices.Contains([]string{"task", "task_file", "bpf_map"}, p.target) {
					t.Errorf("program %+v, want an iterator", p)
				}
			}
		})
	}
}

func TestParseKindErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src, err string
	}{
		{"tracer and map iterator",
			rowMap + tracepointProg + `struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } events SEC(".maps");
struct event { __u32 pid; };
GADGET_TRACER(exec, events, event); GADGET_MAPITER(rows, rows);`,
			"2 gadget markers (gadget_mapiter_rows___rows, gadget_tracer_exec___events___event): a gadget is exactly one tracer, map iterator or snapshotter"},
		{"map iterator and snapshotter", rowMap + allIters + "GADGET_MAPITER(rows, rows); GADGET_SNAPSHOTTER(p, rec, it_a, it_b, it_c);",
			"2 gadget markers"},
		{"no such map", tracepointProg + "GADGET_MAPITER(rows, nothing);", `map iterator rows: no map "nothing"`},
		{"array map", tracepointProg + `struct k { __u32 a; }; struct v { __u64 n; };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, struct v); } counts SEC(".maps");
GADGET_MAPITER(counts, counts);`, "map iterator counts: map counts is of type Array, want Hash or LRUHash"},
		{"malformed map iterator", rowMap + tracepointProg + "const void *gadget_mapiter_rows___rows___extra __attribute__((unused));",
			`malformed marker "gadget_mapiter_rows___rows___extra": want gadget_mapiter_<name>___<map>`},
		{"four iterators", allIters + "const void *gadget_snapshotter_p___rec___it_a___it_b___it_c___it_a __attribute__((unused));",
			"want gadget_snapshotter_<name>___<struct>___<program> (up to 3 programs)"},
		{"no record struct", allIters + "const void *gadget_snapshotter_p___nothing___it_a___it_b___it_c __attribute__((unused));",
			"snapshotter p: record struct nothing: "},
		{"scalar key", tracepointProg + `struct v { __u64 n; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4); __type(key, __u32); __type(value, struct v); } counts SEC(".maps");
GADGET_MAPITER(counts, counts);`, "map counts must declare struct key and value types"},
		{"same field in key and value", tracepointProg + `struct k { __u32 pid; }; struct v { __u64 pid; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4); __type(key, struct k); __type(value, struct v); } counts SEC(".maps");
GADGET_MAPITER(counts, counts);`, "field pid is in both the key (struct k) and the value (struct v)"},
		{"iterator in a map iterator", rowMap + allIters + "GADGET_MAPITER(rows, rows);",
			"map iterator rows: program it_a (section iter/task) is a BPF iterator, which only snapshotters use"},
		{"unlisted program", allIters + tracepointProg + "GADGET_SNAPSHOTTER(p, rec, it_a, it_b, it_c);",
			"snapshotter p: program on_exec (section tracepoint/sched/sched_process_exec) is not one of its iterators"},
		{"listed program missing", iterProgs("it_a", "it_b") + "GADGET_SNAPSHOTTER(p, rec, it_a, it_b, gone);",
			`snapshotter p: no program "gone"`},
		{"listed twice", iterProgs("it_a") + "GADGET_SNAPSHOTTER(p, rec, it_a, it_a);", "snapshotter p: program it_a is listed twice"},
		{"program not an iterator", tracepointProg + recStruct + "GADGET_SNAPSHOTTER(p, rec, on_exec);",
			"snapshotter p: program on_exec is in section tracepoint/sched/sched_process_exec, want iter/<target>"},
		{"unlisted iterator", allIters + "GADGET_SNAPSHOTTER(p, rec, it_a, it_b);",
			"snapshotter p: program it_c (section iter/bpf_map) is not one of its iterators"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseGadget(loadSpec(t, snippetELF(t, tc.src)))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got error %v, want one containing %q", err, tc.err)
			}
		})
	}
}
