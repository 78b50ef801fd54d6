package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func blobCount(t *testing.T, l *Layout) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.Dir(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestExportImportRemove(t *testing.T) {
	src := newGadgetLayout(t, "ghcr.io/acme/a:v1", "ghcr.io/acme/b:v1")
	for _, dst := range []string{filepath.Join(t.TempDir(), "out"), filepath.Join(t.TempDir(), "out.tar")} {
		if err := src.Export(dst, "ghcr.io/acme/a:v1"); err != nil {
			t.Fatal(err)
		}
		dev, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dev.Import(dst); err != nil {
			t.Fatalf("import of the export %s: %v", dst, err)
		}
		checkComplete(t, dev, "ghcr.io/acme/a:v1")
		if _, err := dev.Lookup("ghcr.io/acme/b:v1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("b:v1 was exported too: %v", err)
		}
	}

	// A second tag keeps the image; removing the last one deletes its blobs, and only its.
	a, _ := src.Lookup("ghcr.io/acme/a:v1")
	if err := src.Tag("alias:v1", a); err != nil {
		t.Fatal(err)
	}
	before := blobCount(t, src)
	if _, n, err := src.Remove("ghcr.io/acme/a:v1"); err != nil || n != 0 {
		t.Fatalf("remove with another tag left: %d blobs deleted, %v", n, err)
	}
	_, n, err := src.Remove("alias:v1")
	if err != nil || n == 0 {
		t.Fatalf("remove last tag: %d blobs deleted, %v", n, err)
	}
	if blobCount(t, src) != before-n {
		t.Fatal("blob count does not add up")
	}
	checkComplete(t, src, "ghcr.io/acme/b:v1")
	if _, _, err := src.Remove("ghcr.io/acme/a:v1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove again: %v", err)
	}
}

// TestRemove: Remove resolves its reference as Resolve does; a digest removes every tag of the
// image, a name one tag; signatures and blobs go with the last tag; a refusal changes nothing.
func TestRemove(t *testing.T) {
	const open, alias, other = "ghcr.io/acme/trace_open:latest", "alias:v1", "ghcr.io/acme/b:v1"
	type fixture struct {
		l         *Layout
		img, b    Descriptor
		sig       string   // the legacy signature tag of img
		bBlobs    []string // the blobs b reaches: all that is left once img is gone
		sigDigest string
	}
	setup := func(t *testing.T) fixture {
		l := newGadgetLayout(t, open, other)
		img, _ := l.Lookup(open)
		b, _ := l.Lookup(other)
		if err := l.Tag(alias, img); err != nil {
			t.Fatal(err)
		}
		cfg, _ := l.WriteBlob("application/vnd.oci.image.config.v1+json", []byte(`{}`))
		payload, _ := l.WriteBlob("application/vnd.dev.cosign.simplesigning.v1+json", []byte(`{"critical":{}}`))
		m, _ := json.Marshal(Manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: cfg, Layers: []Descriptor{payload}})
		sig, _ := l.WriteBlob(MediaTypeManifest, m)
		f := fixture{l: l, img: img, b: b, sig: "sha256-" + strings.TrimPrefix(img.Digest, "sha256:") + ".sig", sigDigest: sig.Digest}
		if err := l.Tag(f.sig, sig); err != nil {
			t.Fatal(err)
		}
		keep := map[string]Descriptor{}
		if err := l.reachable(b, keep); err != nil {
			t.Fatal(err)
		}
		for d := range keep {
			f.bBlobs = append(f.bBlobs, strings.TrimPrefix(d, "sha256:"))
		}
		slices.Sort(f.bBlobs)
		return f
	}
	tests := []struct {
		name string
		ref  func(f fixture) string
		// prepare changes the fixture first.
		prepare     func(t *testing.T, f fixture)
		wantRemoved []string
		// wantTags are the index's tags afterwards, sorted; allBlobs: every blob is kept.
		wantTags func(f fixture) []string
		allBlobs bool
		wantErr  error
		errText  string
	}{
		{name: "short name, another tag left", ref: func(fixture) string { return "trace_open" },
			wantRemoved: []string{open}, wantTags: func(f fixture) []string { return []string{alias, other, f.sig} }, allBlobs: true},
		{name: "pinned", ref: func(f fixture) string { return "trace_open@" + f.img.Digest },
			wantRemoved: []string{open}, wantTags: func(f fixture) []string { return []string{alias, other, f.sig} }, allBlobs: true},
		{name: "digest: every tag and the signature", ref: func(f fixture) string { return f.img.Digest },
			wantRemoved: []string{alias, open}, wantTags: func(fixture) []string { return []string{other} }},
		{name: "digest prefix as image list shows it", ref: func(f fixture) string { return f.img.Digest[:19] },
			wantRemoved: []string{alias, open}, wantTags: func(fixture) []string { return []string{other} }},
		{name: "last tag takes the signature", ref: func(fixture) string { return alias },
			prepare: func(t *testing.T, f fixture) {
				if _, _, err := f.l.Remove(open); err != nil {
					t.Fatal(err)
				}
			},
			wantRemoved: []string{alias}, wantTags: func(fixture) []string { return []string{other} }},
		{name: "digest, with a helper tag an old bpfleet let point at the image",
			ref: func(f fixture) string { return f.img.Digest },
			prepare: func(t *testing.T, f fixture) {
				// What `image tag IMG sha256-<b>.sig` did before CheckImageTag.
				if err := f.l.Tag("sha256-"+strings.TrimPrefix(f.b.Digest, "sha256:")+".sig", f.img); err != nil {
					t.Fatal(err)
				}
			},
			wantRemoved: []string{alias, open}, wantTags: func(fixture) []string { return []string{other} }},
		{name: "unknown digest", ref: func(fixture) string { return "sha256:" + strings.Repeat("9", 64) },
			wantErr: ErrNotFound, errText: "no image has this digest"},
		{name: "pinned to another image's digest", ref: func(f fixture) string { return "trace_open@" + f.b.Digest },
			wantErr: ErrNotFound, errText: "trace_open points elsewhere: " + open + " is "},
		{name: "signature digest is not an image", ref: func(f fixture) string { return f.sigDigest },
			wantErr: ErrNotFound},
		{name: "unknown name", ref: func(fixture) string { return "trace_exec" },
			wantErr: ErrNotFound, errText: `remove trace_exec: image "trace_exec": not found`},
		{name: "ambiguous digest prefix", ref: func(f fixture) string { return ambiguousPrefix(t, f.l) },
			wantErr: ErrAmbiguous, errText: "matches sha256:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			if tt.prepare != nil {
				tt.prepare(t, f)
			}
			ref := tt.ref(f)
			indexBefore, blobsBefore := readFile(t, f.l.indexPath()), blobNames(t, f.l)
			removed, n, err := f.l.Remove(ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("Remove(%q) = %v, want %v containing %q", ref, err, tt.wantErr, tt.errText)
				}
				if !bytes.Equal(readFile(t, f.l.indexPath()), indexBefore) || !slices.Equal(blobNames(t, f.l), blobsBefore) {
					t.Fatal("a refused Remove changed the layout")
				}
				return
			}
			if err != nil || !slices.Equal(removed, tt.wantRemoved) {
				t.Fatalf("Remove(%q) = %q, %v; want %q", ref, removed, err, tt.wantRemoved)
			}
			idx, _ := f.l.Index()
			var tags []string
			for _, d := range idx.Manifests {
				tags = append(tags, d.Annotations[AnnotationRefName])
			}
			slices.Sort(tags)
			if want := tt.wantTags(f); !slices.Equal(tags, want) {
				t.Errorf("tags after Remove(%q) = %q, want %q", ref, tags, want)
			}
			wantBlobs := f.bBlobs
			if tt.allBlobs {
				wantBlobs = blobsBefore
			}
			if got := blobNames(t, f.l); !slices.Equal(got, wantBlobs) || n != len(blobsBefore)-len(wantBlobs) {
				t.Errorf("after Remove(%q): %d blob(s) deleted, left %q; want left %q", ref, n, got, wantBlobs)
			}
		})
	}
}

// ambiguousPrefix tags manifests until two images' digests share their first hex digit, and
// returns that prefix.
func ambiguousPrefix(t *testing.T, l *Layout) string {
	t.Helper()
	first := map[byte]bool{}
	for i := 0; ; i++ {
		d, err := l.WriteBlob(MediaTypeManifest, fmt.Appendf(nil, `{"schemaVersion":2,"n":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Tag(fmt.Sprintf("filler:%d", i), d); err != nil {
			t.Fatal(err)
		}
		c := d.Digest[len("sha256:")]
		if first[c] {
			return "sha256:" + string(c)
		}
		first[c] = true
	}
}

// TestExportRefusesDamagedBlob: a damaged blob is named with the media type its manifest gives
// it (what verify reports too), and nothing is written.
func TestExportRefusesDamagedBlob(t *testing.T) {
	tests := []struct {
		name      string
		blob      func(m Manifest) Descriptor
		mediaType string
	}{
		{name: "eBPF layer", blob: func(m Manifest) Descriptor { return m.Layers[0] }, mediaType: MediaTypeEBPFProgram},
		{name: "config", blob: func(m Manifest) Descriptor { return m.Config }, mediaType: MediaTypeGadgetConfig},
	}
	for _, tt := range tests {
		for _, dst := range []string{"out", "out.tar"} {
			t.Run(tt.name+"/"+dst, func(t *testing.T) {
				l := newGadgetLayout(t, "ghcr.io/acme/a:v1")
				idxDesc, _ := l.Lookup("ghcr.io/acme/a:v1")
				idx, _ := l.ReadIndex(idxDesc)
				m, _ := l.ReadManifest(idx.Manifests[0])
				blob := tt.blob(m)
				flipByte(t, l, blob.Digest, 1)
				dst := filepath.Join(t.TempDir(), dst)
				err := l.Export(dst, "a")
				want := fmt.Sprintf("export a: blob %s (%s): %s", blob.Digest, tt.mediaType, ErrBlobMismatch)
				if !errors.Is(err, ErrBlobMismatch) || !strings.HasPrefix(err.Error(), want) {
					t.Fatalf("Export = %v, want %s...", err, want)
				}
				if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused export left %s: %v", dst, err)
				}
			})
		}
	}
}

func TestListEmpty(t *testing.T) {
	l, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	images, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	// `image list -o json` prints this: a script iterating over it gets an empty array.
	if data, _ := json.Marshal(images); string(data) != "[]" {
		t.Errorf("List of an empty layout marshals to %s, want []", data)
	}
}
