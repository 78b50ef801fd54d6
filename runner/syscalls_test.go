package runner

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Every table bpfleet ships, checked on any host: the tests see all of them
// even though a binary links only its own.
func TestSyscallTables(t *testing.T) {
	for _, tc := range []struct {
		arch  string
		table []string
		want  map[int]string
	}{
		{"amd64", syscallsAMD64[:], map[int]string{0: "read", 2: "open", 59: "execve", 257: "openat", 262: "newfstatat", 435: "clone3"}},
		{"arm64", syscallsARM64[:], map[int]string{63: "read", 56: "openat", 79: "newfstatat", 221: "execve", 435: "clone3"}},
		{"arm", syscallsARM[:], map[int]string{0: "restart_syscall", 3: "read", 5: "open", 11: "execve", 270: "arm_fadvise64_64", 322: "openat", 435: "clone3"}},
	} {
		for nr, want := range tc.want {
			if nr >= len(tc.table) || tc.table[nr] != want {
				t.Errorf("%s: syscall %d is %q, want %q", tc.arch, nr, lookup(tc.table, nr), want)
			}
		}
		if n := len(tc.table); n < 400 {
			t.Errorf("%s: table of %d numbers, want the whole x/sys list", tc.arch, n)
		}
	}
	// arm64 has no open(2), only openat(2).
	for nr, name := range syscallsARM64 {
		if name == "open" {
			t.Errorf("arm64: syscall %d named open", nr)
		}
	}
}

func lookup(table []string, nr int) string {
	if nr < len(table) {
		return table[nr]
	}
	return ""
}

// The host's table agrees with the numbers golang.org/x/sys/unix gives
// this architecture.
func TestSyscallNames(t *testing.T) {
	switch runtime.GOARCH {
	case "amd64", "arm64", "arm":
	default:
		if len(syscallNames) != 0 {
			t.Fatalf("%s has no table, yet syscallNames has %d entries", runtime.GOARCH, len(syscallNames))
		}
		t.Skipf("no syscall table for %s", runtime.GOARCH)
	}
	for nr, want := range map[int]string{
		unix.SYS_EXECVE: "execve", unix.SYS_OPENAT: "openat", unix.SYS_GETPGID: "getpgid",
		unix.SYS_CLONE3: "clone3", unix.SYS_RT_SIGRETURN: "rt_sigreturn",
	} {
		if got := Syscall(nr).String(); got != want {
			t.Errorf("Syscall(%d) = %q, want %q", nr, got, want)
		}
	}
	for _, nr := range []int64{-1, int64(len(syscallNames)), 1 << 40} {
		if got, want := Syscall(nr).String(), strconv.FormatInt(nr, 10); got != want {
			t.Errorf("Syscall(%d) = %q, want the number", nr, got)
		}
	}
}

// The checked-in tables are what gen_syscalls.go writes from the
// golang.org/x/sys in go.mod: updating x/sys without `go generate` fails here.
func TestSyscallTablesGenerated(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to run the generator: %v", err)
	}
	dir := t.TempDir()
	out, err := exec.Command(goCmd, "run", "gen_syscalls.go", "-dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("go run gen_syscalls.go: %v\n%s", err, out)
	}
	generated, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(generated) != 5 {
		t.Fatalf("generator wrote %v (%v), want 5 files", generated, err)
	}
	for _, path := range generated {
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(path)
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("gen_syscalls.go writes %s: %v", name, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s is not what gen_syscalls.go writes now: run go generate in runner/", name)
		}
	}
}

func TestDecodeSyscall(t *testing.T) {
	event := &btf.Struct{Name: "event", Size: 24, Members: []btf.Member{
		{Name: "nr", Type: typedef("gadget_syscall", typedef("__u64", u64T)), Offset: 0},
		{Name: "none", Type: typedef("gadget_syscall", u64T), Offset: 64},
		{Name: "small", Type: typedef("gadget_syscall", s32T), Offset: 128},
		{Name: "unknown", Type: typedef("gadget_syscall", u32T), Offset: 160},
	}}
	d, err := newDecoder(event)
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	raw := make([]byte, event.Size)
	ne.PutUint64(raw[0:], unix.SYS_OPENAT)
	ne.PutUint64(raw[8:], ^uint64(0)) // -1: not in a system call
	ne.PutUint32(raw[16:], uint32(unix.SYS_EXECVE))
	ne.PutUint32(raw[20:], 4000)
	ev, err := d.decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	checkFields(t, ev, map[string]any{"nr": Syscall(unix.SYS_OPENAT), "none": Syscall(-1),
		"small": Syscall(unix.SYS_EXECVE), "unknown": Syscall(4000)})
	for _, f := range ev {
		if f.Tag != syscallTag {
			t.Errorf("field %s tagged %q, want %s", f.Name, f.Tag, syscallTag)
		}
	}
	if runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64" || runtime.GOARCH == "arm" {
		var printed []string
		for _, f := range ev {
			printed = append(printed, formatValue(f.Value))
		}
		if got, want := strings.Join(printed, " "), "openat -1 execve 4000"; got != want {
			t.Errorf("printed %q, want %q", got, want)
		}
		if got, err := json.Marshal(ev[0].Value); err != nil || string(got) != `"openat"` {
			t.Errorf("JSON %s, %v; want \"openat\"", got, err)
		}
	}

	_, err = newDecoder(&btf.Struct{Name: "event", Size: 4, Members: []btf.Member{{Name: "s", Type: typedef("gadget_syscall", boolT)}}})
	if err == nil || !strings.Contains(err.Error(), "field s: gadget_syscall must be an integer") {
		t.Errorf("bool syscall: got error %v", err)
	}
}

// A real gadget's gadget_syscall field, filled by the kernel, decodes and
// prints by name, and --filter matches that name.
func TestSyscallField(t *testing.T) {
	requireRoot(t)
	if Syscall(unix.SYS_GETPGID).String() != "getpgid" {
		t.Skipf("no syscall table for %s", runtime.GOARCH)
	}
	elf := testdataELF(t, "trace_syscall")
	// getpgid of a PID that cannot exist fails with ESRCH and marks the
	// test's calls among the process's other system calls.
	const marker = 0x7ffffff0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onEvent, events := collect()
	var out bytes.Buffer
	done := runNamed(ctx, "trace_syscall", elf, Options{
		Output:  &out,
		Format:  FormatJSON,
		Timeout: time.Minute,
		Params:  map[string]string{"target_pid": strconv.Itoa(os.Getpid())},
		Filters: []Filter{{Field: "syscall", Value: "getpgid"}},
		OnEvent: onEvent,
	})
	stop := triggerLoop(t, func() error {
		if _, _, errno := unix.Syscall(unix.SYS_GETPGID, marker, 0, 0); errno != unix.ESRCH {
			return fmt.Errorf("getpgid(%d): got %v, want ESRCH", marker, errno)
		}
		return nil
	})
	defer stop()
	ev, before := waitEvent(t, events, done, "a getpgid call", func(ev Event) bool {
		arg, _ := ev.Value("arg0")
		return arg == uint64(marker)
	})
	cancel()
	res := wait(t, done, "the run to end")
	stop()
	if res.err != nil {
		t.Fatal(res.err)
	}
	checkFields(t, ev, map[string]any{"syscall": Syscall(unix.SYS_GETPGID), "pid": uint32(os.Getpid())})
	for _, other := range before {
		if nr, _ := other.Value("syscall"); nr != Syscall(unix.SYS_GETPGID) {
			t.Errorf("event for syscall %v passed the filter syscall=getpgid", nr)
		}
	}
	if want := fmt.Sprintf(`"syscall":"getpgid","arg0":%d`, marker); !strings.Contains(out.String(), want) {
		t.Errorf("output does not contain %s:\n%s", want, out.String())
	}
}
