package verify

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// referrer describes an OCI 1.1 referrer manifest to attach to an image.
type referrer struct {
	artifactType string
	subject      string // digest; the image's when empty
	layers       []oci.Descriptor
}

// attach writes r as a referrer of image and lists it under the referrers fallback tag of
// listedFor (image's digest when empty). It returns the referrer manifest's descriptor.
func attach(t *testing.T, l *oci.Layout, image oci.Descriptor, r referrer, listedFor string) oci.Descriptor {
	t.Helper()
	subject := image
	if r.subject != "" {
		subject = oci.Descriptor{MediaType: oci.MediaTypeIndex, Digest: r.subject, Size: 1}
	}
	config, err := l.WriteBlob("application/vnd.oci.empty.v1+json", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest, ArtifactType: r.artifactType,
		Config: config, Layers: r.layers, Subject: &oci.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.WriteBlob(oci.MediaTypeManifest, data)
	if err != nil {
		t.Fatal(err)
	}
	if listedFor == "" {
		listedFor = image.Digest
	}
	tag, err := cosign.ReferrersTag(listedFor)
	if err != nil {
		t.Fatal(err)
	}
	var list oci.Index
	if prev, err := l.Lookup(tag); err == nil {
		if list, err = l.ReadIndex(prev); err != nil {
			t.Fatal(err)
		}
	} else {
		list = oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex}
	}
	listed := m
	listed.ArtifactType = r.artifactType
	list.Manifests = append(list.Manifests, listed)
	data, err = json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := l.WriteBlob(oci.MediaTypeIndex, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Tag(tag, idx); err != nil {
		t.Fatal(err)
	}
	return m
}

// bundleLayer stores a bundle blob and returns its layer descriptor.
func bundleLayer(t *testing.T, l *oci.Layout, bundleJSON []byte) oci.Descriptor {
	t.Helper()
	d, err := l.WriteBlob(cosign.ArtifactTypeBundle, bundleJSON)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// simpleSigningLayer stores a simple-signing payload with its signature annotation.
func simpleSigningLayer(t *testing.T, l *oci.Layout, s trust.Signature) oci.Descriptor {
	t.Helper()
	d, err := l.WriteBlob(cosign.MediaTypeSimpleSigning, s.Payload)
	if err != nil {
		t.Fatal(err)
	}
	d.Annotations = map[string]string{cosign.AnnotationSignature: base64.StdEncoding.EncodeToString(s.Signature)}
	return d
}

// keyedBundle returns a key-signed v0.3 bundle of a DSSE envelope over an in-toto statement.
func (s signer) keyedBundle(t *testing.T, subjectDigest, predicateType string) []byte {
	t.Helper()
	h, err := oci.DigestHex(subjectDigest)
	if err != nil {
		t.Fatal(err)
	}
	payload := fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":%q}}],"predicateType":%q}`, h, predicateType)
	const payloadType = "application/vnd.in-toto+json"
	sum := sha256.Sum256(fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload))
	sig, err := ecdsa.SignASN1(rand.Reader, s.priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	hint := sha256.Sum256(s.key.DER)
	data, err := json.Marshal(map[string]any{
		"mediaType":            "application/vnd.dev.sigstore.bundle.v0.3+json",
		"verificationMaterial": map[string]any{"publicKey": map[string]any{"hint": base64.StdEncoding.EncodeToString(hint[:])}},
		"dsseEnvelope": map[string]any{
			"payload": base64.StdEncoding.EncodeToString(payload), "payloadType": payloadType,
			"signatures": []any{map[string]any{"sig": base64.StdEncoding.EncodeToString(sig)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestSignatureReferrers(t *testing.T) {
	const ref = gadgetRef
	tests := []struct {
		name    string
		setup   func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, other signer)
		format  string // verified format, or "" for a rejection
		wantErr []error
		wantMsg string
	}{
		{name: "bundle referrer", format: FormatBundle, setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle,
				layers: []oci.Descriptor{bundleLayer(t, l, trusted.keyedBundle(t, image.Digest, cosign.PredicateTypeSign))}}, "")
		}},
		{name: "OCI 1.1 simple-signing referrer", format: FormatOCI11Referrer, setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeSignature,
				layers: []oci.Descriptor{simpleSigningLayer(t, l, trusted.sign(t, image.Digest))}}, "")
		}},
		{name: "legacy .sig is preferred", format: FormatLegacy, setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle,
				layers: []oci.Descriptor{bundleLayer(t, l, trusted.keyedBundle(t, image.Digest, cosign.PredicateTypeSign))}}, "")
			toLayout(t, l, trusted.sign(t, image.Digest))
		}},
		{name: "untrusted bundle, trusted OCI 1.1 signature", format: FormatOCI11Referrer, setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, other signer) {
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle,
				layers: []oci.Descriptor{bundleLayer(t, l, other.keyedBundle(t, image.Digest, cosign.PredicateTypeSign))}}, "")
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeSignature,
				layers: []oci.Descriptor{simpleSigningLayer(t, l, trusted.sign(t, image.Digest))}}, "")
		}},
		{name: "damaged referrer does not hide a good one", format: FormatBundle, setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
			bad := bundleLayer(t, l, []byte(`{"damaged": true}`))
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle, layers: []oci.Descriptor{bad}}, "")
			flipBlobByte(t, l, bad.Digest)
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle,
				layers: []oci.Descriptor{bundleLayer(t, l, trusted.keyedBundle(t, image.Digest, cosign.PredicateTypeSign))}}, "")
		}},

		{name: "bundle by an untrusted key", wantErr: []error{ErrUntrusted}, wantMsg: "DSSE envelope verifies with none of the 1 trusted key(s)",
			setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, _, other signer) {
				attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle,
					layers: []oci.Descriptor{bundleLayer(t, l, other.keyedBundle(t, image.Digest, cosign.PredicateTypeSign))}}, "")
			}},
		{name: "bundle signs another digest", wantErr: []error{ErrPayload, cosign.ErrWrongDigest}, wantMsg: "statement subjects [sha256:0000",
			setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
				attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle,
					layers: []oci.Descriptor{bundleLayer(t, l, trusted.keyedBundle(t, "sha256:"+strings.Repeat("0", 64), cosign.PredicateTypeSign))}}, "")
			}},
		{name: "attestation is not a signature", wantErr: []error{ErrPayload}, wantMsg: `is an attestation (predicate type "https://slsa.dev/provenance/v1")`,
			setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
				attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle,
					layers: []oci.Descriptor{bundleLayer(t, l, trusted.keyedBundle(t, image.Digest, "https://slsa.dev/provenance/v1"))}}, "")
			}},
		{name: "keyless bundle", wantErr: []error{ErrUntrusted}, wantMsg: "certificate (keyless) bundle",
			setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
				var m map[string]any
				if err := json.Unmarshal(trusted.keyedBundle(t, image.Digest, cosign.PredicateTypeSign), &m); err != nil {
					t.Fatal(err)
				}
				m["verificationMaterial"] = map[string]any{"certificate": map[string]any{"rawBytes": "MIIB"}}
				data, _ := json.Marshal(m)
				attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle, layers: []oci.Descriptor{bundleLayer(t, l, data)}}, "")
			}},
		{name: "OCI 1.1 payload for another digest", wantErr: []error{ErrPayload, cosign.ErrWrongDigest}, wantMsg: "image-layout oci11-referrer signature verifies",
			setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
				other := "sha256:" + strings.Repeat("1", 64)
				attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeSignature,
					layers: []oci.Descriptor{simpleSigningLayer(t, l, trusted.sign(t, other))}}, "")
			}},
		{name: "referrer of another image, listed under this one", wantErr: []error{ErrUnsigned},
			setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
				other := "sha256:" + strings.Repeat("2", 64)
				// Signed for this image, but the manifest's own subject is another image:
				// the fallback tag's listing is not evidence.
				attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle, subject: other,
					layers: []oci.Descriptor{bundleLayer(t, l, trusted.keyedBundle(t, image.Digest, cosign.PredicateTypeSign))}}, "")
			}},
		{name: "damaged referrer only", wantErr: []error{ErrUnsigned, ErrTampered}, wantMsg: "some of the image's referrers could not be read",
			setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, trusted, _ signer) {
				layer := bundleLayer(t, l, trusted.keyedBundle(t, image.Digest, cosign.PredicateTypeSign))
				attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle, layers: []oci.Descriptor{layer}}, "")
				flipBlobByte(t, l, layer.Digest)
			}},
		{name: "notation only", wantErr: []error{ErrUnsigned, ErrUnsupportedSignature}, wantMsg: "notation signature (application/vnd.cncf.notary.signature",
			setup: func(t *testing.T, l *oci.Layout, image oci.Descriptor, _, _ signer) {
				jws, err := l.WriteBlob("application/jose+json", []byte(`{"payload":""}`))
				if err != nil {
					t.Fatal(err)
				}
				attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeNotation, layers: []oci.Descriptor{jws}}, "")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := oci.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			image := packageGadget(t, l, ref, "original", "")
			trusted, other := newSigner(t), newSigner(t)
			tt.setup(t, l, image, trusted, other)

			a, err := GadgetWithKeys([]trust.Key{trusted.key}, l, ref)
			if tt.format != "" {
				if err != nil {
					t.Fatal(err)
				}
				want := Decision{Ref: ref, Digest: image.Digest, KeyID: trusted.key.ID(), Source: SourceImageLayout, Format: tt.format,
					Level: trust.Strict, Scope: "(default)", Verified: true}
				if !reflect.DeepEqual(a.Decision(), want) || string(a.Program()) != string(bpfELF("original")) {
					t.Errorf("Decision = %+v, want %+v", a.Decision(), want)
				}
				return
			}
			if a != nil {
				t.Fatalf("approved: %+v", a.Decision())
			}
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("error %v: want %v", err, want)
				}
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

// TestSignedByBpfleetctl: what the signing side writes in each format verifies here, through
// the same path as cosign-made signatures.
func TestSignedByBpfleetctl(t *testing.T) {
	for _, tt := range []struct {
		format string
		write  func(*oci.Layout, oci.Descriptor, *ecdsa.PrivateKey, string) (oci.Descriptor, error)
	}{
		{FormatOCI11Referrer, cosign.WriteReferrerSignature},
		{FormatBundle, cosign.WriteBundle},
	} {
		t.Run(tt.format, func(t *testing.T) {
			l, err := oci.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			image := packageGadget(t, l, gadgetRef, "original", "")
			key := newSigner(t)
			if _, err := tt.write(l, image, key.priv, "ghcr.io/acme/gadget"); err != nil {
				t.Fatal(err)
			}
			a, err := GadgetWithKeys([]trust.Key{key.key}, l, gadgetRef)
			if err != nil {
				t.Fatal(err)
			}
			if d := a.Decision(); d.Format != tt.format || d.KeyID != key.key.ID() {
				t.Fatalf("decision %+v", d)
			}
			if _, err := GadgetWithKeys([]trust.Key{newSigner(t).key}, l, gadgetRef); !errors.Is(err, ErrUntrusted) {
				t.Fatalf("other key: %v", err)
			}
		})
	}
}
