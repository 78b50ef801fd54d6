package store

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/bpfleet/bpfleet/internal/trust"
)

func testKey(t *testing.T) trust.Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return trust.Key{DER: der}
}

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestApplyAndSnapshot(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if empty.Version() != 0 || !strings.HasPrefix(empty.StateDigest(), "sha256:") {
		t.Fatalf("new store: version %d digest %q", empty.Version(), empty.StateDigest())
	}
	k := testKey(t)
	sig := trust.Signature{Digest: digestA, Payload: []byte(`{"x":1}`), Signature: []byte{1, 2, 3}}
	d1, err := s.Apply(Change{Version: 1, Keys: []trust.Key{k}, Signatures: []trust.Signature{sig}})
	if err != nil {
		t.Fatal(err)
	}
	if d1 == empty.StateDigest() {
		t.Fatal("digest did not change after apply")
	}
	// Reapplying the same records at a higher version changes only the version.
	d2, err := s.Apply(Change{Version: 2, Signatures: []trust.Signature{sig}})
	if err != nil {
		t.Fatal(err)
	}
	if d2 == d1 {
		t.Fatal("digest must cover the version")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version() != 2 || snap.StateDigest() != d2 {
		t.Fatalf("after reopen: version %d digest %s, want 2 %s", snap.Version(), snap.StateDigest(), d2)
	}
	if len(snap.Keys()) != 1 || snap.Keys()[0].ID() != k.ID() {
		t.Fatalf("keys = %v", snap.Keys())
	}
	got := snap.SignaturesFor(digestA)
	if len(got) != 1 || !bytes.Equal(got[0].Payload, sig.Payload) {
		t.Fatalf("signatures = %+v", got)
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestApplyRejectsAndLeavesStoreUnchanged(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Apply(Change{Version: 5, Keys: []trust.Key{testKey(t)}}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Dump()
	if err != nil {
		t.Fatal(err)
	}
	good := trust.Signature{Digest: digestA, Payload: []byte("p"), Signature: []byte("s")}
	tests := []struct {
		name   string
		change Change
		want   string
	}{
		{"same version", Change{Version: 5, Signatures: []trust.Signature{good}}, "version not newer"},
		{"older version", Change{Version: 4, Signatures: []trust.Signature{good}}, "version not newer"},
		{"bad key", Change{Version: 6, Keys: []trust.Key{{DER: []byte("junk")}}}, "key 0"},
		{"bad digest", Change{Version: 6, Signatures: []trust.Signature{{Digest: "sha256:XYZ", Payload: []byte("p"), Signature: []byte("s")}}}, "malformed digest"},
		{"empty signature", Change{Version: 6, Signatures: []trust.Signature{{Digest: digestA, Payload: []byte("p")}}}, "empty payload or signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Apply(tt.change)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			after, err := s.Dump()
			if err != nil {
				t.Fatal(err)
			}
			if !maps.EqualFunc(before, after, bytes.Equal) {
				t.Fatal("store changed by a rejected change")
			}
		})
	}
	_, err = s.Apply(Change{Version: 5})
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("err = %v, want ErrVersion", err)
	}
}

func TestOpenWaitsForOtherHolder(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{LockWait: 100 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: err = %v, want in use", err)
	}
	done := make(chan error, 1)
	go func() {
		s2, err := Open(dir, Options{LockWait: 5 * time.Second})
		if err == nil {
			err = s2.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waiting open: %v", err)
	}
}

func TestVerifyDetectsChangedRecords(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Apply(Change{Version: 1, Keys: []trust.Key{testKey(t)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	// A key slipped in behind bpfleet's back, as a compromised or damaged disk would.
	intruder := testKey(t)
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(keyPrefix+intruder.ID()), intruder.DER)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err == nil || !strings.Contains(err.Error(), "records hash to") {
		t.Fatalf("Verify = %v, want a digest mismatch", err)
	}
}
