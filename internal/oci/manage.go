package oci

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
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

// Remove untags ref. When no other tag names the same image, its signature and referrer tags
// go too, and every blob no longer reachable from index.json is deleted. It returns how many
// blobs were deleted.
func (l *Layout) Remove(ref string) (int, error) {
	unlock, err := l.lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	desc, err := l.Lookup(ref)
	if err != nil {
		return 0, fmt.Errorf("remove %s: %w", ref, err)
	}
	err = l.updateIndexLocked(func(idx *Index) error {
		drop := []string{ref}
		stillTagged := slices.ContainsFunc(idx.Manifests, func(d Descriptor) bool {
			r := d.Annotations[AnnotationRefName]
			return r != ref && r != "" && d.Digest == desc.Digest
		})
		if !stillTagged {
			drop = append(drop, helperTags(idx, desc.Digest)...)
		}
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d Descriptor) bool {
			r := d.Annotations[AnnotationRefName]
			// Untagged entries about the image (referrers listed in index.json) go with it.
			return slices.Contains(drop, r) || (!stillTagged && r == "" && d.Digest == desc.Digest)
		})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("remove %s: %w", ref, err)
	}
	n, err := l.collectGarbage()
	if err != nil {
		return n, fmt.Errorf("remove %s: %w", ref, err)
	}
	return n, nil
}

// reachable adds d and everything it references (index entries, config, layers) to set. A
// referrer's subject is not followed: signatures do not keep their image alive.
func (l *Layout) reachable(d Descriptor, set map[string]bool) error {
	if set[d.Digest] {
		return nil
	}
	set[d.Digest] = true
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
		set[m.Config.Digest] = true
		for _, layer := range m.Layers {
			set[layer.Digest] = true
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
	keep := map[string]bool{}
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
		if !keep["sha256:"+e.Name()] {
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
// form `ig image export` writes and Import reads). Every blob is digest-checked on the way.
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
	blobs := map[string]bool{}
	for _, ref := range refs {
		desc, err := l.Resolve(ref)
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
		for _, d := range entries {
			if err := l.reachable(d, blobs); err != nil {
				return fmt.Errorf("export %s: %w", ref, err)
			}
			setTag(&out, d.Annotations[AnnotationRefName], d)
		}
	}
	if strings.HasSuffix(dst, ".tar") {
		return l.exportTar(dst, out, blobs)
	}
	target, err := Open(dst)
	if err != nil {
		return err
	}
	for digest := range blobs {
		if err := l.copyBlobTo(target, digest); err != nil {
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

func (l *Layout) copyBlobTo(target *Layout, digest string) error {
	data, err := l.readBlobByDigest(digest)
	if err != nil {
		return err
	}
	_, err = target.WriteBlob("", data)
	return err
}

// readBlobByDigest reads a blob whose size is not known from a descriptor, checking its
// digest.
func (l *Layout) readBlobByDigest(digest string) ([]byte, error) {
	h, err := DigestHex(digest)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(l.blobPath(h))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", digest, err)
	}
	return l.ReadBlob(Descriptor{MediaType: "application/octet-stream", Digest: digest, Size: fi.Size()})
}

func (l *Layout) exportTar(dst string, idx Index, blobs map[string]bool) (err error) {
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
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	slices.Sort(digests)
	for _, d := range digests {
		data, err := l.readBlobByDigest(d)
		if err != nil {
			return err
		}
		h, _ := DigestHex(d)
		if err := add("blobs/sha256/"+h, data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Sync()
}
