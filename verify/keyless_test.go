package verify

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// TestKeylessPath checks how the device path uses a keyless verifier: only for a scope that
// names identities, only with a delivered trusted root, passing them through, and refusing a
// revoked signer identity. The Sigstore checks themselves are verify/sigstore's (its tests and
// the conformance suite).
func TestKeylessPath(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	image := packageGadget(t, l, gadgetRef, "original", "")
	certBundle := []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",` +
		`"verificationMaterial":{"certificate":{"rawBytes":"AA=="}},"dsseEnvelope":{"payload":"","payloadType":"x","signatures":[{"sig":"AA=="}]}}`)
	attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle, layers: []oci.Descriptor{bundleLayer(t, l, certBundle)}}, "")

	id := trust.Identity{Subject: "https://github.com/acme/gadgets/.github/workflows/sign.yml@refs/heads/main", Issuer: "https://token.actions.githubusercontent.com"}
	var calls int
	var gotRoot []byte
	var gotIDs []trust.Identity
	fake := func(bundle []byte, digest string, root []byte, ids []trust.Identity) (string, error) {
		calls++
		gotRoot, gotIDs = root, ids
		if digest != image.Digest {
			return "", errors.New("wrong digest")
		}
		return id.Subject, nil
	}
	policy := &trust.Policy{Scopes: []trust.Scope{{Match: "*", Level: trust.Strict, Identities: []trust.Identity{id}}}}
	withRoot := func(m *memTrust) *memTrust { m.policy, m.root = policy, []byte(`{"root":1}`); return m }
	now := WithNow(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))

	// No verifier, or no identities, or no trusted root: keyless cannot decide, so unsigned
	// for lack of trusted keys.
	for name, m := range map[string]*memTrust{
		"no identities":  {root: []byte(`{}`)},
		"no root":        {policy: policy},
		"no verifier ok": withRoot(&memTrust{}),
	} {
		opts := []Option{now}
		if name != "no verifier ok" {
			opts = append(opts, WithKeyless(fake))
		}
		if _, err := Gadget(m, l, gadgetRef, opts...); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
	if calls != 0 {
		t.Fatalf("keyless verifier called %d times without identities and a root", calls)
	}

	a, err := Gadget(withRoot(&memTrust{}), l, gadgetRef, now, WithKeyless(fake))
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Decision(); d.Identity != id.Subject || d.Format != FormatBundle || !d.Verified {
		t.Fatalf("decision %+v", d)
	}
	if string(gotRoot) != `{"root":1}` || len(gotIDs) != 1 || gotIDs[0] != id {
		t.Fatalf("verifier got root %s identities %+v", gotRoot, gotIDs)
	}

	revoked := withRoot(&memTrust{revoked: map[trust.Revocation]bool{{Kind: trust.RevokeIdentity, Value: id.Subject}: true}})
	if _, err := Gadget(revoked, l, gadgetRef, now, WithKeyless(fake)); err == nil || !strings.Contains(err.Error(), "revoked: signer identity") {
		t.Fatalf("revoked identity: %v", err)
	}
}

// TestKeylessEveryScope: an image whose tags fall in several scopes is keyless-verified only by
// a signer that each of those scopes accepts; a second tag cannot bring its scope's identities
// (or, with none, leave keyless to the others).
func TestKeylessEveryScope(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const acmeRef = "ghcr.io/acme/trace_exec:v1"
	image := packageGadget(t, l, acmeRef, "original", "")
	certBundle := []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",` +
		`"verificationMaterial":{"certificate":{"rawBytes":"AA=="}},"dsseEnvelope":{"payload":"","payloadType":"x","signatures":[{"sig":"AA=="}]}}`)
	attach(t, l, image, referrer{artifactType: cosign.ArtifactTypeBundle, layers: []oci.Descriptor{bundleLayer(t, l, certBundle)}}, "")

	issuer := "https://token.actions.githubusercontent.com"
	acme, third := trust.Identity{Subject: "acme-ci", Issuer: issuer}, trust.Identity{Subject: "thirdparty-ci", Issuer: issuer}
	// The bundle's certificate is third party's: a verifier accepts it for a list holding it.
	fake := func(_ []byte, _ string, _ []byte, ids []trust.Identity) (string, error) {
		for _, id := range ids {
			if id == third {
				return third.Subject, nil
			}
		}
		return "", errors.New("certificate identity thirdparty-ci is not accepted")
	}
	m := &memTrust{root: []byte(`{"root":1}`), policy: &trust.Policy{Scopes: []trust.Scope{
		{Match: "ghcr.io/acme/*", Level: trust.Strict, Identities: []trust.Identity{acme}},
		{Match: "docker.io/thirdparty/*", Level: trust.Strict, Identities: []trust.Identity{third}},
		{Match: "lab/*", Level: trust.Strict},
	}}}
	now := WithNow(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		name, tag string // tag: a second name given to the image first
	}{
		{name: "acme's own scope refuses third party's signer"},
		{name: "a third-party tag does not bring its identities", tag: "docker.io/thirdparty/anything:v1"},
		{name: "a tag in a scope without identities", tag: "lab/x:v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tag != "" {
				if err := l.Tag(tc.tag, image); err != nil {
					t.Fatal(err)
				}
			}
			if a, err := Gadget(m, l, acmeRef, now, WithKeyless(fake)); err == nil {
				t.Fatalf("verified %+v; want refused", a.Decision())
			}
		})
	}
	// The control: named only in third party's scope, the same bundle verifies.
	l2, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	image2 := packageGadget(t, l2, "docker.io/thirdparty/g:v1", "original", "")
	attach(t, l2, image2, referrer{artifactType: cosign.ArtifactTypeBundle, layers: []oci.Descriptor{bundleLayer(t, l2, certBundle)}}, "")
	if a, err := Gadget(m, l2, "docker.io/thirdparty/g:v1", now, WithKeyless(fake)); err != nil || a.Decision().Identity != third.Subject {
		t.Fatalf("third party's own image: %v", err)
	}
}
