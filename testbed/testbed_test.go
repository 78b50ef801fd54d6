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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/firmware"
)

// The testbed scenario, per architecture: a firmware image with the fleet's root and a
// provisioned delta 1 (trusting the gadget key and trace_exec's signature) boots in QEMU inside
// a fresh network namespace whose Mosquitto is the only thing it can reach. Before its network
// is even up, the agent applies delta 1 and the guest verifies trace_exec, while the kprobe
// gadget is still refused. The host publishes delta 2 (the kprobe and fentry gadgets'
// signatures); once the device reports it, the host stops the broker; the guest verifies and
// runs trace_exec offline, sees its own exec, does the same with trace_kprobe_exec (kprobe and
// kretprobe) and trace_fentry_exec (fentry and fexit), whose events exist only when both
// programs ran and carry bprm_execve's return value (on kernels without fentry, the runner
// must refuse the latter with a clear error), refuses an unsigned copy of trace_exec, then
// changes one byte of trace_exec's signed eBPF layer in its image store and must see it refused
// for the digest mismatch. On a kernel without BTF (armv7) the runner must refuse the three
// CO-RE gadgets, naming the missing BTF, and the guest instead verifies and runs
// trace_exec_nocore (signed in delta 2), which has no CO-RE relocations, and sees the probe's
// exec. The guest reports on the console; this test asserts every step.

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

// boot boots initrd on k in n. Its console is kept in h.consoles/<name>-console.log and
// logged if the test fails; QEMU is killed when the test ends.
func (h *host) boot(t *testing.T, n *Netns, k *Kernel, initrd, name string) *VM {
	t.Helper()
	console, err := os.Create(filepath.Join(h.consoles, name+"-console.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { console.Close() })
	vm, err := Boot(n, k, initrd, console)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			var b strings.Builder
			for _, l := range vm.Lines() {
				fmt.Fprintf(&b, "%7.2fs %s\n", l.At.Seconds(), l.Text)
			}
			t.Logf("%s console:\n%s", name, b.String())
		}
	})
	return vm
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
	include := filepath.Join(h.repo, "gadgets/include")
	for _, g := range []string{"trace_exec", "trace_kprobe_exec", "trace_fentry_exec"} {
		if err := CompileGadget(k, filepath.Join(h.repo, "gadgets", g, "program.bpf.c"), include, p(g+".bpf.o")); err != nil {
			t.Fatal(err)
		}
	}
	// Where the kernel has no BTF, the gadgets above can only be verified; the exec tracer
	// without CO-RE is what runs there.
	signedLater := []string{"trace_kprobe_exec", "trace_fentry_exec"}
	if !arch.HasBTF {
		if err := CompileGadgetNoCORE(arch, filepath.Join(h.repo, "gadgets/trace_exec_nocore/program.bpf.c"), include, p("trace_exec_nocore.bpf.o")); err != nil {
			t.Fatal(err)
		}
		signedLater = append(signedLater, "trace_exec_nocore")
	}

	// Operator: keys, the gadget packaged for this arch and signed, an unsigned copy, root 1.
	fleet := "testbed-" + arch.Name
	device := "tb-" + arch.Name
	for _, key := range []string{"root", "fleet", "gadget"} {
		h.run(t, h.ctl, "keygen", "--output-key-prefix", p("keys/"+key))
	}
	meta := filepath.Join(h.repo, "gadgets/trace_exec/gadget.yaml")
	h.run(t, h.ctl, "package", "--layout", p("trace_exec"), "--ref", "trace_exec:latest", "--arch", arch.Name,
		"--elf", p("trace_exec.bpf.o"), "--metadata", meta)
	h.run(t, h.ctl, "sign", "--layout", p("trace_exec"), "--key", p("keys/gadget.key"), "trace_exec:latest")
	// The kprobe and fentry gadgets (and the one without CO-RE), signed with the same key. The
	// firmware carries them unsigned: their signatures reach the device only in delta 2, over MQTT.
	for _, g := range signedLater {
		h.run(t, h.ctl, "package", "--layout", p(g), "--ref", g+":latest", "--arch", arch.Name,
			"--elf", p(g+".bpf.o"), "--metadata", filepath.Join(h.repo, "gadgets", g, "gadget.yaml"))
		os.MkdirAll(p("signed"), 0o755)
		h.run(t, "cp", "-a", p(g), p("signed/"+g))
		h.run(t, h.ctl, "sign", "--layout", p("signed/"+g), "--key", p("keys/gadget.key"), g+":latest")
	}
	obj, err := os.ReadFile(p("trace_exec.bpf.o"))
	if err != nil {
		t.Fatal(err)
	}
	// A byte changed, so that its digest is one nobody signed.
	obj[len(obj)/2] ^= 0xff
	if err := os.WriteFile(p("unsigned.bpf.o"), obj, 0o644); err != nil {
		t.Fatal(err)
	}
	h.run(t, h.ctl, "package", "--layout", p("unsigned"), "--ref", "trace_exec:unsigned", "--arch", arch.Name,
		"--elf", p("unsigned.bpf.o"), "--metadata", meta)
	h.run(t, h.ctl, "root", "--state-dir", p("fleet"), "--fleet", fleet, "--root-key", p("keys/root.pub"),
		"--delta-key", p("keys/fleet.pub"), "--sign", p("keys/root.key"))
	// Delta 1 ships in the firmware: the gadget key and trace_exec's signature only.
	h.run(t, h.ctl, "delta", "--state-dir", p("fleet"), "--sign", p("keys/fleet.key"),
		"--trust-key", p("keys/gadget.pub"), "--signatures-from", p("trace_exec"), "-o", p("delta-1.cbor"))

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

	// The firmware: pre-provisioned with the fleet's root and delta 1.
	scenario := map[string]any{"broker": fmt.Sprintf("10.0.2.2:%d", broker.Port), "gadget": "trace_exec:latest",
		"unsigned": "trace_exec:unsigned", "kprobe": "trace_kprobe_exec:latest", "fentry": "trace_fentry_exec:latest",
		"probe": "/bin/bpfleet-probe", "timeout": guestTimeout, "provisioned_version": 1, "delta_version": 2}
	layouts := []string{p("trace_exec"), p("unsigned")}
	var deltaSigs []string
	for _, g := range signedLater {
		layouts = append(layouts, p(g))
		deltaSigs = append(deltaSigs, "--signatures-from", p("signed/"+g))
	}
	if !arch.HasBTF {
		scenario["nocore"] = "trace_exec_nocore:latest"
	}
	sc, _ := json.Marshal(scenario)
	initrd := p("initrd.gz")
	modules, err := firmware.BuildFile(firmware.Spec{
		Arch: arch.Name, Init: p("init"), AgentBin: p("bpfleet"), Root: p("fleet/root.cbor"),
		Provision:     []string{p("delta-1.cbor")},
		Agent:         firmware.Agent{DeviceID: device, Fleet: fleet, Broker: fmt.Sprintf("tcp://10.0.2.2:%d", broker.Port)},
		Layouts:       layouts,
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

	vm := h.boot(t, ns, k, initrd, arch.Name)

	// Delta 2 arrives over MQTT: the kprobe and fentry gadgets' signatures (and trace_exec_nocore's).
	h.run(t, h.ctl, append([]string{"delta", "--state-dir", p("fleet"), "--sign", p("keys/fleet.key")},
		append(deltaSigs, "-o", p("delta-2.cbor"))...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pub := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, h.ctl, "publish", "--broker", broker.URL(), "--fleet", fleet,
		"--wait-device", device, "--timeout", fmt.Sprintf("%ds", guestTimeout+30), p("delta-2.cbor"))
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
		"arch": arch.Name, "kernel": k.Release, "btf": "true", "modules": fmt.Sprint(len(modules)), "images": fmt.Sprint(len(layouts)),
		"pre_trust": "refused", "trust_version": "2", "trust_keys": "1",
		// Provisioned delta 1, applied by the agent before the guest's network is up.
		"pretrust_version": "1", "pretrust_net": "down", "pretrust_verify": "ok", "pre_delta_kprobe": "refused", "broker": "gone", "verify": "ok",
		"event_comm": "bpfleet-probe", "event_pid_match": "true", "unsigned": "refused", "tampered": "refused", "done": "ok",
		"kprobe_verify": "ok", "fentry_verify": "ok",
	}
	// The pair gadgets' entry programs see the probe's exec before the probe runs (their comm
	// is still that of the guest's /init); the return programs add bprm_execve's 0.
	pairEvent := func(prefix string) {
		want[prefix+"gadget"], want[prefix+"event_filename"], want[prefix+"event_comm"], want[prefix+"event_ret"], want[prefix+"event_pid_match"] =
			"ok", "/bin/bpfleet-probe", "init", "0", "true"
	}
	switch {
	case !arch.HasBTF:
		// Debian's armmp kernel has no BTF: the CO-RE gadgets are verified but refused by the
		// runner; trace_exec_nocore runs and sees the probe's exec, with the probe's comm as
		// trace_exec would.
		want["btf"], want["gadget"], want["kprobe_gadget"], want["fentry_gadget"] = "false", "refused", "refused", "refused"
		want["nocore_verify"], want["nocore_event_filename"], want["nocore_event_comm"], want["nocore_event_pid_match"] =
			"ok", "/bin/bpfleet-probe", "bpfleet-probe", "true"
		delete(want, "event_comm")
		delete(want, "event_pid_match")
	case arch.HasFentry:
		pairEvent("kprobe_")
		pairEvent("fentry_")
	default:
		pairEvent("kprobe_")
		want["fentry_gadget"] = "refused"
	}
	for key, v := range want {
		if r[key] != v {
			t.Errorf("guest %s = %q, want %q", key, r[key], v)
		}
	}
	if !strings.Contains(r["pre_trust_reason"], "no trusted keys") {
		t.Errorf("refused before trust for %q, want no trusted keys", r["pre_trust_reason"])
	}
	if !strings.Contains(r["pre_delta_kprobe_reason"], "unsigned: no signature") {
		t.Errorf("kprobe gadget refused before delta 2 for %q, want unsigned: no signature", r["pre_delta_kprobe_reason"])
	}
	if !arch.HasBTF {
		for _, g := range [][2]string{{"trace_exec", "gadget_reason"}, {"trace_kprobe_exec", "kprobe_reason"}, {"trace_fentry_exec", "fentry_reason"}} {
			if reason := r[g[1]]; !strings.Contains(reason, NoBTF) || !strings.Contains(reason, NoBTFCORE) {
				t.Errorf("%s refused on a kernel without BTF for %q, want the runner's %q ... %q", g[0], reason, NoBTF, NoBTFCORE)
			}
			t.Logf("%s %s refused: %s", arch.Name, g[0], r[g[1]])
		}
		if pid, err := strconv.ParseUint(r["nocore_event_pid"], 10, 32); err != nil || pid == 0 {
			t.Errorf("trace_exec_nocore event pid %q, want a nonzero PID", r["nocore_event_pid"])
		}
		t.Logf("%s trace_exec_nocore event: %s (%s ms from starting the gadget)", arch.Name, r["nocore_event"], r["nocore_attach_to_event_ms"])
	}
	if arch.HasBTF && !arch.HasFentry && !strings.Contains(r["fentry_reason"], FentryUnsupported) {
		t.Errorf("fentry gadget refused for %q, want the runner's %q", r["fentry_reason"], FentryUnsupported)
	}
	if !strings.Contains(r["unsigned_reason"], "unsigned: no signature") {
		t.Errorf("unsigned gadget refused for %q, want unsigned: no signature", r["unsigned_reason"])
	}
	// The reason names the changed layer and its digest mismatch (internal/oci's ErrBlobMismatch).
	if layer := r["tampered_layer"]; layer == "" || !strings.Contains(r["tampered_reason"], "refusing to run") ||
		!strings.Contains(r["tampered_reason"], "blob "+layer) || !strings.Contains(r["tampered_reason"], "blob does not match its descriptor: content hashes to sha256:") {
		t.Errorf("gadget with its eBPF layer %s changed refused for %q, want its digest mismatch", layer, r["tampered_reason"])
	}
	t.Logf("%s tampered refused: %s", arch.Name, r["tampered_reason"])
	if arch.HasBTF {
		t.Logf("%s kprobe event: %s (%s ms from starting the gadget)", arch.Name, r["kprobe_event"], r["kprobe_attach_to_event_ms"])
		if arch.HasFentry {
			t.Logf("%s fentry event: %s (%s ms from starting the gadget)", arch.Name, r["fentry_event"], r["fentry_attach_to_event_ms"])
		} else {
			t.Logf("%s fentry refused: %s", arch.Name, r["fentry_reason"])
		}
	}
	if at["pretrust_verify"] > at["net_ms"] {
		t.Errorf("provisioned trust verified at %s, after the network came up at %s", at["pretrust_verify"], at["net_ms"])
	}
	if r["verify_key"] == "" {
		t.Error("guest verify reported no key")
	}
	// The device reported the delta through the broker (publish --wait-device returned), then
	// the broker went away, then the guest found it gone, then the gadget ran (without BTF,
	// trace_exec_nocore gives the first event).
	if at["broker"] < applied || at["first_event_ms"] < at["broker"] {
		t.Errorf("order: broker stopped at %s, guest saw it gone at %s, first event at %s", applied, at["broker"], at["first_event_ms"])
	}
	t.Logf("%s timings (host clock from QEMU start): network up %s (guest %s ms since kernel start), device reported trust "+
		"(broker then stopped) %s, guest read its trust status %s, first event %s (guest %s ms since kernel start), powered off %s",
		arch.Name, at["net_ms"].Round(time.Millisecond), r["net_ms"], applied.Round(time.Millisecond),
		at["trust_version"].Round(time.Millisecond), at["first_event_ms"].Round(time.Millisecond), r["first_event_ms"],
		time.Since(vm.Start).Round(time.Millisecond))

	if arch.Name == initArch {
		t.Run("bpfleet-init", func(t *testing.T) { h.productionInit(t, ns, k, w, fleet) })
	}
}
