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
