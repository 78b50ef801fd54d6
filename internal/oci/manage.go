package oci

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// helperTags returns the digest-derived tags that belong to an image digest: cosign's
// `sha256-<hex>.sig` (and .att, .sbom) and the OCI 1.1 referrers fallback tag `sha256-<hex>`.
func helperTags(idx *Index, digest string) []string {
	h, err := DigestHex(digest)
	if err != nil {
		return nil
	}
	var out []string
	for _, d := range idx.Manifests {
		ref := d.Annotations[AnnotationRefName]
		if i := strings.LastIndex(ref, ":"); i >= 0 && strings.Contains(ref[:i], "/") {
			ref = ref[i+1:] // a full reference: registry/repo:tag
		}
		if ref == "sha256-"+h || strings.HasPrefix(ref, "sha256-"+h+".") {
			out = append(out, d.Annotations[AnnotationRefName])
		}
	}
	return out
}

// Remove untags what ref resolves to, as Resolve resolves it: one tag, or, when ref is a
// digest, every tag of that image. When no other tag names the image, its own untagged
// entries and its signature and referrer tags go too, and every blob no longer reachable from
// index.json is deleted. It returns the image tags removed (helper tags left out) and how
// many blobs were deleted.
func (l *Layout) Remove(ref string) ([]string, int, error) {
	unlock, err := l.lock()
	if err != nil {
		return nil, 0, err
	}
	defer unlock()
	var removed []string
	err = l.updateIndexLocked(func(idx *Index) error {
		desc, err := resolve(idx.Manifests, ref)
		if err != nil {
			return err
		}
		tag := desc.Annotations[AnnotationRefName]
		// A digest stands for the image, not for the one tag resolve happened to return.
		wholeImage := isDigestRef(ref) && tag != ref
		stillTagged := !wholeImage && slices.ContainsFunc(idx.Manifests, func(d Descriptor) bool {
			r, ok := d.Annotations[AnnotationRefName]
			return ok && r != tag && !IsHelperTag(r) && d.Digest == desc.Digest
		})
		helpers := helperTags(idx, desc.Digest)
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d Descriptor) bool {
			r, tagged := d.Annotations[AnnotationRefName]
			var drop bool
			if stillTagged {
				drop = tagged && r == tag
			} else {
				drop = d.Digest == desc.Digest || (tagged && slices.Contains(helpers, r))
			}
			if drop && tagged && !IsHelperTag(r) {
				removed = append(removed, r)
			}
			return drop
		})
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("remove %s: %w", ref, err)
	}
	slices.Sort(removed)
	n, err := l.collectGarbage()
	if err != nil {
		return removed, n, fmt.Errorf("remove %s: %w", ref, err)
	}
	return removed, n, nil
}

// reachable adds d and everything it references (index entries, config, layers) to set, by
// digest, each with the descriptor that first named it, so that reading it later checks the
// size and reports the media type its manifest gives. A referrer's subject is not followed:
// signatures do not keep their image alive.
func (l *Layout) reachable(d Descriptor, set map[string]Descriptor) error {
	if _, ok := set[d.Digest]; ok {
		return nil
	}
	set[d.Digest] = d
	switch {
	case IsIndex(d.MediaType):
		idx, err := l.ReadIndex(d)
		if err != nil {
			return err
		}
		for _, m := range idx.Manifests {
			if err := l.reachable(m, set); err != nil {
				return err
			}
		}
	case IsManifest(d.MediaType):
		m, err := l.ReadManifest(d)
		if err != nil {
			return err
		}
		for _, b := range append([]Descriptor{m.Config}, m.Layers...) {
			if _, ok := set[b.Digest]; !ok {
				set[b.Digest] = b
			}
		}
	}
	return nil
}

// collectGarbage deletes blobs that nothing in index.json reaches. The caller holds the lock.
// A damaged or missing blob on a kept image stops collection rather than risk deleting what
// it would have referenced.
func (l *Layout) collectGarbage() (int, error) {
	idx, err := l.Index()
	if err != nil {
		return 0, err
	}
	keep := map[string]Descriptor{}
	for _, d := range idx.Manifests {
		if err := l.reachable(d, keep); err != nil && !errors.Is(err, ErrNotFound) {
			return 0, fmt.Errorf("garbage collection stopped: %w", err)
		}
	}
	dir := filepath.Join(l.dir, "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if _, ok := keep["sha256:"+e.Name()]; !ok {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// Export writes the images refs name, with their signature and referrer tags and every blob
// they reach, as a new OCI image layout: a directory, or a tar when dst ends in ".tar" (the
// form `ig image export` writes and Import reads). Every blob is digest-checked before
// anything is written; a damaged blob is named by the media type its manifest gives it.
func (l *Layout) Export(dst string, refs ...string) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	idx, err := l.Index()
	if err != nil {
		return err
	}
	out := Index{SchemaVersion: 2, MediaType: MediaTypeIndex}
	blobs := map[string]Descriptor{}
	for _, ref := range refs {
		desc, err := resolve(idx.Manifests, ref)
		if err != nil {
			return fmt.Errorf("export %s: %w", ref, err)
		}
		entries := []Descriptor{desc}
		for _, tag := range helperTags(&idx, desc.Digest) {
			d, err := l.Lookup(tag)
			if err != nil {
				return err
			}
			entries = append(entries, d)
		}
		own := map[string]Descriptor{}
		for _, d := range entries {
			if err := l.reachable(d, own); err != nil {
				return fmt.Errorf("export %s: %w", ref, err)
			}
			setTag(&out, d.Annotations[AnnotationRefName], d)
		}
		// Every blob is checked before anything is written, so that a damaged image exports
		// nothing, and the error names the image it belongs to.
		for digest, d := range own {
			if _, done := blobs[digest]; done {
				continue
			}
			if _, err := l.ReadBlob(d); err != nil {
				return fmt.Errorf("export %s: %w", ref, err)
			}
			blobs[digest] = d
		}
	}
	if strings.HasSuffix(dst, ".tar") {
		return l.exportTar(dst, out, blobs)
	}
	target, err := Open(dst)
	if err != nil {
		return err
	}
	for _, d := range blobs {
		data, err := l.ReadBlob(d)
		if err != nil {
			return err
		}
		if _, err := target.WriteBlob(d.MediaType, data); err != nil {
			return err
		}
	}
	return target.updateIndex(func(idx *Index) error {
		for _, d := range out.Manifests {
			setTag(idx, d.Annotations[AnnotationRefName], d)
		}
		return nil
	})
}

func (l *Layout) exportTar(dst string, idx Index, blobs map[string]Descriptor) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	tw := tar.NewWriter(f)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	index, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := add("index.json", index); err != nil {
		return err
	}
	for _, digest := range slices.Sorted(maps.Keys(blobs)) {
		data, err := l.ReadBlob(blobs[digest])
		if err != nil {
			return err
		}
		h, _ := DigestHex(digest)
		if err := add("blobs/sha256/"+h, data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Sync()
}
