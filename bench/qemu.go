package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bpfleet/bpfleet/testbed"
)

// qemuArches are the architectures whose boot-to-first-event is measured (testbed.Arches keys;
// "arm" is armv7, where the first event comes from the non-CO-RE trace_exec_nocore: Debian's
// armmp kernel has no BTF).
var qemuArches = []string{"amd64", "arm64", "arm"}

// qemuFigure names an arch's row as docs/performance.md and make cross do (armv7, not arm).
func qemuFigure(arch string) string {
	if arch == "arm" {
		arch = "armv7"
	}
	return "QEMU (TCG) boot to first event, " + arch
}

// benchQEMU reads boot-to-first-event from the QEMU testbed (testbed/, TestScenario), which
// boots each architecture under TCG, plays the whole scenario and logs its timings. It measures
// the architectures whose Debian kernel is cached (`make test` caches amd64 and arm64, `make
// testbed-all` armv7 too; one boot per arch, 20-60 s each); BPFLEET_BENCH_QEMU=0 skips them
// all, =1 measures all three, downloading kernels first when needed.
func benchQEMU(e *env) {
	cache := testbed.CacheDir()
	knob := os.Getenv("BPFLEET_BENCH_QEMU")
	var arches []string
	for _, a := range qemuArches {
		note := ""
		switch {
		case knob == "0":
			note = "skipped (BPFLEET_BENCH_QEMU=0)"
		case knob != "1" && !testbed.Cached(testbed.Arches[a], cache):
			note = fmt.Sprintf("no cached kernel in %s: run `make testbed-all` once, or BPFLEET_BENCH_QEMU=1 to download", cache)
		}
		if note != "" {
			e.add(Row{Group: "qemu", Figure: qemuFigure(a), Result: "NOT MEASURED", Note: note})
			continue
		}
		arches = append(arches, a)
	}
	if len(arches) == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "bench: QEMU testbed (%s; %s elapsed)\n", strings.Join(arches, ", "), time.Since(e.started).Round(time.Second))
	cmd := exec.Command(goTool(), "test", "./testbed", "-run", "^TestScenario$", "-count=1", "-v", "-timeout", "15m")
	cmd.Dir = e.repo
	cmd.Env = append(os.Environ(), "BPFLEET_TESTBED=1", "BPFLEET_BUILD="+e.build, "BPFLEET_CACHE="+cache,
		"BPFLEET_TESTBED_ARCHES="+strings.Join(arches, " "))
	t := time.Now()
	out, err := cmd.CombinedOutput()
	rows := parseQEMU(string(out))
	for _, a := range arches {
		if r, ok := rows[a]; ok {
			e.add(r)
			continue
		}
		msg := fmt.Sprintf("testbed did not report timings (%v, %s)", err, time.Since(t).Round(time.Second))
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		e.add(Row{Group: "qemu", Figure: qemuFigure(a), Result: "NOT MEASURED", Note: msg + ": " + string(out)})
	}
}

// qemuTimingsRE matches the testbed's timing line:
// "<arch> timings (host clock from QEMU start): network up 4.5s (guest 3776 ms since kernel start), …, first event 6.8s (guest 6071 ms since kernel start), powered off 9.4s"
var qemuTimingsRE = regexp.MustCompile(`(\w+) timings \(host clock from QEMU start\): network up ([^ ]+) \(guest (\d+) ms since kernel start\).*first event ([^ ]+) \(guest (\d+) ms since kernel start\), powered off ([^ \n]+)`)

// qemuPassRE matches go test's verdict for one arch's subtest.
var qemuPassRE = regexp.MustCompile(`--- (PASS|FAIL): TestScenario/(\w+) \(([^)]+)\)`)

// parseQEMU turns the testbed's verbose output into one row per arch that logged timings. A
// row whose subtest failed is marked FAIL: its scenario did not complete as asserted.
func parseQEMU(out string) map[string]Row {
	verdict := map[string][2]string{}
	for _, m := range qemuPassRE.FindAllStringSubmatch(out, -1) {
		verdict[m[2]] = [2]string{m[1], m[3]}
	}
	rows := map[string]Row{}
	for _, m := range qemuTimingsRE.FindAllStringSubmatch(out, -1) {
		r := Row{Group: "qemu", Figure: qemuFigure(m[1]), Unit: "s", Result: "INFO",
			Detail: map[string]any{"network_up_host": m[2], "network_up_guest_ms": m[3], "first_event_guest_ms": m[5], "powered_off_host": m[6]}}
		if first, err := time.ParseDuration(m[4]); err == nil {
			r.Value = f64(first.Seconds())
		}
		if g, err := strconv.Atoi(m[5]); err == nil {
			r.Detail["first_event_guest_s"] = fmt.Sprintf("%.2f", float64(g)/1000)
		}
		if v, ok := verdict[m[1]]; ok {
			r.Detail["scenario"], r.Detail["scenario_time"] = v[0], v[1]
			if v[0] == "FAIL" {
				r.Result = "FAIL"
			}
		}
		r.Note = "host clock from QEMU start, one boot under TCG emulation (not a device's speed); includes the provisioned delta, delta 2 over MQTT and the broker being stopped before the first gadget runs"
		rows[m[1]] = r
	}
	return rows
}
