package verify

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// withLayers packages a gadget under ref with extra layers (media type,
// content) after its eBPF program, signs its index and returns the key and
// the extra layers' digests.
func withLayers(t *testing.T, l *oci.Layout, ref string, layers ...[2]string) (trust.Key, []string) {
	t.Helper()
	var extra []oci.Layer
	var digests []string
	for _, layer := range layers {
		extra = append(extra, oci.Layer{MediaType: layer[0], Data: []byte(layer[1])})
		digests = append(digests, oci.Digest([]byte(layer[1])))
	}
	id, err := l.PackageGadget(oci.Gadget{Ref: ref, Arch: runtime.GOARCH, Program: bpfELF("original"),
		Metadata: []byte("name: test\n"), Layers: extra})
	if err != nil {
		t.Fatal(err)
	}
	key := newSigner(t)
	toLayout(t, l, key.sign(t, id.Digest))
	return key.key, digests
}

// TestLayers: a gadget with IG's WebAssembly and btfgen layers verifies; the
// Approved carries its eBPF program and its btfgen layer, for the runner to
// use on kernels without BTF, and the decision says plainly that the
// WebAssembly layer is not run.
func TestLayers(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const btfgen = "\x1f\x8b minimized BTF, tar.gz"
	key, _ := withLayers(t, l, "with-layers:v1",
		[2]string{oci.MediaTypeWasmProgram, "\x00asm"}, [2]string{oci.MediaTypeBTFGen, btfgen})
	a, err := GadgetWithKeys([]trust.Key{key}, l, "with-layers:v1")
	if err != nil {
		t.Fatal(err)
	}
	warnings := strings.Join(a.Decision().Warnings, "\n")
	if string(a.Program()) != string(bpfELF("original")) || string(a.BTFGen()) != btfgen {
		t.Errorf("program %q, btfgen %q", a.Program(), a.BTFGen())
	}
	if !strings.Contains(warnings, "WebAssembly layer is not run") || strings.Contains(warnings, "btfgen") {
		t.Errorf("warnings:\n%s", warnings)
	}

	// Without the layer there is none.
	packageGadget(t, l, gadgetRef, "plain", "")
	plainKey := newSigner(t)
	d, _ := l.Lookup(gadgetRef)
	toLayout(t, l, plainKey.sign(t, d.Digest))
	if a, err := GadgetWithKeys([]trust.Key{plainKey.key}, l, gadgetRef); err != nil || a.BTFGen() != nil {
		t.Errorf("gadget without btfgen layer: %v, btfgen %q", err, a.BTFGen())
	}
}

// A btfgen layer is on the signed digest chain like the program, and IG
// allows one at most.
func TestBTFGenLayerRefused(t *testing.T) {
	t.Run("tampered", func(t *testing.T) {
		l, err := oci.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		key, layers := withLayers(t, l, "tampered:v1", [2]string{oci.MediaTypeBTFGen, "minimized BTF"})
		flipBlobByte(t, l, layers[0])
		a, err := GadgetWithKeys([]trust.Key{key}, l, "tampered:v1")
		if a != nil || !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "btfgen layer: blob "+layers[0]) {
			t.Fatalf("got %v, %v; want ErrTampered naming the btfgen layer", a, err)
		}
	})
	t.Run("two layers", func(t *testing.T) {
		l, err := oci.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		key, _ := withLayers(t, l, "two:v1", [2]string{oci.MediaTypeBTFGen, "one"}, [2]string{oci.MediaTypeBTFGen, "two"})
		a, err := GadgetWithKeys([]trust.Key{key}, l, "two:v1")
		if a != nil || err == nil || !strings.Contains(err.Error(), "has 2 layers of type "+oci.MediaTypeBTFGen+", want at most one") {
			t.Fatalf("got %v, %v; want an error about two btfgen layers", a, err)
		}
	})
}
