package sigstore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/trust"
)

func TestVerifyBundleKeys(t *testing.T) {
	good, other := newTestKey(t), newTestKey(t)
	content := []byte("gadget index manifest bytes")
	digest := "sha256:" + hexSHA256(content)
	sign := statement(hexSHA256(content), cosign.PredicateTypeSign)
	byDigest := func(t *testing.T, d string) Artifact {
		a, err := ArtifactDigest(d)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}

	tests := []struct {
		name     string
		bundle   []byte
		artifact Artifact
		keys     []trust.Key
		wantErr  error
		wantMsg  string
	}{
		{name: "dsse by digest", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign),
			artifact: byDigest(t, digest), keys: []trust.Key{good.key}},
		{name: "dsse by content", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign),
			artifact: ArtifactBytes(content), keys: []trust.Key{good.key}},
		{name: "hint names no key: every key is tried", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign, func(m map[string]any) {
			m["verificationMaterial"] = map[string]any{"publicKey": map[string]any{"hint": "bm90IGEga2V5"}}
		}), artifact: byDigest(t, digest), keys: []trust.Key{other.key, good.key}},
		{name: "message signature by content", bundle: messageBundle(t, good, content),
			artifact: ArtifactBytes(content), keys: []trust.Key{other.key, good.key}},
		{name: "message signature by digest", bundle: messageBundle(t, good, content),
			artifact: byDigest(t, digest), keys: []trust.Key{good.key}},

		{name: "wrong key", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign),
			artifact: byDigest(t, digest), keys: []trust.Key{other.key}, wantErr: ErrNotVerified},
		{name: "two wrong keys", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign),
			artifact: byDigest(t, digest), keys: []trust.Key{other.key, newTestKey(t).key}, wantErr: ErrNotVerified, wantMsg: "none of the 2 keys verifies"},
		{name: "no key", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign),
			artifact: byDigest(t, digest), wantErr: ErrTrustMaterial, wantMsg: "no key is given"},
		{name: "statement names another artifact", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign),
			artifact: ArtifactBytes([]byte("another index")), keys: []trust.Key{good.key}, wantErr: ErrNotVerified},
		{name: "tampered payload", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign, func(m map[string]any) {
			env := m["dsseEnvelope"].(map[string]any)
			env["payload"] = strings.Replace(env["payload"].(string), "e", "f", 1)
		}), artifact: byDigest(t, digest), keys: []trust.Key{good.key}, wantErr: ErrNotVerified},
		{name: "message signature over other content", bundle: messageBundle(t, good, []byte("other")),
			artifact: ArtifactBytes(content), keys: []trust.Key{good.key}, wantErr: ErrNotVerified},
		{name: "unknown media type", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign, func(m map[string]any) {
			m["mediaType"] = "application/vnd.dev.sigstore.bundle.v9.0+json"
		}), artifact: byDigest(t, digest), keys: []trust.Key{good.key}, wantErr: ErrInvalidBundle},
		{name: "not JSON", bundle: []byte("{"), artifact: byDigest(t, digest), keys: []trust.Key{good.key}, wantErr: ErrInvalidBundle},
		{name: "unusable key", bundle: dsseBundle(t, good, "application/vnd.in-toto+json", sign),
			artifact: byDigest(t, digest), keys: []trust.Key{{DER: []byte("junk")}}, wantErr: ErrTrustMaterial},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := VerifyBundle(tt.bundle, tt.artifact, BundleOptions{Keys: tt.keys})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("VerifyBundle = %+v, %v; want %v", res, err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "verify bundle: ") || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %q: want prefix \"verify bundle: \" and %q", err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.KeyID != good.key.ID() || len(res.Timestamps) != 0 || res.Subject != "" {
				t.Errorf("result %+v: want key %s, no timestamps, no certificate", res, good.key.ID())
			}
		})
	}
}

func TestArtifact(t *testing.T) {
	for _, bad := range []string{"", "sha256:", "sha256:abc", "sha256:" + strings.Repeat("g", 64), "sha256:" + strings.Repeat("a", 66)} {
		if a, err := ParseArtifact(bad); err == nil {
			t.Errorf("ParseArtifact(%q) = %v, want an error", bad, a)
		}
	}
	d := "sha256:" + strings.Repeat("ab", 32)
	if a, err := ParseArtifact(d); err != nil || a.digest == nil || a.String() != d {
		t.Errorf("ParseArtifact(%s) = %v, %v; want a digest", d, a, err)
	}
	// Anything not starting with "sha256:" is a path, as in the conformance protocol.
	if a, err := ParseArtifact("sha512:abc"); err != nil || a.path != "sha512:abc" {
		t.Errorf("ParseArtifact(sha512:abc) = %v, %v; want a path", a, err)
	}
}

// TestVerifyBundleIGFixture verifies the cosign v3 bundle of Inspektor Gadget's fixture image:
// with the key alone it binds exactly the image index digest; with the production trusted
// root its Rekor entry and RFC 3161 timestamp are checked too, offline.
func TestVerifyBundleIGFixture(t *testing.T) {
	dir := shared(t, "ig-signature-store")
	const (
		index    = "sha256:d217fb2d81d4314d48ade41ad3cad13324861d296e4e786e6498f3123951709c"
		manifest = "sha256:f84cf5fdcd2d900633996bcbb93536efd3669f318586a20951c8e74a344f1ffd" // its linux/amd64 manifest
		layer    = "47b7ebef46fb8de5bdd1d911867e916c421871b9ebc694c31cbe3e8a74ee7a33"
	)
	bundleJSON := readFile(t, filepath.Join(dir, "oci-layout", "blobs", "sha256", layer))
	good, wrong := pemKey(t, filepath.Join(dir, "good.pub")), pemKey(t, filepath.Join(dir, "wrong.pub"))
	indexArtifact, _ := ArtifactDigest(index)
	manifestArtifact, _ := ArtifactDigest(manifest)

	res, err := VerifyBundle(bundleJSON, indexArtifact, BundleOptions{Keys: []trust.Key{wrong, good}})
	if err != nil {
		t.Fatal(err)
	}
	if res.KeyID != good.ID() || res.PredicateType != cosign.PredicateTypeSign || res.Content != "dsse" {
		t.Errorf("result %+v", res)
	}
	if _, err := VerifyBundle(bundleJSON, manifestArtifact, BundleOptions{Keys: []trust.Key{good}}); !errors.Is(err, ErrNotVerified) {
		t.Errorf("verified against the platform manifest digest: %v", err)
	}
	if _, err := VerifyBundle(bundleJSON, indexArtifact, BundleOptions{Keys: []trust.Key{wrong}}); !errors.Is(err, ErrNotVerified) {
		t.Errorf("verified with wrong.pub: %v", err)
	}

	trustedRoot := readFile(t, shared(t, "sigstore-conformance", "trusted_root.json"))
	res, err = VerifyBundle(bundleJSON, indexArtifact, BundleOptions{Keys: []trust.Key{good}, TrustedRootJSON: trustedRoot})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, ts := range res.Timestamps {
		kinds[ts.Kind] = true
	}
	if !kinds["Tlog"] || !kinds["TimestampAuthority"] {
		t.Errorf("timestamps %+v: want a verified Rekor integrated time and a TSA timestamp", res.Timestamps)
	}
}

// TestVerifyBundleKeyless checks the identity policy on a real keyless conformance bundle.
func TestVerifyBundleKeyless(t *testing.T) {
	root := shared(t, "sigstore-conformance")
	bundleJSON := readFile(t, filepath.Join(root, "bundle-verify", "happy-path-v0.3", "bundle.sigstore.json"))
	trustedRoot := readFile(t, filepath.Join(root, "trusted_root.json"))
	artifact := ArtifactFile(filepath.Join(root, "a.txt"))
	const (
		san    = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
		issuer = "https://token.actions.githubusercontent.com"
	)
	tests := []struct {
		name    string
		opts    BundleOptions
		wantErr error
	}{
		{name: "exact", opts: BundleOptions{Identities: []Identity{{SubjectExact: san, IssuerExact: issuer}}}},
		{name: "regex", opts: BundleOptions{Identities: []Identity{{SubjectRegex: `https://github\.com/sigstore-conformance/.*`, IssuerRegex: `https://token\.actions\.githubusercontent\.com`}}}},
		{name: "second identity matches", opts: BundleOptions{Identities: []Identity{{SubjectExact: "https://example.com/other", IssuerExact: issuer}, {SubjectExact: san, IssuerExact: issuer}}}},
		{name: "regex is anchored", opts: BundleOptions{Identities: []Identity{{SubjectRegex: `sigstore-conformance`, IssuerExact: issuer}}}, wantErr: ErrNotVerified},
		{name: "wrong issuer", opts: BundleOptions{Identities: []Identity{{SubjectExact: san, IssuerExact: "https://accounts.google.com"}}}, wantErr: ErrNotVerified},
		{name: "wrong subject", opts: BundleOptions{Identities: []Identity{{SubjectExact: san + "x", IssuerExact: issuer}}}, wantErr: ErrNotVerified},
		{name: "no issuer criterion", opts: BundleOptions{Identities: []Identity{{SubjectExact: san}}}, wantErr: ErrTrustMaterial},
		{name: "bad regex", opts: BundleOptions{Identities: []Identity{{SubjectRegex: "(", IssuerExact: issuer}}}, wantErr: ErrTrustMaterial},
		{name: "no identity", opts: BundleOptions{}, wantErr: ErrTrustMaterial},
		{name: "no trusted root", opts: BundleOptions{Identities: []Identity{{SubjectExact: san, IssuerExact: issuer}}}, wantErr: ErrTrustMaterial},
		{name: "keys do not verify a certificate", opts: BundleOptions{Keys: []trust.Key{newTestKey(t).key}}, wantErr: ErrTrustMaterial},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "no trusted root" {
				tt.opts.TrustedRootJSON = trustedRoot
			}
			res, err := VerifyBundle(bundleJSON, artifact, tt.opts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("VerifyBundle = %+v, %v; want %v", res, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Subject != san || res.Issuer != issuer || res.KeyID != "" || len(res.Timestamps) == 0 {
				t.Errorf("result %+v", res)
			}
		})
	}
	if _, err := VerifyBundle(bundleJSON, artifact, BundleOptions{TrustedRootJSON: []byte("{}"),
		Identities: []Identity{{SubjectExact: san, IssuerExact: issuer}}}); !errors.Is(err, ErrNotVerified) && !errors.Is(err, ErrTrustMaterial) {
		t.Errorf("empty trusted root: %v", err)
	}
}
