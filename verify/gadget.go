package verify

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// Gadget verifies the gadget image ref in images against the trust store t and returns its
// eBPF program for this machine's architecture. See the package documentation for the checks.
func Gadget(t trust.Reader, images *oci.Layout, ref string) (*Approved, error) {
	a, err := gadget(t, images, ref)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", ref, err)
	}
	return a, nil
}

// GadgetWithKeys is Gadget trusting exactly keys, with signatures taken from the layout only.
func GadgetWithKeys(keys []trust.Key, images *oci.Layout, ref string) (*Approved, error) {
	return Gadget(KeysOnly(keys), images, ref)
}

func gadget(t trust.Reader, images *oci.Layout, ref string) (*Approved, error) {
	signed, decision, err := signature(t, images, ref)
	if err != nil {
		return nil, err
	}
	manifestDesc := signed
	if oci.IsIndex(signed.MediaType) {
		idx, err := images.ReadIndex(signed)
		if err != nil {
			return nil, fmt.Errorf("image index: %w", err)
		}
		if manifestDesc, err = platformManifest(idx, runtime.GOARCH); err != nil {
			return nil, err
		}
	}
	manifest, err := images.ReadManifest(manifestDesc)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var programs []oci.Descriptor
	for _, l := range manifest.Layers {
		if l.MediaType == oci.MediaTypeEBPFProgram {
			programs = append(programs, l)
		}
	}
	if len(programs) != 1 {
		return nil, fmt.Errorf("%w: manifest %s has %d layers of type %s", ErrNoProgram, manifestDesc.Digest, len(programs), oci.MediaTypeEBPFProgram)
	}
	program, err := images.ReadBlob(programs[0])
	if err != nil {
		return nil, fmt.Errorf("eBPF program layer: %w", err)
	}
	return &Approved{ref: ref, digest: signed.Digest, program: program, decision: decision}, nil
}

// platformManifest picks the first linux/arch manifest of an image index.
func platformManifest(idx oci.Index, arch string) (oci.Descriptor, error) {
	var have []string
	for _, m := range idx.Manifests {
		if m.Platform == nil || !oci.IsManifest(m.MediaType) {
			continue
		}
		if m.Platform.OS == "linux" && m.Platform.Architecture == arch {
			return m, nil
		}
		have = append(have, m.Platform.OS+"/"+m.Platform.Architecture)
	}
	return oci.Descriptor{}, fmt.Errorf("%w: want linux/%s, image has [%s]", ErrNoPlatform, arch, strings.Join(have, " "))
}
