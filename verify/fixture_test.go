package verify

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
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

// TestSignatureIGFixture verifies real signatures made for IG's own tests, in the three cosign
// formats IG uses: the legacy `.sig` tag, an OCI 1.1 referrer (found through the referrers
// fallback tag) and a sigstore bundle v0.3 referrer (an untagged index.json entry, also listed
// by the fallback tag). Notation signatures are not cosign signatures.
func TestSignatureIGFixture(t *testing.T) {
	l, good, wrong := igFixture(t)
	const (
		legacy         = "ttl.sh/signed_with_cosign_legacy:latest"
		legacyDigest   = "sha256:20296fb8a8c8a97808229625945da73f5f4d5843800317ead8c203081156cc9c"
		oci11          = "ttl.sh/signed_with_cosign_oci11:latest"
		oci11Digest    = "sha256:2f096beb75baadce98f52500552f1d7eabf19f4c35007869350d6f496084e992"
		bundle         = "ttl.sh/signed_with_cosign_bundle:latest"
		bundleDigest   = "sha256:d217fb2d81d4314d48ade41ad3cad13324861d296e4e786e6498f3123951709c"
		unsigned       = "ghcr.io/inspektor-gadget/gadget/unsigned:francis-signature-unit-tests"
		notationSig    = "ttl.sh/signed_with_notation_config_media_type_signature:latest"
		notationEmpty  = "ttl.sh/signed_with_notation_config_media_type_empty:latest"
		notationReason = "notation signature (application/vnd.cncf.notary.signature, referrer sha256:"
	)
	tests := []struct {
		ref     string
		keys    []trust.Key
		digest  string // verified digest when accepted
		format  string // verified format when accepted
		wantErr []error
		wantMsg string // substring of the error
	}{
		{ref: legacy, keys: []trust.Key{good}, digest: legacyDigest, format: FormatLegacy},
		{ref: "signed_with_cosign_legacy", keys: []trust.Key{wrong, good}, digest: legacyDigest, format: FormatLegacy},
		{ref: oci11, keys: []trust.Key{good}, digest: oci11Digest, format: FormatOCI11Referrer},
		{ref: oci11, keys: []trust.Key{wrong, good}, digest: oci11Digest, format: FormatOCI11Referrer},
		{ref: bundle, keys: []trust.Key{good}, digest: bundleDigest, format: FormatBundle},
		{ref: bundle, keys: []trust.Key{wrong, good}, digest: bundleDigest, format: FormatBundle},

		{ref: legacy, keys: []trust.Key{wrong}, wantErr: []error{ErrUntrusted},
			wantMsg: "1 signature(s) for " + legacyDigest + " (0 in the trust store, 1 in the image)"},
		{ref: oci11, keys: []trust.Key{wrong}, wantErr: []error{ErrUntrusted},
			wantMsg: "(0 in the trust store, 1 in the image: 0 legacy, 1 oci11-referrer, 0 bundle)"},
		{ref: bundle, keys: []trust.Key{wrong}, wantErr: []error{ErrUntrusted},
			wantMsg: "DSSE envelope verifies with none of the 1 trusted key(s)"},
		{ref: unsigned, keys: []trust.Key{good}, wantErr: []error{ErrUnsigned}, wantMsg: "no signature for sha256:f34a362f"},
		{ref: notationSig, keys: []trust.Key{good}, wantErr: []error{ErrUnsigned, ErrUnsupportedSignature}, wantMsg: notationReason},
		{ref: notationEmpty, keys: []trust.Key{good}, wantErr: []error{ErrUnsigned, ErrUnsupportedSignature}, wantMsg: notationReason},
		{ref: notationSig, keys: []trust.Key{wrong}, wantErr: []error{ErrUnsigned, ErrUnsupportedSignature}, wantMsg: notationReason},
	}
	for _, tt := range tests {
		t.Run(tt.ref+"/"+tt.keys[len(tt.keys)-1].ID()[:8], func(t *testing.T) {
			d, err := Signature(KeysOnly(tt.keys), l, tt.ref)
			if tt.wantErr != nil {
				for _, want := range tt.wantErr {
					if !errors.Is(err, want) {
						t.Errorf("Signature = %+v, %v; want %v", d, err, want)
					}
				}
				if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %q does not say %q", err, tt.wantMsg)
				}
				return
			}
			want := Decision{Ref: tt.ref, Digest: tt.digest, KeyID: good.ID(), Source: SourceImageLayout, Format: tt.format}
			if err != nil || !reflect.DeepEqual(d, want) {
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
