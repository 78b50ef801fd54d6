package cosign

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bpfleet/bpfleet/internal/oci"
)

// Signature is one cosign signature found in a layout.
type Signature struct {
	// Payload is the signed simple-signing JSON, exactly as stored.
	Payload []byte
	// Signature is the raw signature, decoded from the layer's base64 annotation.
	Signature []byte
	// Layer is the payload layer the signature was read from.
	Layer oci.Descriptor
}

// SignatureTag returns cosign's tag for the signatures of an image digest: "sha256-<hex>.sig".
func SignatureTag(digest string) (string, error) {
	h, err := oci.DigestHex(digest)
	if err != nil {
		return "", err
	}
	return "sha256-" + h + ".sig", nil
}

// sigConfig is the image config cosign writes for a signature manifest (go-containerregistry's
// ConfigFile of an empty image with the payload layers appended): one zero-time history entry
// and one diff ID per layer. Field order matches, so the bytes are identical to cosign's.
type sigConfig struct {
	Architecture string       `json:"architecture"`
	Created      string       `json:"created"`
	History      []sigHistory `json:"history"`
	OS           string       `json:"os"`
	RootFS       sigRootFS    `json:"rootfs"`
	Config       struct{}     `json:"config"`
}

type sigHistory struct {
	Created string `json:"created"`
}

type sigRootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

const zeroTime = "0001-01-01T00:00:00Z"

func signatureConfig(layers []oci.Descriptor) ([]byte, error) {
	cfg := sigConfig{Created: zeroTime, RootFS: sigRootFS{Type: "layers"}}
	for _, l := range layers {
		cfg.History = append(cfg.History, sigHistory{Created: zeroTime})
		// The payload layers are uncompressed, so a layer's diff ID is its digest.
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.Digest)
	}
	return json.Marshal(cfg)
}

// maxTagRetries bounds how often WriteSignature retries when another writer changes the
// signature tag between its read and its write.
const maxTagRetries = 5

// WriteSignature stores a signature of digest in l the way cosign does: as a layer of the
// manifest tagged SignatureTag(digest), the payload as the layer blob and the base64 signature
// in its AnnotationSignature annotation. An existing signature manifest gets the layer
// appended (cosign accumulates signatures) unless the same payload and signature are already
// there. It returns the signature manifest's descriptor.
func WriteSignature(l *oci.Layout, digest string, payload, sig []byte) (oci.Descriptor, error) {
	tag, err := SignatureTag(digest)
	if err != nil {
		return oci.Descriptor{}, fmt.Errorf("write signature: %w", err)
	}
	for range maxTagRetries {
		desc, err := appendSignature(l, tag, payload, sig)
		if !errors.Is(err, oci.ErrTagChanged) {
			if err != nil {
				return oci.Descriptor{}, fmt.Errorf("write signature for %s: %w", digest, err)
			}
			return desc, nil
		}
	}
	return oci.Descriptor{}, fmt.Errorf("write signature for %s: %w %d times", digest, oci.ErrTagChanged, maxTagRetries)
}

func appendSignature(l *oci.Layout, tag string, payload, sig []byte) (oci.Descriptor, error) {
	encoded := base64.StdEncoding.EncodeToString(sig)
	manifest := oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest}
	prev, err := l.Lookup(tag)
	switch {
	case err == nil:
		if manifest, err = l.ReadManifest(prev); err != nil {
			return oci.Descriptor{}, err
		}
	case errors.Is(err, oci.ErrNotFound):
	default:
		return oci.Descriptor{}, err
	}

	payloadDigest := oci.Digest(payload)
	for _, layer := range manifest.Layers {
		if layer.Digest == payloadDigest && layer.Annotations[AnnotationSignature] == encoded {
			return prev, nil
		}
	}
	layer, err := l.WriteBlob(MediaTypeSimpleSigning, payload)
	if err != nil {
		return oci.Descriptor{}, err
	}
	layer.Annotations = map[string]string{AnnotationSignature: encoded}
	manifest.Layers = append(manifest.Layers, layer)

	cfg, err := signatureConfig(manifest.Layers)
	if err != nil {
		return oci.Descriptor{}, err
	}
	if manifest.Config, err = l.WriteBlob(oci.MediaTypeImageConfig, cfg); err != nil {
		return oci.Descriptor{}, err
	}
	data, err := json.Marshal(manifest)
	if err != nil {
		return oci.Descriptor{}, err
	}
	desc, err := l.WriteBlob(oci.MediaTypeManifest, data)
	if err != nil {
		return oci.Descriptor{}, err
	}
	if err := l.TagIfUnchanged(tag, prev.Digest, desc); err != nil {
		return oci.Descriptor{}, err
	}
	return desc, nil
}

// ReadSignatures returns the cosign signatures stored in l for digest, in index.json and
// manifest order; none (and no error) when the image has no signature manifest. Signature
// manifests are found three ways:
//   - tagged SignatureTag(digest), as cosign pushes them and IG's store and bpfleetctl keep
//     them;
//   - tagged "<repository>:"+SignatureTag(digest), as tools that annotate full references
//     write them (`crane pull --format=oci --annotate-ref`);
//   - untagged and annotated AnnotationKind: KindSignatures, as `cosign save` writes them.
//     Such a manifest does not say which image it belongs to (the saved layout held one
//     image, but imports merge layouts), so only its payloads that contain digest as a JSON
//     string are returned: that is a filter, not a check (it can only leave signatures out;
//     the caller still verifies each signature and then parses the payload strictly).
//
// Payloads are read with their digest checked. A tagged signature manifest or payload that
// cannot be read is reported in the error, which joins one error per such manifest; the
// signatures that could be read are returned alongside it. An unreadable `cosign save`
// manifest is left out silently, since it may belong to any image of the layout.
func ReadSignatures(l *oci.Layout, digest string) ([]Signature, error) {
	tag, err := SignatureTag(digest)
	if err != nil {
		return nil, err
	}
	idx, err := l.Index()
	if err != nil {
		return nil, err
	}
	quoted := []byte(`"` + digest + `"`)
	var (
		sigs []Signature
		errs []error
		seen = map[string]bool{}
	)
	for _, d := range idx.Manifests {
		name, named := d.Annotations[oci.AnnotationRefName]
		saved := !named && d.Annotations[AnnotationKind] == KindSignatures
		if !(named && hasTag(name, tag)) && !saved || seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		if !named {
			name = d.Digest
		}
		manifest, err := l.ReadManifest(d)
		var found []Signature
		if err == nil {
			found, err = readSimpleSigningLayers(l, manifest.Layers)
		}
		if err != nil {
			// A saved manifest that cannot be read may well be another image's: that
			// image's verification reports it.
			if !saved {
				errs = append(errs, fmt.Errorf("signature manifest %s: %w", name, err))
			}
			continue
		}
		for _, s := range found {
			if !saved || bytes.Contains(s.Payload, quoted) {
				sigs = append(sigs, s)
			}
		}
	}
	return sigs, errors.Join(errs...)
}

// hasTag reports whether the ref name annotation name is tag: the bare tag, or a full
// reference "<repository>:<tag>".
func hasTag(name, tag string) bool {
	return name == tag || strings.HasSuffix(name, ":"+tag)
}

// `cosign save` tags nothing: it marks each index.json entry of the layout it writes with an
// AnnotationKind annotation, the signature manifest's being KindSignatures.
const (
	AnnotationKind = "kind"
	KindSignatures = "dev.cosignproject.cosign/sigs"
	KindImage      = "dev.cosignproject.cosign/image"
	KindImageIndex = "dev.cosignproject.cosign/imageIndex"
)

// SavedImages returns the digests of the images `cosign save` wrote into l: untagged
// index.json entries marked KindImage or KindImageIndex, in index order, each once.
func SavedImages(l *oci.Layout) ([]string, error) {
	idx, err := l.Index()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range idx.Manifests {
		if _, named := d.Annotations[oci.AnnotationRefName]; named {
			continue
		}
		if k := d.Annotations[AnnotationKind]; (k == KindImage || k == KindImageIndex) && !slices.Contains(out, d.Digest) {
			out = append(out, d.Digest)
		}
	}
	return out, nil
}
