package oci

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Image is one user-facing tag of the layout.
type Image struct {
	Ref       string `json:"ref"`
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
	Created   string `json:"created,omitempty"`
}

// helperTag matches tags that tools derive from an image digest: cosign's `sha256-<hex>.sig`,
// `.att` and `.sbom`, and the OCI 1.1 referrers fallback tag `sha256-<hex>`, bare or as a full
// reference (`registry/repo:sha256-<hex>.sig`, as `crane pull --annotate-ref` writes them).
var helperTag = regexp.MustCompile(`^(.*:)?sha256-[0-9a-f]{64}(\.[a-z]+)?$`)

// IsHelperTag reports whether ref is a digest-derived helper tag rather than an image name.
func IsHelperTag(ref string) bool { return helperTag.MatchString(ref) }

// List returns the tagged images sorted by reference, leaving out helper tags (signatures,
// attestations, referrers), which stay in the layout. Created comes from the index.json entry,
// else from the image's own annotations; it is left empty if that blob cannot be read, since
// listing is for display and verification reports damaged images itself.
func (l *Layout) List() ([]Image, error) {
	idx, err := l.Index()
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, d := range idx.Manifests {
		ref, ok := d.Annotations[AnnotationRefName]
		if !ok || IsHelperTag(ref) {
			continue
		}
		created := d.Annotations[AnnotationCreated]
		if created == "" && (IsIndex(d.MediaType) || IsManifest(d.MediaType)) && d.Size <= MaxManifestSize {
			if data, err := l.ReadBlob(d); err == nil {
				var doc struct {
					Annotations map[string]string `json:"annotations"`
				}
				if json.Unmarshal(data, &doc) == nil {
					created = doc.Annotations[AnnotationCreated]
				}
			}
		}
		out = append(out, Image{Ref: ref, Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, Created: created})
	}
	slices.SortFunc(out, func(a, b Image) int { return strings.Compare(a.Ref, b.Ref) })
	return out, nil
}

// Resolve finds the index.json entry for ref, trying in order:
//  1. the tag ref exactly (helper tags included);
//  2. ref + ":latest" when ref names no tag;
//  3. a digest "sha256:<hex>" of a top-level entry;
//  4. when ref has no "/", a unique image whose last path component is ref (e.g. "trace_open"
//     or "trace_open:v1" for "ghcr.io/x/trace_open:v1"), preferring ":latest" when ref has no
//     tag, then ignoring the tag.
//
// Errors wrap ErrNotFound or ErrAmbiguous (listing the candidates).
func (l *Layout) Resolve(ref string) (Descriptor, error) {
	idx, err := l.Index()
	if err != nil {
		return Descriptor{}, err
	}
	return resolve(idx.Manifests, ref)
}

func resolve(entries []Descriptor, ref string) (Descriptor, error) {
	if ref == "" {
		return Descriptor{}, fmt.Errorf("empty image reference: %w", ErrNotFound)
	}
	tags := map[string]Descriptor{}
	for _, d := range entries {
		if name, ok := d.Annotations[AnnotationRefName]; ok {
			tags[name] = d
		}
	}
	if d, ok := tags[ref]; ok {
		return d, nil
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	hasTag := strings.ContainsAny(last, ":@")
	if !hasTag {
		if d, ok := tags[ref+":latest"]; ok {
			return d, nil
		}
	}
	if strings.HasPrefix(ref, "sha256:") {
		for _, d := range entries {
			if d.Digest == ref {
				return d, nil
			}
		}
		return Descriptor{}, fmt.Errorf("image %s: %w", ref, ErrNotFound)
	}
	if strings.Contains(ref, "/") {
		return Descriptor{}, fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}

	// Short names: first the last component with its tag, then without.
	matchers := []func(short string) bool{
		func(short string) bool { return short == ref || (!hasTag && short == ref+":latest") },
	}
	if !hasTag {
		matchers = append(matchers, func(short string) bool {
			name, _, _ := strings.Cut(short, ":")
			return name == ref
		})
	}
	for _, match := range matchers {
		var found []string
		for name := range tags {
			if !IsHelperTag(name) && match(name[strings.LastIndex(name, "/")+1:]) {
				found = append(found, name)
			}
		}
		switch len(found) {
		case 0:
			continue
		case 1:
			return tags[found[0]], nil
		default:
			slices.Sort(found)
			return Descriptor{}, fmt.Errorf("image %q: %w: matches %s", ref, ErrAmbiguous, strings.Join(found, ", "))
		}
	}
	return Descriptor{}, fmt.Errorf("image %q: %w", ref, ErrNotFound)
}

// Repository returns ref without its tag or digest ("ghcr.io/a/b:v1" -> "ghcr.io/a/b"), the
// name cosign records as a signature's docker-reference. A registry port is kept.
func Repository(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}
