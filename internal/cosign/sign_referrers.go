package cosign

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/bpfleet/bpfleet/internal/oci"
)

// DSSEPayloadTypeInToto is the DSSE payload type of an in-toto statement.
const DSSEPayloadTypeInToto = "application/vnd.in-toto+json"

// PAE is DSSE's pre-authentication encoding: the bytes a DSSE signature covers.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

// WriteReferrerSignature signs image (an index or manifest descriptor in l) in cosign's OCI
// 1.1 referrer format: a manifest of artifact type ArtifactTypeSignature whose subject is the
// image and whose layer is the simple-signing payload, listed under the referrers fallback tag
// (`sha256-<hex>`) as registries without the referrers API do.
func WriteReferrerSignature(l *oci.Layout, image oci.Descriptor, key *ecdsa.PrivateKey, dockerReference string) (oci.Descriptor, error) {
	payload, err := NewPayload(image.Digest, dockerReference)
	if err != nil {
		return oci.Descriptor{}, err
	}
	sig, err := Sign(key, payload)
	if err != nil {
		return oci.Descriptor{}, err
	}
	layer, err := l.WriteBlob(MediaTypeSimpleSigning, payload)
	if err != nil {
		return oci.Descriptor{}, err
	}
	layer.Annotations = map[string]string{AnnotationSignature: base64.StdEncoding.EncodeToString(sig)}
	return writeReferrer(l, image, ArtifactTypeSignature, layer)
}

// WriteBundle signs image with a key as cosign v3 does by default: a Sigstore bundle v0.3
// holding a DSSE envelope around an in-toto statement (subject: the image digest, predicate
// type PredicateTypeSign), stored as an OCI 1.1 referrer. The bundle has no transparency-log
// entry: it is made offline, and verified against trusted keys (`cosign verify --key
// --insecure-ignore-tlog`).
func WriteBundle(l *oci.Layout, image oci.Descriptor, key *ecdsa.PrivateKey, name string) (oci.Descriptor, error) {
	hexDigest, err := oci.DigestHex(image.Digest)
	if err != nil {
		return oci.Descriptor{}, err
	}
	statement, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": name, "digest": map[string]string{"sha256": hexDigest}}},
		"predicateType": PredicateTypeSign,
		"predicate":     map[string]any{},
	})
	if err != nil {
		return oci.Descriptor{}, err
	}
	sig, err := Sign(key, PAE(DSSEPayloadTypeInToto, statement))
	if err != nil {
		return oci.Descriptor{}, err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return oci.Descriptor{}, err
	}
	hint := sha256.Sum256(der)
	bundle, err := json.Marshal(map[string]any{
		"mediaType": ArtifactTypeBundle,
		"verificationMaterial": map[string]any{
			"publicKey":   map[string]string{"hint": base64.StdEncoding.EncodeToString(hint[:])},
			"tlogEntries": []any{},
		},
		"dsseEnvelope": map[string]any{
			"payload":     statement,
			"payloadType": DSSEPayloadTypeInToto,
			"signatures":  []any{map[string]any{"sig": sig, "keyid": ""}},
		},
	})
	if err != nil {
		return oci.Descriptor{}, err
	}
	layer, err := l.WriteBlob(ArtifactTypeBundle, bundle)
	if err != nil {
		return oci.Descriptor{}, err
	}
	return writeReferrer(l, image, ArtifactTypeBundle, layer)
}

// writeReferrer writes a referrer manifest with an empty config and lists it under the
// subject's referrers fallback tag, retrying if another writer updates that list meanwhile.
func writeReferrer(l *oci.Layout, subject oci.Descriptor, artifactType string, layer oci.Descriptor) (oci.Descriptor, error) {
	config, err := l.WriteBlob("application/vnd.oci.empty.v1+json", []byte("{}"))
	if err != nil {
		return oci.Descriptor{}, err
	}
	data, err := json.Marshal(oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest, ArtifactType: artifactType,
		Config: config, Layers: []oci.Descriptor{layer},
		Subject: &oci.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}})
	if err != nil {
		return oci.Descriptor{}, err
	}
	m, err := l.WriteBlob(oci.MediaTypeManifest, data)
	if err != nil {
		return oci.Descriptor{}, err
	}
	tag, err := ReferrersTag(subject.Digest)
	if err != nil {
		return oci.Descriptor{}, err
	}
	listed := m
	listed.ArtifactType = artifactType
	for range maxTagRetries {
		list := oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex}
		prevDigest := ""
		if prev, err := l.Lookup(tag); err == nil {
			if list, err = l.ReadIndex(prev); err != nil {
				return oci.Descriptor{}, err
			}
			prevDigest = prev.Digest
		} else if !errors.Is(err, oci.ErrNotFound) {
			return oci.Descriptor{}, err
		}
		list.Manifests = append(list.Manifests, listed)
		data, err := json.Marshal(list)
		if err != nil {
			return oci.Descriptor{}, err
		}
		idx, err := l.WriteBlob(oci.MediaTypeIndex, data)
		if err != nil {
			return oci.Descriptor{}, err
		}
		err = l.TagIfUnchanged(tag, prevDigest, idx)
		if !errors.Is(err, oci.ErrTagChanged) {
			return m, err
		}
	}
	return oci.Descriptor{}, fmt.Errorf("list referrer of %s: %w %d times", subject.Digest, oci.ErrTagChanged, maxTagRetries)
}
