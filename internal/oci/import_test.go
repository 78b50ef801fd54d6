package oci

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// writeTar archives a layout directory the way `ig image export` does (entries relative to
// the layout root); prefix is prepended to every name, gz compresses it.
func writeTar(t *testing.T, dir, prefix string, gz bool) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "layout.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	var w io.Writer = f
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(f)
		w = zw
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if e.Name() == "ingest" {
			return filepath.SkipDir
		}
		if rel == "." {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = prefix + filepath.ToSlash(rel)
		if e.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !e.IsDir() {
			_, err = tw.Write(readFile(t, path))
		}
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkComplete asserts that every tag of want resolves in l to the same digest and that
// every blob reachable from it reads back intact.
func checkComplete(t *testing.T, l *Layout, refs ...string) {
	t.Helper()
	for _, ref := range refs {
		d, err := l.Lookup(ref)
		if err != nil {
			t.Errorf("tag %s missing after import: %v", ref, err)
			continue
		}
		idx, err := l.ReadIndex(d)
		if err != nil {
			t.Errorf("%s: %v", ref, err)
			continue
		}
		for _, md := range idx.Manifests {
			m, err := l.ReadManifest(md)
			if err != nil {
				t.Errorf("%s: %v", ref, err)
				continue
			}
			for _, b := range append([]Descriptor{m.Config}, m.Layers...) {
				if _, err := l.ReadBlob(b); err != nil {
					t.Errorf("%s: %v", ref, err)
				}
			}
		}
	}
}

func TestImport(t *testing.T) {
	src := newGadgetLayout(t, "ghcr.io/acme/a:v1", "ghcr.io/acme/b:v1")
	for _, tt := range []struct {
		name string
		path func(t *testing.T) string
	}{
		{name: "directory", path: func(t *testing.T) string { return src.Dir() }},
		{name: "tar", path: func(t *testing.T) string { return writeTar(t, src.Dir(), "", false) }},
		{name: "tar with ./ names", path: func(t *testing.T) string { return writeTar(t, src.Dir(), "./", false) }},
		{name: "tar.gz", path: func(t *testing.T) string { return writeTar(t, src.Dir(), "", true) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst := newGadgetLayout(t, "ghcr.io/acme/a:v1", "ghcr.io/acme/other:v1") // a:v1 differs
			added, err := dst.Import(tt.path(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(added) != 2 {
				t.Errorf("Import returned %d entries, want 2", len(added))
			}
			checkComplete(t, dst, "ghcr.io/acme/a:v1", "ghcr.io/acme/b:v1", "ghcr.io/acme/other:v1")
			for _, ref := range []string{"ghcr.io/acme/a:v1", "ghcr.io/acme/b:v1"} {
				want, _ := src.Lookup(ref)
				got, _ := dst.Lookup(ref)
				if got.Digest != want.Digest {
					t.Errorf("%s points to %s, want the imported %s", ref, got.Digest, want.Digest)
				}
			}
			idx, _ := dst.Index()
			if len(idx.Manifests) != 3 {
				t.Errorf("index has %d entries, want 3 (a:v1 repointed, not duplicated)", len(idx.Manifests))
			}
			if leftovers, _ := os.ReadDir(filepath.Join(dst.Dir(), "ingest")); len(leftovers) != 0 {
				t.Errorf("temporary files left in ingest/: %v", leftovers)
			}
		})
	}
}

// TestImportRepairsDamagedBlob: importing a good image again replaces a damaged copy of one of
// its blobs instead of keeping it because the name matches.
func TestImportRepairsDamagedBlob(t *testing.T) {
	src := newGadgetLayout(t, "ghcr.io/acme/a:v1")
	dst, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Import(src.Dir()); err != nil {
		t.Fatal(err)
	}
	idx, err := dst.Lookup("ghcr.io/acme/a:v1")
	if err != nil {
		t.Fatal(err)
	}
	index, err := dst.ReadIndex(idx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dst.ReadManifest(index.Manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[0]
	flipByte(t, dst, layer.Digest, 1)
	if _, err := dst.ReadBlob(layer); !errors.Is(err, ErrBlobMismatch) {
		t.Fatalf("damaged layer: %v", err)
	}
	if _, err := dst.Import(src.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.ReadBlob(layer); err != nil {
		t.Fatalf("after re-import: %v", err)
	}
}

func TestImportRejectsDamagedSource(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, src *Layout, m Manifest, idx Descriptor) string // returns the blob to be named
		wantErr error
	}{
		{name: "layer byte changed", wantErr: ErrBlobMismatch, damage: func(t *testing.T, src *Layout, m Manifest, idx Descriptor) string {
			flipByte(t, src, m.Layers[0].Digest, 70)
			return m.Layers[0].Digest
		}},
		{name: "index byte changed", wantErr: ErrBlobMismatch, damage: func(t *testing.T, src *Layout, m Manifest, idx Descriptor) string {
			flipByte(t, src, idx.Digest, 10)
			return idx.Digest
		}},
		{name: "config missing", wantErr: ErrNotFound, damage: func(t *testing.T, src *Layout, m Manifest, idx Descriptor) string {
			h, _ := DigestHex(m.Config.Digest)
			os.Remove(src.blobPath(h))
			return m.Config.Digest
		}},
		{name: "layer grown", wantErr: ErrBlobMismatch, damage: func(t *testing.T, src *Layout, m Manifest, idx Descriptor) string {
			h, _ := DigestHex(m.Layers[0].Digest)
			f, _ := os.OpenFile(src.blobPath(h), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte("more"))
			f.Close()
			return m.Layers[0].Digest
		}},
	}
	for _, tt := range tests {
		for _, asTar := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tar=%v", tt.name, asTar), func(t *testing.T) {
				src := newGadgetLayout(t, "ghcr.io/acme/fine:v1", "ghcr.io/acme/bad:v1")
				idxDesc, _ := src.Lookup("ghcr.io/acme/bad:v1")
				idx, _ := src.ReadIndex(idxDesc)
				m, _ := src.ReadManifest(idx.Manifests[0])
				blob := tt.damage(t, src, m, idxDesc)
				path := src.Dir()
				if asTar {
					path = writeTar(t, src.Dir(), "", false)
				}

				dst := newGadgetLayout(t, "ghcr.io/acme/existing:v1")
				indexBefore := readFile(t, filepath.Join(dst.Dir(), "index.json"))
				blobsBefore := blobNames(t, dst)

				added, err := dst.Import(path)
				if !errors.Is(err, tt.wantErr) || added != nil {
					t.Fatalf("Import = %v, %v; want %v", added, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), blob) {
					t.Errorf("error %q does not name blob %s", err, blob)
				}
				if got := readFile(t, filepath.Join(dst.Dir(), "index.json")); string(got) != string(indexBefore) {
					t.Errorf("index.json changed by a failed import:\n%s\nwas\n%s", got, indexBefore)
				}
				if got := blobNames(t, dst); !slices.Equal(got, blobsBefore) {
					t.Errorf("blobs changed by a failed import: %v, was %v", got, blobsBefore)
				}
				if leftovers, _ := os.ReadDir(filepath.Join(dst.Dir(), "ingest")); len(leftovers) != 0 {
					t.Errorf("temporary files left in ingest/: %v", leftovers)
				}
			})
		}
	}
}

func TestImportRejectsBadTar(t *testing.T) {
	src := newGadgetLayout(t, "x:v1")
	dir := t.TempDir()
	// mkTar writes a tar of the given files (name -> content).
	mkTar := func(name string, files map[string]string) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		tw := tar.NewWriter(f)
		for _, n := range slices.Sorted(maps.Keys(files)) {
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg})
			tw.Write([]byte(files[n]))
		}
		tw.Close()
		f.Close()
		return path
	}
	marker := `{"imageLayoutVersion":"1.0.0"}`
	zeroBytes := filepath.Join(dir, "zero.tar")
	if err := os.WriteFile(zeroBytes, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		// want is the whole error: it names the input and what is wrong with it, never the
		// temporary directory the tar is unpacked in.
		want string
	}{
		{name: "empty tar", path: mkTar("empty.tar", nil),
			want: "not an OCI image layout: it has no oci-layout file"},
		{name: "empty file", path: zeroBytes, want: "not an OCI image layout: it has no oci-layout file"},
		// "../" is cleaned away first, so the entry is just not a layout file and is ignored.
		{name: "escaping entry", path: mkTar("escape.tar", map[string]string{"blobs/sha256/../../../evil": "x"}),
			want: "not an OCI image layout: it has no oci-layout file"},
		{name: "no index.json", path: mkTar("noindex.tar", map[string]string{"oci-layout": marker}),
			want: "not an OCI image layout: it has no index.json file"},
		{name: "index.json not JSON", path: mkTar("badindex.tar", map[string]string{"oci-layout": marker, "index.json": "{"}),
			want: "parse index.json: unexpected end of JSON input"},
		{name: "unknown layout version", path: mkTar("v2.tar", map[string]string{"oci-layout": `{"imageLayoutVersion":"2.0.0"}`}),
			want: `oci-layout: unsupported imageLayoutVersion "2.0.0"`},
		{name: "JSON file as a tar", path: filepath.Join(src.Dir(), "index.json"),
			want: "read tar: unexpected EOF"},
		// A tag spelled like a digest (or pinned) would stand for another image wherever a
		// digest is accepted: the whole import is refused.
		{name: "tag reads as a digest", path: mkTar("digesttag.tar", map[string]string{"oci-layout": marker,
			"index.json": `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:` +
				strings.Repeat("a", 64) + `","size":2,"annotations":{"org.opencontainers.image.ref.name":"sha256:` + strings.Repeat("b", 64) + `"}}]}`}),
			want: `invalid tag "sha256:` + strings.Repeat("b", 64) + `": it reads as a digest`},
	}
	dst := newGadgetLayout(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dst.Import(tt.path)
			if want := "import " + tt.path + ": " + tt.want; err == nil || err.Error() != want {
				t.Fatalf("Import error = %v\nwant %s", err, want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dst.Dir(), "..", "evil")); err == nil {
		t.Error("tar entry escaped the staging directory")
	}
}

func TestImportIGFixture(t *testing.T) {
	fixture := sharedFixture(t)
	for _, asTar := range []bool{false, true} {
		t.Run(fmt.Sprintf("tar=%v", asTar), func(t *testing.T) {
			path := fixture
			if asTar {
				path = writeTar(t, fixture, "", true)
			}
			l, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			added, err := l.Import(path)
			if err != nil {
				t.Fatal(err)
			}
			// 21 entries in the fixture's index.json, 2 of them dangling untagged manifests.
			if len(added) != 19 {
				t.Errorf("imported %d entries, want 19", len(added))
			}
			for _, d := range added {
				if d.Digest == "sha256:3cacc8aeae9b318d42d8b3c89dcaa9962617bd6726a44e0af7598dec535a051c" {
					t.Error("dangling untagged entry imported")
				}
			}
			images, err := l.List()
			if err != nil {
				t.Fatal(err)
			}
			var refs []string
			for _, im := range images {
				refs = append(refs, im.Ref)
			}
			want := []string{
				"ghcr.io/inspektor-gadget/gadget/unsigned:francis-signature-unit-tests",
				"ttl.sh/signed_with_cosign_bundle:latest",
				"ttl.sh/signed_with_cosign_legacy:latest",
				"ttl.sh/signed_with_cosign_oci11:latest",
				"ttl.sh/signed_with_notation_config_media_type_empty:latest",
				"ttl.sh/signed_with_notation_config_media_type_signature:latest",
			}
			if !slices.Equal(refs, want) {
				t.Errorf("List = %v\nwant %v", refs, want)
			}
			if images[2].Created != "2025-10-20T14:06:44+02:00" {
				t.Errorf("created of %s = %q", images[2].Ref, images[2].Created)
			}
			sig, err := l.Lookup("sha256-20296fb8a8c8a97808229625945da73f5f4d5843800317ead8c203081156cc9c.sig")
			if err != nil {
				t.Fatal(err)
			}
			m, err := l.ReadManifest(sig)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.ReadBlob(m.Layers[0]); err != nil {
				t.Error(err)
			}
			if got, err := l.Resolve("signed_with_cosign_legacy"); err != nil || got.Digest != "sha256:20296fb8a8c8a97808229625945da73f5f4d5843800317ead8c203081156cc9c" {
				t.Errorf("Resolve(signed_with_cosign_legacy) = %s, %v", got.Digest, err)
			}
			// Importing again changes nothing.
			before := readFile(t, filepath.Join(l.Dir(), "index.json"))
			if _, err := l.Import(path); err != nil {
				t.Fatal(err)
			}
			if after := readFile(t, filepath.Join(l.Dir(), "index.json")); string(after) != string(before) {
				t.Error("re-import changed index.json")
			}
		})
	}
}

// TestImportHelperProcess is the child side of TestConcurrentImport.
func TestImportHelperProcess(t *testing.T) {
	dst, src := os.Getenv("OCI_TEST_IMPORT_DST"), os.Getenv("OCI_TEST_IMPORT_SRC")
	if dst == "" {
		t.Skip("helper process for TestConcurrentImport")
	}
	if err := importAndTag(dst, src, os.Getenv("OCI_TEST_IMPORT_NAME")); err != nil {
		t.Fatal(err)
	}
}

const concurrentRounds = 20

// importAndTag imports src into dst repeatedly, adding a tag name/<round> after each import.
func importAndTag(dst, src, name string) error {
	l, err := Open(dst)
	if err != nil {
		return err
	}
	for i := range concurrentRounds {
		added, err := l.Import(src)
		if err != nil {
			return err
		}
		if err := l.Tag(fmt.Sprintf("%s/%d", name, i), added[0]); err != nil {
			return err
		}
	}
	return nil
}

// TestConcurrentImport imports four layouts into one store at once, two from goroutines and
// two from other processes, each tagging after every import. Each source has its own tag plus
// a tag all share; without the layout lock, read-modify-write races on index.json lose tags.
func TestConcurrentImport(t *testing.T) {
	dst := t.TempDir()
	if _, err := Open(dst); err != nil {
		t.Fatal(err)
	}
	var sources []string
	for i := range 4 {
		sources = append(sources, newGadgetLayout(t, fmt.Sprintf("own/%d:v1", i), "shared:latest").Dir())
	}

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("worker%d", i)
			if i < 2 {
				errs <- importAndTag(dst, src, name)
				return
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestImportHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), "OCI_TEST_IMPORT_DST="+dst, "OCI_TEST_IMPORT_SRC="+src, "OCI_TEST_IMPORT_NAME="+name)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("helper process: %v\n%s", err, out)
				return
			}
			errs <- nil
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	l, _ := Open(dst)
	idx, err := l.Index()
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, d := range idx.Manifests {
		refs = append(refs, d.Annotations[AnnotationRefName])
	}
	slices.Sort(refs)
	want := []string{"own/0:v1", "own/1:v1", "own/2:v1", "own/3:v1", "shared:latest"}
	for w := range 4 {
		for i := range concurrentRounds {
			want = append(want, fmt.Sprintf("worker%d/%d", w, i))
		}
	}
	slices.Sort(want)
	if !slices.Equal(refs, want) {
		raw, _ := json.Marshal(idx)
		t.Fatalf("tags after concurrent imports = %v\nwant %v\n%s", refs, want, raw)
	}
	checkComplete(t, l, refs...)
}
