package main

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfleet/bpfleet/internal/oci"
)

// TestPackageBTFGen: `bpfleetctl package --btfgen` adds a checked btfgen layer after the
// program; an archive that is not one is refused and the layout is left as it was.
func TestPackageBTFGen(t *testing.T) {
	build := os.Getenv("BPFLEET_BUILD")
	if build == "" {
		t.Skip("BPFLEET_BUILD is not set: run `make test`, which builds the binaries first")
	}
	ctl := filepath.Join(build, "bin", "bpfleetctl")
	dir := t.TempDir()
	elf := filepath.Join(build, "gadgets", "trace_exec.bpf.o")
	var b btf.Builder
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	archive := func(name string, entries map[string][]byte) string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for n, data := range entries {
			if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
				t.Fatal(err)
			}
			tw.Write(data)
		}
		tw.Close()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := archive("good.tar", map[string][]byte{"debian/12/x86_64/6.1.0-57-amd64.btf": raw})
	layout := filepath.Join(dir, "layout")
	pkg := func(ref, btfgen string) (string, error) {
		out, err := exec.Command(ctl, "package", "--layout", layout, "--ref", ref, "--elf", elf, "--metadata", "../../gadgets/trace_exec/gadget.yaml", "--btfgen", btfgen).CombinedOutput()
		return string(out), err
	}
	if out, err := pkg("g:v1", good); err != nil || !strings.Contains(out, "CO-RE types for 1 kernel(s)") {
		t.Fatalf("package --btfgen: %v\n%s", err, out)
	}
	l, err := oci.Open(layout)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := l.Lookup("g:v1")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := l.ReadIndex(desc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.ReadManifest(idx.Manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(good)
	if len(m.Layers) != 2 || m.Layers[0].MediaType != oci.MediaTypeEBPFProgram || m.Layers[1].MediaType != oci.MediaTypeBTFGen {
		t.Fatalf("layers %+v, want the program then the btfgen layer", m.Layers)
	}
	if got, err := l.ReadBlob(m.Layers[1]); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("btfgen layer: %d bytes, %v; want the archive's %d", len(got), err, len(want))
	}

	before, _ := os.ReadFile(filepath.Join(layout, "index.json"))
	for _, tt := range []struct{ name, file, wantErr string }{
		{"not BTF", archive("notbtf.tar", map[string][]byte{"debian/12/x86_64/6.1.0-57-amd64.btf": []byte("nope")}), "not BTF"},
		{"flat name", archive("flat.tar", map[string][]byte{"6.1.0-57-amd64.btf": raw}), "want <os-release ID>/<VERSION_ID>/<machine>/<kernel release>.btf"},
		{"missing file", filepath.Join(dir, "absent.tar"), "no such file"},
	} {
		out, err := pkg("bad:v1", tt.file)
		if err == nil || !strings.Contains(out, tt.wantErr) {
			t.Errorf("%s: err %v, output %q; want a failure saying %q", tt.name, err, out, tt.wantErr)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(layout, "index.json")); !bytes.Equal(before, after) {
		t.Errorf("a refused --btfgen changed the layout's index:\n%s\n->\n%s", before, after)
	}
}

// TestPackageChecksGadget: what devices would refuse or silently ignore is refused when
// packaging, and the layout is left as it was.
func TestPackageChecksGadget(t *testing.T) {
	build := os.Getenv("BPFLEET_BUILD")
	if build == "" {
		t.Skip("BPFLEET_BUILD is not set: run `make test`, which builds the binaries first")
	}
	ctl := filepath.Join(build, "bin", "bpfleetctl")
	layout := filepath.Join(t.TempDir(), "layout")
	elf := func(name string) string { return filepath.Join(build, "gadgets", name+".bpf.o") }
	meta := func(name string) string { return filepath.Join("..", "..", "gadgets", name, "gadget.yaml") }
	pkg := func(ref, elf, metadata string) (string, error) {
		args := []string{"package", "--layout", layout, "--ref", ref, "--elf", elf}
		if metadata != "" {
			args = append(args, "--metadata", metadata)
		}
		out, err := exec.Command(ctl, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := pkg("trace_open:v1", elf("trace_open"), meta("trace_open")); err != nil {
		t.Fatalf("package trace_open: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(filepath.Join(layout, "index.json"))
	notYAML := filepath.Join(t.TempDir(), "gadget.yaml")
	os.WriteFile(notYAML, []byte("params: [unclosed"), 0o644)
	for _, tc := range []struct{ name, elf, metadata, want string }{
		{"another gadget's metadata", elf("trace_exec"), meta("trace_open"),
			"with --metadata " + meta("trace_open") + ": gadget metadata describes parameter events_max_entries, which the program does not have"},
		{"metadata not YAML", elf("trace_open"), notYAML, "gadget metadata: yaml: "},
		{"not an ELF", meta("trace_open"), "", "--elf " + meta("trace_open") + ": parse ELF: "},
	} {
		out, err := pkg("bad:v1", tc.elf, tc.metadata)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %v, output %q; want a failure saying %q", tc.name, err, out, tc.want)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(layout, "index.json")); !bytes.Equal(before, after) {
		t.Errorf("a refused package changed the layout's index:\n%s\n->\n%s", before, after)
	}
}

// TestKeygenNeedsPasswordSet: keygen never turns an unset COSIGN_PASSWORD into a key without a
// password; an empty one, set on purpose, is allowed.
func TestKeygenNeedsPasswordSet(t *testing.T) {
	build := os.Getenv("BPFLEET_BUILD")
	if build == "" {
		t.Skip("BPFLEET_BUILD is not set: run `make test`, which builds the binaries first")
	}
	ctl := filepath.Join(build, "bin", "bpfleetctl")
	dir := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COSIGN_PASSWORD=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(ctl, "keygen", "--output-key-prefix", filepath.Join(dir, "unset"))
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "COSIGN_PASSWORD is not set") {
		t.Errorf("keygen with COSIGN_PASSWORD unset: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "unset.key")); !os.IsNotExist(err) {
		t.Errorf("keygen with COSIGN_PASSWORD unset wrote a key (stat: %v)", err)
	}
	cmd = exec.Command(ctl, "keygen", "--output-key-prefix", filepath.Join(dir, "empty"))
	cmd.Env = append(env, "COSIGN_PASSWORD=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("keygen with COSIGN_PASSWORD empty: %v\n%s", err, out)
	}
}
