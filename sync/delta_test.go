package sync

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/veraison/go-cose"

	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func gadgetKey(t testing.TB) trust.Key {
	der, err := x509.MarshalPKIXPublicKey(newKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	return trust.Key{DER: der}
}

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func testDelta(t testing.TB, version uint64) *Delta {
	return &Delta{Fleet: "f1", Version: version, Keys: []trust.Key{gadgetKey(t)},
		Signatures: []trust.Signature{{Digest: testDigest, Payload: []byte(`{"critical":{}}`), Signature: []byte{0x30, 1, 2}}}}
}

// sealRaw signs arbitrary payload bytes the way Seal does, to put hostile CBOR behind a valid
// signature.
func sealRaw(t *testing.T, payload []byte, key *ecdsa.PrivateKey, contentType string) []byte {
	t.Helper()
	kid, err := KeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmES256, key)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cose.Sign1Untagged(rand.Reader, signer, cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm:   cose.AlgorithmES256,
		cose.HeaderLabelContentType: contentType,
		cose.HeaderLabelKeyID:       kid,
	}}, payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestSealOpen(t *testing.T) {
	update := newKey(t)
	d := testDelta(t, 7)
	msg, err := Seal(d, update)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(msg, []crypto.PublicKey{newKey(t).Public(), update.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if got.Fleet != "f1" || got.Version != 7 || len(got.Keys) != 1 || !bytes.Equal(got.Keys[0].DER, d.Keys[0].DER) ||
		len(got.Signatures) != 1 || got.Signatures[0].Digest != testDigest {
		t.Fatalf("round trip: got %+v", got)
	}
	again, err := Seal(d, update)
	if err != nil {
		t.Fatal(err)
	}
	// ECDSA signatures are randomised, but the payload encoding must be deterministic.
	var a, b cose.UntaggedSign1Message
	if a.UnmarshalCBOR(msg) != nil || b.UnmarshalCBOR(again) != nil || !bytes.Equal(a.Payload, b.Payload) {
		t.Fatal("payload encoding is not deterministic")
	}
}

func TestOpenRejects(t *testing.T) {
	update := newKey(t)
	keys := []crypto.PublicKey{update.Public()}
	good, err := Seal(testDelta(t, 1), update)
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(good)
	forged[len(forged)-1] ^= 1 // last byte of the signature
	tampered := bytes.Replace(bytes.Clone(good), []byte("f1"), []byte("f2"), 1)
	unknown, err := Seal(testDelta(t, 1), newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		msg  []byte
		want error
		text string
	}{
		{"forged signature", forged, ErrBadSignature, "does not verify"},
		{"payload changed after signing", tampered, ErrBadSignature, ""},
		{"unknown key", unknown, ErrUnknownKey, "key id"},
		{"not cbor", []byte("hello, this is not CBOR"), ErrMalformed, "envelope"},
		{"empty", nil, ErrMalformed, ""},
		{"truncated", good[:len(good)/2], ErrMalformed, ""},
		{"oversized", make([]byte, MaxMessageSize+1), ErrTooLarge, "limit"},
		{"tagged envelope", append([]byte{0xd2}, good...), ErrMalformed, "tag"},
		{"indefinite-length envelope", []byte{0x9f, 0x40, 0xa0, 0x40, 0x40, 0xff}, ErrMalformed, "indefinite"},
		{"deep nesting", bytes.Repeat([]byte{0x81}, 100), ErrMalformed, "nested"},
		{"wrong content type", sealRaw(t, []byte{0xa0}, update, "text/plain"), ErrMalformed, "content type"},
		// Valid signatures over hostile payloads: strict decoding still refuses them.
		{"duplicate map key", sealRaw(t, []byte{0xa2, 0x01, 0x62, 'f', '1', 0x01, 0x62, 'f', '2'}, update, ContentType), ErrMalformed, "duplicate"},
		{"indefinite-length payload", sealRaw(t, []byte{0xbf, 0x01, 0x62, 'f', '1', 0xff}, update, ContentType), ErrMalformed, "indefinite"},
		{"unknown field", sealRaw(t, []byte{0xa1, 0x18, 0x63, 0x01}, update, ContentType), ErrMalformed, "unknown field"},
		{"tag in payload", sealRaw(t, []byte{0xa1, 0x01, 0xc1, 0x01}, update, ContentType), ErrMalformed, "tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Open(tt.msg, keys)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open = %+v, %v; want %v", d, err, tt.want)
			}
			if tt.text != "" && !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("error %q does not say %q", err, tt.text)
			}
		})
	}
}

func TestApply(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	digest, err := Apply(st, "f1", testDelta(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	before, err := st.Dump()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		fleet string
		d     *Delta
		want  error
	}{
		{"replay", "f1", testDelta(t, 3), ErrStale},
		{"rollback", "f1", testDelta(t, 2), ErrStale},
		{"other fleet", "f2", testDelta(t, 4), ErrWrongFleet},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Apply(st, tt.fleet, tt.d); !errors.Is(err, tt.want) {
				t.Fatalf("Apply: %v, want %v", err, tt.want)
			}
			after, err := st.Dump()
			if err != nil {
				t.Fatal(err)
			}
			if !maps.EqualFunc(before, after, bytes.Equal) {
				t.Fatal("store changed")
			}
		})
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version() != 3 || snap.StateDigest() != digest {
		t.Fatalf("store at %d %s, want 3 %s", snap.Version(), snap.StateDigest(), digest)
	}
}

func FuzzOpen(f *testing.F) {
	key := newKey(f)
	good, err := Seal(testDelta(f, 1), key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{0x84, 0x40, 0xa0, 0x40, 0x40})
	keys := []crypto.PublicKey{key.Public()}
	f.Fuzz(func(t *testing.T, msg []byte) {
		d, err := Open(msg, keys)
		if err == nil && d == nil {
			t.Fatal("nil delta without error")
		}
		if err == nil && !bytes.Equal(msg, good) {
			// Only the message we signed can verify; anything else is a forgery.
			var a, b cose.UntaggedSign1Message
			if a.UnmarshalCBOR(msg) != nil || b.UnmarshalCBOR(good) != nil || !bytes.Equal(a.Payload, b.Payload) {
				t.Fatalf("accepted a message with a different payload: %x", msg)
			}
		}
	})
}
