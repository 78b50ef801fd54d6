package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// benchQEMU reads boot-to-first-event from the QEMU testbed (testbed/, TestScenario), which
// boots each architecture under TCG and logs its timings. It takes minutes per architecture,
// so it runs only with BPFLEET_BENCH_QEMU=1.
func benchQEMU(e *env) {
	arches := []string{"amd64", "arm64"}
	if os.Getenv("BPFLEET_BENCH_QEMU") != "1" {
		for _, a := range arches {
			e.add(Row{Group: "qemu", Figure: "QEMU (TCG) boot to first event, " + a, Result: "NOT MEASURED",
				Note: "opt-in: BPFLEET_BENCH_QEMU=1 runs the testbed (testbed/ TestScenario: several minutes per arch, kernels from /var/cache/bpfleet); armv7: Debian's armmp kernel has no BTF, no CO-RE gadget can run"})
		}
		return
	}
	fmt.Fprintln(os.Stderr, "bench: QEMU testbed (BPFLEET_BENCH_QEMU=1)")
	cmd := exec.Command(goTool(), "test", "./testbed", "-run", "^TestScenario$", "-count=1", "-v", "-timeout", "40m")
	cmd.Dir = e.repo
	cmd.Env = append(os.Environ(), "BPFLEET_TESTBED=1", "BPFLEET_BUILD="+e.build)
	t := time.Now()
	out, err := cmd.CombinedOutput()
	// "<arch> timings (host clock from QEMU start): network up …, first event 12.3s (guest 4567 ms since kernel start), powered off …"
	re := regexp.MustCompile(`(\w+) timings \(host clock from QEMU start\): network up ([^ ]+) \(guest (\d+) ms since kernel start\).*first event ([^ ]+) \(guest (\d+) ms since kernel start\)`)
	found := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		first, perr := time.ParseDuration(m[4])
		r := Row{Group: "qemu", Figure: "QEMU (TCG) boot to first event, " + m[1], Unit: "s", Result: "INFO",
			Detail: map[string]any{"network_up_host": m[2], "network_up_guest_ms": m[3], "first_event_guest_ms": m[5]}}
		if perr == nil {
			r.Value = f64(first.Seconds())
		}
		if g, err := strconv.Atoi(m[5]); err == nil {
			r.Detail["first_event_guest_s"] = fmt.Sprintf("%.2f", float64(g)/1000)
		}
		r.Note = "one boot per arch under TCG emulation (not a device's speed); includes the scenario's trust delta over MQTT and the broker being stopped before the gadget runs"
		found[m[1]] = true
		e.add(r)
	}
	for _, a := range arches {
		if !found[a] {
			msg := fmt.Sprintf("testbed did not report timings (%v, %s)", err, time.Since(t).Round(time.Second))
			if len(out) > 2000 {
				out = out[len(out)-2000:]
			}
			e.add(Row{Group: "qemu", Figure: "QEMU (TCG) boot to first event, " + a, Result: "NOT MEASURED", Note: msg + ": " + string(out)})
		}
	}
}
