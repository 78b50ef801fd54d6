package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Import copies images from the OCI layout at src into l and returns the index.json entries
// it added or repointed. src is a layout directory or a tar of one, as `ig image export`
// writes it (plain or gzip-compressed, detected from the content; entries at the archive root,
// "./" prefixes allowed).
//
// Every top-level entry of the source index.json is imported with everything it reaches
// (index -> manifests -> config and layers); that includes cosign's `sha256-<hex>.sig` tags.
// Untagged top-level entries whose blob is absent from both layouts are skipped: oras-based
// stores (IG's among them) leave such dangling entries behind. Any other missing blob, or a
// blob whose sha256 or size differs from its descriptor, fails the whole import with an error
// naming the blob, and l is left unchanged. Tags already present in l are repointed.
func (l *Layout) Import(src string) ([]Descriptor, error) {
	added, err := l.importFrom(src)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	return added, nil
}

func (l *Layout) importFrom(src string) ([]Descriptor, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return l.importDir(src)
	}
	// Unpack next to the target so the checked blobs can be renamed into place.
	ingest := filepath.Join(l.dir, "ingest")
	if err := os.MkdirAll(ingest, 0o755); err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(ingest, "import-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	if err := extractTar(src, staging); err != nil {
		return nil, err
	}
	return l.importDir(staging)
}

// importer copies blobs from a source layout into temporary files of the target layout;
// nothing is renamed into blobs/ until the whole graph has been copied and checked.
type importer struct {
	dst    *Layout
	src    string
	seen   map[string]bool
	staged map[string]string // hex digest -> temporary file
}

func (l *Layout) importDir(src string) ([]Descriptor, error) {
	// The lock is held from the first reuse decision to the index update, so that Remove's
	// garbage collection never deletes a blob this import counts on.
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	marker, err := readSourceFile(src, "oci-layout")
	if err != nil {
		return nil, err
	}
	if err := checkMarker(marker); err != nil {
		return nil, err
	}
	data, err := readSourceFile(src, "index.json")
	if err != nil {
		return nil, err
	}
	srcIdx, err := parseIndexFile(data, "index.json")
	if err != nil {
		return nil, err
	}
	im := &importer{dst: l, src: src, seen: map[string]bool{}, staged: map[string]string{}}
	defer func() {
		for _, tmp := range im.staged {
			os.Remove(tmp) // no-op for files already renamed into place
		}
	}()

	var added []Descriptor
	for _, d := range srcIdx.Manifests {
		ref, tagged := d.Annotations[AnnotationRefName]
		if tagged {
			if err := validateRef(ref); err != nil {
				return nil, err
			}
		} else if !im.srcHas(d) && !im.dstHas(d) {
			continue
		}
		if err := im.copy(d); err != nil {
			return nil, err
		}
		added = append(added, d)
	}

	for h, tmp := range im.staged {
		if err := os.Rename(tmp, l.blobPath(h)); err != nil {
			return nil, fmt.Errorf("store blob sha256:%s: %w", h, err)
		}
	}
	if err := syncDir(filepath.Join(l.dir, "blobs", "sha256")); err != nil {
		return nil, err
	}
	err = l.updateIndexLocked(func(idx *Index) error {
		for _, d := range added {
			if ref, ok := d.Annotations[AnnotationRefName]; ok {
				setTag(idx, ref, d)
			} else if !hasUntagged(idx, d.Digest) {
				idx.Manifests = append(idx.Manifests, d)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return added, nil
}

// readSourceFile reads a top-level file of the layout being imported. Errors name it by its
// name in the layout, which Import prefixes with the source the user gave: a tar is unpacked
// under ingest/, a temporary path that would tell the user nothing.
func readSourceFile(src, name string) ([]byte, error) {
	data, err := readCapped(filepath.Join(src, name), name, MaxManifestSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("not an OCI image layout: it has no %s file", name)
	}
	return data, err
}

func hasUntagged(idx *Index, digest string) bool {
	for _, d := range idx.Manifests {
		if _, tagged := d.Annotations[AnnotationRefName]; !tagged && d.Digest == digest {
			return true
		}
	}
	return false
}

func (im *importer) srcPath(d Descriptor) string {
	h, _ := DigestHex(d.Digest)
	return filepath.Join(im.src, "blobs", "sha256", h)
}

func (im *importer) srcHas(d Descriptor) bool {
	if _, err := DigestHex(d.Digest); err != nil {
		return true // let copy report the bad digest
	}
	_, err := os.Stat(im.srcPath(d))
	return err == nil
}

// dstHas reports whether the target already holds d intact. A damaged copy is not reused, so
// importing a good image again repairs it.
func (im *importer) dstHas(d Descriptor) bool {
	_, err := im.dst.ReadBlob(d)
	return err == nil
}

// copy stages d and, for indexes and manifests, everything they reference. Leaf blobs already
// intact in the target are reused; indexes and manifests are always copied from the source, because their content decides what
// else is imported.
func (im *importer) copy(d Descriptor) error {
	if err := checkDescriptor(d); err != nil {
		return err
	}
	if im.seen[d.Digest] {
		return nil
	}
	im.seen[d.Digest] = true
	isIndex, isManifest := IsIndex(d.MediaType), IsManifest(d.MediaType)
	if !isIndex && !isManifest {
		if im.dstHas(d) {
			return nil
		}
		_, err := im.stage(d)
		return err
	}
	if d.Size > MaxManifestSize {
		return fmt.Errorf("blob %s: %w: %d bytes for a manifest (limit %d)", d.Digest, ErrTooLarge, d.Size, MaxManifestSize)
	}
	tmp, err := im.stage(d)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(tmp)
	if err != nil {
		return err
	}
	var children []Descriptor
	if isIndex {
		var idx Index
		if err := json.Unmarshal(data, &idx); err != nil {
			return fmt.Errorf("parse index %s: %w", d.Digest, err)
		}
		children = idx.Manifests
	} else {
		var m Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("parse manifest %s: %w", d.Digest, err)
		}
		// The subject of a referrer is not followed: it is the image being described, and
		// need not be present.
		children = append([]Descriptor{m.Config}, m.Layers...)
	}
	for _, c := range children {
		if err := im.copy(c); err != nil {
			return fmt.Errorf("%s %s: %w", d.MediaType, d.Digest, err)
		}
	}
	return nil
}

// stage copies one blob from the source into a temporary file, hashing as it goes, and keeps
// the file only if its sha256 and size match d.
func (im *importer) stage(d Descriptor) (string, error) {
	h, _ := DigestHex(d.Digest)
	if tmp, ok := im.staged[h]; ok {
		return tmp, nil
	}
	in, err := os.Open(im.srcPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("blob %s (%s): %w in the source layout", d.Digest, d.MediaType, ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	defer in.Close()
	f, err := im.dst.createTemp("blob-*")
	if err != nil {
		return "", err
	}
	sum := sha256.New()
	var n int64
	err = finishTemp(f, func(w io.Writer) error {
		var err error
		n, err = io.Copy(io.MultiWriter(w, sum), io.LimitReader(in, d.Size+1))
		if err != nil {
			return err
		}
		if n != d.Size {
			return fmt.Errorf("blob %s (%s): %w: %d bytes in the source, descriptor says %d", d.Digest, d.MediaType, ErrBlobMismatch, n, d.Size)
		}
		if got := hex.EncodeToString(sum.Sum(nil)); got != h {
			return fmt.Errorf("blob %s (%s): %w: content hashes to sha256:%s", d.Digest, d.MediaType, ErrBlobMismatch, got)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	im.staged[h] = f.Name()
	return f.Name(), nil
}

// extractTar unpacks the layout files of a tar (optionally gzip-compressed) into dir. Only
// `oci-layout`, `index.json` and `blobs/sha256/<hex>` regular files are written, so entry
// names cannot escape dir; everything else is ignored. Contents are checked by importDir.
func extractTar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer gz.Close()
		r = gz
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if !hdr.FileInfo().Mode().IsRegular() {
			continue
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		var target string
		limit := int64(MaxManifestSize)
		switch {
		case name == "oci-layout" || name == "index.json":
			target = filepath.Join(dir, name)
		case strings.HasPrefix(name, "blobs/sha256/"):
			h := strings.TrimPrefix(name, "blobs/sha256/")
			if _, err := DigestHex("sha256:" + h); err != nil {
				return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
			}
			target = filepath.Join(dir, "blobs", "sha256", h)
			limit = MaxBlobSize
		default:
			continue
		}
		if hdr.Size > limit {
			return fmt.Errorf("tar entry %q: %w: %d bytes (limit %d)", hdr.Name, ErrTooLarge, hdr.Size, limit)
		}
		if err := writeFile(target, tr); err != nil {
			return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
	}
}

func writeFile(path string, r io.Reader) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
