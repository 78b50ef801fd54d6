package sync

import (
	"crypto"
	"crypto/ecdsa"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
)

func pubs(keys ...*ecdsa.PrivateKey) []crypto.PublicKey {
	out := make([]crypto.PublicKey, len(keys))
	for i, k := range keys {
		out[i] = k.Public()
	}
	return out
}

func signers(keys ...*ecdsa.PrivateKey) []crypto.Signer {
	out := make([]crypto.Signer, len(keys))
	for i, k := range keys {
		out[i] = k
	}
	return out
}

// fleet is an operator's history with one root key set and one delta key, for tests.
type fleet struct {
	t      testing.TB
	h      *History
	is     *Issuer
	roots  []*ecdsa.PrivateKey // current root keys
	delta  *ecdsa.PrivateKey
	first  []byte // the root devices are provisioned with
	issued [][]byte
}

// newFleet issues root 1 with n root keys and the given threshold.
func newFleet(t testing.TB, n int, threshold uint64) *fleet {
	t.Helper()
	h, err := OpenHistory(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	is, err := h.Issue()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { is.Close() })
	f := &fleet{t: t, h: h, is: is, delta: testkey.New(t).Private}
	for range n {
		f.roots = append(f.roots, testkey.New(t).Private)
	}
	raw, err := is.IssueRoot(RootSpec{Fleet: "f1", RootKeys: pubs(f.roots...), RootThreshold: threshold,
		DeltaKeys: pubs(f.delta), DeltaThreshold: 1, Expires: 24 * time.Hour}, signers(f.roots...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.first = raw
	f.issued = append(f.issued, raw)
	return f
}

// issueDelta issues the next delta with one new gadget key.
func (f *fleet) issueDelta() ([]byte, *Delta) {
	f.t.Helper()
	raw, d, err := f.is.IssueDelta(DeltaSpec{Keys: []trust.Key{testkey.New(f.t).Public}, Expires: time.Hour}, f.delta)
	if err != nil {
		f.t.Fatal(err)
	}
	f.issued = append(f.issued, raw)
	return raw, d
}

// rotate issues the next root with fresh root keys, signed by the old and the new ones.
func (f *fleet) rotate() []byte {
	f.t.Helper()
	next := []*ecdsa.PrivateKey{testkey.New(f.t).Private, testkey.New(f.t).Private}
	raw, err := f.is.IssueRoot(RootSpec{RootKeys: pubs(next...), RootThreshold: 2, DeltaKeys: pubs(f.delta),
		DeltaThreshold: 1, Expires: 24 * time.Hour}, signers(append(f.roots, next...)...)...)
	if err != nil {
		f.t.Fatal(err)
	}
	f.roots = next
	f.issued = append(f.issued, raw)
	return raw
}

func (f *fleet) device() *TrustedRoot {
	f.t.Helper()
	r, err := OpenRoot(f.first)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}
