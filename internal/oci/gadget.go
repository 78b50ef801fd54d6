package oci

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Inspektor Gadget media types.
const (
	MediaTypeGadgetConfig = "application/vnd.gadget.config.v1+yaml"
	MediaTypeEBPFProgram  = "application/vnd.gadget.ebpf.program.v1+binary"
	// MediaTypeWasmProgram is a gadget's optional WebAssembly post-processing layer.
	MediaTypeWasmProgram = "application/vnd.gadget.wasm.program.v1+binary"
	// MediaTypeBTFGen is a gadget's optional minimized BTF for kernels without their own.
	MediaTypeBTFGen    = "application/vnd.gadget.btfgen.v1+binary"
	ArtifactTypeGadget = "application/vnd.gadget.v1+binary"
)

// Gadget describes a gadget image to package.
type Gadget struct {
	// Ref is the tag to give the image, e.g. "ghcr.io/acme/trace_open:v1".
	Ref string
	// Arch is the GOARCH the program was compiled for ("amd64", "arm64").
	Arch string
	// Program is the eBPF ELF object.
	Program []byte
	// Metadata is the gadget metadata YAML (gadget.yaml), stored as the config blob as is.
	Metadata []byte
	// Title defaults to the last path component of Ref without its tag.
	Title       string
	Description string
	// Created is recorded as org.opencontainers.image.created (RFC 3339) unless zero. It is
	// a parameter so that packaging the same inputs twice yields the same digest.
	Created time.Time
	// Layers follow the program layer, in the order given: IG's optional btfgen
	// (MediaTypeBTFGen) and WebAssembly (MediaTypeWasmProgram) layers.
	Layers []Layer
}

// Layer is a gadget image layer other than its eBPF program.
type Layer struct {
	MediaType string
	Data      []byte
}

// PackageGadget writes g as an IG-format gadget image (an image index with one linux/<Arch>
// manifest whose config is the metadata and whose first layer is the eBPF program, followed by
// g.Layers), tags the index as g.Ref and returns the index descriptor.
func (l *Layout) PackageGadget(g Gadget) (Descriptor, error) {
	desc, err := l.packageGadget(g)
	if err != nil {
		return Descriptor{}, fmt.Errorf("package gadget %s: %w", g.Ref, err)
	}
	return desc, nil
}

func (l *Layout) packageGadget(g Gadget) (Descriptor, error) {
	if err := validateRef(g.Ref); err != nil {
		return Descriptor{}, err
	}
	if g.Arch == "" {
		return Descriptor{}, errors.New("no architecture given")
	}
	if len(g.Metadata) == 0 {
		return Descriptor{}, errors.New("empty gadget metadata")
	}
	// Catch a wrong file early: IG loads the layer with an ELF reader for the BPF machine.
	obj, err := elf.NewFile(bytes.NewReader(g.Program))
	if err != nil {
		return Descriptor{}, fmt.Errorf("eBPF program: %w", err)
	}
	if obj.Machine != elf.EM_BPF {
		return Descriptor{}, fmt.Errorf("eBPF program: ELF machine is %s, want %s", obj.Machine, elf.EM_BPF)
	}
	for i, extra := range g.Layers {
		// IG reads exactly one program layer.
		if extra.MediaType == "" || extra.MediaType == MediaTypeEBPFProgram {
			return Descriptor{}, fmt.Errorf("layer %d: media type %q, want one other than the program's", i+1, extra.MediaType)
		}
	}

	title := g.Title
	if title == "" {
		title, _, _ = strings.Cut(g.Ref[strings.LastIndex(g.Ref, "/")+1:], ":")
	}
	ann := map[string]string{AnnotationTitle: title}
	if g.Description != "" {
		ann[AnnotationDescription] = g.Description
	}
	if !g.Created.IsZero() {
		ann[AnnotationCreated] = g.Created.Format(time.RFC3339)
	}

	config, err := l.WriteBlob(MediaTypeGadgetConfig, g.Metadata)
	if err != nil {
		return Descriptor{}, err
	}
	layer, err := l.WriteBlob(MediaTypeEBPFProgram, g.Program)
	if err != nil {
		return Descriptor{}, err
	}
	layers := []Descriptor{layer}
	for i, extra := range g.Layers {
		d, err := l.WriteBlob(extra.MediaType, extra.Data)
		if err != nil {
			return Descriptor{}, fmt.Errorf("layer %d (%s): %w", i+1, extra.MediaType, err)
		}
		layers = append(layers, d)
	}
	manifest, err := l.writeJSON(MediaTypeManifest, Manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		ArtifactType:  ArtifactTypeGadget,
		Config:        config,
		Layers:        layers,
		Annotations:   ann,
	})
	if err != nil {
		return Descriptor{}, err
	}
	manifest.Platform = &Platform{OS: "linux", Architecture: g.Arch}
	manifest.Annotations = ann
	index, err := l.writeJSON(MediaTypeIndex, Index{
		SchemaVersion: 2,
		MediaType:     MediaTypeIndex,
		Manifests:     []Descriptor{manifest},
		Annotations:   ann,
	})
	if err != nil {
		return Descriptor{}, err
	}
	if err := l.Tag(g.Ref, index); err != nil {
		return Descriptor{}, err
	}
	return index, nil
}

// writeJSON encodes v and stores it as a blob of the given media type.
func (l *Layout) writeJSON(mediaType string, v any) (Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Descriptor{}, fmt.Errorf("encode %s: %w", mediaType, err)
	}
	return l.WriteBlob(mediaType, data)
}
