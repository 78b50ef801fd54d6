package runner

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func loadSpec(t *testing.T, elf []byte) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(elf))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// rename replaces every occurrence of old in an ELF by new, padded with '_'
// to the same length so that no offset in the file moves. Section, symbol
// and BTF names all live in string tables, so this renames them consistently.
func rename(t *testing.T, elf []byte, old, new string) []byte {
	t.Helper()
	if len(new) > len(old) {
		t.Fatalf("%q is longer than %q", new, old)
	}
	new += strings.Repeat("_", len(old)-len(new))
	if !bytes.Contains(elf, []byte(old)) {
		t.Fatalf("%q not in ELF", old)
	}
	return bytes.ReplaceAll(elf, []byte(old), []byte(new))
}

func TestParseTraceExec(t *testing.T) {
	g, err := parseGadget(loadSpec(t, traceExecELF(t)))
	if err != nil {
		t.Fatal(err)
	}
	if g.tracer != "exec" || g.events != "events" || g.lost == nil || g.lost.Name != "events_lost_samples" {
		t.Errorf("tracer %q, map %q, lost counter %v; want exec, events, events_lost_samples", g.tracer, g.events, g.lost)
	}
	wantProg := program{name: "trace_sched_process_exec", section: "tracepoint/sched/sched_process_exec",
		kind: attachTracepoint, group: "sched", target: "sched_process_exec"}
	if len(g.attach) != 1 || g.attach[0] != wantProg {
		t.Errorf("attach plan %+v, want [%+v]", g.attach, wantProg)
	}

	// Decoding zeroes shows the Go type each member maps to.
	ev, err := g.decoder.decode(make([]byte, g.decoder.size))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, tag    string
		offset, size uint32
		zero         any
	}{
		{"timestamp", "gadget_timestamp", 0, 8, bootTime().UTC()},
		{"pid", "gadget_pid", 8, 4, uint32(0)},
		{"ppid", "gadget_ppid", 12, 4, uint32(0)},
		{"uid", "gadget_uid", 16, 4, uint32(0)},
		{"gid", "gadget_gid", 20, 4, uint32(0)},
		{"comm", "gadget_comm", 24, 16, ""},
		{"filename", "", 40, 256, ""},
	}
	if g.decoder.size != 296 || len(g.decoder.fields) != len(want) {
		t.Fatalf("event struct of %d bytes with %d fields, want 296 bytes and %d fields", g.decoder.size, len(g.decoder.fields), len(want))
	}
	for i, w := range want {
		f := g.decoder.fields[i]
		if f.name != w.name || f.tag != w.tag || f.offset != w.offset || f.size != w.size {
			t.Errorf("field %d: %s (%q) at %d, %d bytes; want %s (%q) at %d, %d bytes",
				i, f.name, f.tag, f.offset, f.size, w.name, w.tag, w.offset, w.size)
		}
		if t0, ok := w.zero.(time.Time); ok {
			if !ev[i].Value.(time.Time).Equal(t0) {
				t.Errorf("%s decodes zero as %v, want boot time %v", w.name, ev[i].Value, t0)
			}
		} else if ev[i].Value != w.zero {
			t.Errorf("%s decodes zero as %#v, want %#v", w.name, ev[i].Value, w.zero)
		}
	}
}

func TestParseGadgetErrors(t *testing.T) {
	elf := traceExecELF(t)
	const marker = "gadget_tracer_exec___events___event"
	for _, tc := range []struct {
		name string
		spec func() *ebpf.CollectionSpec
		want string
	}{
		{"no tracer", func() *ebpf.CollectionSpec {
			return loadSpec(t, rename(t, elf, marker, "gadget_tracez_exec___events___event"))
		}, "not a tracer gadget"},
		{"malformed marker", func() *ebpf.CollectionSpec {
			return loadSpec(t, rename(t, elf, marker, "gadget_tracer_exec___events"))
		}, "malformed tracer marker"},
		{"missing map", func() *ebpf.CollectionSpec {
			return loadSpec(t, rename(t, elf, marker, "gadget_tracer_exec___evenzz___event"))
		}, `no map "evenzz"`},
		{"missing struct", func() *ebpf.CollectionSpec {
			return loadSpec(t, rename(t, elf, marker, "gadget_tracer_exec___events___evenz"))
		}, "event struct evenz"},
		{"hash map", func() *ebpf.CollectionSpec {
			spec := loadSpec(t, elf)
			spec.Maps["events"].Type = ebpf.Hash
			return spec
		}, "map events is a Hash, want a ring buffer or a perf event array"},
		{"read-only lost counter", func() *ebpf.CollectionSpec {
			spec := loadSpec(t, elf)
			spec.Variables["events_lost_samples"].SectionName = ".rodata"
			return spec
		}, "events_lost_samples must be a writable 8-byte counter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseGadget(tc.spec())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseGadgetNoBTF(t *testing.T) {
	_, err := parseGadget(&ebpf.CollectionSpec{})
	if err == nil || !strings.Contains(err.Error(), "no BTF") {
		t.Fatalf("got %v, want an error about missing BTF", err)
	}
}
