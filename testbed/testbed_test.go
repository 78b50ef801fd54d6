package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/firmware"
)

// The testbed scenario, per architecture: a firmware image with the fleet's root only boots
// in QEMU inside a fresh network namespace whose Mosquitto is the only thing it can reach;
// the host publishes a trust delta for a new gadget key; once the device reports it, the host
// stops the broker; the guest verifies and runs the gadget offline, sees its own exec, does
// the same with a kprobe gadget (trace_kprobe_exec, trusted by the same delta), and refuses a
// tampered copy. The guest reports on the console; this test asserts every step.

const guestTimeout = 90 // seconds for each wait inside the guest

func TestScenario(t *testing.T) {
	if os.Getenv("BPFLEET_TESTBED") != "1" {
		t.Skip("QEMU testbed not requested: set BPFLEET_TESTBED=1 or run `make testbed` (downloads Debian kernels once, boots each arch under TCG)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the testbed needs root (network namespaces)")
	}
	arches := strings.Fields(os.Getenv("BPFLEET_TESTBED_ARCHES"))
	if len(arches) == 0 {
		arches = []string{"amd64", "arm64"}
	}
	h := newHost(t)
	for _, name := range arches {
		arch, ok := Arches[name]
		if !ok {
			t.Fatalf("unknown arch %q in BPFLEET_TESTBED_ARCHES", name)
		}
		t.Run(name, func(t *testing.T) { h.scenario(t, arch) })
	}
}

// host is the operator's side, shared by the architectures.
type host struct {
	t        *testing.T
	work     string
	ctl      string // bpfleetctl for this machine
	repo     string
	cache    string
	consoles string // where console logs are kept
}

func newHost(t *testing.T) *host {
	for _, tool := range []string{"ip", "clang", "llvm-strip", "bpftool", "depmod", "dpkg-deb", "apt-get", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make deps` (the testbed also needs qemu-system-x86 and qemu-system-arm)", tool)
		}
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, work: t.TempDir(), repo: repo, cache: CacheDir(), consoles: t.TempDir()}
	if b := os.Getenv("BPFLEET_BUILD"); b != "" {
		h.consoles = filepath.Join(b, "testbed")
		os.MkdirAll(h.consoles, 0o755)
	}
	h.ctl = filepath.Join(h.work, "bpfleetctl")
	native := Arch{Name: runtimeArch()}
	if err := GoBuild(repo, "./cmd/bpfleetctl", h.ctl, native); err != nil {
		t.Fatal(err)
	}
	return h
}

func runtimeArch() string {
	out, _ := exec.Command("go", "env", "GOARCH").Output()
	return strings.TrimSpace(string(out))
}

func (h *host) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=testbed")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (h *host) scenario(t *testing.T, arch Arch) {
	setupStart := time.Now()
	k, err := FetchKernel(arch, h.cache)
	if err != nil {
		t.Fatal(err)
	}
	w := filepath.Join(h.work, arch.Name)
	p := func(name string) string { return filepath.Join(w, name) }
	if err := os.MkdirAll(w, 0o755); err != nil {
		t.Fatal(err)
	}

	// The device's binaries and the gadget, for the guest's architecture.
	for _, b := range []struct{ pkg, out string }{{"./cmd/bpfleet", "bpfleet"}, {"./testbed/guest", "init"}} {
		if err := GoBuild(h.repo, b.pkg, p(b.out), arch); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []string{"trace_exec", "trace_kprobe_exec"} {
		if err := CompileGadget(k, filepath.Join(h.repo, "gadgets", g, "program.bpf.c"), filepath.Join(h.repo, "gadgets/include"), p(g+".bpf.o")); err != nil {
			t.Fatal(err)
		}
	}

	// Operator: keys, the gadget packaged for this arch and signed, a tampered copy, root 1.
	fleet := "testbed-" + arch.Name
	device := "tb-" + arch.Name
	for _, key := range []string{"root", "fleet", "gadget"} {
		h.run(t, h.ctl, "keygen", "--output-key-prefix", p("keys/"+key))
	}
	meta := filepath.Join(h.repo, "gadgets/trace_exec/gadget.yaml")
	h.run(t, h.ctl, "package", "--layout", p("trace_exec"), "--ref", "trace_exec:latest", "--arch", arch.Name,
		"--elf", p("trace_exec.bpf.o"), "--metadata", meta)
	h.run(t, h.ctl, "sign", "--layout", p("trace_exec"), "--key", p("keys/gadget.key"), "trace_exec:latest")
	// The kprobe gadget, signed with the same key and trusted by the same delta.
	h.run(t, h.ctl, "package", "--layout", p("trace_kprobe_exec"), "--ref", "trace_kprobe_exec:latest", "--arch", arch.Name,
		"--elf", p("trace_kprobe_exec.bpf.o"), "--metadata", filepath.Join(h.repo, "gadgets/trace_kprobe_exec/gadget.yaml"))
	h.run(t, h.ctl, "sign", "--layout", p("trace_kprobe_exec"), "--key", p("keys/gadget.key"), "trace_kprobe_exec:latest")
	obj, err := os.ReadFile(p("trace_exec.bpf.o"))
	if err != nil {
		t.Fatal(err)
	}
	obj[len(obj)/2] ^= 0xff
	if err := os.WriteFile(p("tampered.bpf.o"), obj, 0o644); err != nil {
		t.Fatal(err)
	}
	h.run(t, h.ctl, "package", "--layout", p("tampered"), "--ref", "trace_exec:tampered", "--arch", arch.Name,
		"--elf", p("tampered.bpf.o"), "--metadata", meta)
	h.run(t, h.ctl, "root", "--state-dir", p("fleet"), "--fleet", fleet, "--root-key", p("keys/root.pub"),
		"--delta-key", p("keys/fleet.pub"), "--sign", p("keys/root.key"))

	// The namespace, its broker and the fleet's catch-up server.
	ns, err := NewNetns(fmt.Sprintf("bpfleet-tb-%d-%s", os.Getpid(), arch.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Error(err)
		}
	})
	mdir := p("mosquitto")
	os.MkdirAll(mdir, 0o700)
	broker, err := StartMosquitto(ns, mdir, 20000+rand.IntN(20000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Stop)
	serve := ns.Command(h.ctl, "serve", "--state-dir", p("fleet"), "--broker", broker.URL())
	serve.Stdout, serve.Stderr = nil, nil
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	stopServe := func() {
		if serve.Process != nil && serve.ProcessState == nil {
			serve.Process.Signal(os.Interrupt)
			serve.Wait()
		}
	}
	t.Cleanup(stopServe)

	// The firmware: pre-provisioned with the fleet's root only.
	sc, _ := json.Marshal(map[string]any{"broker": fmt.Sprintf("10.0.2.2:%d", broker.Port), "gadget": "trace_exec:latest",
		"tampered": "trace_exec:tampered", "kprobe": "trace_kprobe_exec:latest", "probe": "/bin/bpfleet-probe", "timeout": guestTimeout})
	initrd := p("initrd.gz")
	modules, err := firmware.BuildFile(firmware.Spec{
		Arch: arch.Name, Init: p("init"), AgentBin: p("bpfleet"), Root: p("fleet/root.cbor"),
		Agent:         firmware.Agent{DeviceID: device, Fleet: fleet, Broker: fmt.Sprintf("tcp://10.0.2.2:%d", broker.Port)},
		Layouts:       []string{p("trace_exec"), p("tampered"), p("trace_kprobe_exec")},
		Network:       &firmware.Network{Interface: "eth0", Address: "10.0.2.15/24", Gateway: "10.0.2.2"},
		KernelModules: k.Modules, Modules: arch.Modules,
		Files: []firmware.File{
			{Path: "/etc/bpfleet/testbed.json", Data: sc, Mode: 0o644},
			{Path: "/bin/bpfleet-probe", Mode: fs.ModeSymlink, Link: "/init"},
		},
	}, initrd)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(initrd)
	t.Logf("%s: kernel %s, firmware %.1f MB with %d module(s), prepared in %s", arch.Name, k.Release,
		float64(info.Size())/1e6, len(modules), time.Since(setupStart).Round(time.Millisecond))

	// Boot.
	console, err := os.Create(filepath.Join(h.consoles, arch.Name+"-console.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	vm, err := Boot(ns, k, initrd, console)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	defer func() {
		if t.Failed() {
			var b strings.Builder
			for _, l := range vm.Lines() {
				fmt.Fprintf(&b, "%7.2fs %s\n", l.At.Seconds(), l.Text)
			}
			t.Logf("%s console:\n%s", arch.Name, b.String())
		}
	}()

	// Trust arrives over MQTT: the delta trusts the gadget key and the gadget's signature.
	h.run(t, h.ctl, "delta", "--state-dir", p("fleet"), "--sign", p("keys/fleet.key"),
		"--trust-key", p("keys/gadget.pub"), "--signatures-from", p("trace_exec"), "--signatures-from", p("trace_kprobe_exec"), "-o", p("delta-1.cbor"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pub := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, h.ctl, "publish", "--broker", broker.URL(), "--fleet", fleet,
		"--wait-device", device, "--timeout", fmt.Sprintf("%ds", guestTimeout+30), p("delta-1.cbor"))
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("publish: %v\n%s\nbroker log:\n%s", err, out, broker.Log())
	}
	applied := time.Since(vm.Start)

	// The broker goes away; the guest carries on offline.
	stopServe()
	broker.Stop()
	if c, err := ns.Dial(broker.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("broker still reachable after stop")
	}
	if err := vm.Wait(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	r, at := Results(vm.Lines())
	if r["error"] != "" {
		t.Fatalf("guest error: %s", r["error"])
	}
	want := map[string]string{
		"arch": arch.Name, "kernel": k.Release, "btf": "true", "modules": fmt.Sprint(len(modules)), "images": "3",
		"pre_trust": "refused", "trust_version": "1", "trust_keys": "1", "broker": "gone", "verify": "ok",
		"event_comm": "bpfleet-probe", "event_pid_match": "true", "tampered": "refused", "done": "ok",
		// The kprobe gadget (kprobe/bprm_execve) sees the probe's exec before the probe runs:
		// its comm is still that of the guest's /init.
		"kprobe_verify": "ok", "kprobe_event_filename": "/bin/bpfleet-probe", "kprobe_event_comm": "init",
		"kprobe_event_pid_match": "true",
	}
	if !arch.HasBTF {
		// Debian's armmp kernel has no BTF: the gadget is verified but cannot be run.
		want["btf"], want["gadget"] = "false", "skipped"
		delete(want, "event_comm")
		delete(want, "event_pid_match")
		want["kprobe_gadget"] = "skipped"
		delete(want, "kprobe_event_filename")
		delete(want, "kprobe_event_comm")
		delete(want, "kprobe_event_pid_match")
	}
	for key, v := range want {
		if r[key] != v {
			t.Errorf("guest %s = %q, want %q", key, r[key], v)
		}
	}
	if !strings.Contains(r["pre_trust_reason"], "no trusted keys") {
		t.Errorf("refused before trust for %q, want no trusted keys", r["pre_trust_reason"])
	}
	if !strings.Contains(r["tampered_reason"], "refusing to run") {
		t.Errorf("tampered gadget refused for %q, want refusing to run", r["tampered_reason"])
	}
	if arch.HasBTF {
		t.Logf("%s kprobe event: %s (%s ms from starting the gadget)", arch.Name, r["kprobe_event"], r["kprobe_attach_to_event_ms"])
	}
	if r["verify_key"] == "" {
		t.Error("guest verify reported no key")
	}
	// The device reported the delta through the broker (publish --wait-device returned), then
	// the broker went away, then the guest found it gone, then the gadget ran.
	if at["broker"] < applied || (arch.HasBTF && at["first_event_ms"] < at["broker"]) {
		t.Errorf("order: broker stopped at %s, guest saw it gone at %s, first event at %s", applied, at["broker"], at["first_event_ms"])
	}
	t.Logf("%s timings (host clock from QEMU start): network up %s (guest %s ms since kernel start), device reported trust "+
		"(broker then stopped) %s, guest read its trust status %s, first event %s (guest %s ms since kernel start), powered off %s",
		arch.Name, at["net_ms"].Round(time.Millisecond), r["net_ms"], applied.Round(time.Millisecond),
		at["trust_version"].Round(time.Millisecond), at["first_event_ms"].Round(time.Millisecond), r["first_event_ms"],
		time.Since(vm.Start).Round(time.Millisecond))
}
