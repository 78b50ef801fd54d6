package sigstore

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/verify"
)

// TestDeviceAgreesWithSigstoreGo checks that package verify's own key-based bundle check (the
// device path, which cannot link sigstore-go) reaches the same verdict as sigstore-go on
// bundles attached to an image as OCI 1.1 referrers, for good bundles and for each way one
// can be wrong. The device additionally requires a DSSE statement to be a cosign signature
// (predicate type cosign.PredicateTypeSign), which sigstore-go leaves to the caller.
func TestDeviceAgreesWithSigstoreGo(t *testing.T) {
	good, other := newTestKey(t), newTestKey(t)
	const intoto = "application/vnd.in-toto+json"

	tests := []struct {
		name   string
		keys   []trust.Key
		bundle func(index []byte, indexHex string) []byte
		want   bool
	}{
		{name: "cosign v3 signature", keys: []trust.Key{good.key}, want: true, bundle: func(_ []byte, h string) []byte {
			return dsseBundle(t, good, intoto, statement(h, cosign.PredicateTypeSign))
		}},
		{name: "hint of another key", keys: []trust.Key{other.key, good.key}, want: true, bundle: func(_ []byte, h string) []byte {
			return dsseBundle(t, good, intoto, statement(h, cosign.PredicateTypeSign), func(m map[string]any) {
				m["verificationMaterial"] = map[string]any{"publicKey": map[string]any{"hint": keyHint(other.key)}}
			})
		}},
		{name: "v0.1 media type", keys: []trust.Key{good.key}, want: true, bundle: func(_ []byte, h string) []byte {
			return dsseBundle(t, good, intoto, statement(h, cosign.PredicateTypeSign), func(m map[string]any) {
				m["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"
			})
		}},
		{name: "message signature over the index", keys: []trust.Key{good.key}, want: true, bundle: func(index []byte, _ string) []byte {
			return messageBundle(t, good, index)
		}},
		{name: "untrusted key", keys: []trust.Key{other.key}, bundle: func(_ []byte, h string) []byte {
			return dsseBundle(t, good, intoto, statement(h, cosign.PredicateTypeSign))
		}},
		{name: "another subject", keys: []trust.Key{good.key}, bundle: func(_ []byte, h string) []byte {
			return dsseBundle(t, good, intoto, statement(strings.Repeat("0", 64), cosign.PredicateTypeSign))
		}},
		{name: "attestation, not a signature", keys: []trust.Key{good.key}, bundle: func(_ []byte, h string) []byte {
			return dsseBundle(t, good, intoto, statement(h, "https://slsa.dev/provenance/v1"))
		}},
		{name: "payload swapped after signing", keys: []trust.Key{good.key}, bundle: func(_ []byte, h string) []byte {
			signed := dsseBundle(t, good, intoto, statement(strings.Repeat("0", 64), cosign.PredicateTypeSign))
			return replaceDSSE(t, signed, func(env map[string]any) {
				env["payload"] = base64.StdEncoding.EncodeToString(statement(h, cosign.PredicateTypeSign))
			})
		}},
		{name: "payload type changed after signing", keys: []trust.Key{good.key}, bundle: func(_ []byte, h string) []byte {
			signed := dsseBundle(t, good, "application/json", statement(h, cosign.PredicateTypeSign))
			return replaceDSSE(t, signed, func(env map[string]any) { env["payloadType"] = intoto })
		}},
		{name: "signed payload type is not in-toto", keys: []trust.Key{good.key}, bundle: func(_ []byte, h string) []byte {
			return dsseBundle(t, good, "application/json", statement(h, cosign.PredicateTypeSign))
		}},
		{name: "message signature over other bytes", keys: []trust.Key{good.key}, bundle: func([]byte, string) []byte {
			return messageBundle(t, good, []byte("another manifest"))
		}},
		{name: "unknown bundle version", keys: []trust.Key{good.key}, bundle: func(_ []byte, h string) []byte {
			return dsseBundle(t, good, intoto, statement(h, cosign.PredicateTypeSign), func(m map[string]any) {
				m["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.9+json"
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := oci.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			indexBytes := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"manifests":[],"annotations":{"case":%q}}`, oci.MediaTypeIndex, tt.name)
			index, err := l.WriteBlob(oci.MediaTypeIndex, indexBytes)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Tag("example.com/gadget:v1", index); err != nil {
				t.Fatal(err)
			}
			indexHex, _ := oci.DigestHex(index.Digest)
			bundleJSON := tt.bundle(indexBytes, indexHex)
			attachBundle(t, l, index, bundleJSON)

			artifact, err := ArtifactDigest(index.Digest)
			if err != nil {
				t.Fatal(err)
			}
			res, sgErr := VerifyBundle(bundleJSON, artifact, BundleOptions{Keys: tt.keys})
			sigstoreOK := sgErr == nil && (res.Content != "dsse" || res.PredicateType == cosign.PredicateTypeSign)
			d, devErr := verify.Signature(verify.KeysOnly(tt.keys), l, "example.com/gadget:v1")
			deviceOK := devErr == nil

			if sigstoreOK != tt.want || deviceOK != tt.want {
				t.Fatalf("sigstore-go: %v (%+v), device: %v (%+v); want verified = %v", sgErr, res, devErr, d, tt.want)
			}
			if deviceOK && (d.Format != verify.FormatBundle || d.KeyID != res.KeyID || d.KeyID != good.key.ID()) {
				t.Errorf("device decision %+v, sigstore-go key %s", d, res.KeyID)
			}
			if !deviceOK && errors.Is(devErr, verify.ErrUnsigned) {
				t.Errorf("device did not see the bundle: %v", devErr)
			}
		})
	}
}

// attachBundle stores bundleJSON as a cosign v3 bundle referrer of subject, listed by the
// OCI 1.1 referrers fallback tag, as `oras copy` of a cosign-signed image leaves it.
func attachBundle(t *testing.T, l *oci.Layout, subject oci.Descriptor, bundleJSON []byte) {
	t.Helper()
	layer, err := l.WriteBlob(cosign.ArtifactTypeBundle, bundleJSON)
	if err != nil {
		t.Fatal(err)
	}
	config, err := l.WriteBlob("application/vnd.oci.empty.v1+json", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	s := subject
	manifest, err := json.Marshal(oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest,
		ArtifactType: cosign.ArtifactTypeBundle, Config: config, Layers: []oci.Descriptor{layer},
		Subject: &oci.Descriptor{MediaType: s.MediaType, Digest: s.Digest, Size: s.Size}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.WriteBlob(oci.MediaTypeManifest, manifest)
	if err != nil {
		t.Fatal(err)
	}
	m.ArtifactType = cosign.ArtifactTypeBundle
	list, err := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex, Manifests: []oci.Descriptor{m}})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := l.WriteBlob(oci.MediaTypeIndex, list)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := cosign.ReferrersTag(subject.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Tag(tag, idx); err != nil {
		t.Fatal(err)
	}
}

// replaceDSSE edits the DSSE envelope of a serialised bundle, keeping its signature.
func replaceDSSE(t *testing.T, bundleJSON []byte, edit func(env map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(bundleJSON, &m); err != nil {
		t.Fatal(err)
	}
	edit(m["dsseEnvelope"].(map[string]any))
	return marshalBundle(t, m, nil)
}
