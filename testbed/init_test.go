package testbed

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/sync"
)

// initArch is the architecture whose production firmware the scenario also boots: of the
// default two, its guest boots fastest under TCG.
const initArch = "arm64"

// productionInit boots the firmware an operator ships rather than the testbed's: built with
// `bpfleetctl firmware build`, with the real bpfleet-init as /init, the agent, the fleet's root,
// the scenario's deltas 1 and 2 provisioned, its signed trace_exec layout and the kernel's
// network modules, in n with a fresh broker on the namespace's loopback. From the host it
// checks that bpfleet-init logs loading the modules on the console and that the device reports
// itself current at version 2 in `bpfleetctl status`; then it kills QEMU (bpfleet-init never
// powers off while the agent runs). w holds the scenario's files for k's architecture.
func (h *host) productionInit(t *testing.T, n *Netns, k *Kernel, w, fleet string) {
	start := time.Now()
	p := func(name string) string { return filepath.Join(w, name) }
	if err := GoBuild(h.repo, "./firmware/cmd/bpfleet-init", p("bpfleet-init"), k.Arch); err != nil {
		t.Fatal(err)
	}
	mdir := p("mosquitto-init")
	if err := os.MkdirAll(mdir, 0o700); err != nil {
		t.Fatal(err)
	}
	broker, err := StartMosquitto(n, mdir, 20000+rand.IntN(20000))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Stop()

	device := "tb-" + k.Arch.Name + "-init"
	args := []string{"firmware", "build", "--arch", k.Arch.Name, "--init", p("bpfleet-init"), "--agent", p("bpfleet"),
		"--root", p("fleet/root.cbor"), "--device-id", device, "--fleet", fleet,
		"--broker", fmt.Sprintf("tcp://10.0.2.2:%d", broker.Port), "--provision", p("delta-1.cbor"), "--provision", p("delta-2.cbor"),
		"--layout", p("trace_exec"), "--kernel-modules", k.Modules, "--address", "10.0.2.15/24", "--gateway", "10.0.2.2",
		"-o", p("initrd-prod.gz")}
	for _, m := range k.Arch.Modules {
		args = append(args, "--module", m)
	}
	out := h.run(t, h.ctl, args...)
	m := regexp.MustCompile(`, (\d+) kernel module\(s\), 2 provisioned update\(s\)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("bpfleetctl firmware build said %q, want its module count and 2 provisioned updates", out)
	}
	modulesLine := "bpfleet-init: " + m[1] + " kernel module(s) loaded at "

	vm := h.boot(t, n, k, p("initrd-prod.gz"), k.Arch.Name+"-init")
	defer func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", broker.Log())
		}
	}()

	// The device is up when its retained status says it is current at the history's head.
	deadline := time.Now().Add(90 * time.Second)
	var report struct {
		Version uint64              `json:"version"`
		Devices []sync.DeviceReport `json:"devices"`
	}
	for {
		out, err := n.Command(h.ctl, "status", "--state-dir", p("fleet"), "--broker", broker.URL(), "--wait", "500ms", "-o", "json").Output()
		if err != nil {
			t.Fatalf("bpfleetctl status: %v", err)
		}
		if err := json.Unmarshal(out, &report); err != nil {
			t.Fatalf("bpfleetctl status: %v\n%s", err, out)
		}
		if len(report.Devices) == 1 && report.Devices[0].State == sync.StateCurrent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no current status from %s within 90 s; last report:\n%s", device, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
	current := time.Since(vm.Start)
	if d := report.Devices[0]; d.Device != device || d.Version != 2 || report.Version != 2 || !d.Online {
		t.Errorf("status: device %s online %v at version %d (fleet head %d), want %s online at 2", d.Device, d.Online, d.Version, report.Version, device)
	}
	var loaded *Line
	for _, l := range vm.Lines() {
		if strings.Contains(l.Text, modulesLine) {
			loaded = &l
			break
		}
	}
	if loaded == nil {
		t.Fatalf("console has no %q line", modulesLine)
	}
	t.Logf("%s bpfleet-init (host clock from QEMU start): %q at %s, device %s current at version %d in bpfleetctl status at %s (%s in all)",
		k.Arch.Name, loaded.Text, loaded.At.Round(time.Millisecond), device, report.Devices[0].Version,
		current.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
