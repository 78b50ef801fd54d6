// Command bench measures the figures that say bpfleet is fast and small (`make bench`): it
// prints a table of every figure with the reference measured in the same run where there is
// one, the ratio and PASS/FAIL against the goal, and writes bench/results.json.
//
// It needs root (eBPF, /proc of the agent), mosquitto, and the binaries and gadgets of
// `make build` (BPFLEET_BUILD, default ./build). Knobs are environment variables, all
// optional; see docs/performance.md:
//
//	BPFLEET_BENCH_ONLY            comma-separated row groups to run (size,rss,verify,apply,catchup,fanout,coldstart,events,qemu)
//	BPFLEET_BENCH_IDLE            agent idle time before reading its RSS (default 60s)
//	BPFLEET_BENCH_SIGS            signature records in the idle store and the MQTT apply run (10000)
//	BPFLEET_BENCH_SIGS_PER_DELTA  signature records per delta for those (500)
//	BPFLEET_BENCH_APPLY_RUNS      repetitions of the MQTT apply and raw paho runs (3)
//	BPFLEET_BENCH_VERIFY_N        verify.Gadget / VerifyBundle calls (1000)
//	BPFLEET_BENCH_CATCHUP_DELTAS  missed deltas for catch-up (10000)
//	BPFLEET_BENCH_CATCHUP_SIGS    signature records per missed delta (1)
//	BPFLEET_BENCH_CATCHUP_TIMEOUT give up on catch-up after this long (120s)
//	BPFLEET_BENCH_FANOUT          agents in the fan-out (1000)
//	BPFLEET_BENCH_COLD_N          gadget cold starts (20)
//	BPFLEET_BENCH_EVENTS_TIME     measuring window of each event-throughput run (10s)
//	BPFLEET_BENCH_QEMU=1          also run the QEMU testbed (minutes per arch)
//	BPFLEET_BENCH_KEEP=1          keep the scratch directory (device data dirs, logs)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Row is one figure of the table.
type Row struct {
	Group  string   `json:"group"`
	Figure string   `json:"figure"`
	Value  *float64 `json:"value,omitempty"`
	Unit   string   `json:"unit,omitempty"`
	// Ref is the reference figure, RefWhat what it is and whether it was measured in this run.
	Ref     *float64 `json:"ref,omitempty"`
	RefWhat string   `json:"ref_what,omitempty"`
	Ratio   *float64 `json:"ratio,omitempty"`
	Goal    string   `json:"goal,omitempty"`
	// Result is PASS, FAIL, INFO (no goal), or NOT MEASURED.
	Result string `json:"result"`
	// Detail holds percentiles and breakdowns; Note says what limits or explains the figure.
	Detail map[string]any `json:"detail,omitempty"`
	Note   string         `json:"note,omitempty"`
}

func f64(v float64) *float64 { return &v }

// check sets Result from a goal: value <= max (or >= min when atLeast).
func (r *Row) check(goal float64, atLeast bool) {
	switch {
	case r.Value == nil:
		r.Result = "NOT MEASURED"
	case atLeast && *r.Value >= goal, !atLeast && *r.Value <= goal:
		r.Result = "PASS"
	default:
		r.Result = "FAIL"
	}
}

type env struct {
	build   string // build directory: bin/, gadgets/
	repo    string
	work    string // scratch on disk (durable stores)
	shm     string // scratch on tmpfs (operator-side histories: their fsyncs are not measured)
	cache   string // reusable fixtures between runs
	log     *slog.Logger
	rows    []Row
	started time.Time
}

func (e *env) add(r Row) {
	e.rows = append(e.rows, r)
	fmt.Fprintf(os.Stderr, "  %-58s %s %s\n", r.Figure, fmtValue(r.Value, r.Unit), r.Result)
}

func knobInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			fatalf("%s=%q: want a positive integer", name, v)
		}
		return n
	}
	return def
}

func knobDur(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			fatalf("%s=%q: want a duration such as 60s", name, v)
		}
		return d
	}
	return def
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	out := flag.String("out", "bench/results.json", "where to write the results")
	flag.Parse()
	if os.Geteuid() != 0 {
		fatalf("needs root (eBPF programs, tracefs)")
	}
	// Mosquitto inherits this process's limit: the fan-out needs more than 1024 sockets.
	// (Setting it explicitly also stops os/exec from restoring the lower soft limit.)
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	repo, _ := os.Getwd()
	build := os.Getenv("BPFLEET_BUILD")
	if build == "" {
		build = filepath.Join(repo, "build")
	}
	for _, p := range []string{"bin/bpfleet", "gadgets/trace_exec.bpf.o"} {
		if _, err := os.Stat(filepath.Join(build, p)); err != nil {
			fatalf("%v: run `make build` first", err)
		}
	}
	work, err := os.MkdirTemp("", "bpfleet-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	if os.Getenv("BPFLEET_BENCH_KEEP") == "" {
		defer os.RemoveAll(work)
	} else {
		fmt.Fprintf(os.Stderr, "bench: keeping %s (BPFLEET_BENCH_KEEP)\n", work)
	}
	shm, err := os.MkdirTemp("/dev/shm", "bpfleet-bench-")
	if err != nil {
		shm = filepath.Join(work, "shm")
	}
	defer os.RemoveAll(shm)
	e := &env{build: build, repo: repo, work: work, shm: shm, cache: filepath.Join(build, "bench-cache"),
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), started: time.Now()}

	loadStart := loadavg()
	only := strings.Split(os.Getenv("BPFLEET_BENCH_ONLY"), ",")
	want := func(g string) bool { return os.Getenv("BPFLEET_BENCH_ONLY") == "" || slices.Contains(only, g) }

	// The idle-RSS agent runs from the start, in its own process, while the other figures
	// are measured: its RSS after BPFLEET_BENCH_IDLE does not depend on the CPU load around it,
	// and the wait then costs no extra wall time.
	var rss, rssEmpty *rssRun
	if want("rss") {
		fmt.Fprintln(os.Stderr, "bench: starting the idle agents (store with signatures, empty store)")
		rss, rssEmpty = startRSS(e, false), startRSS(e, true)
	}
	steps := []struct {
		group string
		run   func(*env)
	}{
		{"size", benchSize},
		{"verify", benchVerify},
		{"apply", benchApply},
		{"catchup", benchCatchUp},
		{"fanout", benchFanOut},
		{"coldstart", benchColdStart},
		{"events", benchEvents},
	}
	for _, s := range steps {
		if want(s.group) {
			fmt.Fprintf(os.Stderr, "bench: %s (%s elapsed)\n", s.group, time.Since(e.started).Round(time.Second))
			s.run(e)
		}
	}
	if rss != nil {
		fmt.Fprintln(os.Stderr, "bench: idle agent RSS")
		rssEmpty.finish(e, nil)
		rss.finish(e, rssEmpty)
	}
	if want("qemu") {
		benchQEMU(e)
	}

	printTable(os.Stdout, e.rows)
	res := map[string]any{
		"date":          time.Now().UTC().Format(time.RFC3339),
		"duration":      time.Since(e.started).Round(time.Second).String(),
		"go":            runtime.Version(),
		"goarch":        runtime.GOARCH,
		"cpus":          runtime.NumCPU(),
		"kernel":        uname(),
		"cpu_model":     cpuModel(),
		"loadavg_start": loadStart,
		"loadavg_end":   loadavg(),
		"rows":          e.rows,
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fatalf("%v", err)
	}
	fmt.Printf("\nresults: %s (%s)\n", *out, time.Since(e.started).Round(time.Second))
}

func uname() string {
	out, _ := exec.Command("uname", "-r").Output()
	return strings.TrimSpace(string(out))
}

// loadavg is /proc/loadavg: other work on the machine skews every timing.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func fmtValue(v *float64, unit string) string {
	if v == nil {
		return "—"
	}
	x := *v
	var s string
	switch {
	case x >= 100:
		s = strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 10:
		s = strconv.FormatFloat(x, 'f', 1, 64)
	default:
		s = strconv.FormatFloat(x, 'f', 2, 64)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

func printTable(w io.Writer, rows []Row) {
	head := []string{"figure", "measured", "reference", "ratio", "goal", "result"}
	var cells [][]string
	for _, r := range rows {
		ref := "—"
		if r.Ref != nil {
			ref = fmtValue(r.Ref, r.Unit)
		}
		if r.RefWhat != "" {
			ref += " (" + r.RefWhat + ")"
		}
		ratio := "—"
		if r.Ratio != nil {
			ratio = strconv.FormatFloat(*r.Ratio, 'f', 2, 64) + "×"
		}
		goal := r.Goal
		if goal == "" {
			goal = "—"
		}
		cells = append(cells, []string{r.Figure, fmtValue(r.Value, r.Unit), ref, ratio, goal, r.Result})
	}
	widths := make([]int, len(head))
	for i, h := range head {
		widths[i] = len([]rune(h))
	}
	for _, c := range cells {
		for i, s := range c {
			widths[i] = max(widths[i], len([]rune(s)))
		}
	}
	line := func(c []string) {
		for i, s := range c {
			fmt.Fprintf(w, "| %s%s ", s, strings.Repeat(" ", widths[i]-len([]rune(s))))
		}
		fmt.Fprintln(w, "|")
	}
	fmt.Fprintln(w)
	line(head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = strings.Repeat("-", widths[i])
	}
	line(sep)
	for _, c := range cells {
		line(c)
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		if len(r.Detail) == 0 && r.Note == "" {
			continue
		}
		fmt.Fprintf(w, "- %s:", r.Figure)
		keys := make([]string, 0, len(r.Detail))
		for k := range r.Detail {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, " %s=%v", k, r.Detail[k])
		}
		if r.Note != "" {
			fmt.Fprintf(w, "\n    %s", r.Note)
		}
		fmt.Fprintln(w)
	}
}

// stats summarises samples: median and percentiles by nearest rank.
type stats struct{ s []float64 }

func newStats(samples []float64) stats {
	s := slices.Clone(samples)
	slices.Sort(s)
	return stats{s}
}

func (s stats) p(q float64) float64 {
	if len(s.s) == 0 {
		return 0
	}
	i := int(q*float64(len(s.s))+0.999999) - 1
	return s.s[min(max(i, 0), len(s.s)-1)]
}

func (s stats) detail(unit string) map[string]any {
	r := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) + unit }
	return map[string]any{"n": len(s.s), "min": r(s.s[0]), "p50": r(s.p(0.5)), "p90": r(s.p(0.9)),
		"p99": r(s.p(0.99)), "max": r(s.s[len(s.s)-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
