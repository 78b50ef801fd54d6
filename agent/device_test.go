package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/oci"
)

// storeImage tags in the data directory's image store an image index with one linux/amd64
// manifest whose layer is program (no ELF needed: nothing here loads it), and returns the
// index descriptor.
func storeImage(t *testing.T, dataDir, ref, program string) oci.Descriptor {
	t.Helper()
	l, err := oci.Open(imageDir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	write := func(mediaType string, v any) oci.Descriptor {
		data, ok := v.([]byte)
		if !ok {
			if data, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		d, err := l.WriteBlob(mediaType, data)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	layer := write(oci.MediaTypeEBPFProgram, []byte(program))
	layer.Annotations = map[string]string{oci.AnnotationTitle: "program.o"}
	m := write(oci.MediaTypeManifest, oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest,
		Config: write(oci.MediaTypeGadgetConfig, []byte("name: x\n")), Layers: []oci.Descriptor{layer}})
	m.Platform = &oci.Platform{OS: "linux", Architecture: "amd64"}
	idx := write(oci.MediaTypeIndex, oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex, Manifests: []oci.Descriptor{m}})
	if err := l.Tag(ref, idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestCommandsRefuseMissingDataDir: every command but import (and the agent) refuses a data
// directory that does not exist, naming it, and creates nothing.
func TestCommandsRefuseMissingDataDir(t *testing.T) {
	ops := []struct {
		name string
		run  func(dataDir string) error
	}{
		{"image list", func(d string) error { _, err := Images(d); return err }},
		{"image inspect", func(d string) error { _, err := InspectImage(d, "x"); return err }},
		{"image export", func(d string) error { return ExportImages(d, filepath.Join(t.TempDir(), "o.tar"), "x") }},
		{"image tag", func(d string) error { _, _, err := TagImage(d, "x", "y"); return err }},
		{"image remove", func(d string) error { _, _, err := RemoveImage(d, "x"); return err }},
		{"verify", func(d string) error { _, err := Verify(d, "x", nil); return err }},
		{"verify --key", func(d string) error { _, err := Verify(d, "x", []string{"k.pub"}); return err }},
		{"run", func(d string) error { _, err := ApproveRun(d, "x"); return err }},
		{"trust status", func(d string) error { _, err := TrustStatus(d); return err }},
		{"trust audit", func(d string) error { _, err := AuditLog(d); return err }},
	}
	parent := t.TempDir()
	file := filepath.Join(parent, "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dirs := []struct{ dir, want string }{
		{filepath.Join(parent, "nonexist"), "data directory " + filepath.Join(parent, "nonexist") +
			" does not exist (is --data-dir right? `bpfleet image import` and the agent create it)"},
		{file, "data directory " + file + " is not a directory (is --data-dir right?)"},
	}
	for _, op := range ops {
		for _, d := range dirs {
			t.Run(op.name+"/"+filepath.Base(d.dir), func(t *testing.T) {
				if err := op.run(d.dir); err == nil || err.Error() != d.want {
					t.Fatalf("%s on %s: %v\nwant %s", op.name, d.dir, err, d.want)
				}
				if entries, _ := os.ReadDir(parent); len(entries) != 1 {
					t.Fatalf("%s created something in %s: %v", op.name, parent, entries)
				}
			})
		}
	}
	// Importing may create it: a fresh device imports its images before the agent first runs.
	src := t.TempDir()
	storeImage(t, src, "x:latest", "program")
	fresh := filepath.Join(parent, "fresh")
	if _, err := ImportImage(fresh, imageDir(src)); err != nil {
		t.Fatalf("import into a new data directory: %v", err)
	}
	if images, err := Images(fresh); err != nil || len(images) != 1 || images[0].Ref != "x:latest" {
		t.Fatalf("after import: %+v, %v", images, err)
	}
}

// TestJSONOutputs: what the CLI prints with -o json: empty lists are [], keys are snake_case.
func TestJSONOutputs(t *testing.T) {
	dataDir := t.TempDir()
	marshal := func(v any, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	if got := marshal(Images(dataDir)); got != "[]" {
		t.Errorf("image list of an empty store = %s, want []", got)
	}
	if got := marshal(AuditLog(dataDir)); got != "[]" {
		t.Errorf("trust audit of an empty log = %s, want []", got)
	}

	idx := storeImage(t, dataDir, "trace_exec:latest", "program")
	l, _ := oci.Open(imageDir(dataDir))
	m, _ := l.ReadIndex(idx)
	manifest, _ := l.ReadManifest(m.Manifests[0])
	layer := manifest.Layers[0]
	tests := []struct{ name, got, want string }{
		{"image list", marshal(Images(dataDir)),
			`[{"ref":"trace_exec:latest","digest":"` + idx.Digest + `","media_type":"` + oci.MediaTypeIndex + `","size":` + jsonInt(idx.Size) + `}]`},
		{"image inspect", marshal(InspectImage(dataDir, "trace_exec")),
			`{"ref":"trace_exec","digest":"` + idx.Digest + `","media_type":"` + oci.MediaTypeIndex + `","platforms":[{"platform":"linux/amd64","manifest":"` + m.Manifests[0].Digest +
				`","layers":[{"media_type":"` + oci.MediaTypeEBPFProgram + `","digest":"` + layer.Digest + `","size":7,"annotations":{"` + oci.AnnotationTitle + `":"program.o"}}]}],"legacy_signatures":0,"referrers":0}`},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s -o json =\n%s\nwant\n%s", tt.name, tt.got, tt.want)
		}
	}
}

func jsonInt(n int64) string { data, _ := json.Marshal(n); return string(data) }

// TestTagImage: tagging refuses helper tags and says when it moves a tag; a refusal changes
// nothing.
func TestTagImage(t *testing.T) {
	dataDir := t.TempDir()
	a := storeImage(t, dataDir, "a:latest", "program a")
	b := storeImage(t, dataDir, "b:latest", "program b")
	sigTag := "sha256-" + strings.TrimPrefix(a.Digest, "sha256:") + ".sig"
	tests := []struct {
		src, dst             string
		wantDigest, wantPrev string
		wantErr              string
	}{
		{src: "a", dst: "c:v1", wantDigest: a.Digest},
		{src: "a", dst: "c:v1", wantDigest: a.Digest, wantPrev: a.Digest}, // again: not a move
		{src: "b", dst: "c:v1", wantDigest: b.Digest, wantPrev: a.Digest}, // moved
		{src: b.Digest[:19], dst: "d", wantDigest: b.Digest},
		{src: "a@" + a.Digest, dst: "e", wantDigest: a.Digest},
		{src: "b", dst: sigTag, wantErr: `invalid tag "` + sigTag + `": tags of the form sha256-<digest>, .sig, .att or .sbom are reserved for signatures, attestations and referrers`},
		{src: "b", dst: "ghcr.io/acme/a:" + strings.TrimSuffix(sigTag, ".sig") + ".att", wantErr: "are reserved for signatures"},
		{src: "b", dst: "c@" + a.Digest, wantErr: "a tag has no @"},
		{src: "nosuch", dst: "f", wantErr: `image "nosuch": not found`},
	}
	for _, tt := range tests {
		indexBefore, _ := os.ReadFile(filepath.Join(imageDir(dataDir), "index.json"))
		digest, prev, err := TagImage(dataDir, tt.src, tt.dst)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("TagImage(%s, %s) = %v, want %q", tt.src, tt.dst, err, tt.wantErr)
			}
			if after, _ := os.ReadFile(filepath.Join(imageDir(dataDir), "index.json")); string(after) != string(indexBefore) {
				t.Errorf("a refused TagImage(%s, %s) changed index.json", tt.src, tt.dst)
			}
			continue
		}
		if err != nil || digest != tt.wantDigest || prev != tt.wantPrev {
			t.Errorf("TagImage(%s, %s) = %s, %s, %v; want %s, %s", tt.src, tt.dst, digest, prev, err, tt.wantDigest, tt.wantPrev)
		}
	}
	images, _ := Images(dataDir)
	var refs []string
	for _, img := range images {
		refs = append(refs, img.Ref+" "+img.Digest)
	}
	if want := []string{"a:latest " + a.Digest, "b:latest " + b.Digest, "c:v1 " + b.Digest, "d " + b.Digest, "e " + a.Digest}; !slices.Equal(refs, want) {
		t.Errorf("images after tagging: %q, want %q", refs, want)
	}
}
