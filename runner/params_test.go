package runner

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// gadgetMetadata reads a built-in gadget's gadget.yaml, as it is packaged as the image's config.
func gadgetMetadata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "gadgets", name, "gadget.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParams(t *testing.T) {
	for _, tc := range []struct {
		gadget   string
		metadata []byte
		want     []Param
		wantErr  string
	}{
		{gadget: "trace_open", metadata: gadgetMetadata(t, "trace_open"), want: []Param{
			{Name: "events_max_entries", Type: "uint32", Default: "262144", SizesMap: "events",
				Description: "Bytes of the ring buffer events wait in for the reader (a power-of-two number of pages); more rides out bursts."},
			{Name: "failed_only", Type: "bool", Default: "false", Description: "Only report calls that failed."},
			{Name: "prefix", Type: "string", MaxLen: 127, Default: "", Description: "Only report paths that start with this prefix (at most 127 bytes)."},
			{Name: "start_max_entries", Type: "uint32", Default: "10240", SizesMap: "start",
				Description: "How many threads can be inside openat() at once without losing calls."},
		}},
		{gadget: "trace_tcpconnect", metadata: gadgetMetadata(t, "trace_tcpconnect"), want: []Param{
			{Name: "sockets_max_entries", Type: "uint32", Default: "8192", SizesMap: "sockets",
				Description: "How many connection attempts can be in flight at once without losing events."},
			{Name: "target_port", Type: "uint16", Default: "0", Description: "Only report connections to this destination port; 0 for all."},
		}},
		// The ELF says what the parameters are; metadata only describes them.
		{gadget: "trace_tcpconnect", metadata: nil, want: []Param{
			{Name: "sockets_max_entries", Type: "uint32", Default: "8192", SizesMap: "sockets"},
			{Name: "target_port", Type: "uint16", Default: "0"},
		}},
		{gadget: "trace_tcpconnect", metadata: []byte("params:\n  ebpf:\n    no_such:\n      description: not in the ELF\n    target_port: {description: ' Port. '}\n"), want: []Param{
			{Name: "sockets_max_entries", Type: "uint32", Default: "8192", SizesMap: "sockets"},
			{Name: "target_port", Type: "uint16", Default: "0", Description: "Port."},
		}},
		{gadget: "trace_tcpconnect", metadata: []byte("params: [unclosed"), wantErr: "gadget metadata: yaml: "},
	} {
		got, err := params(gadgetELF(t, tc.gadget), tc.metadata)
		if tc.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want one starting %q", tc.gadget, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s params\n%+v\nwant\n%+v", tc.gadget, got, tc.want)
		}
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
		{"failed_only", "maybe", `param failed_only: "maybe" is not a bool (true or false; 1, 0, t and f also do)`},
		{"start_max_entries", "-1", `param start_max_entries: "-1" is not a uint32 (0 to 4294967295)`},
		{"start_max_entries", "4294967296", `param start_max_entries: "4294967296" is not a uint32`},
		{"prefix", strings.Repeat("a", 128), "param prefix: " + `"` + strings.Repeat("a", 128) + `" is 128 bytes: a string of at most 127 bytes`},
		{"prefix", "a\x00b", "contains a NUL byte"},
		{"nope", "1", "param nope: the gadget has no such parameter (it has events_max_entries, failed_only, prefix, start_max_entries)"},
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
	spec = loadSpec(t, elf)
	delete(spec.Variables, "failed_only") // the marker stays
	if _, err := parseParams(spec); err == nil || !strings.Contains(err.Error(), "param failed_only: marked by gadget_param_failed_only but there is no global variable failed_only") {
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

// Params print with the snake_case keys of the CLI's other JSON.
func TestParamJSON(t *testing.T) {
	b, err := json.Marshal([]Param{
		{Name: "prefix", Type: "string", MaxLen: 127, Default: ""},
		{Name: "start_max_entries", Type: "uint32", Default: "10240", SizesMap: "start"},
	})
	const want = `[{"name":"prefix","type":"string","max_len":127,"default":""},` +
		`{"name":"start_max_entries","type":"uint32","default":"10240","sizes_map":"start"}]`
	if err != nil || string(b) != want {
		t.Errorf("got %s, %v\nwant %s", b, err, want)
	}
}

// A map size of 0 is refused, naming the map, before anything is loaded:
// it would otherwise keep the ELF's placeholder size of 1.
func TestZeroMaxEntriesRefused(t *testing.T) {
	for _, tc := range []struct{ gadget, param, m string }{
		{"trace_open", "start_max_entries", "start"},
		{"top_file", "stats_max_entries", "stats"},
	} {
		elf := gadgetELF(t, tc.gadget)
		for _, zero := range []string{"0", "0x0", "00"} {
			stats, err := run(context.Background(), tc.gadget, elf, Options{Output: io.Discard, Params: map[string]string{tc.param: zero}})
			want := fmt.Sprintf("run gadget %s: param %s: 0 would leave map %s without room; use a positive value", tc.gadget, tc.param, tc.m)
			if err == nil || err.Error() != want {
				t.Errorf("%s=%s: got error %v, want %q", tc.param, zero, err, want)
			}
			if stats != nil {
				t.Errorf("%s=%s: stats %+v for a gadget that never ran, want nil", tc.param, zero, *stats)
			}
		}
		spec := loadSpec(t, elf)
		ps, err := parseParams(spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := applyParams(spec, ps, map[string]string{tc.param: "1"}); err != nil || spec.Maps[tc.m].MaxEntries != 1 {
			t.Errorf("%s=1: max_entries %d, error %v", tc.param, spec.Maps[tc.m].MaxEntries, err)
		}
	}
}

// Parameters typed gadget_signal and gadget_errno take names as well as
// numbers, and list their defaults by name.
func TestNamedParams(t *testing.T) {
	elf := testdataELF(t, "typed_params")
	got, err := params(elf, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Param{{Name: "target_errno", Type: "errno", Default: "0"}, {Name: "target_signal", Type: "signal", Default: "SIGUSR1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("params %+v, want %+v", got, want)
	}

	spec := loadSpec(t, elf)
	ps, err := parseParams(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, value string
		want        uint32
	}{
		{"target_signal", "SIGTERM", uint32(unix.SIGTERM)},
		{"target_signal", "TERM", uint32(unix.SIGTERM)},
		{"target_signal", "sigusr2", uint32(unix.SIGUSR2)},
		{"target_signal", "9", 9},
		{"target_signal", "0", 0},
		{"target_signal", "64", 64},
		{"target_errno", "ENOENT", uint32(unix.ENOENT)},
		{"target_errno", "eacces", uint32(unix.EACCES)},
		{"target_errno", "5", 5},
	} {
		if err := applyParams(spec, ps, map[string]string{tc.name: tc.value}); err != nil {
			t.Errorf("%s=%s: %v", tc.name, tc.value, err)
			continue
		}
		if got := binary.NativeEndian.Uint32(rodataValue(t, spec, tc.name)); got != tc.want {
			t.Errorf("%s=%s written as %d, want %d", tc.name, tc.value, got, tc.want)
		}
	}
	for _, tc := range []struct{ name, value, want string }{
		{"target_signal", "SIGNOPE", `param target_signal: "SIGNOPE" is not a signal (a name such as SIGTERM or TERM, or a number)`},
		{"target_signal", "", `param target_signal: "" is not a signal`},
		{"target_errno", "ENOPE", `param target_errno: "ENOPE" is not an errno (a name such as ENOENT, or a number)`},
		{"target_errno", "SIGTERM", `param target_errno: "SIGTERM" is not an errno`},
		{"target_signal", "99", `param target_signal: 99 is not a signal number (0 to 64)`},
		{"target_signal", "-1", `param target_signal: -1 is not a signal number (0 to 64)`},
		{"target_errno", "5000", `param target_errno: 5000 is not an error number (0 to 4095)`},
	} {
		err := applyParams(loadSpec(t, elf), ps, map[string]string{tc.name: tc.value})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s=%q: got error %v, want %q", tc.name, tc.value, err, tc.want)
		}
	}
}

// The named values reach the kernel: the gadget reports only the signal
// given by name, with the errno given by name.
func TestRunNamedParams(t *testing.T) {
	requireRoot(t)
	elf := testdataELF(t, "typed_params")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("no sleep to start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onEvent, events := collect()
	done := runNamed(ctx, "typed_params", elf, Options{
		Output:  io.Discard,
		Timeout: time.Minute,
		Params:  map[string]string{"target_signal": "USR2", "target_errno": "EPERM"},
		OnEvent: onEvent,
	})
	var children []uint32
	stop := triggerLoop(t, func() error {
		cmd := exec.Command(sleep, "30")
		if err := cmd.Start(); err != nil {
			return err
		}
		children = append(children, uint32(cmd.Process.Pid))
		// SIGUSR1 first: the gadget must not report it.
		for _, sig := range []syscall.Signal{unix.SIGUSR1, unix.SIGUSR2} {
			if err := cmd.Process.Signal(sig); err != nil {
				return err
			}
		}
		var exit *exec.ExitError
		if err := cmd.Wait(); !errors.As(err, &exit) {
			return fmt.Errorf("child: got %v, want death by a signal", err)
		}
		return nil
	})
	defer stop()
	ev := waitWhileRunning(t, events, done, "a SIGUSR2 to a child")
	cancel()
	res := wait(t, done, "the run to end")
	stop() // children is complete once the loop stopped
	if res.err != nil {
		t.Fatal(res.err)
	}
	checkFields(t, ev, map[string]any{"sig": Signal(unix.SIGUSR2), "error": Errno(unix.EPERM)})
	if tpid, _ := ev.Value("tpid"); !slices.Contains(children, tpid.(uint32)) {
		t.Errorf("target pid %v is none of the children %v", tpid, children)
	}
}

func TestCheckGadget(t *testing.T) {
	for _, tc := range []struct {
		gadget, metadata, want string // want "": accepted
	}{
		{"trace_open", "trace_open", ""},
		{"top_file", "top_file", ""},
		{"snapshot_process", "snapshot_process", ""},
		{"trace_exec", "trace_open", "gadget metadata describes parameter events_max_entries, which the program does not have"},
	} {
		err := CheckGadget(gadgetELF(t, tc.gadget), gadgetMetadata(t, tc.metadata))
		if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
			t.Errorf("%s with %s's metadata: %v, want %q", tc.gadget, tc.metadata, err, tc.want)
		}
	}
	if err := CheckGadget([]byte("not an ELF"), nil); err == nil || !strings.HasPrefix(err.Error(), "parse ELF: ") {
		t.Errorf("not an ELF: %v", err)
	}
	// Every built-in gadget packages: its program checks and its gadget.yaml is YAML that
	// describes only parameters the program has.
	dirs, err := filepath.Glob(filepath.Join("..", "gadgets", "*", "gadget.yaml"))
	if err != nil || len(dirs) < 10 {
		t.Fatalf("built-in gadgets: %v, %v", dirs, err)
	}
	for _, meta := range dirs {
		name := filepath.Base(filepath.Dir(meta))
		if err := CheckGadget(gadgetELF(t, name), gadgetMetadata(t, name)); err != nil {
			t.Errorf("built-in gadget %s: %v", name, err)
		}
	}
}
