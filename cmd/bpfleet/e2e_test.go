package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
)

// The end-to-end test drives the built binaries the way a user does, against a real Mosquitto
// and the real kernel: operator makes keys, packages and signs trace_exec, publishes a trust
// delta; the device agent applies it; with the broker gone, the device verifies and runs the
// gadget inside a network namespace that has nothing but loopback.

type e2e struct {
	t                *testing.T
	bin, ctl, gadget string
	work, dataDir    string
}

func newE2E(t *testing.T) *e2e {
	build := os.Getenv("BPFLEET_BUILD")
	if build == "" {
		t.Skip("BPFLEET_BUILD is not set: run `make test`, which builds the binaries and gadgets first")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for eBPF")
	}
	e := &e2e{t: t, bin: filepath.Join(build, "bin", "bpfleet"), ctl: filepath.Join(build, "bin", "bpfleetctl"),
		gadget: filepath.Join(build, "gadgets", "trace_exec.bpf.o"), work: t.TempDir()}
	e.dataDir = filepath.Join(e.work, "device")
	for _, f := range []string{e.bin, e.ctl, e.gadget} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v (run `make build`)", err)
		}
	}
	return e
}

// run runs a command and returns its combined output, failing the test if it fails.
func (e *e2e) run(name string, args ...string) string {
	e.t.Helper()
	out, err := e.try(name, args...)
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func (e *e2e) try(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=e2e")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *e2e) device(args ...string) string {
	e.t.Helper()
	return e.run(e.bin, append([]string{"--data-dir", e.dataDir}, args...)...)
}

func (e *e2e) tryDevice(args ...string) (string, error) {
	return e.try(e.bin, append([]string{"--data-dir", e.dataDir}, args...)...)
}

func (e *e2e) path(name string) string { return filepath.Join(e.work, name) }

func (e *e2e) trustStatus() (version uint64, digest string) {
	e.t.Helper()
	var st struct {
		Version     uint64 `json:"version"`
		StateDigest string `json:"state_digest"`
	}
	if err := json.Unmarshal([]byte(e.device("trust", "status", "-o", "json")), &st); err != nil {
		e.t.Fatal(err)
	}
	return st.Version, st.StateDigest
}

// bpfObjects counts the programs and maps loaded in the kernel.
func bpfObjects(t *testing.T) (progs, maps int) {
	t.Helper()
	for id := ebpf.ProgramID(0); ; progs++ {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		id = next
	}
	for id := ebpf.MapID(0); ; maps++ {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			break
		}
		id = next
	}
	return progs, maps
}

// provision runs the operator side (keys, trace_exec packaged and signed, root 1), starts a
// device agent provisioned with the root, imports the image, and delivers delta 1 (the gadget
// key and signature) over MQTT. It returns the running agent, its log and the state digest.
func (e *e2e) provision(broker *mosquitto.Broker) (*exec.Cmd, *bytes.Buffer, string) {
	e.t.Helper()
	// Operator side.
	e.run(e.ctl, "keygen", "--output-key-prefix", e.path("keys/root"))
	e.run(e.ctl, "keygen", "--output-key-prefix", e.path("keys/fleet"))
	e.run(e.ctl, "keygen", "--output-key-prefix", e.path("keys/gadget"))
	e.run(e.ctl, "package", "--layout", e.path("layout"), "--ref", "trace_exec:latest", "--elf", e.gadget,
		"--metadata", "../../gadgets/trace_exec/gadget.yaml")
	e.run(e.ctl, "sign", "--layout", e.path("layout"), "--key", e.path("keys/gadget.key"), "trace_exec:latest")

	e.run(e.ctl, "root", "--state-dir", e.path("fleet"), "--fleet", "fleet-a", "--root-key", e.path("keys/root.pub"),
		"--delta-key", e.path("keys/fleet.pub"), "--sign", e.path("keys/root.key"))

	// Device side: provisioned with the fleet's root only.
	cfg := fmt.Sprintf(`{"device_id":"e2e","fleet":"fleet-a","broker":%q,"root":"fleet/root.cbor"}`, broker.URL())
	if err := os.WriteFile(e.path("agent.json"), []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
	agentLog := &bytes.Buffer{}
	agent := exec.Command(e.bin, "--data-dir", e.dataDir, "agent", "--config", e.path("agent.json"))
	agent.Stderr = agentLog
	if err := agent.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.device("image", "import", e.path("layout"))
	if out := e.device("image", "list"); !strings.Contains(out, "trace_exec:latest") || strings.Contains(out, ".sig") {
		e.t.Fatalf("image list:\n%s", out)
	}
	if out, err := e.tryDevice("run", "trace_exec", "--timeout", "1s"); err == nil || !strings.Contains(out, "no trusted keys") {
		e.t.Fatalf("run without trust: err %v\n%s", err, out)
	}

	// Trust arrives over MQTT.
	e.run(e.ctl, "delta", "--state-dir", e.path("fleet"), "--sign", e.path("keys/fleet.key"),
		"--trust-key", e.path("keys/gadget.pub"), "--signatures-from", e.path("layout"), "-o", e.path("delta-1.cbor"))
	out := e.run(e.ctl, "publish", "--broker", broker.URL(), "--fleet", "fleet-a", "--wait-device", "e2e",
		"--timeout", "30s", e.path("delta-1.cbor"))
	version, digest := e.trustStatus()
	if version != 1 || !strings.Contains(out, digest) {
		e.t.Fatalf("trust status version %d digest %s; publish said:\n%s", version, digest, out)
	}

	return agent, agentLog, digest
}

func (e *e2e) stopAgent(agent *exec.Cmd, log *bytes.Buffer) {
	if agent.ProcessState == nil {
		agent.Process.Signal(os.Interrupt)
		agent.Wait()
	}
	if e.t.Failed() {
		e.t.Logf("agent log:\n%s", log.String())
	}
}

func TestEndToEnd(t *testing.T) {
	e := newE2E(t)
	broker := mosquitto.Start(t)
	agent, agentLog, digest := e.provision(broker)
	defer e.stopAgent(agent, agentLog)

	// The broker goes away; the agent stays up.
	broker.Stop()
	time.Sleep(300 * time.Millisecond)
	if agent.ProcessState != nil {
		t.Fatalf("agent exited: %s", agentLog.String())
	}

	// Offline run in a network namespace with only loopback (down): nothing can be reached.
	probe := filepath.Join(e.work, fmt.Sprintf("bpfleet-e2e-%d", os.Getpid()%100000))
	if err := exec.Command("cp", "/bin/true", probe).Run(); err != nil {
		t.Fatal(err)
	}
	comm := filepath.Base(probe)[:15] // the kernel keeps 15 bytes of a command name
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, "unshare", "--net", "--", e.bin, "--data-dir", e.dataDir,
		"run", "trace_exec", "-o", "json", "--timeout", "8s")
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var runErr bytes.Buffer
	run.Stderr = &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev["comm"] == comm {
				found <- ev
			}
		}
	}()
	// Keep starting the probe until the gadget has attached and reports it.
	var ev map[string]any
	var child *exec.Cmd
	for ev == nil {
		child = exec.Command(probe)
		if err := child.Run(); err != nil {
			t.Fatal(err)
		}
		select {
		case ev = <-found:
		case <-time.After(500 * time.Millisecond):
			if ctx.Err() != nil {
				t.Fatalf("no exec event for %s; run stderr:\n%s", comm, runErr.String())
			}
		}
	}
	if ev["filename"] != probe {
		t.Errorf("filename = %v, want %s", ev["filename"], probe)
	}
	if ppid, ok := ev["ppid"].(float64); !ok || int(ppid) != os.Getpid() {
		t.Errorf("ppid = %v, want %d (this test)", ev["ppid"], os.Getpid())
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("run in a network namespace: %v\n%s", err, runErr.String())
	}
	if !strings.Contains(runErr.String(), "verified trace_exec sha256:") {
		t.Errorf("run did not report its verification:\n%s", runErr.String())
	}

	// Tampering: nothing reaches the kernel.
	progs, maps := bpfObjects(t)

	// A byte of the eBPF program changed and repackaged consistently: a different index
	// digest, which nobody signed.
	elf, err := os.ReadFile(e.gadget)
	if err != nil {
		t.Fatal(err)
	}
	elf[len(elf)/2] ^= 0xff
	if err := os.WriteFile(e.path("tampered.bpf.o"), elf, 0o644); err != nil {
		t.Fatal(err)
	}
	e.run(e.ctl, "package", "--layout", e.path("tampered"), "--ref", "trace_exec:tampered", "--elf", e.path("tampered.bpf.o"),
		"--metadata", "../../gadgets/trace_exec/gadget.yaml")
	e.device("image", "import", e.path("tampered"))
	if out, err := e.tryDevice("run", "trace_exec:tampered", "--timeout", "2s"); err == nil || !strings.Contains(out, "no signature") {
		t.Errorf("repackaged tampered gadget: err %v\n%s", err, out)
	}

	// A byte of the signed image's eBPF layer changed on the device's disk.
	images, err := oci.Open(filepath.Join(e.dataDir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	layer := ebpfLayer(t, images, "trace_exec:latest")
	blob := filepath.Join(e.dataDir, "images", "blobs", "sha256", strings.TrimPrefix(layer, "sha256:"))
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := e.tryDevice("run", "trace_exec", "--timeout", "2s"); err == nil || !strings.Contains(out, layer) {
		t.Errorf("tampered layer on disk: err %v\n%s", err, out)
	}
	if p, m := bpfObjects(t); p > progs || m > maps {
		t.Errorf("kernel objects grew from %d programs, %d maps to %d, %d after refused runs", progs, maps, p, m)
	}

	// The store survives an agent restart unchanged.
	agent.Process.Signal(os.Interrupt)
	agent.Wait()
	s, err := store.Open(filepath.Join(e.dataDir, "trust"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version() != 1 || snap.StateDigest() != digest {
		t.Fatalf("after agent stop: version %d digest %s, want 1 %s", snap.Version(), snap.StateDigest(), digest)
	}
}

// ebpfLayer returns the digest of the eBPF layer of ref's host-arch manifest.
func ebpfLayer(t *testing.T, l *oci.Layout, ref string) string {
	t.Helper()
	desc, err := l.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := l.ReadIndex(desc)
	if err != nil {
		t.Fatal(err)
	}
	for _, md := range idx.Manifests {
		// Multi-arch indexes (IG's own exports) carry other architectures too.
		if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != runtime.GOARCH {
			continue
		}
		m, err := l.ReadManifest(md)
		if err != nil {
			t.Fatal(err)
		}
		for _, layer := range m.Layers {
			if layer.MediaType == oci.MediaTypeEBPFProgram {
				return layer.Digest
			}
		}
	}
	t.Fatalf("%s: no eBPF layer for linux/%s", ref, runtime.GOARCH)
	return ""
}

// TestPolicyRevocationAndBreakGlass drives issue-4 trust through the real flow: a policy, key
// and digest revocations, and a break-glass override, each delivered over MQTT and taking
// effect offline at once.
func TestPolicyRevocationAndBreakGlass(t *testing.T) {
	e := newE2E(t)
	broker := mosquitto.Start(t)
	agent, agentLog, _ := e.provision(broker)
	defer e.stopAgent(agent, agentLog)

	// An unsigned copy of the gadget (another creation time, so another digest).
	e.run(e.ctl, "package", "--layout", e.path("unsigned"), "--ref", "trace_exec:unsigned", "--elf", e.gadget,
		"--metadata", "../../gadgets/trace_exec/gadget.yaml", "--created", "2026-01-01T00:00:00Z")
	e.device("image", "import", e.path("unsigned"))
	var images []struct{ Ref, Digest string }
	if err := json.Unmarshal([]byte(e.device("image", "list", "-o", "json")), &images); err != nil {
		t.Fatal(err)
	}
	var unsigned, signed string
	for _, img := range images {
		switch img.Ref {
		case "trace_exec:unsigned":
			unsigned = img.Digest
		case "trace_exec:latest":
			signed = img.Digest
		}
	}
	delta := func(args ...string) {
		t.Helper()
		file := e.path(fmt.Sprintf("delta-%d.cbor", time.Now().UnixNano()))
		e.run(e.ctl, append([]string{"delta", "--state-dir", e.path("fleet"), "--sign", e.path("keys/fleet.key"), "-o", file}, args...)...)
		e.run(e.ctl, "publish", "--broker", broker.URL(), "--fleet", "fleet-a", "--wait-device", "e2e", "--timeout", "30s", file)
	}
	type decision struct {
		Verified bool
		Level    string
		Warnings []string
	}
	verifyJSON := func(ref string) (decision, error) {
		out, err := e.tryDevice("verify", ref, "-o", "json")
		var d decision
		if err == nil {
			err = json.Unmarshal([]byte(out), &d)
		} else {
			err = fmt.Errorf("%v: %s", err, out)
		}
		return d, err
	}

	// Audit level for the unsigned digest only: it may run, marked unverified.
	policy := fmt.Sprintf(`{"scopes": [{"match": "*", "level": "strict"}, {"match": %q, "level": "audit"}]}`, unsigned)
	if err := os.WriteFile(e.path("policy.json"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyJSON("trace_exec:unsigned"); err == nil || !strings.Contains(err.Error(), "unsigned") {
		t.Fatalf("unsigned before the policy: %v", err)
	}
	delta("--policy", e.path("policy.json"))
	d, err := verifyJSON("trace_exec:unsigned")
	if err != nil || d.Verified || d.Level != "audit" || len(d.Warnings) == 0 {
		t.Fatalf("unsigned under audit: %+v, %v", d, err)
	}

	// Revoking the gadget key: the signed gadget stops verifying, offline, at once, refused as
	// revoked (naming the key), also with the key given on the command line; -o json prints
	// the refusal on stdout.
	delta("--revoke-key", e.path("keys/gadget.pub"))
	gadgetKeyID := keyID(t, e.path("keys/gadget.pub"))
	for _, args := range [][]string{{"trace_exec"}, {"trace_exec", "--key", e.path("keys/gadget.pub")}} {
		r := e.verifyRefused(args...)
		if r.Reason != "revoked" || !strings.Contains(r.Error, "signed by key "+gadgetKeyID+", which the fleet revoked") {
			t.Fatalf("verify %v after revoking its key: %+v", args, r)
		}
	}
	// Revoking a digest beats the audit level, and a key given with --key.
	delta("--revoke-digest", unsigned)
	for _, args := range [][]string{{"trace_exec:unsigned"}, {"trace_exec:unsigned", "--key", e.path("keys/gadget.pub")}} {
		if r := e.verifyRefused(args...); r.Reason != "revoked" || !strings.Contains(r.Error, "the fleet revoked "+unsigned) {
			t.Fatalf("verify %v after revoking its digest: %+v", args, r)
		}
	}

	// Break-glass for the signed gadget on this device only.
	e.run(e.ctl, "override", "--state-dir", e.path("fleet"), "--device", "another-device", "--digest", signed,
		"--reason", "not for us", "--sign", e.path("keys/root.key"), "--publish", broker.URL())
	e.run(e.ctl, "override", "--state-dir", e.path("fleet"), "--device", "e2e", "--digest", signed, "--for", "1h",
		"--reason", "incident 42", "--sign", e.path("keys/root.key"), "--publish", broker.URL())
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(e.device("trust", "audit"), "override-received") {
		if time.Now().After(deadline) {
			t.Fatal("override never recorded")
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := e.tryDevice("run", "trace_exec", "--timeout", "1s")
	if err != nil || !strings.Contains(out, "NOT VERIFIED") || !strings.Contains(out, "incident 42") {
		t.Fatalf("run under break-glass: %v\n%s", err, out)
	}
	var audit []struct{ Event, Digest, Detail string }
	if err := json.Unmarshal([]byte(e.device("trust", "audit", "-o", "json")), &audit); err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, a := range audit {
		if a.Digest != signed {
			t.Errorf("audit entry for %s: %+v (only the override for this device counts)", a.Digest, a)
		}
		events = append(events, a.Event)
	}
	if strings.Join(events, ",") != "override-received,override-used" {
		t.Fatalf("audit log events %v", events)
	}
}

// refused is what `bpfleet verify -o json` prints when it refuses.
type refused struct {
	Ref      string `json:"ref"`
	Verified *bool  `json:"verified"`
	Error    string `json:"error"`
	Reason   string `json:"reason"`
}

// verifyRefused runs `bpfleet verify ARGS -o json`, which must fail and print a refusal object
// on stdout, and returns it.
func (e *e2e) verifyRefused(args ...string) refused {
	e.t.Helper()
	cmd := exec.Command(e.bin, append([]string{"--data-dir", e.dataDir, "verify", "-o", "json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var r refused
	if jerr := json.Unmarshal(stdout.Bytes(), &r); err == nil || jerr != nil || r.Verified == nil || *r.Verified ||
		r.Ref != args[0] || r.Error == "" || !strings.Contains(stderr.String(), r.Error) {
		e.t.Fatalf("verify %v: exit %v, want a refusal; stdout (%v):\n%s\nstderr:\n%s", args, err, jerr, stdout.String(), stderr.String())
	}
	return r
}

// configBlob returns the digest of the config blob (gadget.yaml) of ref's single manifest.
func configBlob(t *testing.T, l *oci.Layout, ref string) string {
	t.Helper()
	desc, err := l.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := l.ReadIndex(desc)
	if err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("%s: %d manifests, %v", ref, len(idx.Manifests), err)
	}
	m, err := l.ReadManifest(idx.Manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	return m.Config.Digest
}

// flipByte changes one byte in the middle of a file.
func flipByte(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// keyID is the trust key id of a cosign public key file.
func keyID(t *testing.T, path string) string {
	t.Helper()
	der, err := cosign.LoadPublicKeyDER(path)
	if err != nil {
		t.Fatal(err)
	}
	return trust.KeyID(der)
}

// TestImageLifecycle: import, inspect, tag, export (with signatures) to a tar that another
// device imports and verifies, and remove.
func TestImageLifecycle(t *testing.T) {
	e := newE2E(t)
	e.run(e.ctl, "keygen", "--output-key-prefix", e.path("keys/gadget"))
	e.run(e.ctl, "package", "--layout", e.path("layout"), "--ref", "trace_exec:latest", "--elf", e.gadget,
		"--metadata", "../../gadgets/trace_exec/gadget.yaml")
	e.run(e.ctl, "sign", "--layout", e.path("layout"), "--key", e.path("keys/gadget.key"), "trace_exec:latest")
	e.run(e.ctl, "sign", "--layout", e.path("layout"), "--key", e.path("keys/gadget.key"), "--format", "bundle", "trace_exec:latest")
	e.device("image", "import", e.path("layout"))

	var info struct {
		Digest           string
		LegacySignatures int `json:"legacy_signatures"`
		Referrers        int
		Platforms        []struct{ Platform string }
	}
	if err := json.Unmarshal([]byte(e.device("image", "inspect", "trace_exec", "-o", "json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.LegacySignatures != 1 || info.Referrers != 1 || len(info.Platforms) != 1 || info.Platforms[0].Platform != "linux/"+runtime.GOARCH {
		t.Fatalf("inspect: %+v", info)
	}
	e.device("image", "tag", "trace_exec:latest", "acme/exec:v1")
	e.device("image", "export", "acme/exec:v1", "-o", e.path("export.tar"))

	other := filepath.Join(e.work, "other-device")
	e.run(e.bin, "--data-dir", other, "image", "import", e.path("export.tar"))
	out := e.run(e.bin, "--data-dir", other, "verify", "acme/exec:v1", "--key", e.path("keys/gadget.pub"), "-o", "json")
	if !strings.Contains(out, info.Digest) {
		t.Fatalf("verify of the exported image on another device:\n%s", out)
	}
	// A changed gadget.yaml (the config blob) on that device is refused like a changed layer.
	otherImages, err := oci.Open(filepath.Join(other, "images"))
	if err != nil {
		t.Fatal(err)
	}
	config := configBlob(t, otherImages, "acme/exec:v1")
	flipByte(t, filepath.Join(other, "images", "blobs", "sha256", strings.TrimPrefix(config, "sha256:")))
	tampered := &e2e{t: t, bin: e.bin, dataDir: other}
	if r := tampered.verifyRefused("acme/exec:v1", "--key", e.path("keys/gadget.pub")); r.Reason != "tampered" || !strings.Contains(r.Error, config) {
		t.Fatalf("verify with a changed config blob: %+v", r)
	}
	// Export names the changed blob by its manifest's media type, as verify does.
	if out, err := tampered.tryDevice("image", "export", "acme/exec:v1", "-o", e.path("tampered.tar")); err == nil ||
		!strings.Contains(out, "blob "+config+" ("+oci.MediaTypeGadgetConfig+")") {
		t.Fatalf("export of a changed image: %v\n%s", err, out)
	}

	// A second image, to point tags elsewhere.
	e.run(e.ctl, "package", "--layout", e.path("layout"), "--ref", "other:v1", "--elf", e.gadget,
		"--metadata", "../../gadgets/trace_exec/gadget.yaml")
	e.device("image", "import", e.path("layout"))
	var images []struct {
		Ref, Digest string
		MediaType   string `json:"media_type"`
	}
	if err := json.Unmarshal([]byte(e.device("image", "list", "-o", "json")), &images); err != nil {
		t.Fatal(err)
	}
	otherDigest := ""
	for _, img := range images {
		if img.Ref == "other:v1" && img.MediaType == oci.MediaTypeIndex {
			otherDigest = img.Digest
		}
	}
	if otherDigest == "" || otherDigest == info.Digest {
		t.Fatalf("image list -o json: %+v", images)
	}
	// A device whose agent created its (empty) trust store and which imported no image.
	emptyDir := filepath.Join(e.work, "empty-device")
	s, err := store.Open(filepath.Join(emptyDir, "trust"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	missing := filepath.Join(e.work, "nonexist")
	notLayout := e.path("empty.tar")
	if err := os.WriteFile(notLayout, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Every command resolves references alike (short names, NAME@DIGEST, digests); tag and
	// remove say what they did, and refuse what would hide or lose a signature.
	sig := "sha256-" + strings.TrimPrefix(info.Digest, "sha256:") + ".sig"
	type step struct {
		dataDir string // default e.dataDir
		args    []string
		fails   bool
		want    string // in the combined output
	}
	steps := []step{
		{args: []string{"image", "tag", "trace_exec", sig}, fails: true, want: `bpfleet: invalid tag "` + sig + `": tags of the form sha256-<digest>, .sig, .att or .sbom are reserved`},
		{args: []string{"image", "inspect", "trace_exec@" + info.Digest}, want: "signatures: 1 legacy, 1 referrer(s)"},
		{args: []string{"verify", "trace_exec@" + info.Digest, "--key", e.path("keys/gadget.pub")}, want: "verified trace_exec@" + info.Digest},
		{args: []string{"verify", "trace_exec@" + otherDigest}, fails: true,
			want: `bpfleet: verify trace_exec@` + otherDigest + `: image "trace_exec@` + otherDigest + `": not found: trace_exec points elsewhere: trace_exec:latest is ` + info.Digest},
		{args: []string{"image", "inspect", info.Digest[:19]}, want: "digest:     " + info.Digest},
		{args: []string{"image", "tag", "other:v1", "spare:v1"}},
		{args: []string{"image", "tag", "trace_exec", "spare:v1"}, want: "moved tag spare:v1 from " + otherDigest + " to " + info.Digest},
		{args: []string{"image", "remove", "other"}, want: "removed other:v1 ("},
		{args: []string{"image", "remove", "sha256:" + strings.Repeat("9", 64)}, fails: true,
			want: "bpfleet: remove sha256:" + strings.Repeat("9", 64) + ": image sha256:" + strings.Repeat("9", 64) + ": not found: no image has this digest"},
		{args: []string{"image", "remove", "trace_exec"}, want: "removed trace_exec:latest ("},
		{dataDir: emptyDir, args: []string{"image", "list", "-o", "json"}, want: "[]\n"},
		{dataDir: emptyDir, args: []string{"trust", "audit", "-o", "json"}, want: "[]\n"},
		{dataDir: emptyDir, args: []string{"image", "import", notLayout}, fails: true,
			want: "bpfleet: import " + notLayout + ": not an OCI image layout: it has no oci-layout file\n"},
	}
	for _, cmd := range []string{"image list", "image inspect trace_exec", "verify trace_exec", "trust status", "trust audit"} {
		steps = append(steps, step{dataDir: missing, args: strings.Fields(cmd), fails: true,
			want: "bpfleet: data directory " + missing + " does not exist (is --data-dir right? `bpfleet image import` and the agent create it)\n"})
	}
	for _, st := range steps {
		dir := cmp.Or(st.dataDir, e.dataDir)
		out, err := e.try(e.bin, append([]string{"--data-dir", dir}, st.args...)...)
		if (err != nil) != st.fails || !strings.Contains(out, st.want) {
			t.Errorf("bpfleet %s: err %v, output:\n%s\nwant (failing: %t) %q", strings.Join(st.args, " "), err, out, st.fails, st.want)
		}
		if _, err := os.Stat(filepath.Join(emptyDir, "images")); dir == emptyDir && st.args[1] != "import" && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("bpfleet %s created %s/images: %v", strings.Join(st.args, " "), emptyDir, err)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only commands created %s: %v", missing, err)
	}
	if out := e.device("image", "list"); strings.Contains(out, "trace_exec") || strings.Contains(out, "other:v1") ||
		!strings.Contains(out, "acme/exec:v1") || !strings.Contains(out, "spare:v1") {
		t.Fatalf("after removing trace_exec and other:\n%s", out)
	}
	// A digest removes every tag of the image, with its signatures and blobs.
	want := "removed acme/exec:v1, spare:v1 ("
	if out := e.device("image", "remove", info.Digest); !strings.Contains(out, want) || strings.Contains(out, " 0 blob") {
		t.Fatalf("removing by digest: %s, want %s", out, want)
	}
	blobs, err := os.ReadDir(filepath.Join(e.dataDir, "images", "blobs", "sha256"))
	if err != nil || len(blobs) != 0 {
		t.Fatalf("blobs left after removing every image: %d, %v", len(blobs), err)
	}
	deviceImages, err := oci.Open(filepath.Join(e.dataDir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	if idx, err := deviceImages.Index(); err != nil || len(idx.Manifests) != 0 {
		t.Fatalf("index.json entries left after removing every image: %+v, %v", idx.Manifests, err)
	}
}
