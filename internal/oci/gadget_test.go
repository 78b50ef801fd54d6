package oci

import (
	"debug/elf"
	"encoding/binary"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPackageGadget(t *testing.T) {
	l, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g := Gadget{
		Ref:         "ghcr.io/acme/trace_open:v1",
		Arch:        "arm64",
		Program:     bpfELF("program"),
		Metadata:    []byte("name: trace_open\n"),
		Description: "trace open(2)",
		Created:     testCreated,
		Layers:      []Layer{{MediaTypeBTFGen, []byte("minimized BTF")}, {MediaTypeWasmProgram, []byte("\x00asm")}},
	}
	idxDesc, err := l.PackageGadget(g)
	if err != nil {
		t.Fatal(err)
	}
	if tagged, err := l.Lookup(g.Ref); err != nil || tagged.Digest != idxDesc.Digest || tagged.MediaType != MediaTypeIndex {
		t.Fatalf("tag %s = %+v, %v; want %s", g.Ref, tagged, err, idxDesc.Digest)
	}
	wantAnn := map[string]string{
		AnnotationTitle:       "trace_open",
		AnnotationDescription: "trace open(2)",
		AnnotationCreated:     "2025-10-20T12:00:00Z",
	}
	idx, err := l.ReadIndex(idxDesc)
	if err != nil {
		t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != MediaTypeIndex || len(idx.Manifests) != 1 || !maps.Equal(idx.Annotations, wantAnn) {
		t.Fatalf("index = %+v", idx)
	}
	md := idx.Manifests[0]
	if md.MediaType != MediaTypeManifest || md.Platform == nil || !reflect.DeepEqual(*md.Platform, Platform{OS: "linux", Architecture: "arm64"}) {
		t.Errorf("index entry = %+v", md)
	}
	m, err := l.ReadManifest(md)
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != ArtifactTypeGadget || m.MediaType != MediaTypeManifest || !maps.Equal(m.Annotations, wantAnn) {
		t.Errorf("manifest = %+v", m)
	}
	if m.Config.MediaType != MediaTypeGadgetConfig || len(m.Layers) != 3 {
		t.Fatalf("manifest config/layers = %+v / %+v", m.Config, m.Layers)
	}
	if cfg, err := l.ReadBlob(m.Config); err != nil || string(cfg) != string(g.Metadata) {
		t.Errorf("config = %q, %v", cfg, err)
	}
	// The program first, then the extra layers in order.
	for i, want := range append([]Layer{{MediaTypeEBPFProgram, g.Program}}, g.Layers...) {
		if data, err := l.ReadBlob(m.Layers[i]); err != nil || m.Layers[i].MediaType != want.MediaType || string(data) != string(want.Data) {
			t.Errorf("layer %d = %s %q, %v; want %s %q", i, m.Layers[i].MediaType, data, err, want.MediaType, want.Data)
		}
	}

	// Same inputs, same digest; another creation time, another digest.
	again, err := l.PackageGadget(g)
	if err != nil || again.Digest != idxDesc.Digest {
		t.Errorf("repackaging gave %s, %v; want %s", again.Digest, err, idxDesc.Digest)
	}
	g.Created = g.Created.Add(time.Second)
	if later, err := l.PackageGadget(g); err != nil || later.Digest == idxDesc.Digest {
		t.Errorf("packaging with another time gave %s, %v", later.Digest, err)
	}
}

func TestPackageGadgetRejects(t *testing.T) {
	x86 := bpfELF("")
	binary.LittleEndian.PutUint16(x86[18:], uint16(elf.EM_X86_64))
	good := Gadget{Ref: "g:1", Arch: "amd64", Program: bpfELF(""), Metadata: []byte("name: g\n")}
	tests := []struct {
		name   string
		modify func(g *Gadget)
		want   string
	}{
		{name: "not ELF", modify: func(g *Gadget) { g.Program = []byte("#!/bin/sh\n") }, want: "eBPF program"},
		{name: "x86 ELF", modify: func(g *Gadget) { g.Program = x86 }, want: "ELF machine is EM_X86_64"},
		{name: "no metadata", modify: func(g *Gadget) { g.Metadata = nil }, want: "empty gadget metadata"},
		{name: "no arch", modify: func(g *Gadget) { g.Arch = "" }, want: "no architecture"},
		{name: "bad ref", modify: func(g *Gadget) { g.Ref = "a b" }, want: "invalid reference"},
		{name: "second program layer", modify: func(g *Gadget) {
			g.Layers = []Layer{{MediaTypeBTFGen, []byte("BTF")}, {MediaTypeEBPFProgram, g.Program}}
		}, want: `layer 2: media type "` + MediaTypeEBPFProgram + `", want one other than the program's`},
		{name: "layer without media type", modify: func(g *Gadget) { g.Layers = []Layer{{"", []byte("x")}} },
			want: `layer 1: media type "", want one other than the program's`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			g := good
			tt.modify(&g)
			if _, err := l.PackageGadget(g); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("PackageGadget = %v, want error containing %q", err, tt.want)
			}
			if idx, _ := l.Index(); len(idx.Manifests) != 0 {
				t.Errorf("a rejected gadget was tagged: %+v", idx.Manifests)
			}
		})
	}
}
