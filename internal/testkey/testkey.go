// Package testkey generates the ECDSA P-256 keys that tests sign gadgets, roots and deltas with.
// The public half comes in the form the trust store keeps it (PKIX DER), so a test can hand it
// straight to a delta or a verifier. It is for tests only: the product's keys come from
// bpfleetctl keygen (internal/cosign).
package testkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"github.com/bpfleet/bpfleet/internal/trust"
)

// Key is a freshly generated key pair.
type Key struct {
	Private *ecdsa.PrivateKey
	Public  trust.Key
}

// New generates a key pair, failing t if it cannot.
func New(t testing.TB) Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Private: priv, Public: trust.Key{DER: der}}
}
