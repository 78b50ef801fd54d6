package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// Interoperability with the real cosign CLI (and crane as the registry and for pushing and
// pulling), both directions, key-based:
//
//   - cosign signs (legacy `.sig`, Sigstore bundle, and OCI 1.1 referrer) an image that bpfleetctl packaged
//     and crane pushed to a registry on 127.0.0.1; the image and its signature are exported
//     (`cosign save`, or `crane pull` where cosign save cannot), imported with
//     `bpfleet image import`, and verified offline by `bpfleet verify --key` and through the
//     trust store (keys and signatures delivered in a trust delta over a real Mosquitto);
//   - `cosign verify --key` accepts what `bpfleetctl sign` wrote, and bpfleetctl signs with a
//     key cosign generated.
//
// Nothing may leave the machine: the registry runs in a network namespace of its own that has
// only loopback, and every cosign and crane command runs inside it (nsenter), so a tool that
// tried to reach Rekor, Fulcio or the TUF CDN would fail instead of sending traffic. bpfleet
// itself verifies in yet another namespace with no network at all.
//
// The tools come from scripts/interop-tools.sh (`make interop`). Without them the test skips,
// unless BPFLEET_INTEROP=1, which makes missing tools (or BPFLEET_BUILD) a failure.

const registryAddr = "127.0.0.1:5000" // inside the registry's own network namespace

type interop struct {
	*e2e
	cosign, crane string
	registryPID   int
	home          string // HOME, DOCKER_CONFIG and TUF_ROOT of the tools
}

// interopToolsDir is where scripts/interop-tools.sh installs the tools.
func interopToolsDir() string {
	if d := os.Getenv("BPFLEET_TOOLS_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "bpfleet", "tools")
}

func findTool(name string) (string, error) {
	p := filepath.Join(interopToolsDir(), name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return exec.LookPath(name)
}

func newInterop(t *testing.T) *interop {
	required := os.Getenv("BPFLEET_INTEROP") == "1"
	if os.Getenv("BPFLEET_BUILD") == "" {
		if required {
			t.Fatal("BPFLEET_INTEROP=1 but BPFLEET_BUILD is not set: run `make interop`")
		}
		t.Skip("BPFLEET_BUILD is not set: run `make interop`, which builds the binaries and gadgets and installs cosign and crane first")
	}
	var missing []string
	tools := map[string]string{}
	for _, name := range []string{"cosign", "crane", "unshare", "nsenter"} {
		p, err := findTool(name)
		if err != nil {
			missing = append(missing, name)
		}
		tools[name] = p
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s not installed (looked in %s and $PATH): run scripts/interop-tools.sh, or `make interop`", strings.Join(missing, ", "), interopToolsDir())
		if required {
			t.Fatal("BPFLEET_INTEROP=1: " + msg)
		}
		t.Skip(msg)
	}
	e := newE2E(t)
	i := &interop{e2e: e, cosign: tools["cosign"], crane: tools["crane"], home: filepath.Join(e.work, "tool-home")}
	if err := os.MkdirAll(i.home, 0o700); err != nil {
		t.Fatal(err)
	}
	i.startRegistry()
	return i
}

// startRegistry runs `crane registry serve` (in memory) in a new network namespace whose only
// interface is loopback, and stops it when the test ends.
func (i *interop) startRegistry() {
	t := i.t
	ip, err := exec.LookPath("ip")
	if err != nil {
		ip = "/usr/sbin/ip" // not on a non-root $PATH; iproute2 installs it here
	}
	log := &bytes.Buffer{}
	cmd := exec.Command("unshare", "--net", "--", "sh", "-c", `"$0" link set lo up && exec "$1" registry serve --address "$2"`,
		ip, i.crane, registryAddr)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// unshare and sh exec, so the process is the registry, and its namespace the one to enter.
	i.registryPID = cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := i.tryTool(i.crane, "catalog", registryAddr); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not come up on %s: %s", registryAddr, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tryTool runs cosign or crane inside the registry's network namespace.
func (i *interop) tryTool(tool string, args ...string) (string, error) {
	return i.tryToolEnv(nil, tool, args...)
}

// tryToolEnv is tryTool with extra environment variables.
func (i *interop) tryToolEnv(extra []string, tool string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(i.registryPID), "-n", "--", tool}, args...)...)
	env := []string{"HOME=" + i.home, "DOCKER_CONFIG=" + filepath.Join(i.home, "docker"), "TUF_ROOT=" + filepath.Join(i.home, "tuf"),
		"COSIGN_PASSWORD=e2e", "COSIGN_YES=true"} // e2e.try gives bpfleetctl the same password
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains([]string{"HOME", "DOCKER_CONFIG", "TUF_ROOT", "COSIGN_PASSWORD", "COSIGN_YES"}, name) &&
			!strings.HasSuffix(strings.ToLower(name), "_proxy") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, extra...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(tool), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func (i *interop) tool(tool string, args ...string) string {
	i.t.Helper()
	out, err := i.tryTool(tool, args...)
	if err != nil {
		i.t.Fatal(err)
	}
	return out
}

// offline runs bpfleet on the device's data directory in a network namespace without any
// interface up.
func (i *interop) offline(args ...string) (string, error) {
	cmd := exec.Command("unshare", append([]string{"--net", "--", i.bin, "--data-dir", i.dataDir}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// verifyJSON runs `bpfleet verify REF -o json [--key K]...` offline and decodes the decision.
func (i *interop) verifyJSON(ref string, keys ...string) decision {
	i.t.Helper()
	args := []string{"verify", ref, "-o", "json"}
	for _, k := range keys {
		args = append(args, "--key", k)
	}
	out, err := i.offline(args...)
	if err != nil {
		i.t.Fatalf("bpfleet %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var d decision
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		i.t.Fatalf("bpfleet verify output: %v\n%s", err, out)
	}
	return d
}

// decision is the part of verify.Decision's JSON the test checks.
type decision struct {
	Digest       string `json:"digest"`
	KeyID        string `json:"key_id"`
	Source       string `json:"signature_source"`
	Format       string `json:"signature_format"`
	TrustVersion uint64 `json:"trust_version"`
	Verified     bool   `json:"verified"`
}

func (i *interop) keyID(pubFile string) string {
	i.t.Helper()
	der, err := cosign.LoadPublicKeyDER(pubFile)
	if err != nil {
		i.t.Fatal(err)
	}
	return trust.KeyID(der)
}

// packageAndPush builds trace_exec with bpfleetctl as repo:v1 (an image index) in a layout of
// its own and pushes it with crane; it returns the index digest.
func (i *interop) packageAndPush(repo string) string {
	i.t.Helper()
	ref := registryAddr + "/" + repo + ":v1"
	layout := i.path("build-" + strings.ReplaceAll(repo, "/", "-"))
	out := i.run(i.ctl, "package", "--layout", layout, "--ref", ref, "--elf", i.gadget, "--metadata", "../../gadgets/trace_exec/gadget.yaml")
	f := strings.Fields(out)
	if len(f) != 2 || f[0] != ref || !strings.HasPrefix(f[1], "sha256:") {
		i.t.Fatalf("bpfleetctl package: %q", out)
	}
	digest := f[1]
	i.tool(i.crane, "push", layout, ref)
	if got := strings.TrimSpace(i.tool(i.crane, "digest", ref)); got != digest {
		i.t.Fatalf("registry has %s at %s, bpfleetctl packaged %s", got, ref, digest)
	}
	return digest
}

func (i *interop) cosignKeys(prefix string) (key, pub string) {
	i.t.Helper()
	i.tool(i.cosign, "generate-key-pair", "--output-key-prefix", i.path(prefix))
	return i.path(prefix + ".key"), i.path(prefix + ".pub")
}

func (i *interop) checkDecision(d decision, digest, keyID, source, format string, trustVersion uint64) {
	i.t.Helper()
	if d.Digest != digest || d.KeyID != keyID || d.Source != source || d.Format != format || d.TrustVersion != trustVersion || !d.Verified {
		i.t.Errorf("decision %+v\nwant digest %s, key %s, %s %s, trust version %d, verified", d, digest, keyID, source, format, trustVersion)
	}
}

func indexEntries(t *testing.T, layout string) []oci.Descriptor {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx oci.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	return idx.Manifests
}

// TestCosignInterop: cosign signs, bpfleet verifies, with ad-hoc keys and through the trust
// store.
func TestCosignInterop(t *testing.T) {
	i := newInterop(t)
	key, pub := i.cosignKeys("cosign")
	id := i.keyID(pub)
	_, otherPub := i.cosignKeys("other")

	// Legacy format: `cosign sign --key` pushes a `sha256-<hex>.sig` manifest; `cosign save`
	// writes the image and it, untagged, marked with "kind" annotations.
	legacyRepo := registryAddr + "/gadgets/legacy"
	legacy := i.packageAndPush("gadgets/legacy")
	i.tool(i.cosign, "sign", "--key", key, "--tlog-upload=false", legacyRepo+"@"+legacy)
	if tags := i.tool(i.crane, "ls", legacyRepo); !strings.Contains(tags, "sha256-"+strings.TrimPrefix(legacy, "sha256:")+".sig") {
		t.Fatalf("cosign pushed no legacy signature tag: %s", tags)
	}
	saved := i.path("saved-legacy")
	i.tool(i.cosign, "save", "--dir", saved, legacyRepo+"@"+legacy)
	var kinds []string
	for _, d := range indexEntries(t, saved) {
		kinds = append(kinds, d.Annotations["kind"])
	}
	if !slices.Equal(kinds, []string{"dev.cosignproject.cosign/imageIndex", cosign.KindSignatures}) {
		t.Fatalf("cosign save wrote entries of kinds %q", kinds)
	}
	i.device("image", "import", saved)
	// cosign save names no image: verify it by digest.
	i.checkDecision(i.verifyJSON(legacy, pub), legacy, id, "image-layout", "legacy", 0)
	if out, err := i.offline("verify", legacy, "--key", otherPub); err == nil || !strings.Contains(out, "untrusted") {
		t.Errorf("verify with another key: %v\n%s", err, out)
	}

	// Bundle format: `cosign sign --new-bundle-format --key` pushes a Sigstore bundle referrer;
	// the registry has no referrers API, so cosign lists it under the fallback tag
	// sha256-<hex>. cosign save leaves bundles out (sigstore/cosign#4507), so the image and the
	// fallback tag are exported with crane pull instead, tagged with full references.
	bundleRepo := registryAddr + "/gadgets/bundle"
	bundle := i.packageAndPush("gadgets/bundle")
	i.tool(i.cosign, "sign", "--key", key, "--tlog-upload=false", "--new-bundle-format", bundleRepo+"@"+bundle)
	fallback := bundleRepo + ":sha256-" + strings.TrimPrefix(bundle, "sha256:")
	if _, err := i.tryTool(i.crane, "manifest", fallback); err != nil {
		t.Fatalf("no referrers fallback tag after cosign sign --new-bundle-format: %v", err)
	}
	savedBundle := i.path("saved-bundle")
	i.tool(i.cosign, "save", "--dir", savedBundle, bundleRepo+"@"+bundle)
	if n := len(indexEntries(t, savedBundle)); n != 1 {
		t.Logf("cosign save now writes %d entries for a bundle-signed image (it wrote only the image when this test was written)", n)
	}
	pulled := i.path("pulled-bundle")
	i.tool(i.crane, "pull", "--format=oci", "--annotate-ref", bundleRepo+":v1", fallback, pulled)
	i.device("image", "import", pulled)
	i.checkDecision(i.verifyJSON(bundleRepo+":v1", pub), bundle, id, "image-layout", "bundle", 0)
	if out, err := i.offline("verify", bundleRepo+":v1", "--key", otherPub); err == nil || !strings.Contains(out, "untrusted") {
		t.Errorf("verify the bundle with another key: %v\n%s", err, out)
	}

	// OCI 1.1 referrer: `cosign sign --registry-referrers-mode=oci-1-1` (experimental) pushes
	// the legacy simple-signing manifest as a referrer of the image, listed under the fallback
	// tag; cosign save does not save referrers, so crane pulls it too.
	oci11Repo := registryAddr + "/gadgets/oci11"
	oci11 := i.packageAndPush("gadgets/oci11")
	if out, err := i.tryToolEnv([]string{"COSIGN_EXPERIMENTAL=1"}, i.cosign, "sign", "--key", key, "--tlog-upload=false",
		"--registry-referrers-mode=oci-1-1", oci11Repo+"@"+oci11); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pulledOCI11 := i.path("pulled-oci11")
	i.tool(i.crane, "pull", "--format=oci", "--annotate-ref", oci11Repo+":v1", oci11Repo+":sha256-"+strings.TrimPrefix(oci11, "sha256:"), pulledOCI11)
	i.device("image", "import", pulledOCI11)
	i.checkDecision(i.verifyJSON(oci11Repo+":v1", pub), oci11, id, "image-layout", "oci11-referrer", 0)

	// Through the trust store: a delta trusts cosign's key and carries the legacy signature,
	// collected by bpfleetctl from the untagged layout `cosign save` wrote.
	broker := mosquitto.Start(t)
	i.run(i.ctl, "keygen", "--output-key-prefix", i.path("keys/root"))
	i.run(i.ctl, "keygen", "--output-key-prefix", i.path("keys/fleet"))
	i.run(i.ctl, "root", "--state-dir", i.path("fleet"), "--fleet", "interop", "--root-key", i.path("keys/root.pub"),
		"--delta-key", i.path("keys/fleet.pub"), "--sign", i.path("keys/root.key"))
	cfg := fmt.Sprintf(`{"device_id":"dev","fleet":"interop","broker":%q,"root":"fleet/root.cbor"}`, broker.URL())
	if err := os.WriteFile(i.path("agent.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	agentLog := &bytes.Buffer{}
	agent := exec.Command(i.bin, "--data-dir", i.dataDir, "agent", "--config", i.path("agent.json"))
	agent.Stderr = agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer i.stopAgent(agent, agentLog)
	out := i.run(i.ctl, "delta", "--state-dir", i.path("fleet"), "--sign", i.path("keys/fleet.key"),
		"--trust-key", pub, "--signatures-from", saved, "-o", i.path("delta-1.cbor"))
	if !strings.Contains(out, "1 key(s), 1 signature(s)") {
		t.Fatalf("bpfleetctl delta: %s", out)
	}
	i.run(i.ctl, "publish", "--broker", broker.URL(), "--fleet", "interop", "--wait-device", "dev", "--timeout", "30s", i.path("delta-1.cbor"))
	i.stopAgent(agent, agentLog)
	if version, _ := i.trustStatus(); version != 1 {
		t.Fatalf("trust version %d after the delta", version)
	}
	i.checkDecision(i.verifyJSON(legacy), legacy, id, "trust-store", "legacy", 1)
	i.checkDecision(i.verifyJSON(bundleRepo+":v1"), bundle, id, "image-layout", "bundle", 1)
	i.checkDecision(i.verifyJSON(oci11Repo+":v1"), oci11, id, "image-layout", "oci11-referrer", 1)
}

// TestCosignVerifiesBpfleetctl: `cosign verify --key` accepts bpfleetctl's legacy signatures,
// made with a bpfleetctl key and with a key cosign generated, once the layout is pushed.
func TestCosignVerifiesBpfleetctl(t *testing.T) {
	i := newInterop(t)
	i.run(i.ctl, "keygen", "--output-key-prefix", i.path("bpfleet"))
	cosignKey, cosignPub := i.cosignKeys("cosign")
	repo := registryAddr + "/gadgets/reverse"
	ref := repo + ":v1"
	layout := i.path("layout")
	out := i.run(i.ctl, "package", "--layout", layout, "--ref", ref, "--elf", i.gadget, "--metadata", "../../gadgets/trace_exec/gadget.yaml")
	digest := strings.Fields(out)[1]
	for _, key := range []string{i.path("bpfleet.key"), cosignKey} {
		i.run(i.ctl, "sign", "--layout", layout, "--key", key, ref)
	}
	sigTag, err := cosign.SignatureTag(digest)
	if err != nil {
		t.Fatal(err)
	}

	// crane pushes one image per layout: push each index.json entry from a view of the
	// layout holding only it, under the tag bpfleetctl gave it.
	entries := indexEntries(t, layout)
	if len(entries) != 2 {
		t.Fatalf("bpfleetctl layout has %d entries, want the image and its signature", len(entries))
	}
	for n, d := range entries {
		view := i.path(fmt.Sprintf("view-%d", n))
		if err := os.MkdirAll(view, 0o755); err != nil {
			t.Fatal(err)
		}
		idx, _ := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex, Manifests: []oci.Descriptor{d}})
		for name, data := range map[string][]byte{"index.json": idx, "oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`)} {
			if err := os.WriteFile(filepath.Join(view, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(filepath.Join(layout, "blobs"), filepath.Join(view, "blobs")); err != nil {
			t.Fatal(err)
		}
		tag := d.Annotations[oci.AnnotationRefName]
		if tag != ref && tag != sigTag {
			t.Fatalf("unexpected tag %q in bpfleetctl's layout", tag)
		}
		if tag == sigTag {
			tag = repo + ":" + sigTag
		}
		i.tool(i.crane, "push", view, tag)
	}
	if got := strings.TrimSpace(i.tool(i.crane, "digest", ref)); got != digest {
		t.Fatalf("registry has %s, bpfleetctl packaged %s", got, digest)
	}

	for _, pub := range []string{i.path("bpfleet.pub"), cosignPub} {
		out := i.tool(i.cosign, "verify", "--key", pub, "--insecure-ignore-tlog=true", "--output", "json", repo+"@"+digest)
		var verified []struct {
			Critical struct {
				Identity struct {
					DockerReference string `json:"docker-reference"`
				} `json:"identity"`
				Image struct {
					Digest string `json:"docker-manifest-digest"`
				} `json:"image"`
				Type string `json:"type"`
			} `json:"critical"`
		}
		if err := json.Unmarshal([]byte(out), &verified); err != nil {
			t.Fatalf("cosign verify output: %v\n%s", err, out)
		}
		// cosign prints every signature that verified with the key: exactly one.
		if len(verified) != 1 || verified[0].Critical.Image.Digest != digest || verified[0].Critical.Identity.DockerReference != repo ||
			verified[0].Critical.Type != cosign.SignatureType {
			t.Errorf("cosign verify --key %s: %s", filepath.Base(pub), out)
		}
	}
	// And cosign rejects a key that signed nothing.
	_, strangerPub := i.cosignKeys("stranger")
	if out, err := i.tryTool(i.cosign, "verify", "--key", strangerPub, "--insecure-ignore-tlog=true", repo+"@"+digest); err == nil ||
		!strings.Contains(err.Error(), "no matching signatures") {
		t.Errorf("cosign verify with a stranger's key: %v\n%s", err, out)
	}
}
