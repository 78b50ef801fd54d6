package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/sync"
)

// TestDeltaSignaturesFromAllFormats: `delta --signatures-from` carries the legacy and the OCI 1.1
// referrer signatures of a layout, and says which Sigstore bundles it cannot carry.
func TestDeltaSignaturesFromAllFormats(t *testing.T) {
	build := os.Getenv("BPFLEET_BUILD")
	if build == "" {
		t.Skip("BPFLEET_BUILD is not set: run `make test`, which builds the binaries first")
	}
	ctl := filepath.Join(build, "bin", "bpfleetctl")
	dir := t.TempDir()
	run := func(args ...string) (stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(ctl, args...)
		cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=")
		var errb strings.Builder
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("bpfleetctl %s: %v\n%s%s", strings.Join(args, " "), err, out, errb.String())
		}
		return string(out), errb.String()
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, k := range []string{"root", "fleet", "gadget"} {
		run("keygen", "--output-key-prefix", p(k))
	}
	run("root", "--state-dir", p("fleet-history"), "--fleet", "f1", "--root-key", p("root.pub"), "--delta-key", p("fleet.pub"), "--sign", p("root.key"))
	digests := map[string]string{}
	for i, format := range []string{"legacy", "oci11", "bundle"} {
		ref := "g-" + format + ":v1"
		out, _ := run("package", "--layout", p("layout"), "--ref", ref, "--elf", filepath.Join(build, "gadgets", "trace_exec.bpf.o"),
			"--metadata", "../../gadgets/trace_exec/gadget.yaml", "--created", "2026-01-0"+string(rune('1'+i))+"T00:00:00Z")
		digests[format] = strings.Fields(out)[1]
		run("sign", "--layout", p("layout"), "--key", p("gadget.key"), "--format", format, ref)
	}
	out, stderr := run("delta", "--state-dir", p("fleet-history"), "--sign", p("fleet.key"), "--trust-key", p("gadget.pub"),
		"--signatures-from", p("layout"), "-o", p("delta.cbor"))
	if !strings.Contains(out, "1 key(s), 2 signature(s)") {
		t.Errorf("delta summary: %s", out)
	}
	if !strings.Contains(stderr, "g-bundle:v1 has 1 Sigstore bundle signature(s), which a delta cannot carry") {
		t.Errorf("no note about the bundle it left out: %q", stderr)
	}
	raw, err := os.ReadFile(p("delta.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := sync.Inspect(raw)
	if err != nil || u.Delta == nil {
		t.Fatalf("inspect delta: %v", err)
	}
	var got []string
	for _, s := range u.Delta.Signatures {
		got = append(got, s.Digest)
	}
	slices.Sort(got)
	want := []string{digests["legacy"], digests["oci11"]}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("delta carries signatures for %q, want the legacy and OCI 1.1 images %q", got, want)
	}
}
