package store

import (
	"testing"

	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// TestRevokedKeys: a revoked key leaves Keys and shows in RevokedKeys, so that verification can
// name it; a key revoked by id that was never delivered has no key material to show.
func TestRevokedKeys(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kept, revoked, never := testkey.New(t).Public, testkey.New(t).Public, testkey.New(t).Public
	d1, err := s.Apply(Change{Version: 1, Base: emptyDigest(t, s), Keys: []trust.Key{kept, revoked}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(Change{Version: 2, Base: d1, Revocations: []trust.Revocation{
		{Kind: trust.RevokeKey, Value: revoked.ID()}, {Kind: trust.RevokeKey, Value: never.ID()}}}); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if keys := snap.Keys(); len(keys) != 1 || keys[0].ID() != kept.ID() {
		t.Errorf("Keys = %v, want only the kept key", keys)
	}
	if keys := snap.RevokedKeys(); len(keys) != 1 || keys[0].ID() != revoked.ID() {
		t.Errorf("RevokedKeys = %v, want only the delivered and revoked key", keys)
	}
}
