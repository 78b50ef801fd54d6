package verify

import (
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// TestRevokedKey: a signature whose only verifying key the fleet revoked is refused as revoked,
// naming the key, in every signature format and whether or not other keys are trusted; a
// trusted signature next to it still verifies.
func TestRevokedKey(t *testing.T) {
	tests := []struct {
		name   string
		sign   func(t *testing.T, l *oci.Layout, m *memTrust, s signer, digest string)
		others bool // another (non-signing) key is trusted
	}{
		{name: "trust store signature, no key left", sign: func(t *testing.T, _ *oci.Layout, m *memTrust, s signer, digest string) {
			m.sigs[digest] = []trust.Signature{s.sign(t, digest)}
		}},
		{name: "layout signature, another key trusted", others: true, sign: func(t *testing.T, l *oci.Layout, _ *memTrust, s signer, digest string) {
			toLayout(t, l, s.sign(t, digest))
		}},
		{name: "OCI 1.1 referrer", sign: func(t *testing.T, l *oci.Layout, _ *memTrust, s signer, digest string) {
			image, _ := l.Resolve(gadgetRef)
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeSignature,
				layers: []oci.Descriptor{simpleSigningLayer(t, l, s.sign(t, digest))}}, "")
		}},
		{name: "bundle", others: true, sign: func(t *testing.T, l *oci.Layout, _ *memTrust, s signer, digest string) {
			image, _ := l.Resolve(gadgetRef)
			attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle,
				layers: []oci.Descriptor{bundleLayer(t, l, s.keyedBundle(t, digest, cosign.PredicateTypeSign))}}, "")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := oci.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			digest := packageGadget(t, l, gadgetRef, "original", "").Digest
			revoked, other := newSigner(t), newSigner(t)
			m := &memTrust{sigs: map[string][]trust.Signature{}, revokedKeys: []trust.Key{revoked.key}}
			if tt.others {
				m.keys = []trust.Key{other.key}
			}
			tt.sign(t, l, m, revoked, digest)
			a, err := Gadget(m, l, gadgetRef)
			if a != nil || !errors.Is(err, ErrRevoked) || errors.Is(err, ErrNoTrustedKeys) || errors.Is(err, ErrUntrusted) ||
				!strings.Contains(err.Error(), "signed by key "+revoked.key.ID()+", which the fleet revoked") {
				t.Fatalf("Gadget = %v, %v; want ErrRevoked naming key %s", a, err, revoked.key.ID())
			}
			if Reason(err) != "revoked" {
				t.Errorf("Reason = %q, want revoked", Reason(err))
			}
			// A trusted signature beside the revoked one decides.
			m.keys = append(m.keys, other.key)
			m.sigs[digest] = append(m.sigs[digest], other.sign(t, digest))
			if a, err := Gadget(m, l, gadgetRef); err != nil || a.Decision().KeyID != other.key.ID() {
				t.Fatalf("with a trusted signature too: %v, %v", a, err)
			}
		})
	}

	// A revoked key's signature over another digest says nothing about this one.
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	digest := packageGadget(t, l, gadgetRef, "original", "").Digest
	revoked := newSigner(t)
	m := &memTrust{sigs: map[string][]trust.Signature{digest: {revoked.sign(t, "sha256:"+strings.Repeat("1", 64))}},
		revokedKeys: []trust.Key{revoked.key}}
	if _, err := Gadget(m, l, gadgetRef); !errors.Is(err, ErrNoTrustedKeys) || errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked key, signature for another digest: %v, want ErrNoTrustedKeys", err)
	}
}

// TestKeysUnder: ad-hoc keys (`bpfleet verify --key`) on a device with a trust store still meet
// the fleet's deny-list and revocations, and nothing else of the store.
func TestKeysUnder(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	digest := packageGadget(t, l, gadgetRef, "original", "").Digest
	key, storeKey := newSigner(t), newSigner(t)
	toLayout(t, l, key.sign(t, digest))
	device := func() *memTrust {
		// The store's own key, signatures, expiry (long past) and levels must play no part.
		return &memTrust{version: 7, keys: []trust.Key{storeKey.key}, expires: 1_800_000_000,
			sigs:   map[string][]trust.Signature{digest: {storeKey.sign(t, digest)}},
			policy: &trust.Policy{Scopes: []trust.Scope{{Match: "*", Level: trust.Audit}}}}
	}
	late := WithNow(time.Unix(1_900_000_000, 0))
	a, err := Gadget(KeysUnder([]trust.Key{key.key}, device()), l, gadgetRef, late)
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Decision(); !d.Verified || d.KeyID != key.key.ID() || d.Level != trust.Strict || d.TrustVersion != 0 || d.TrustState != "" || len(d.Warnings) != 0 {
		t.Errorf("decision %+v: want verified by the given key, strict, ad-hoc, no warnings", d)
	}
	// Neither the store's key and signature nor its audit level count in ad-hoc mode.
	if _, err := Gadget(KeysUnder([]trust.Key{newSigner(t).key}, device()), l, gadgetRef, late); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("another key given: %v, want ErrUntrusted", err)
	}
	packageGadget(t, l, "ghcr.io/acme/unsigned:v1", "other", "")
	if _, err := Gadget(KeysUnder([]trust.Key{key.key}, device()), l, "ghcr.io/acme/unsigned:v1", late); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned under a store at level audit: %v, want ErrUnsigned", err)
	}

	tests := []struct {
		name   string
		mutate func(m *memTrust)
		want   error
		msg    string
	}{
		{name: "digest revoked", want: ErrRevoked, msg: "the fleet revoked " + digest, mutate: func(m *memTrust) {
			m.revoked = map[trust.Revocation]bool{{Kind: trust.RevokeDigest, Value: digest}: true}
		}},
		{name: "digest denied", want: ErrDenied, msg: digest + " is on the policy's deny-list", mutate: func(m *memTrust) {
			m.policy.Deny = []string{digest}
		}},
		{name: "key revoked", want: ErrRevoked, msg: "signed by key " + key.key.ID() + ", which the fleet revoked", mutate: func(m *memTrust) {
			m.revoked = map[trust.Revocation]bool{{Kind: trust.RevokeKey, Value: key.key.ID()}: true}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := device()
			tt.mutate(m)
			a, err := Gadget(KeysUnder([]trust.Key{key.key}, m), l, gadgetRef, late)
			if a != nil || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Gadget = %v, %v; want %v saying %q", a, err, tt.want, tt.msg)
			}
			// Without the device's store, the same keys verify it.
			if _, err := GadgetWithKeys([]trust.Key{key.key}, l, gadgetRef); err != nil {
				t.Fatalf("without the store: %v", err)
			}
		})
	}
}

// TestConfigBlob: the manifest's config blob (the gadget metadata) is on the signed digest chain:
// a changed byte is refused as tampered naming it, at every level; an OCI empty descriptor
// needs no blob, and its embedded data must match it.
func TestConfigBlob(t *testing.T) {
	t.Run("tampered", func(t *testing.T) {
		l, err := oci.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		digest := packageGadget(t, l, gadgetRef, "original", "").Digest
		key := newSigner(t)
		toLayout(t, l, key.sign(t, digest))
		m := gadgetManifest(t, l, gadgetRef)
		if _, err := GadgetWithKeys([]trust.Key{key.key}, l, gadgetRef); err != nil {
			t.Fatal(err)
		}
		flipBlobByte(t, l, m.Config.Digest)
		want := "config (gadget metadata): blob " + m.Config.Digest
		if a, err := GadgetWithKeys([]trust.Key{key.key}, l, gadgetRef); a != nil || !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Gadget = %v, %v; want ErrTampered saying %q", a, err, want)
		} else if Reason(err) != "tampered" {
			t.Errorf("Reason = %q", Reason(err))
		}
		skip := &memTrust{policy: &trust.Policy{Scopes: []trust.Scope{{Match: gadgetRef, Level: trust.Skip}}}}
		if _, err := Gadget(skip, l, gadgetRef); !errors.Is(err, ErrTampered) {
			t.Fatalf("level skip: %v, want ErrTampered", err)
		}
	})
	empty := oci.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: oci.Digest([]byte("{}")), Size: 2}
	for _, tt := range []struct {
		name   string
		config oci.Descriptor
		want   error
	}{
		{name: "empty descriptor, no blob", config: empty},
		{name: "empty descriptor, embedded data", config: withData(empty, "{}")},
		{name: "embedded data differs", config: withData(empty, "[]"), want: ErrTampered},
		{name: "missing config blob", config: oci.Descriptor{MediaType: oci.MediaTypeGadgetConfig, Digest: oci.Digest([]byte("gone")), Size: 4},
			want: ErrNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := oci.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			digest := gadgetWithConfig(t, l, tt.config)
			key := newSigner(t)
			toLayout(t, l, key.sign(t, digest))
			a, err := GadgetWithKeys([]trust.Key{key.key}, l, gadgetRef)
			if tt.want == nil && err != nil {
				t.Fatal(err)
			}
			if tt.want != nil && (a != nil || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), "config (gadget metadata): blob "+tt.config.Digest)) {
				t.Fatalf("Gadget = %v, %v; want %v naming the config blob", a, err, tt.want)
			}
		})
	}
}

func withData(d oci.Descriptor, data string) oci.Descriptor {
	d.Data = []byte(data)
	return d
}

// gadgetWithConfig writes a one-manifest gadget index under gadgetRef whose manifest has the
// given config descriptor (its blob is not written), and returns the index digest.
func gadgetWithConfig(t *testing.T, l *oci.Layout, config oci.Descriptor) string {
	t.Helper()
	layer, err := l.WriteBlob(oci.MediaTypeEBPFProgram, bpfELF("original"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(mediaType string, v any) oci.Descriptor {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d, err := l.WriteBlob(mediaType, data)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	m := write(oci.MediaTypeManifest, oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest, Config: config, Layers: []oci.Descriptor{layer}})
	m.Platform = &oci.Platform{OS: "linux", Architecture: runtime.GOARCH}
	idx := write(oci.MediaTypeIndex, oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex, Manifests: []oci.Descriptor{m}})
	if err := l.Tag(gadgetRef, idx); err != nil {
		t.Fatal(err)
	}
	return idx.Digest
}

// TestWithdrawnAlongTheChain: what runs is a platform manifest's program, so denying or revoking
// the manifest or the program withdraws the image, and a manifest of a withdrawn index stays
// withdrawn when it is reached as an image of its own.
func TestWithdrawnAlongTheChain(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key := newSigner(t)
	index := packageGadget(t, l, gadgetRef, "withdrawn", "")
	idx, err := l.ReadIndex(index)
	if err != nil {
		t.Fatal(err)
	}
	manifest := idx.Manifests[0]
	program := programLayer(t, l, gadgetRef).Digest
	const manifestRef = "ghcr.io/acme/trace_open:v1-arch" // as a layout may list it next to its index
	if err := l.Tag(manifestRef, manifest); err != nil {
		t.Fatal(err)
	}
	trustWith := func(p *trust.Policy, revoked ...string) *memTrust {
		m := &memTrust{version: 1, keys: []trust.Key{key.key}, policy: p, revoked: map[trust.Revocation]bool{},
			sigs: map[string][]trust.Signature{index.Digest: {key.sign(t, index.Digest)}, manifest.Digest: {key.sign(t, manifest.Digest)}}}
		for _, d := range revoked {
			m.revoked[trust.Revocation{Kind: trust.RevokeDigest, Value: d}] = true
		}
		return m
	}
	deny := func(d string) *trust.Policy { return &trust.Policy{Deny: []string{d}} }
	for _, tc := range []struct {
		name, ref string
		trust     *memTrust
		want      error
		msg       string
	}{
		{"control: the index", gadgetRef, trustWith(nil), nil, ""},
		{"control: the manifest alone", manifestRef, trustWith(nil), nil, ""},
		{"manifest denied", gadgetRef, trustWith(deny(manifest.Digest)), ErrDenied, manifest.Digest + " (the image's platform manifest) is on the policy's deny-list"},
		{"manifest revoked", gadgetRef, trustWith(nil, manifest.Digest), ErrRevoked, "the fleet revoked " + manifest.Digest + " (the image's platform manifest)"},
		{"program denied", gadgetRef, trustWith(deny(program)), ErrDenied, program + " (the image's eBPF program layer)"},
		{"index denied, manifest by tag", manifestRef, trustWith(deny(index.Digest)), ErrDenied, "is a platform manifest of image " + index.Digest},
		{"index denied, manifest by digest", manifest.Digest, trustWith(deny(index.Digest)), ErrDenied, "is a platform manifest of image " + index.Digest},
		{"index revoked, manifest by tag", manifestRef, trustWith(nil, index.Digest), ErrRevoked, "the fleet revoked " + index.Digest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Gadget(tc.trust, l, tc.ref)
			if tc.want == nil {
				if err != nil || a == nil {
					t.Fatalf("Gadget(%s) = %v, %v; want it verified", tc.ref, a, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Gadget(%s) = %v, %v; want %v saying %q", tc.ref, a, err, tc.want, tc.msg)
			}
		})
	}
}
