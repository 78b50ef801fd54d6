package runner

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

func TestParamsTraceOpen(t *testing.T) {
	got, err := params(gadgetELF(t, "trace_open"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Param{
		{Name: "failed_only", Type: "bool", Default: "false"},
		{Name: "prefix", Type: "string", MaxLen: 127, Default: ""},
		{Name: "start_max_entries", Type: "uint32", Default: "10240"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("params\n%+v\nwant\n%+v", got, want)
	}

	got, err = params(gadgetELF(t, "trace_tcpconnect"))
	if err != nil {
		t.Fatal(err)
	}
	want = []Param{{Name: "sockets_max_entries", Type: "uint32", Default: "8192"}, {Name: "target_port", Type: "uint16", Default: "0"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("params %+v, want %+v", got, want)
	}
}

// rodataValue reads a variable's bytes from the contents its section will be
// loaded with.
func rodataValue(t *testing.T, spec *ebpf.CollectionSpec, name string) []byte {
	t.Helper()
	v := spec.Variables[name]
	data, err := sectionData(spec, v)
	if err != nil {
		t.Fatal(err)
	}
	return data[v.Offset : v.Offset+v.Size()]
}

func TestApplyParams(t *testing.T) {
	elf := gadgetELF(t, "trace_open")
	spec := loadSpec(t, elf)
	ps, err := parseParams(spec)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Maps["start"].MaxEntries != 1 {
		t.Fatalf("start map has max_entries %d in the ELF, the test expects 1", spec.Maps["start"].MaxEntries)
	}

	// Defaults only: the map takes start_max_entries' initial value.
	if err := applyParams(spec, ps, nil); err != nil {
		t.Fatal(err)
	}
	if n := spec.Maps["start"].MaxEntries; n != 10240 {
		t.Errorf("start has max_entries %d, want the default 10240", n)
	}

	spec = loadSpec(t, elf)
	err = applyParams(spec, ps, map[string]string{
		"prefix":            "/tmp/x",
		"failed_only":       "true",
		"start_max_entries": "0x800",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := rodataValue(t, spec, "prefix"); string(got[:7]) != "/tmp/x\x00" || len(got) != 128 {
		t.Errorf("prefix written as %q", got)
	}
	if got := rodataValue(t, spec, "failed_only"); got[0] != 1 {
		t.Errorf("failed_only written as %v", got)
	}
	if got := binary.NativeEndian.Uint32(rodataValue(t, spec, "start_max_entries")); got != 2048 {
		t.Errorf("start_max_entries written as %d", got)
	}
	if n := spec.Maps["start"].MaxEntries; n != 2048 {
		t.Errorf("start has max_entries %d, want 2048", n)
	}
	// The ELF's own bytes are left alone.
	if again := loadSpec(t, elf); string(rodataValue(t, again, "prefix")[:1]) != "\x00" {
		t.Error("applying params changed the ELF")
	}

	for _, tc := range []struct {
		name, value, want string
	}{
		{"failed_only", "maybe", `param failed_only: "maybe" is not a bool (true or false)`},
		{"start_max_entries", "-1", `param start_max_entries: "-1" is not a uint32 (0 to 4294967295)`},
		{"start_max_entries", "4294967296", `param start_max_entries: "4294967296" is not a uint32`},
		{"prefix", strings.Repeat("a", 128), "param prefix: " + `"` + strings.Repeat("a", 128) + `" is 128 bytes: a string of at most 127 bytes`},
		{"prefix", "a\x00b", "contains a NUL byte"},
		{"nope", "1", "param nope: the gadget has no such parameter (it has failed_only, prefix, start_max_entries)"},
	} {
		err := applyParams(loadSpec(t, elf), ps, map[string]string{tc.name: tc.value})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: got error %v, want %q", tc.name, tc.value, err, tc.want)
		}
	}
}

func TestParamsSignedInt(t *testing.T) {
	p := intEncoder("int16", 2, true)
	if b, err := p("-2"); err != nil || binary.NativeEndian.Uint16(b) != 0xFFFE {
		t.Errorf("-2 encoded as %v, %v", b, err)
	}
	if _, err := p("40000"); err == nil || !strings.Contains(err.Error(), `"40000" is not an int16 (-32768 to 32767)`) {
		t.Errorf("40000: got error %v", err)
	}
}

func TestParamErrors(t *testing.T) {
	elf := gadgetELF(t, "trace_open")
	spec := loadSpec(t, elf)
	spec.Variables["failed_only"].SectionName = ".bss" // as if it were not const
	if _, err := parseParams(spec); err == nil || !strings.Contains(err.Error(),
		"param failed_only: variable is in section .bss: a parameter must be declared const volatile") {
		t.Errorf("writable param: got error %v", err)
	}
	spec = loadSpec(t, rename(t, elf, "gadget_param_failed_only", "gadget_param_no_such_var"))
	if _, err := parseParams(spec); err == nil || !strings.Contains(err.Error(), "param no_such_var: marked by gadget_param_no_such_var but there is no global variable no_such_var") {
		t.Errorf("marker without variable: got error %v", err)
	}
}

func TestMaxEntriesRingBuffer(t *testing.T) {
	// Point an events_max_entries at start_max_entries' bytes: the ring
	// buffer must refuse a size that is not a power-of-two number of pages.
	spec := loadSpec(t, gadgetELF(t, "trace_open"))
	v := spec.Variables["start_max_entries"]
	delete(spec.Variables, "start_max_entries")
	v.Name = "events_max_entries"
	spec.Variables[v.Name] = v
	if err := writeVariable(spec, v, binary.NativeEndian.AppendUint32(nil, 10240)); err != nil {
		t.Fatal(err)
	}
	err := applyMaxEntries(spec)
	if err == nil || !strings.Contains(err.Error(), "events_max_entries: ring buffer events needs a power of two multiple of the page size") {
		t.Errorf("got error %v", err)
	}
	if err := writeVariable(spec, v, binary.NativeEndian.AppendUint32(nil, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := applyMaxEntries(spec); err != nil || spec.Maps["events"].MaxEntries != 1<<20 {
		t.Errorf("1 MiB ring buffer: max_entries %d, error %v", spec.Maps["events"].MaxEntries, err)
	}
}
