package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/bpfleet/bpfleet/agent"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/runner"
)

// runDevice sets up a device whose trust store was provisioned offline (no broker) with a
// delta trusting the gadget key that signed top_file, trace_exec and trace_open, all imported.
func runDevice(t *testing.T) *e2e {
	e := newE2E(t)
	build := filepath.Dir(filepath.Dir(e.bin))
	e.run(e.ctl, "keygen", "--output-key-prefix", e.path("keys/fleet"))
	e.run(e.ctl, "keygen", "--output-key-prefix", e.path("keys/gadget"))
	for _, g := range []string{"top_file", "trace_exec", "trace_open"} {
		e.run(e.ctl, "package", "--layout", e.path("layout"), "--ref", g+":latest",
			"--elf", filepath.Join(build, "gadgets", g+".bpf.o"), "--metadata", filepath.Join("..", "..", "gadgets", g, "gadget.yaml"))
		e.run(e.ctl, "sign", "--layout", e.path("layout"), "--key", e.path("keys/gadget.key"), g+":latest")
	}
	// trace_exec with a WebAssembly layer, as `ig image build` adds one for a gadget's own
	// post-processing, which bpfleet does not run.
	l, err := oci.Open(e.path("layout"))
	if err != nil {
		t.Fatal(err)
	}
	elf, err := os.ReadFile(filepath.Join(build, "gadgets", "trace_exec.bpf.o"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.PackageGadget(oci.Gadget{Ref: "trace_exec_wasm:latest", Arch: runtime.GOARCH, Program: elf, Metadata: []byte("name: trace_exec_wasm\n"),
		Layers: []oci.Layer{{MediaType: oci.MediaTypeWasmProgram, Data: []byte("\x00asm\x01\x00\x00\x00")}}}); err != nil {
		t.Fatal(err)
	}
	e.run(e.ctl, "sign", "--layout", e.path("layout"), "--key", e.path("keys/gadget.key"), "trace_exec_wasm:latest")
	e.run(e.ctl, "root", "--state-dir", e.path("fleet"), "--fleet", "fleet-r", "--root-key", e.path("keys/fleet.pub"),
		"--delta-key", e.path("keys/fleet.pub"), "--sign", e.path("keys/fleet.key"))
	e.run(e.ctl, "delta", "--state-dir", e.path("fleet"), "--sign", e.path("keys/fleet.key"),
		"--trust-key", e.path("keys/gadget.pub"), "--signatures-from", e.path("layout"), "-o", e.path("delta-1.cbor"))
	// agent.New applies provisioned deltas offline, before any broker is contacted.
	cfg := agent.Config{DeviceID: "run", Fleet: "fleet-r", Broker: "tcp://127.0.0.1:1",
		Root: e.path("fleet/root.cbor"), Provision: []string{e.path("delta-1.cbor")}}
	if _, err := agent.New(cfg, e.dataDir, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	e.device("image", "import", e.path("layout"))
	return e
}

// runSplit runs bpfleet on the device with stdout and stderr apart, while busy writes new
// files (so that top_file has rows), and returns both and the error.
func runSplit(e *e2e, busy bool, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, append([]string{"--data-dir", e.dataDir}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; busy; n++ {
			os.WriteFile(e.path(fmt.Sprintf("busy-%d", n%50)), []byte("x"), 0o644)
			select {
			case <-quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	err = cmd.Run()
	close(quit)
	<-done
	return out.String(), errOut.String(), err
}

// lastLine is the last line of s.
func lastLine(s string) string {
	s = strings.TrimSuffix(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// TestRunCommand checks what `bpfleet run` says about a run: the summary in the gadget's
// own unit (rows printed and rounds for a map iterator, not the entries it read), no
// summary when the gadget never ran, the rounds of JSON rows, and --list-params.
func TestRunCommand(t *testing.T) {
	e := runDevice(t)

	t.Run("map iterator summary", func(t *testing.T) {
		stdout, stderr, err := runSplit(e, true, "run", "top_file", "--max-events", "3", "--interval", "300ms", "--timeout", "20s")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		m := regexp.MustCompile(`^3 row\(s\) printed in (\d+) round\(s\), 0 filtered out$`).FindStringSubmatch(lastLine(stderr))
		if m == nil || m[1] == "0" {
			t.Errorf("summary %q, want 3 rows printed in at least one round\n%s", lastLine(stderr), stderr)
		}
		rows := 0
		for line := range strings.Lines(stdout) {
			if !strings.HasPrefix(line, "--- ") && !strings.HasPrefix(line, "PID ") {
				rows++
			}
		}
		if rows != 3 {
			t.Errorf("%d rows printed, want 3:\n%s", rows, stdout)
		}
	})

	t.Run("json rounds", func(t *testing.T) {
		stdout, stderr, err := runSplit(e, true, "run", "top_file", "-o", "json", "--max-events", "4", "--interval", "200ms", "--timeout", "20s")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 4 {
			t.Fatalf("%d lines, want 4 rows:\n%s", len(lines), stdout)
		}
		for _, l := range lines {
			var row struct{ Round string }
			if err := json.Unmarshal([]byte(l), &row); err != nil || !strings.HasPrefix(l, `{"round":"`) {
				t.Fatalf("row %q (%v): want a JSON object whose first member is round", l, err)
			}
			if _, err := time.Parse(time.RFC3339Nano, row.Round); err != nil || !strings.HasSuffix(row.Round, "Z") {
				t.Errorf("round %q: want a UTC RFC 3339 time (%v)", row.Round, err)
			}
		}
	})

	t.Run("wasm layer", func(t *testing.T) {
		// The eBPF program runs (it sees these execs); the warning says plainly what is not applied.
		stop := execLoop(t, "/bin/true")
		stdout, stderr, err := runSplit(e, false, "run", "trace_exec_wasm", "-o", "json", "--max-events", "1", "--timeout", "10s")
		stop()
		want := "warning: the image's WebAssembly layer is not run by bpfleet: events are shown as the eBPF program emits them, without the gadget's own post-processing"
		if err != nil || !strings.Contains(stderr, "\n"+want+"\n") || !strings.Contains(stdout, `"filename":`) {
			t.Errorf("%v, want events and the warning %q:\n%s\n%s", err, want, stdout, stderr)
		}
	})

	t.Run("tracer summary", func(t *testing.T) {
		_, stderr, err := runSplit(e, false, "run", "trace_exec", "--timeout", "500ms")
		if err != nil || !regexp.MustCompile(`^\d+ event\(s\) printed, 0 filtered out, 0 lost$`).MatchString(lastLine(stderr)) {
			t.Errorf("run: %v, summary %q", err, lastLine(stderr))
		}
	})

	t.Run("terminal width", func(t *testing.T) {
		// A program whose path is far longer than the filename column.
		long := e.path(strings.Repeat("a-long-directory-name/", 4) + "widthprobe")
		if err := os.MkdirAll(filepath.Dir(long), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(long, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		args := []string{"--data-dir", e.dataDir, "run", "trace_exec", "--filter", "comm=widthprobe", "--max-events", "1", "--timeout", "20s"}
		stop := execLoop(t, long)

		// On a 100-column terminal every line fits, the time and numbers are whole, and the
		// path is cut at the edge.
		lines := strings.Split(strings.TrimSuffix(runOnTerminal(t, 100, e.bin, args...), "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "TIMESTAMP ") {
			t.Fatalf("want a header and one event, got %q", lines)
		}
		for _, l := range lines {
			if n := utf8.RuneCountInString(l); n > 100 {
				t.Errorf("line of %d characters on a 100-column terminal: %q", n, l)
			}
		}
		cells := strings.Fields(lines[1])
		if len(cells) != 7 || len(cells[0]) != len("2026-12-03T17:22:01.120000000Z") || cells[5] != "widthprobe" ||
			!strings.HasSuffix(cells[6], "…") || !strings.HasPrefix(long, strings.TrimSuffix(cells[6], "…")) {
			t.Errorf("event %q: want the time and comm whole and the path cut, ending in …", lines[1])
		}

		// Piped, the same event prints its path whole.
		stdout, stderr, err := runSplit(e, false, args[2:]...)
		stop()
		if err != nil || !strings.Contains(stdout, long) {
			t.Errorf("piped: %v, want %s whole:\n%s\n%s", err, long, stdout, stderr)
		}
	})

	t.Run("blocked stdout", func(t *testing.T) {
		// A reader of stdout that never reads: the timeout still ends the run, the gadget
		// is released, and the error says what was not printed.
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		go func() { // opens by the thousand: far more lines than the pipe and the queue hold
			for ctx.Err() == nil {
				if f, err := os.Open("/dev/null"); err == nil {
					f.Close()
				}
			}
		}()
		cmd := exec.CommandContext(ctx, e.bin, "--data-dir", e.dataDir, "run", "trace_open", "--timeout", "2s")
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = w, &stderr
		err = cmd.Run()
		w.Close()
		if ctx.Err() != nil {
			t.Fatalf("bpfleet run outlived its --timeout by far with a blocked stdout:\n%s", stderr.String())
		}
		gaveUp := regexp.MustCompile(`(?m)^bpfleet: run gadget trace_open: print: the output took nothing for 1s: gave up on (\d+) unprinted line\(s\)$`).FindStringSubmatch(stderr.String())
		if err == nil || gaveUp == nil {
			t.Fatalf("%v, want the unprinted lines named:\n%s", err, stderr.String())
		}
		// The summary leaves those lines out of the events printed and counts them as not
		// printed, with the event the full queue refused as the run ended, if it did.
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		summary := regexp.MustCompile(`^\d+ event\(s\) printed, 0 filtered out, \d+ lost, (\d+) not printed \(output blocked or failed\)$`).FindStringSubmatch(lines[len(lines)-2])
		var unprinted, unprintedLines int
		fmt.Sscan(gaveUp[1], &unprintedLines)
		if summary != nil {
			fmt.Sscan(summary[1], &unprinted)
		}
		if summary == nil || unprinted != unprintedLines && unprinted != unprintedLines+1 {
			t.Errorf("summary %q: want the %d unprinted lines (or one more) not printed\n%s", lines[len(lines)-2], unprintedLines, stderr.String())
		}
	})

	// Refused before the gadget starts: the error alone, no summary.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--param", "stats_max_entries=0"}, "param stats_max_entries: 0 would leave map stats without room; use a positive value"},
		{[]string{"--param", "no_such=1"}, "param no_such: the gadget has no such parameter"},
		{[]string{"--fields", "no_such"}, "no_such"},
		{[]string{"--filter", "no_such=1"}, "no_such"},
		{[]string{"--filter", "pid=-1"}, "filter pid=-1: field pid is a uint32, printed in decimal from 0 to 4294967295"},
		{[]string{"--interval", "1ns"}, "--interval 1ns: must be at least 100ms"},
		{[]string{"--list-params", "--param", "target_pid=1"}, "--list-params only lists the gadget's parameters: it takes no --param, --fields or --filter"},
	} {
		_, stderr, err := runSplit(e, false, append([]string{"run", "top_file", "--timeout", "5s"}, tc.args...)...)
		if err == nil || !strings.Contains(lastLine(stderr), tc.want) {
			t.Errorf("%v: %v, want an error containing %q:\n%s", tc.args, err, tc.want, stderr)
		}
		if regexp.MustCompile(`(?m)^\d+ (event|row|record)\(s\) printed`).MatchString(stderr) {
			t.Errorf("%v: a summary for a gadget that never ran:\n%s", tc.args, stderr)
		}
	}

	t.Run("list params", func(t *testing.T) {
		stdout, stderr, err := runSplit(e, false, "run", "top_file", "--list-params", "-o", "json")
		var ps []map[string]any
		if err != nil || json.Unmarshal([]byte(stdout), &ps) != nil {
			t.Fatalf("%v: %s\n%s", err, stdout, stderr)
		}
		var sizing []string
		for _, p := range ps {
			for k := range p {
				if k != "name" && k != "type" && k != "default" && k != "sizes_map" && k != "max_len" && k != "description" {
					t.Errorf("param %v: key %q, want snake_case keys name, type, default, sizes_map, max_len, description", p, k)
				}
			}
			if p["sizes_map"] != nil {
				sizing = append(sizing, fmt.Sprint(p["name"], "->", p["sizes_map"]))
			}
		}
		if strings.Join(sizing, ",") != "stats_max_entries->stats" {
			t.Errorf("params sizing maps %v, want stats_max_entries->stats", sizing)
		}
		// Descriptions come from the signed image's metadata (gadgets/top_file/gadget.yaml).
		if len(ps) != 3 || ps[0]["name"] != "all_files" ||
			ps[0]["description"] != "Count every kind of file (sockets, pipes, terminals, devices), not only regular files." {
			t.Fatalf("params %v: want all_files first, described as in top_file's gadget.yaml", ps)
		}
		// Empty keys are left out: all_files is a bool that sizes no map.
		for _, k := range []string{"max_len", "sizes_map"} {
			if _, ok := ps[0][k]; ok {
				t.Errorf("param %v has key %s, want it left out when empty", ps[0], k)
			}
		}

		stdout, _, err = runSplit(e, false, "run", "top_file", "--list-params")
		if err != nil || !regexp.MustCompile(`(?m)^stats_max_entries +uint32 +"10240" +stats \(max_entries, > 0\) +How many thread and file pairs one interval can show; calls on further pairs are not counted\.$`).MatchString(stdout) {
			t.Errorf("%v:\n%s", err, stdout)
		}

		stdout, _, err = runSplit(e, false, "run", "trace_exec", "--list-params")
		if err != nil || !strings.HasPrefix(stdout, "gadget trace_exec") || !strings.HasSuffix(stdout, " has no parameters\n") {
			t.Errorf("%v: %q, want gadget trace_exec... has no parameters", err, stdout)
		}
		stdout, _, err = runSplit(e, false, "run", "trace_exec", "--list-params", "-o", "json")
		if err != nil || strings.TrimSpace(stdout) != "[]" {
			t.Errorf("%v: %q, want []", err, stdout)
		}
	})
}

// TestRunSummary: what was not printed is left out of the printed count and named only when
// there is some, in every gadget kind's summary.
func TestRunSummary(t *testing.T) {
	for _, tc := range []struct {
		stats runner.Stats
		want  string
	}{
		{runner.Stats{Kind: runner.KindTracer, Events: 10, Filtered: 3, Lost: 2}, "7 event(s) printed, 3 filtered out, 2 lost"},
		{runner.Stats{Kind: runner.KindTracer, Events: 10, Filtered: 3, Unprinted: 4, Lost: 2}, "3 event(s) printed, 3 filtered out, 2 lost, 4 not printed (output blocked or failed)"},
		{runner.Stats{Kind: runner.KindMapIterator, Events: 5, Filtered: 1, Unprinted: 2, Rounds: 2}, "2 row(s) printed in 2 round(s), 1 filtered out, 2 not printed (output blocked or failed)"},
		{runner.Stats{Kind: runner.KindSnapshotter, Events: 5}, "5 record(s) printed, 0 filtered out"},
	} {
		if got := runSummary(&tc.stats); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.stats, got, tc.want)
		}
	}
}

// execLoop runs path every 20 ms until the returned stop is called.
func execLoop(t *testing.T, path string) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			exec.Command(path).Run()
			select {
			case <-quit:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { stop() })
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-done }) }
}

// runOnTerminal runs bin with args, its stdout a pseudo-terminal of cols columns, and returns
// what it printed there (the terminal's "\r\n" as "\n").
func runOnTerminal(t *testing.T, cols uint16, bin string, args ...string) string {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: cols}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = pts, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close() // the child holds the terminal now: reading ends when it exits
	var out bytes.Buffer
	read := make(chan struct{})
	go func() { io.Copy(&out, ptmx); close(read) }() // ends in EIO once the child is gone
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	<-read
	return strings.ReplaceAll(out.String(), "\r\n", "\n")
}
