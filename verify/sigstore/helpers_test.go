package sigstore

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// testKey is a generated ECDSA P-256 key.
type testKey struct {
	priv *ecdsa.PrivateKey
	key  trust.Key
}

func newTestKey(t *testing.T) testKey {
	k := testkey.New(t)
	return testKey{priv: k.Private, key: k.Public}
}

// signHash signs a SHA-256 digest.
func (k testKey) signHash(t *testing.T, digest []byte) []byte {
	t.Helper()
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// statement returns an in-toto v1 statement with one sha256 subject.
func statement(subjectHex, predicateType string) []byte {
	return fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":%q}}],"predicateType":%q}`,
		subjectHex, predicateType)
}

// pae is DSSE's pre-authentication encoding, written independently of the code under test.
func pae(payloadType string, payload []byte) []byte {
	s := "DSSEv1 " + strconv.Itoa(len(payloadType)) + " " + payloadType + " " + strconv.Itoa(len(payload)) + " "
	return append([]byte(s), payload...)
}

// bundleMutation changes a bundle before it is serialised.
type bundleMutation func(m map[string]any)

// dsseBundle returns a v0.3 bundle of a DSSE envelope over payload signed by signer, with
// signer's public-key hint and no transparency-log entry, as `cosign sign --key
// --tlog-upload=false` would make it.
func dsseBundle(t *testing.T, signer testKey, payloadType string, payload []byte, mutate ...bundleMutation) []byte {
	t.Helper()
	sum := sha256.Sum256(pae(payloadType, payload))
	m := map[string]any{
		"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
		"verificationMaterial": map[string]any{
			"publicKey": map[string]any{"hint": keyHint(signer.key)},
		},
		"dsseEnvelope": map[string]any{
			"payload":     base64.StdEncoding.EncodeToString(payload),
			"payloadType": payloadType,
			"signatures":  []any{map[string]any{"sig": base64.StdEncoding.EncodeToString(signer.signHash(t, sum[:]))}},
		},
	}
	return marshalBundle(t, m, mutate)
}

// messageBundle returns a v0.3 bundle of a message signature by signer over content.
func messageBundle(t *testing.T, signer testKey, content []byte, mutate ...bundleMutation) []byte {
	t.Helper()
	sum := sha256.Sum256(content)
	m := map[string]any{
		"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
		"verificationMaterial": map[string]any{
			"publicKey": map[string]any{"hint": keyHint(signer.key)},
		},
		"messageSignature": map[string]any{
			"messageDigest": map[string]any{"algorithm": "SHA2_256", "digest": base64.StdEncoding.EncodeToString(sum[:])},
			"signature":     base64.StdEncoding.EncodeToString(signer.signHash(t, sum[:])),
		},
	}
	return marshalBundle(t, m, mutate)
}

func marshalBundle(t *testing.T, m map[string]any, mutate []bundleMutation) []byte {
	t.Helper()
	for _, f := range mutate {
		f(m)
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func hexSHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// shared returns the path of a fixture under ../shared/fixtures, skipping when it is absent.
func shared(t *testing.T, parts ...string) string {
	t.Helper()
	path := filepath.Join(append([]string{"..", "..", "..", "shared", "fixtures"}, parts...)...)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("shared fixture not available (want ../shared next to the repository root): %v", err)
	}
	return path
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// pemKey loads a PEM public key file as a trust.Key.
func pemKey(t *testing.T, path string) trust.Key {
	t.Helper()
	pub, err := cosign.LoadPublicKey(readFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return trust.Key{DER: der}
}
