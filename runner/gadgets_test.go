package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Integration tests of the built-in gadgets: each triggers the gadget's
// event itself, while the gadget runs, and checks the decoded fields.

// runNamed runs a gadget on its own goroutine.
func runNamed(ctx context.Context, name string, elf []byte, opts Options) <-chan result {
	done := make(chan result, 1)
	go func() {
		stats, err := run(ctx, name, elf, opts)
		done <- result{stats, err}
	}()
	return done
}

// triggerLoop calls f every 20 ms until stop is called, so that a gadget
// started concurrently surely sees its effect once it is attached.
func triggerLoop(t *testing.T, f func() error) (stop func()) {
	t.Helper()
	quit, done := make(chan struct{}), make(chan struct{})
	var errs []error
	go func() {
		defer close(done)
		for {
			if err := f(); err != nil {
				errs = append(errs, err)
				return
			}
			select {
			case <-quit:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(quit)
		<-done
		if err := errors.Join(errs...); err != nil {
			t.Errorf("trigger: %v", err)
		}
	})
}

// collect returns an OnEvent that passes events to the returned channel
// (dropping them when it is full) and the channel.
func collect() (func(Event), <-chan Event) {
	c := make(chan Event, 1024)
	return func(ev Event) {
		select {
		case c <- ev:
		default:
		}
	}, c
}

// waitEvent reads events until one satisfies ok, and returns it with the
// events read before it.
func waitEvent(t *testing.T, events <-chan Event, done <-chan result, what string, ok func(Event) bool) (Event, []Event) {
	t.Helper()
	var seen []Event
	for {
		ev := waitWhileRunning(t, events, done, what)
		if ok(ev) {
			return ev, seen
		}
		seen = append(seen, ev)
	}
}

func uniqueName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// testComm is the command name of this test process, as the kernel keeps it.
func testComm(t *testing.T) string {
	t.Helper()
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(comm), "\n")
}

func checkFields(t *testing.T, ev Event, want map[string]any) {
	t.Helper()
	for name, w := range want {
		if got, ok := ev.Value(name); !ok || got != w {
			t.Errorf("%s = %#v (%T), want %#v (%T)", name, got, got, w, w)
		}
	}
}

// heldMap finds a map this process holds by name.
func heldMap(name string) (*ebpf.MapInfo, error) {
	held, err := heldBPFObjects()
	if err != nil {
		return nil, err
	}
	for obj := range held {
		if obj.kind != "map" {
			continue
		}
		m, err := ebpf.NewMapFromID(ebpf.MapID(obj.id))
		if err != nil {
			return nil, fmt.Errorf("map %d: %w", obj.id, err)
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			return nil, fmt.Errorf("map %d: %w", obj.id, err)
		}
		if info.Name == name {
			return info, nil
		}
	}
	return nil, fmt.Errorf("holding no map %q", name)
}

func TestTraceOpen(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_open")
	dir := t.TempDir()
	existing := filepath.Join(dir, uniqueName("exists-"))
	missing := filepath.Join(dir, uniqueName("missing-"))
	if err := os.WriteFile(existing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const (
		existingFlags = unix.O_RDONLY | unix.O_CLOEXEC
		missingFlags  = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW
	)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onEvent, events := collect()
	var startMap *ebpf.MapInfo
	var startErr error
	var out bytes.Buffer
	done := runNamed(ctx, "trace_open", elf, Options{
		Output:  &out,
		Format:  FormatJSON,
		Timeout: time.Minute,
		Params:  map[string]string{"prefix": dir + "/", "start_max_entries": "2048"},
		Fields:  []string{"pid", "comm", "fname", "fd", "error", "flags"},
		OnEvent: func(ev Event) {
			if startMap == nil && startErr == nil {
				startMap, startErr = heldMap("start")
			}
			onEvent(ev)
		},
	})
	stop := triggerLoop(t, func() error {
		fd, err := unix.Open(existing, existingFlags, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", existing, err)
		}
		unix.Close(fd)
		if _, err := unix.Open(missing, missingFlags, 0); !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("open %s: got %v, want ENOENT", missing, err)
		}
		return nil
	})
	defer stop()

	var all []Event
	var opened, failed Event
	for opened == nil || failed == nil {
		ev, before := waitEvent(t, events, done, "events for both files", func(Event) bool { return true })
		all = append(append(all, before...), ev)
		switch fname, _ := ev.Value("fname"); fname {
		case existing:
			opened = ev
		case missing:
			failed = ev
		}
	}
	cancel()
	res := wait(t, done, "the run to end")
	stop()
	if res.err != nil {
		t.Fatal(res.err)
	}

	pid, comm := uint32(os.Getpid()), testComm(t)
	checkFields(t, opened, map[string]any{"pid": pid, "comm": comm, "error": Errno(0), "flags": uint32(existingFlags)})
	if fd, _ := opened.Value("fd"); fd.(int32) < 0 {
		t.Errorf("successful open reports fd %d", fd)
	}
	checkFields(t, failed, map[string]any{"pid": pid, "comm": comm, "fd": int32(-1), "error": Errno(unix.ENOENT),
		"flags": uint32(missingFlags)})
	// The prefix parameter keeps out every file outside the test's directory.
	for _, ev := range all {
		if fname, _ := ev.Value("fname"); !strings.HasPrefix(fname.(string), dir+"/") {
			t.Errorf("event for %q outside the prefix %s", fname, dir)
		}
	}
	if startErr != nil || startMap.MaxEntries != 2048 {
		t.Errorf("start map while running: %+v, %v; want max_entries 2048 from start_max_entries", startMap, startErr)
	}

	// As printed: only the selected fields, in their order, errno by name.
	var printedFailure bool
	for line := range strings.Lines(out.String()) {
		if !strings.HasPrefix(line, `{"pid":`) {
			t.Fatalf("output line %q does not start with the first selected field", line)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		if len(obj) != 6 {
			t.Errorf("output line %q has %d fields, want the 6 selected", line, len(obj))
		}
		if obj["fname"] == missing && obj["error"] == "ENOENT" && obj["fd"] == float64(-1) {
			printedFailure = true
		}
	}
	if !printedFailure {
		t.Errorf("failed open of %s not in the output:\n%s", missing, out.String())
	}
}

// --filter keeps only matching events, in the columns format too.
func TestTraceOpenFilter(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_open")
	dir := t.TempDir()
	existing := filepath.Join(dir, uniqueName("exists-"))
	missing := filepath.Join(dir, uniqueName("missing-"))
	if err := os.WriteFile(existing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	done := runNamed(context.Background(), "trace_open", elf, Options{
		Output:    &out,
		Timeout:   time.Minute,
		MaxEvents: 2,
		Params:    map[string]string{"prefix": dir + "/"},
		Fields:    []string{"fname", "error"},
		Filters:   []Filter{{Field: "error", Value: "ENOENT"}},
	})
	stop := triggerLoop(t, func() error {
		fd, err := unix.Open(existing, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		unix.Close(fd)
		unix.Open(missing, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return nil
	})
	res := wait(t, done, "two ENOENT events")
	stop()
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.stats.Events-res.stats.Filtered != 2 || res.stats.Filtered == 0 {
		t.Errorf("stats %+v: want 2 events printed and the successful opens filtered out", *res.stats)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "FNAME ERROR" {
		t.Fatalf("output:\n%s\nwant a FNAME ERROR header and 2 lines", out.String())
	}
	for _, l := range lines[1:] {
		if got := strings.Fields(l); !slices.Equal(got, []string{missing, "ENOENT"}) {
			t.Errorf("line %q, want %s ENOENT", l, missing)
		}
	}
}

func TestTraceTCPConnect(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_tcpconnect")
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := map[string]string{"tcp4": "127.0.0.1", "tcp6": "::1"}[network]
			ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
			if err != nil {
				if network == "tcp6" {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			target := ln.Addr().(*net.TCPAddr).AddrPort()
			target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			onEvent, events := collect()
			var out bytes.Buffer
			done := runNamed(ctx, "trace_tcpconnect", elf, Options{
				Output:  &out,
				Format:  FormatJSON,
				Timeout: time.Minute,
				Params:  map[string]string{"target_port": strconv.Itoa(int(target.Port()))},
				OnEvent: onEvent,
			})
			var mu sync.Mutex
			var sources []netip.AddrPort
			stop := triggerLoop(t, func() error {
				c, err := net.Dial(network, target.String())
				if err != nil {
					return err
				}
				src := c.LocalAddr().(*net.TCPAddr).AddrPort()
				mu.Lock()
				sources = append(sources, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
				mu.Unlock()
				return c.Close()
			})
			defer stop()
			ev, before := waitEvent(t, events, done, "a connection to "+target.String(), func(ev Event) bool {
				pid, _ := ev.Value("pid")
				return pid == uint32(os.Getpid())
			})
			cancel()
			res := wait(t, done, "the run to end")
			stop()
			if res.err != nil {
				t.Fatal(res.err)
			}

			checkFields(t, ev, map[string]any{"dst": target, "comm": testComm(t), "uid": uint32(os.Getuid()), "established": true})
			src, _ := ev.Value("src")
			if !slices.Contains(sources, src.(netip.AddrPort)) {
				t.Errorf("src %v is none of the test's connections %v", src, sources)
			}
			// target_port keeps out connections to other ports.
			for _, other := range before {
				if dst, _ := other.Value("dst"); dst.(netip.AddrPort).Port() != target.Port() {
					t.Errorf("event for a connection to %v despite target_port %d", dst, target.Port())
				}
			}
			if !strings.Contains(out.String(), fmt.Sprintf(`"dst":%q`, target.String())) {
				t.Errorf("destination %v not printed as text:\n%s", target, out.String())
			}
		})
	}
}

func TestTraceSignal(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_signal")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("no sleep to start: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onEvent, events := collect()
	var out bytes.Buffer
	done := runNamed(ctx, "trace_signal", elf, Options{
		Output:  &out,
		Format:  FormatJSON,
		Timeout: time.Minute,
		Params:  map[string]string{"target_signal": "SIGUSR1"},
		OnEvent: onEvent,
	})
	var children []uint32
	stop := triggerLoop(t, func() error {
		cmd := exec.Command(sleep, "30")
		// Start returns once the child runs sleep, so it is known as "sleep".
		if err := cmd.Start(); err != nil {
			return err
		}
		children = append(children, uint32(cmd.Process.Pid))
		if err := cmd.Process.Signal(unix.SIGUSR1); err != nil {
			return err
		}
		var exit *exec.ExitError
		if err := cmd.Wait(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != unix.SIGUSR1 {
			return fmt.Errorf("child: got %v, want death by SIGUSR1", err)
		}
		return nil
	})
	defer stop()
	ev, before := waitEvent(t, events, done, "a SIGUSR1 from this process", func(ev Event) bool {
		pid, _ := ev.Value("pid")
		return pid == uint32(os.Getpid())
	})
	cancel()
	res := wait(t, done, "the run to end")
	stop() // children is complete once the loop stopped
	if res.err != nil {
		t.Fatal(res.err)
	}

	checkFields(t, ev, map[string]any{"sig": Signal(unix.SIGUSR1), "tcomm": "sleep", "result": int32(0),
		"comm": testComm(t), "uid": uint32(os.Getuid())})
	if tpid, _ := ev.Value("tpid"); !slices.Contains(children, tpid.(uint32)) {
		t.Errorf("target pid %v is none of the children %v", tpid, children)
	}
	for _, other := range append(before, ev) {
		if sig, _ := other.Value("sig"); sig != Signal(unix.SIGUSR1) {
			t.Errorf("event for %v despite target_signal SIGUSR1", sig)
		}
	}
	if !strings.Contains(out.String(), `"sig":"SIGUSR1"`) {
		t.Errorf("signal not printed by name:\n%s", out.String())
	}
}
