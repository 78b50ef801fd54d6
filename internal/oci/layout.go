package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"
)

const layoutVersion = "1.0.0"

// Layout is an OCI image layout directory.
type Layout struct {
	dir string
}

// Open opens the layout at dir, creating the directory, the `oci-layout` marker and an empty
// index.json if they are missing.
func Open(dir string) (*Layout, error) {
	l := &Layout{dir: dir}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("open layout: %w", err)
	}
	unlock, err := l.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	marker, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = l.writeAtomic(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"`+layoutVersion+`"}`))
	case err == nil:
		err = checkMarker(marker)
	}
	if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", dir, err)
	}
	if _, err := os.Stat(l.indexPath()); errors.Is(err, fs.ErrNotExist) {
		err = l.writeIndex(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{}})
		if err != nil {
			return nil, fmt.Errorf("open layout %s: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", dir, err)
	}
	return l, nil
}

// Dir is the layout's directory.
func (l *Layout) Dir() string { return l.dir }

func checkMarker(data []byte) error {
	var m struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("oci-layout: %w", err)
	}
	if m.Version != layoutVersion {
		return fmt.Errorf("oci-layout: unsupported imageLayoutVersion %q", m.Version)
	}
	return nil
}

func (l *Layout) indexPath() string { return filepath.Join(l.dir, "index.json") }

func (l *Layout) blobPath(hex string) string { return filepath.Join(l.dir, "blobs", "sha256", hex) }

// Index reads the layout's index.json: every tagged (and untagged) top-level entry.
func (l *Layout) Index() (Index, error) {
	return readIndexFile(l.indexPath())
}

func readIndexFile(path string) (Index, error) {
	data, err := readCapped(path, path, MaxManifestSize)
	if err != nil {
		return Index{}, err
	}
	return parseIndexFile(data, path)
}

// parseIndexFile parses an index.json; name is the file as errors call it.
func parseIndexFile(data []byte, name string) (Index, error) {
	var idx Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return Index{}, fmt.Errorf("parse %s: %w", name, err)
	}
	if idx.SchemaVersion != 2 {
		return Index{}, fmt.Errorf("%s: unsupported schemaVersion %d", name, idx.SchemaVersion)
	}
	return idx, nil
}

// readCapped reads the file at path, refusing one over limit bytes; errors call it name.
func readCapped(path, name string, limit int64) ([]byte, error) {
	// The path an *fs.PathError carries is replaced by name.
	withoutPath := func(err error) error {
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			return pe.Err
		}
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, withoutPath(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, withoutPath(err))
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: %w (limit %d bytes)", name, ErrTooLarge, limit)
	}
	return data, nil
}

// ReadBlob returns the content of the blob desc names after checking that it has exactly
// desc.Size bytes and hashes to desc.Digest; otherwise the error wraps ErrBlobMismatch and
// names the digest. Blobs over MaxBlobSize are refused without being read.
func (l *Layout) ReadBlob(desc Descriptor) ([]byte, error) {
	if err := checkDescriptor(desc); err != nil {
		return nil, err
	}
	hex, _ := DigestHex(desc.Digest) // checked above
	// O_NONBLOCK: opening a FIFO planted in the store must not block.
	f, err := os.OpenFile(l.blobPath(hex), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s (%s): %w", desc.Digest, desc.MediaType, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	defer f.Close()
	// Only regular files: a FIFO or device would block or stream forever.
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("blob %s (%s): %w: not a regular file", desc.Digest, desc.MediaType, ErrBlobMismatch)
	}
	// One byte more than expected, so a grown file is detected without reading it all.
	data, err := io.ReadAll(io.LimitReader(f, desc.Size+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	if int64(len(data)) != desc.Size {
		return nil, fmt.Errorf("blob %s (%s): %w: size on disk differs from %d bytes", desc.Digest, desc.MediaType, ErrBlobMismatch, desc.Size)
	}
	if got := Digest(data); got != desc.Digest {
		return nil, fmt.Errorf("blob %s (%s): %w: content hashes to %s", desc.Digest, desc.MediaType, ErrBlobMismatch, got)
	}
	return data, nil
}

// ReadIndex reads and parses the image index desc points to (digest-checked).
func (l *Layout) ReadIndex(desc Descriptor) (Index, error) {
	if !IsIndex(desc.MediaType) {
		return Index{}, fmt.Errorf("blob %s: media type %q is not an image index", desc.Digest, desc.MediaType)
	}
	var idx Index
	if err := l.readJSON(desc, &idx.MediaType, &idx); err != nil {
		return Index{}, err
	}
	return idx, nil
}

// ReadManifest reads and parses the image manifest desc points to (digest-checked).
func (l *Layout) ReadManifest(desc Descriptor) (Manifest, error) {
	if !IsManifest(desc.MediaType) {
		return Manifest{}, fmt.Errorf("blob %s: media type %q is not an image manifest", desc.Digest, desc.MediaType)
	}
	var m Manifest
	if err := l.readJSON(desc, &m.MediaType, &m); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// readJSON decodes a manifest or index blob into v and checks that the mediaType it declares
// (read into *mediaType), if any, agrees with the descriptor.
func (l *Layout) readJSON(desc Descriptor, mediaType *string, v any) error {
	if desc.Size > MaxManifestSize {
		return fmt.Errorf("blob %s: %w: %d bytes for a manifest (limit %d)", desc.Digest, ErrTooLarge, desc.Size, MaxManifestSize)
	}
	data, err := l.ReadBlob(desc)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parse %s: %w", desc.Digest, err)
	}
	if *mediaType != "" && *mediaType != desc.MediaType {
		return fmt.Errorf("blob %s: declares media type %q, descriptor says %q", desc.Digest, *mediaType, desc.MediaType)
	}
	return nil
}

// WriteBlob stores data as a blob and returns its descriptor. An existing blob with the same
// digest is replaced by the same bytes, which also repairs a damaged copy.
func (l *Layout) WriteBlob(mediaType string, data []byte) (Descriptor, error) {
	desc := Descriptor{MediaType: mediaType, Digest: Digest(data), Size: int64(len(data))}
	if err := checkDescriptor(desc); err != nil {
		return Descriptor{}, err
	}
	hex, _ := DigestHex(desc.Digest) // computed above
	if err := l.writeAtomic(l.blobPath(hex), data); err != nil {
		return Descriptor{}, fmt.Errorf("write blob %s: %w", desc.Digest, err)
	}
	return desc, nil
}

// Lookup returns the index.json entry tagged exactly ref, or an error wrapping ErrNotFound.
func (l *Layout) Lookup(ref string) (Descriptor, error) {
	idx, err := l.Index()
	if err != nil {
		return Descriptor{}, err
	}
	for _, d := range idx.Manifests {
		if d.Annotations[AnnotationRefName] == ref {
			return d, nil
		}
	}
	return Descriptor{}, fmt.Errorf("tag %q: %w", ref, ErrNotFound)
}

// Tag points ref at desc, whose blob must already be in the layout. An existing tag is repointed.
func (l *Layout) Tag(ref string, desc Descriptor) error {
	return l.tag(ref, desc, nil)
}

// TagIfUnchanged is Tag as a compare-and-swap: it repoints ref only if it still points at
// digest prev ("" meaning untagged), and otherwise fails with ErrTagChanged. Read-modify-write
// users (appending a signature) retry on that error instead of losing a concurrent update.
func (l *Layout) TagIfUnchanged(ref, prev string, desc Descriptor) error {
	return l.tag(ref, desc, &prev)
}

func (l *Layout) tag(ref string, desc Descriptor, prev *string) error {
	if err := validateRef(ref); err != nil {
		return err
	}
	if err := checkDescriptor(desc); err != nil {
		return fmt.Errorf("tag %s: %w", ref, err)
	}
	hex, _ := DigestHex(desc.Digest)
	fi, err := os.Stat(l.blobPath(hex))
	if err != nil {
		return fmt.Errorf("tag %s: blob %s: %w", ref, desc.Digest, err)
	}
	if fi.Size() != desc.Size {
		return fmt.Errorf("tag %s: blob %s: %w: %d bytes on disk, descriptor says %d", ref, desc.Digest, ErrBlobMismatch, fi.Size(), desc.Size)
	}
	return l.updateIndex(func(idx *Index) error {
		if prev != nil {
			cur := ""
			for _, d := range idx.Manifests {
				if d.Annotations[AnnotationRefName] == ref {
					cur = d.Digest
				}
			}
			if cur != *prev {
				return fmt.Errorf("tag %s: %w: now %q, expected %q", ref, ErrTagChanged, cur, *prev)
			}
		}
		setTag(idx, ref, desc)
		return nil
	})
}

func validateRef(ref string) error {
	if ref == "" || len(ref) > 512 {
		return fmt.Errorf("invalid reference %q: empty or longer than 512 bytes", ref)
	}
	if strings.ContainsFunc(ref, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return fmt.Errorf("invalid reference %q: contains spaces or control characters", ref)
	}
	// Such a tag would stand for another image wherever a digest or a pinned reference is
	// accepted (Resolve, and a policy scope naming a digest).
	switch {
	case isDigestRef(ref):
		return fmt.Errorf("invalid tag %q: it reads as a digest", ref)
	case strings.Contains(ref, "@"):
		return fmt.Errorf("invalid tag %q: NAME@DIGEST pins a digest, a tag has no @", ref)
	case !imageTag.MatchString(ref):
		return fmt.Errorf("invalid tag %q: want [registry/]path[:tag]: a lowercase host, path components of lowercase letters, digits and . _ - separators, a tag of letters, digits, _ . - (at most 128)", ref)
	}
	return nil
}

// setTag makes desc the only entry of idx tagged ref, in the place of the previous one if any,
// so that repointing or re-importing keeps index.json in a stable order.
func setTag(idx *Index, ref string, desc Descriptor) {
	entry := desc
	entry.Annotations = maps.Clone(desc.Annotations)
	if entry.Annotations == nil {
		entry.Annotations = map[string]string{}
	}
	entry.Annotations[AnnotationRefName] = ref
	kept := make([]Descriptor, 0, len(idx.Manifests)+1)
	placed := false
	for _, d := range idx.Manifests {
		switch {
		case d.Annotations[AnnotationRefName] != ref:
			kept = append(kept, d)
		case !placed:
			kept = append(kept, entry)
			placed = true
		}
	}
	if !placed {
		kept = append(kept, entry)
	}
	idx.Manifests = kept
}

// updateIndex applies fn to index.json under the layout lock and replaces the file atomically.
func (l *Layout) updateIndex(fn func(*Index) error) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return l.updateIndexLocked(fn)
}

// updateIndexLocked is updateIndex for a caller that already holds the layout lock.
func (l *Layout) updateIndexLocked(fn func(*Index) error) error {
	idx, err := l.Index()
	if err != nil {
		return err
	}
	if err := fn(&idx); err != nil {
		return err
	}
	return l.writeIndex(idx)
}

func (l *Layout) writeIndex(idx Index) error {
	data, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("encode index.json: %w", err)
	}
	if err := l.writeAtomic(l.indexPath(), data); err != nil {
		return fmt.Errorf("write index.json: %w", err)
	}
	return nil
}

// createTemp makes a temporary file under ingest/, on the same file system as its final place
// so that rename is atomic (oras-go uses the same directory name for the same purpose).
func (l *Layout) createTemp(pattern string) (*os.File, error) {
	dir := filepath.Join(l.dir, "ingest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, pattern)
}

// writeAtomic replaces dst with data so that readers see the old or the new file, and the new
// one survives a power cut once this returns.
func (l *Layout) writeAtomic(dst string, data []byte) error {
	f, err := l.createTemp("write-*")
	if err != nil {
		return err
	}
	if err := finishTemp(f, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// finishTemp fills a temporary file, makes it world-readable like the rest of the layout,
// flushes it to disk and closes it. On error the file is removed.
func finishTemp(f *os.File, fill func(io.Writer) error) error {
	err := fill(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
