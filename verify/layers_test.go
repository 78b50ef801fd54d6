package verify

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// TestLayersNotRun: a gadget with IG's WebAssembly or btfgen layers runs its eBPF program, and
// the decision says plainly what is not applied.
func TestLayersNotRun(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base := packageGadget(t, l, gadgetRef, "original", "")
	idx, err := l.ReadIndex(base)
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.ReadManifest(idx.Manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	for mediaType, content := range map[string]string{oci.MediaTypeWasmProgram: "\x00asm", oci.MediaTypeBTFGen: "btf"} {
		layer, err := l.WriteBlob(mediaType, []byte(content))
		if err != nil {
			t.Fatal(err)
		}
		m.Layers = append(m.Layers, layer)
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md, err := l.WriteBlob(oci.MediaTypeManifest, data)
	if err != nil {
		t.Fatal(err)
	}
	md.Platform = idx.Manifests[0].Platform
	idx.Manifests = []oci.Descriptor{md}
	if data, err = json.Marshal(idx); err != nil {
		t.Fatal(err)
	}
	id, err := l.WriteBlob(oci.MediaTypeIndex, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Tag("with-wasm:v1", id); err != nil {
		t.Fatal(err)
	}
	key := newSigner(t)
	toLayout(t, l, key.sign(t, id.Digest))
	a, err := GadgetWithKeys([]trust.Key{key.key}, l, "with-wasm:v1")
	if err != nil {
		t.Fatal(err)
	}
	warnings := strings.Join(a.Decision().Warnings, "\n")
	if string(a.Program()) != string(bpfELF("original")) || !strings.Contains(warnings, "WebAssembly layer is not run") ||
		!strings.Contains(warnings, "btfgen layer is not used") {
		t.Fatalf("program %q, warnings:\n%s", a.Program(), warnings)
	}
}
