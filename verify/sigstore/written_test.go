package sigstore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// TestBpfleetctlBundleVerifiesWithSigstoreGo: the bundle `bpfleetctl sign --format bundle`
// writes is one sigstore-go accepts for the image index digest with the signing key.
func TestBpfleetctlBundleVerifiesWithSigstoreGo(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	index, err := l.WriteBlob(oci.MediaTypeIndex, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cosign.WriteBundle(l, index, key, "ghcr.io/acme/gadget"); err != nil {
		t.Fatal(err)
	}
	refs, err := cosign.ReadReferrers(l, index.Digest)
	if err != nil || len(refs) != 1 || len(refs[0].Bundles) != 1 {
		t.Fatalf("referrers %+v, %v", refs, err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	artifact, err := ArtifactDigest(index.Digest)
	if err != nil {
		t.Fatal(err)
	}
	res, err := VerifyBundle(refs[0].Bundles[0], artifact, BundleOptions{Keys: []trust.Key{{DER: der}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.KeyID != (trust.Key{DER: der}).ID() || res.PredicateType != cosign.PredicateTypeSign {
		t.Fatalf("result %+v", res)
	}
	other, _ := ArtifactDigest("sha256:" + "00000000000000000000000000000000000000000000000000000000000000aa")
	if _, err := VerifyBundle(refs[0].Bundles[0], other, BundleOptions{Keys: []trust.Key{{DER: der}}}); err == nil {
		t.Fatal("verified for another digest")
	}
}
