package oci

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Image is one user-facing tag of the layout. It is bpfleet's own output (`image list -o
// json`), not an OCI structure, so its JSON keys are snake_case like the rest of the CLI's.
type Image struct {
	Ref       string `json:"ref"`
	Digest    string `json:"digest"`
	MediaType string `json:"media_type"`
	Size      int64  `json:"size"`
	Created   string `json:"created,omitempty"`
}

// helperTag matches tags that tools derive from an image digest: cosign's `sha256-<hex>.sig`,
// `.att` and `.sbom`, and the OCI 1.1 referrers fallback tag `sha256-<hex>`, bare or as a full
// reference (`registry/repo:sha256-<hex>.sig`, as `crane pull --annotate-ref` writes them).
var helperTag = regexp.MustCompile(`^(.*:)?sha256-[0-9a-f]{64}(\.[a-z]+)?$`)

// imageTag is the OCI distribution reference grammar without a digest: an optional registry
// host (as Docker tells one: localhost, or a name with a dot or a port), slash-separated
// lowercase path components, an optional tag. Hosts are lowercase only, unlike Docker's: policy
// scopes compare names as written, and GHCR.IO must not pass for another registry than ghcr.io.
var imageTag = regexp.MustCompile(`^(?:(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::[0-9]+)?/|[a-z0-9-]+:[0-9]+/)?` +
	`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?$`)

// IsHelperTag reports whether ref is a digest-derived helper tag rather than an image name.
func IsHelperTag(ref string) bool { return helperTag.MatchString(ref) }

// CheckImageTag checks a name a user gives an image (`bpfleet image tag`). Besides what every
// tag must be, it refuses the digest-derived helper tags, since an image tagged so replaces
// and hides the signature or referrer index kept there, and names Resolve would read as a
// digest or a pinned reference, which could then not be resolved as the tag.
func CheckImageTag(ref string) error {
	if err := validateRef(ref); err != nil {
		return err
	}
	if IsHelperTag(ref) {
		return fmt.Errorf("invalid tag %q: tags of the form sha256-<digest>, .sig, .att or .sbom are reserved for signatures, attestations and referrers", ref)
	}
	return nil
}

// List returns the tagged images sorted by reference, leaving out helper tags (signatures,
// attestations, referrers), which stay in the layout. Created comes from the index.json entry,
// else from the image's own annotations; it is left empty if that blob cannot be read, since
// listing is for display and verification reports damaged images itself.
func (l *Layout) List() ([]Image, error) {
	idx, err := l.Index()
	if err != nil {
		return nil, err
	}
	out := []Image{} // an empty store lists as [], not null, in JSON
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

// Resolve finds the index.json entry for ref:
//  1. a digest "sha256:<hex>", or a prefix of one such as `image list` shows, of a top-level
//     entry that is not a helper tag (never a tag, whatever it is called);
//  2. a pinned reference NAME@sha256:<hex> (see resolvePinned);
//  3. otherwise the tag ref exactly (helper tags included);
//  4. ref + ":latest" when ref names no tag;
//  5. when ref has no "/", a unique image whose last path component is ref (e.g. "trace_open"
//     or "trace_open:v1" for "ghcr.io/x/trace_open:v1"), preferring ":latest" when ref has no
//     tag, then ignoring the tag.
//
// Every command that takes an image reference goes through here, so that they all accept the
// same names. Errors wrap ErrNotFound or ErrAmbiguous (listing the candidates).
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
	// A digest, or a name pinned to one, names content, never a tag (even one a store made
	// before tags spelled like digests were refused): running by digest must run that digest.
	if isDigestRef(ref) {
		return resolveDigest(entries, ref)
	}
	if name, digest, pinned := strings.Cut(ref, "@"); pinned {
		return resolvePinned(entries, ref, name, digest)
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
	if strings.Contains(ref, "/") {
		return Descriptor{}, fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}

	// Short names. Without a tag, the name must be one repository's: were it to prefer some
	// repository's :latest, an image imported under another registry could take the name over.
	if !hasTag {
		var repos []string
		for name := range tags {
			if repo := Repository(name); !IsHelperTag(name) && repo[strings.LastIndex(repo, "/")+1:] == ref && !slices.Contains(repos, repo) {
				repos = append(repos, repo)
			}
		}
		if len(repos) > 1 {
			slices.Sort(repos)
			return Descriptor{}, fmt.Errorf("image %q: %w: it names images of %s; give the repository", ref, ErrAmbiguous, strings.Join(repos, ", "))
		}
	}
	// Then the last component with its tag, then without.
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

// isDigestRef reports whether ref names an image by (a prefix of) its digest rather than by a
// tag. Resolve tries an exact tag first, so a tag spelled like a digest still resolves as a tag.
func isDigestRef(ref string) bool { return strings.HasPrefix(ref, "sha256:") }

// resolveDigest finds the image whose digest is, or starts with, ref. Entries under helper tags
// (signatures, referrer indexes) are not images and are left out. Several entries with the
// same digest are one image; a prefix matching several digests is ambiguous.
func resolveDigest(entries []Descriptor, ref string) (Descriptor, error) {
	h := strings.TrimPrefix(ref, "sha256:")
	if h == "" || len(h) > 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return Descriptor{}, fmt.Errorf("image %q: %w: a digest is sha256: and up to 64 lowercase hex digits", ref, ErrNotFound)
	}
	var found []Descriptor
	for _, d := range entries {
		tag, tagged := d.Annotations[AnnotationRefName]
		if (tagged && IsHelperTag(tag)) || !strings.HasPrefix(d.Digest, ref) {
			continue
		}
		if !slices.ContainsFunc(found, func(f Descriptor) bool { return f.Digest == d.Digest }) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return Descriptor{}, fmt.Errorf("image %s: %w: no image has this digest", ref, ErrNotFound)
	case 1:
		return found[0], nil
	}
	digests := make([]string, len(found))
	for i, d := range found {
		digests[i] = d.Digest
	}
	slices.Sort(digests)
	return Descriptor{}, fmt.Errorf("image %s: %w: matches %s", ref, ErrAmbiguous, strings.Join(digests, ", "))
}

// resolvePinned resolves ref = name@digest: the digest (in full) selects the image, and name
// must be one of its tags, spelled as namesTag accepts. The entry returned is that tag's.
func resolvePinned(entries []Descriptor, ref, name, digest string) (Descriptor, error) {
	if _, err := DigestHex(digest); err != nil {
		return Descriptor{}, fmt.Errorf("image %q: %w", ref, err)
	}
	if name == "" {
		return Descriptor{}, fmt.Errorf("image %q: %w: no name before @ (give the digest alone, or NAME@%s)", ref, ErrNotFound, digest)
	}
	present := false
	var elsewhere []string
	for _, d := range entries {
		present = present || d.Digest == digest
		tag, tagged := d.Annotations[AnnotationRefName]
		if !tagged || IsHelperTag(tag) || !namesTag(name, tag) {
			continue
		}
		if d.Digest == digest {
			return d, nil
		}
		elsewhere = append(elsewhere, tag+" is "+d.Digest)
	}
	slices.Sort(elsewhere)
	switch {
	case !present && len(elsewhere) > 0:
		return Descriptor{}, fmt.Errorf("image %q: %w: no image has digest %s, and %s", ref, ErrNotFound, digest, strings.Join(elsewhere, ", "))
	case !present:
		return Descriptor{}, fmt.Errorf("image %q: %w: no image has digest %s", ref, ErrNotFound, digest)
	case len(elsewhere) > 0:
		return Descriptor{}, fmt.Errorf("image %q: %w: %s points elsewhere: %s", ref, ErrNotFound, name, strings.Join(elsewhere, ", "))
	}
	return Descriptor{}, fmt.Errorf("image %q: %w: %s is not a tag of %s", ref, ErrNotFound, name, digest)
}

// namesTag reports whether the name part of a pinned reference names tag: as the tag itself,
// as its repository (docker's NAME@DIGEST), or, for a name without "/", as their last path
// component (the short names Resolve accepts).
func namesTag(name, tag string) bool {
	repo := Repository(tag)
	if name == tag || name == repo {
		return true
	}
	last := func(s string) string { return s[strings.LastIndex(s, "/")+1:] }
	return !strings.Contains(name, "/") && (name == last(tag) || name == last(repo))
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
