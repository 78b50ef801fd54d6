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

// Artifact types of OCI 1.1 referrers that carry image signatures.
const (
	// ArtifactTypeSignature: cosign's OCI 1.1 referrer signature (`cosign sign
	// --registry-referrers-mode=oci-1-1`). Its layers are simple-signing payloads with the
	// signature in the AnnotationSignature annotation, exactly as in the legacy `.sig` manifest.
	ArtifactTypeSignature = "application/vnd.dev.cosign.artifact.sig.v1+json"
	// ArtifactTypeBundle: a Sigstore bundle v0.3 (cosign v3's default). Its layer of the same
	// media type is the bundle JSON; for an image signature, a DSSE envelope around an in-toto
	// statement whose subject is the image digest and whose predicate type is
	// PredicateTypeSign.
	ArtifactTypeBundle = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// ArtifactTypeNotation: a Notary Project (notation) signature. bpfleet does not verify
	// these; they are recognised only to say so.
	ArtifactTypeNotation = "application/vnd.cncf.notary.signature"

	// PredicateTypeSign is the in-toto predicate type cosign v3 uses for an image signature
	// (as opposed to an attestation, which makes a claim about the image).
	PredicateTypeSign = "https://sigstore.dev/cosign/sign/v1"

	// MaxBundleSize bounds a bundle layer before it is read; a cosign image-signature bundle
	// is about 4 KiB even with a transparency-log proof and a timestamp.
	MaxBundleSize = 1 << 20
)

// Referrer is an OCI 1.1 referrer of an image, found in a layout: a manifest whose subject is
// the image's digest.
type Referrer struct {
	// Manifest is the referrer manifest's descriptor.
	Manifest oci.Descriptor
	// ArtifactType is the manifest's artifactType or, when that is empty, its config media
	// type (OCI image spec 1.1).
	ArtifactType string
	// Signatures are the simple-signing layers of an ArtifactTypeSignature referrer.
	Signatures []Signature
	// Bundles are the bundle layers of an ArtifactTypeBundle referrer, exactly as stored.
	Bundles [][]byte
}

// ReferrersTag returns the OCI 1.1 referrers fallback tag of an image digest: "sha256-<hex>".
func ReferrersTag(digest string) (string, error) {
	h, err := oci.DigestHex(digest)
	if err != nil {
		return "", err
	}
	return "sha256-" + h, nil
}

// ReadReferrers returns the referrers of digest found in l: every manifest listed in
// index.json, and every manifest listed by the referrers fallback tag index
// (ReferrersTag(digest), bare or as "<repository>:<tag>") when present, whose own subject
// (read from the digest-checked manifest, never from an index's say-so) is exactly digest.
// The result is in index.json order, without duplicates.
//
// For ArtifactTypeSignature and ArtifactTypeBundle referrers the signature layers are read
// (digest-checked); other artifact types are returned with their type only. A referrer that
// cannot be read (missing or damaged blob, bad annotation, oversized bundle) is left out and
// reported in the error, which joins one error per such referrer; the referrers that could be
// read are returned alongside it, so one broken attachment does not hide a good signature.
func ReadReferrers(l *oci.Layout, digest string) ([]Referrer, error) {
	fallback, err := ReferrersTag(digest)
	if err != nil {
		return nil, err
	}
	idx, err := l.Index()
	if err != nil {
		return nil, err
	}
	type candidate struct {
		desc oci.Descriptor
		// claimed: the entry says it is a referrer (an artifactType, or listed by the
		// fallback tag), so failing to read it is worth reporting.
		claimed bool
	}
	var (
		candidates []candidate
		errs       []error
	)
	for _, d := range idx.Manifests {
		if oci.IsManifest(d.MediaType) {
			candidates = append(candidates, candidate{d, d.ArtifactType != ""})
		}
		if hasTag(d.Annotations[oci.AnnotationRefName], fallback) && oci.IsIndex(d.MediaType) {
			listed, err := l.ReadIndex(d)
			if err != nil {
				errs = append(errs, fmt.Errorf("referrers tag %s: %w", fallback, err))
				continue
			}
			for _, m := range listed.Manifests {
				if oci.IsManifest(m.MediaType) {
					candidates = append(candidates, candidate{m, true})
				}
			}
		}
	}

	var out []Referrer
	seen := map[string]bool{}
	for _, c := range candidates {
		if seen[c.desc.Digest] {
			continue
		}
		seen[c.desc.Digest] = true
		r, ok, err := readReferrer(l, c.desc, digest)
		var bad *unreadableError
		if errors.As(err, &bad) && !c.claimed {
			// An unrelated image that cannot be read is not this verification's business
			// (verifying that image reports the damage), and oras-based stores leave
			// untagged entries whose blob is gone.
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("referrer %s: %w", c.desc.Digest, err))
			continue
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, errors.Join(errs...)
}

// unreadableError: the candidate manifest itself could not be read, so whether it is a
// referrer of the image is unknown.
type unreadableError struct{ err error }

func (e *unreadableError) Error() string { return e.err.Error() }
func (e *unreadableError) Unwrap() error { return e.err }

// readReferrer reads the manifest d and reports whether it refers to subject; an error
// reading d itself is an *unreadableError.
func readReferrer(l *oci.Layout, d oci.Descriptor, subject string) (Referrer, bool, error) {
	m, err := l.ReadManifest(d) // size-capped and digest-checked
	if err != nil {
		return Referrer{}, false, &unreadableError{err}
	}
	if m.Subject == nil || m.Subject.Digest != subject {
		return Referrer{}, false, nil
	}
	r := Referrer{Manifest: d, ArtifactType: m.ArtifactType}
	if r.ArtifactType == "" {
		r.ArtifactType = m.Config.MediaType
	}
	switch r.ArtifactType {
	case ArtifactTypeSignature:
		r.Signatures, err = readSimpleSigningLayers(l, m.Layers)
	case ArtifactTypeBundle:
		r.Bundles, err = readBundleLayers(l, m.Layers)
	}
	if err != nil {
		return Referrer{}, false, fmt.Errorf("%s: %w", r.ArtifactType, err)
	}
	return r, true, nil
}

// readSimpleSigningLayers reads simple-signing payload layers and their base64 signature
// annotations, as in a legacy `.sig` manifest.
func readSimpleSigningLayers(l *oci.Layout, layers []oci.Descriptor) ([]Signature, error) {
	var sigs []Signature
	for _, layer := range layers {
		if layer.MediaType != MediaTypeSimpleSigning {
			continue
		}
		if layer.Size > MaxPayloadSize {
			return nil, fmt.Errorf("signature payload %s: %d bytes (limit %d)", layer.Digest, layer.Size, MaxPayloadSize)
		}
		payload, err := l.ReadBlob(layer)
		if err != nil {
			return nil, fmt.Errorf("signature payload: %w", err)
		}
		sig, err := base64.StdEncoding.DecodeString(layer.Annotations[AnnotationSignature])
		if err != nil || len(sig) == 0 {
			return nil, fmt.Errorf("signature payload %s: annotation %s is missing or not base64", layer.Digest, AnnotationSignature)
		}
		sigs = append(sigs, Signature{Payload: payload, Signature: sig, Layer: layer})
	}
	return sigs, nil
}

// readBundleLayers reads the Sigstore bundle layers of a bundle referrer.
func readBundleLayers(l *oci.Layout, layers []oci.Descriptor) ([][]byte, error) {
	var bundles [][]byte
	for _, layer := range layers {
		if !strings.HasPrefix(layer.MediaType, "application/vnd.dev.sigstore.bundle") {
			continue
		}
		if layer.Size > MaxBundleSize {
			return nil, fmt.Errorf("bundle %s: %d bytes (limit %d)", layer.Digest, layer.Size, MaxBundleSize)
		}
		data, err := l.ReadBlob(layer)
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		bundles = append(bundles, data)
	}
	return bundles, nil
}

// Statement is the part of an in-toto statement (v0.1 or v1) that binds an image signature.
type Statement struct {
	// Type is the statement's _type.
	Type string
	// PredicateType says what the statement claims; PredicateTypeSign for a plain signature.
	PredicateType string
	// Subjects are the sha256 digests ("sha256:<hex>") of the statement's subjects, in order.
	Subjects []string
}

// In-toto statement types accepted by ParseStatement.
var statementTypes = []string{"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"}

// ParseStatement parses a signed in-toto statement strictly (it must already have been
// verified: call it only on bytes whose signature checked out) and requires that one of its
// subjects has exactly wantDigest as its sha256 digest. Errors wrap ErrPayload, or
// ErrWrongDigest when the statement is well formed but names other subjects.
func ParseStatement(raw []byte, wantDigest string) (Statement, error) {
	wantHex, err := oci.DigestHex(wantDigest)
	if err != nil {
		return Statement{}, err
	}
	if len(raw) > MaxPayloadSize {
		return Statement{}, fmt.Errorf("%w: statement of %d bytes (limit %d)", ErrPayload, len(raw), MaxPayloadSize)
	}
	if err := checkDuplicateKeys(raw); err != nil {
		return Statement{}, fmt.Errorf("%w: statement: %w", ErrPayload, err)
	}
	var doc struct {
		Type          string `json:"_type"`
		PredicateType string `json:"predicateType"`
		Subject       []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		return Statement{}, fmt.Errorf("%w: statement: %w", ErrPayload, err)
	}
	if dec.More() {
		return Statement{}, fmt.Errorf("%w: statement: trailing data", ErrPayload)
	}
	if !slices.Contains(statementTypes, doc.Type) {
		return Statement{}, fmt.Errorf("%w: statement _type %q is not an in-toto statement", ErrPayload, doc.Type)
	}
	st := Statement{Type: doc.Type, PredicateType: doc.PredicateType}
	for _, s := range doc.Subject {
		if h, ok := s.Digest["sha256"]; ok {
			st.Subjects = append(st.Subjects, "sha256:"+h)
		}
	}
	if len(st.Subjects) == 0 {
		return Statement{}, fmt.Errorf("%w: statement has no subject with a sha256 digest", ErrPayload)
	}
	for _, s := range doc.Subject {
		if s.Digest["sha256"] == wantHex {
			return st, nil
		}
	}
	return Statement{}, fmt.Errorf("%w: statement subjects %v, want %s", ErrWrongDigest, st.Subjects, wantDigest)
}
