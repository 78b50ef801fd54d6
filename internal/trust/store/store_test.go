package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
)

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
	k := testkey.New(t).Public
	sig := trust.Signature{Digest: digestA, Payload: []byte(`{"x":1}`), Signature: []byte{1, 2, 3}}
	d1, err := s.Apply(Change{Version: 1, Base: empty.StateDigest(), Keys: []trust.Key{k}, Signatures: []trust.Signature{sig}})
	if err != nil {
		t.Fatal(err)
	}
	if d1 == empty.StateDigest() {
		t.Fatal("digest did not change after apply")
	}
	// Reapplying the same records at a higher version changes only the version.
	preview, err := s.Digest(Change{Version: 2, Base: d1, Signatures: []trust.Signature{sig}})
	if err != nil {
		t.Fatal(err)
	}
	d2, err := s.Apply(Change{Version: 2, Base: d1, State: preview, Expires: 1700000000, Signatures: []trust.Signature{sig}})
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
	if snap.Version() != 2 || snap.StateDigest() != d2 || snap.Expires() != 1700000000 {
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
	base := emptyDigest(t, s)
	cur, err := s.Apply(Change{Version: 1, Base: base, Keys: []trust.Key{testkey.New(t).Public}})
	if err != nil {
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
		{"same version", Change{Version: 1, Base: base, Signatures: []trust.Signature{good}}, "version not newer"},
		{"older version", Change{Version: 0, Base: base, Signatures: []trust.Signature{good}}, "version not newer"},
		{"skips ahead", Change{Version: 3, Base: cur, Signatures: []trust.Signature{good}}, "skips ahead"},
		{"other base", Change{Version: 2, Base: base, Signatures: []trust.Signature{good}}, "base digest"},
		{"wrong result", Change{Version: 2, Base: cur, State: base, Signatures: []trust.Signature{good}}, "resulting digest"},
		{"bad key", Change{Version: 2, Base: cur, Keys: []trust.Key{{DER: []byte("junk")}}}, "key 0"},
		{"bad digest", Change{Version: 2, Base: cur, Signatures: []trust.Signature{{Digest: "sha256:XYZ", Payload: []byte("p"), Signature: []byte("s")}}}, "malformed digest"},
		{"empty signature", Change{Version: 2, Base: cur, Signatures: []trust.Signature{{Digest: digestA, Payload: []byte("p")}}}, "empty payload or signature"},
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
	for _, tt := range []struct {
		c    Change
		want error
	}{
		{Change{Version: 1, Base: base}, ErrOld},
		{Change{Version: 3, Base: cur}, ErrAhead},
		{Change{Version: 2, Base: base}, ErrBase},
		{Change{Version: 2, Base: cur, State: base}, ErrState},
	} {
		if _, err := s.Apply(tt.c); !errors.Is(err, tt.want) {
			t.Errorf("Apply(%+v) = %v, want %v", tt.c, err, tt.want)
		}
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
	if _, err := s.Apply(Change{Version: 1, Base: emptyDigest(t, s), Keys: []trust.Key{testkey.New(t).Public}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
	// A key slipped in behind bpfleet's back, as a compromised or damaged disk would.
	intruder := testkey.New(t).Public
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(keyPrefix+intruder.ID()), intruder.DER)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err == nil || !strings.Contains(err.Error(), "records hash to") {
		t.Fatalf("Verify = %v, want a digest mismatch", err)
	}
}

func emptyDigest(t *testing.T, s *Store) string {
	t.Helper()
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return snap.StateDigest()
}

func TestRoot(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if raw, err := s.Root(); err != nil || raw != nil {
		t.Fatalf("new store root = %q, %v", raw, err)
	}
	if err := s.SetRoot(3, []byte("root3")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRoot(5, []byte("root5")); err == nil {
		t.Fatal("skipped a root version")
	}
	if err := s.SetRoot(4, []byte("root4")); err != nil {
		t.Fatal(err)
	}
	if raw, _ := s.Root(); string(raw) != "root4" {
		t.Fatalf("root = %q", raw)
	}
}

func TestRevocationsPolicyAndTrustedRoot(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k1, k2 := testkey.New(t).Public, testkey.New(t).Public
	d1, err := s.Apply(Change{Version: 1, Base: emptyDigest(t, s), Keys: []trust.Key{k1, k2}})
	if err != nil {
		t.Fatal(err)
	}
	policy := &trust.Policy{Scopes: []trust.Scope{{Match: "*", Level: trust.Permissive}}, Deny: []string{digestA}}
	d2, err := s.Apply(Change{Version: 2, Base: d1, Policy: policy, TrustedRoot: []byte(`{"mediaType":"x"}`),
		Revocations: []trust.Revocation{{Kind: trust.RevokeKey, Value: k1.ID()}, {Kind: trust.RevokeDigest, Value: digestA}}})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if keys := snap.Keys(); len(keys) != 1 || keys[0].ID() != k2.ID() {
		t.Fatalf("keys after revoking k1: %v", keys)
	}
	if !snap.Revoked(trust.Revocation{Kind: trust.RevokeDigest, Value: digestA}) || snap.Revoked(trust.Revocation{Kind: trust.RevokeKey, Value: k2.ID()}) {
		t.Fatal("revocations not as applied")
	}
	if p := snap.Policy(); p == nil || p.ScopeFor("x", "x", digestA).Level != trust.Permissive || p.Deny[0] != digestA {
		t.Fatalf("policy = %+v", p)
	}
	if string(snap.TrustedRoot()) != `{"mediaType":"x"}` {
		t.Fatalf("trusted root = %q", snap.TrustedRoot())
	}
	before, err := s.Dump()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Change{
		{Version: 3, Base: d2, Policy: &trust.Policy{Scopes: []trust.Scope{{Match: "*", Level: trust.Skip}}}},
		{Version: 3, Base: d2, Policy: &trust.Policy{Scopes: []trust.Scope{{Match: "ghcr.io/acme/*", Level: trust.Skip}}}},
		{Version: 3, Base: d2, Policy: &trust.Policy{Scopes: []trust.Scope{{Match: "x", Level: "lenient"}}}},
		{Version: 3, Base: d2, TrustedRoot: []byte("not json")},
		{Version: 3, Base: d2, Revocations: []trust.Revocation{{Kind: trust.RevokeKey, Value: "abc"}}},
		{Version: 3, Base: d2, Revocations: []trust.Revocation{{Kind: "everything", Value: "x"}}},
	} {
		if _, err := s.Apply(c); !errors.Is(err, ErrInvalid) {
			t.Errorf("Apply(%+v) = %v, want ErrInvalid", c, err)
		}
	}
	if after, _ := s.Dump(); !maps.EqualFunc(before, after, bytes.Equal) {
		t.Fatal("store changed by invalid changes")
	}
}

// TestApplyChain: a chain applied in one transaction gives the state applying it change by
// change gives, and a broken chain changes nothing.
func TestApplyChain(t *testing.T) {
	seq, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer seq.Close()
	base := emptyDigest(t, seq)
	var chain []Change
	prev := base
	for v := uint64(1); v <= 4; v++ {
		c := Change{Version: v, Base: prev, Expires: int64(1700000000 + v), Keys: []trust.Key{testkey.New(t).Public},
			Revocations: []trust.Revocation{{Kind: trust.RevokeDigest, Value: "sha256:" + strings.Repeat(fmt.Sprint(v), 64)}}}
		if v == 3 {
			c.Policy = &trust.Policy{Scopes: []trust.Scope{{Match: "*", Level: trust.Audit}}}
		}
		if c.State, err = seq.Apply(c); err != nil {
			t.Fatal(err)
		}
		prev = c.State
		chain = append(chain, c)
	}
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	broken := func(mutate func([]Change)) []Change {
		cs := slices.Clone(chain)
		mutate(cs)
		return cs
	}
	for name, cs := range map[string][]Change{
		"gap":         broken(func(cs []Change) { cs[2].Version = 9 }),
		"wrong base":  broken(func(cs []Change) { cs[1].Base = base }),
		"wrong final": broken(func(cs []Change) { cs[3].State = base }),
		"no states":   broken(func(cs []Change) { cs[0].State = "" }),
	} {
		if _, err := s.ApplyChain(cs); err == nil {
			t.Errorf("%s: applied", name)
		}
		if snap, _ := s.Snapshot(); snap.Version() != 0 {
			t.Fatalf("%s: store moved to %d", name, snap.Version())
		}
	}
	got, err := s.ApplyChain(chain)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := seq.Dump()
	have, _ := s.Dump()
	if got != prev || !maps.EqualFunc(want, have, bytes.Equal) {
		t.Fatalf("chain applied at once: digest %s (sequential %s), stores equal %t", got, prev, maps.EqualFunc(want, have, bytes.Equal))
	}
}

func TestHeadMatchesSnapshot(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Apply(Change{Version: 1, Base: emptyDigest(t, s), Expires: 1800000000, Keys: []trust.Key{testkey.New(t).Public}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOverride(trust.Override{Fleet: "f", Device: "d", Digest: digestA, Expires: 1800000000, Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	head, err := s.Head()
	if err != nil {
		t.Fatal(err)
	}
	if head.Version != snap.Version() || head.StateDigest != snap.StateDigest() || head.Expires != snap.Expires() ||
		len(head.Overrides) != 1 || head.Overrides[0].Digest != digestA {
		t.Fatalf("head %+v, snapshot %+v", head, snap)
	}
}
