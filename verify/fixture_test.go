package verify

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// igFixture imports the shared Inspektor Gadget signature fixture into a fresh layout and
// returns it with the fixture's good and wrong keys, skipping when the shared tree is absent.
func igFixture(t *testing.T) (l *oci.Layout, good, wrong trust.Key) {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "fixtures", "ig-signature-store")
	if _, err := os.Stat(filepath.Join(dir, "oci-layout", "index.json")); err != nil {
		t.Skipf("shared IG fixture not available (want ../shared next to the repository root): %v", err)
	}
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Import(filepath.Join(dir, "oci-layout")); err != nil {
		t.Fatal(err)
	}
	key := func(name string) trust.Key {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := cosign.LoadPublicKey(data)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return trust.Key{DER: der}
	}
	return l, key("good.pub"), key("wrong.pub")
}

// TestSignatureIGFixture verifies real cosign signatures made for IG's own tests. Only the
// legacy `.sig` format is implemented: images signed only as OCI 1.1 referrers or sigstore
// bundles are, for now, unsigned to us, and notation signatures are not cosign signatures.
func TestSignatureIGFixture(t *testing.T) {
	l, good, wrong := igFixture(t)
	const legacy = "ttl.sh/signed_with_cosign_legacy:latest"
	const legacyDigest = "sha256:20296fb8a8c8a97808229625945da73f5f4d5843800317ead8c203081156cc9c"
	tests := []struct {
		ref     string
		keys    []trust.Key
		wantErr error
	}{
		{ref: legacy, keys: []trust.Key{good}},
		{ref: "signed_with_cosign_legacy", keys: []trust.Key{wrong, good}},
		{ref: legacy, keys: []trust.Key{wrong}, wantErr: ErrUntrusted},
		{ref: "ghcr.io/inspektor-gadget/gadget/unsigned:francis-signature-unit-tests", keys: []trust.Key{good}, wantErr: ErrUnsigned},
		{ref: "ttl.sh/signed_with_cosign_oci11:latest", keys: []trust.Key{good}, wantErr: ErrUnsigned},
		{ref: "ttl.sh/signed_with_cosign_bundle:latest", keys: []trust.Key{good}, wantErr: ErrUnsigned},
		{ref: "ttl.sh/signed_with_notation_config_media_type_signature:latest", keys: []trust.Key{good}, wantErr: ErrUnsigned},
		{ref: "ttl.sh/signed_with_notation_config_media_type_empty:latest", keys: []trust.Key{good}, wantErr: ErrUnsigned},
	}
	for _, tt := range tests {
		t.Run(tt.ref+"/"+tt.keys[len(tt.keys)-1].ID()[:8], func(t *testing.T) {
			d, err := Signature(KeysOnly(tt.keys), l, tt.ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Signature = %+v, %v; want %v", d, err, tt.wantErr)
				}
				return
			}
			want := Decision{Ref: tt.ref, Digest: legacyDigest, KeyID: good.ID(), Source: SourceImageLayout}
			if err != nil || d != want {
				t.Fatalf("Signature = %+v, %v; want %+v", d, err, want)
			}
		})
	}

	// The gadget itself passes the signature check, then stops at the missing program: the
	// fixture's manifests have no layers.
	_, err := GadgetWithKeys([]trust.Key{good}, l, legacy)
	want := ErrNoProgram
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		want = ErrNoPlatform // the fixture has amd64 and arm64 manifests only
	}
	if !errors.Is(err, want) {
		t.Errorf("GadgetWithKeys(%s) = %v, want %v", legacy, err, want)
	}
}
