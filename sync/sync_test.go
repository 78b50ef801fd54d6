package sync

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust/store"
)

func TestRootThreshold(t *testing.T) {
	f := newFleet(t, 3, 2)
	if _, err := OpenRoot(f.first); err != nil {
		t.Fatal(err)
	}
	// A root signed by only one of three keys, threshold two.
	r := Root{Fleet: "f1", Version: 1, Expires: time.Now().Add(time.Hour).Unix(),
		Root: Role{Threshold: 2}, Deltas: Role{Threshold: 1}}
	for _, k := range append(f.roots, f.delta) {
		der, kid, err := derAndID(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		r.Keys = append(r.Keys, der)
		if k == f.delta {
			r.Deltas.KeyIDs = append(r.Deltas.KeyIDs, kid)
		} else {
			r.Root.KeyIDs = append(r.Root.KeyIDs, kid)
		}
	}
	one, err := SealRoot(&r, f.roots[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRoot(one); !errors.Is(err, ErrThreshold) || !strings.Contains(err.Error(), "1 of 2") {
		t.Fatalf("one signature of two: %v", err)
	}
	// The same key twice does not count twice.
	twice, err := SealRoot(&r, f.roots[0], f.roots[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRoot(twice); !errors.Is(err, ErrThreshold) {
		t.Fatalf("one key signing twice: %v", err)
	}
}

func TestRootRotation(t *testing.T) {
	f := newFleet(t, 2, 2)
	dev := f.device()

	// Three rotations while the device is offline: it walks them one at a time.
	var rotations [][]byte
	for range 3 {
		rotations = append(rotations, f.rotate())
	}
	if _, err := dev.Next(rotations[1]); !errors.Is(err, ErrRootVersion) {
		t.Fatalf("skipping a rotation: %v", err)
	}
	for i, raw := range rotations {
		next, err := dev.Next(raw)
		if err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
		dev = next
	}
	if dev.Version != 4 {
		t.Fatalf("device at root %d, want 4", dev.Version)
	}
	// Deltas signed by the delta key still verify under the newest root.
	raw, _ := f.issueDelta()
	if u, err := dev.Open(raw); err != nil || u.Delta == nil {
		t.Fatalf("delta under rotated root: %v", err)
	}

	// A rotation signed only by the new keys is rejected by a device holding the old root.
	g := newFleet(t, 2, 2)
	newKeys := []*ecdsa.PrivateKey{testkey.New(t).Private, testkey.New(t).Private}
	raw, err := SealRoot(&Root{Fleet: "f1", Version: 2, Expires: time.Now().Add(time.Hour).Unix(),
		Keys: ders(t, newKeys...), Root: Role{KeyIDs: ids(t, newKeys...), Threshold: 2},
		Deltas: Role{KeyIDs: ids(t, newKeys[0]), Threshold: 1}}, newKeys[0], newKeys[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.device().Next(raw); !errors.Is(err, ErrThreshold) || !strings.Contains(err.Error(), "by the keys of root 1") {
		t.Fatalf("rotation signed only by the new keys: %v", err)
	}
	if _, err := g.is.IssueRoot(RootSpec{RootKeys: pubs(newKeys...), RootThreshold: 2, DeltaKeys: pubs(g.delta), DeltaThreshold: 1,
		Expires: time.Hour}, newKeys[0], newKeys[1]); err == nil || !strings.Contains(err.Error(), "devices would reject it") {
		t.Fatalf("issuer accepted a rotation devices reject: %v", err)
	}
}

func ders(t *testing.T, keys ...*ecdsa.PrivateKey) [][]byte {
	var out [][]byte
	for _, k := range keys {
		der, _, err := derAndID(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, der)
	}
	return out
}

func ids(t *testing.T, keys ...*ecdsa.PrivateKey) [][]byte {
	var out [][]byte
	for _, k := range keys {
		_, kid, err := derAndID(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, kid)
	}
	return out
}

// sealRaw signs arbitrary payload bytes as a delta, to put hostile CBOR behind valid
// signatures.
func sealRaw(t *testing.T, contentType string, payload []byte, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	msg := cose.NewSignMessage()
	msg.Headers.Protected[cose.HeaderLabelContentType] = contentType
	msg.Payload = payload
	kid, err := KeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmES256, key)
	if err != nil {
		t.Fatal(err)
	}
	sig := cose.NewSignature()
	sig.Headers.Protected[cose.HeaderLabelAlgorithm] = cose.AlgorithmES256
	sig.Headers.Protected[cose.HeaderLabelKeyID] = kid
	msg.Signatures = []*cose.Signature{sig}
	if err := msg.Sign(nil, nil, signer); err != nil {
		t.Fatal(err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestOpenRejects(t *testing.T) {
	f := newFleet(t, 1, 1)
	dev := f.device()
	good, _ := f.issueDelta()
	forged := bytes.Clone(good)
	forged[len(forged)-1] ^= 1 // last byte of the signature
	tampered := bytes.Replace(bytes.Clone(good), []byte("f1"), []byte("f2"), 1)
	other := newFleet(t, 1, 1)
	foreign, _ := other.issueDelta()
	enc, _ := cbor.CoreDetEncOptions().EncMode()
	otherFleet, _ := enc.Marshal(Delta{Fleet: "f2", Version: 1})
	// Rebuild the good message with its signatures removed or emptied.
	var parts []cbor.RawMessage
	if err := cbor.Unmarshal(good[2:], &parts); err != nil {
		t.Fatal(err)
	}
	var sigs, sigParts []cbor.RawMessage
	if err := cbor.Unmarshal(parts[3], &sigs); err != nil {
		t.Fatal(err)
	}
	if err := cbor.Unmarshal(sigs[0], &sigParts); err != nil {
		t.Fatal(err)
	}
	emptied, _ := enc.Marshal([]any{sigParts[0], sigParts[1], []byte{}})
	rebuild := func(sigs ...cbor.RawMessage) []byte {
		raw, err := enc.Marshal(cbor.Tag{Number: 98, Content: []any{parts[0], parts[1], parts[2], sigs}})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	noSigs, emptySig := rebuild(), rebuild(emptied)
	tests := []struct {
		name string
		msg  []byte
		want error
		text string
	}{
		{"forged signature", forged, ErrBadSignature, "failed to verify"},
		{"payload changed after signing", tampered, ErrBadSignature, ""},
		{"no signatures", noSigs, ErrMalformed, "no signatures"},
		{"empty signature", emptySig, ErrMalformed, "empty signature"},
		{"signed by another fleet's key", foreign, ErrThreshold, "0 of 1"},
		{"signed by a root key, not a delta key", sealRaw(t, ContentTypeDelta, []byte{0xa0}, f.roots[0]), ErrThreshold, ""},
		{"other fleet", sealRaw(t, ContentTypeDelta, otherFleet, f.delta), ErrWrongFleet, "f2"},
		{"not cbor", []byte("hello, this is not CBOR"), ErrMalformed, "COSE_Sign"},
		{"empty", nil, ErrMalformed, ""},
		{"truncated", good[:len(good)/2], ErrMalformed, ""},
		{"oversized", append(bytes.Clone(good), make([]byte, MaxMessageSize)...), ErrTooLarge, "limit"},
		{"indefinite-length envelope", append([]byte{0xd8, 0x62, 0x9f}, append(good[3:], 0xff)...), ErrMalformed, ""},
		{"deep nesting", append([]byte{0xd8, 0x62}, bytes.Repeat([]byte{0x81}, 100)...), ErrMalformed, "nested"},
		{"unknown content type", sealRaw(t, "text/plain", []byte{0xa0}, f.delta), ErrUnknownType, "text/plain"},
		// Valid signatures over hostile payloads: strict decoding still refuses them.
		{"duplicate map key", sealRaw(t, ContentTypeDelta, []byte{0xa2, 0x01, 0x62, 'f', '1', 0x01, 0x62, 'f', '2'}, f.delta), ErrMalformed, "duplicate"},
		{"indefinite-length payload", sealRaw(t, ContentTypeDelta, []byte{0xbf, 0x01, 0x62, 'f', '1', 0xff}, f.delta), ErrMalformed, "indefinite"},
		{"unknown field", sealRaw(t, ContentTypeDelta, []byte{0xa1, 0x18, 0x63, 0x01}, f.delta), ErrMalformed, "unknown field"},
		{"tag in payload", sealRaw(t, ContentTypeDelta, []byte{0xa1, 0x01, 0xc1, 0x01}, f.delta), ErrMalformed, "tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := dev.Open(tt.msg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open = %+v, %v; want %v", u, err, tt.want)
			}
			if tt.text != "" && !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("error %q does not say %q", err, tt.text)
			}
		})
	}
}

func TestApplyChain(t *testing.T) {
	f := newFleet(t, 1, 1)
	dev := f.device()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	open := func(raw []byte) *Delta {
		u, err := dev.Open(raw)
		if err != nil || u.Delta == nil {
			t.Fatalf("open: %v", err)
		}
		return u.Delta
	}
	raw1, d1 := f.issueDelta()
	raw2, _ := f.issueDelta()
	raw3, _ := f.issueDelta()
	if _, err := Apply(st, open(raw2)); !errors.Is(err, ErrGap) {
		t.Fatalf("delta 2 on an empty store: %v", err)
	}
	digest, err := Apply(st, open(raw1))
	if err != nil || digest != d1.State {
		t.Fatalf("delta 1: %s, %v; want %s", digest, err, d1.State)
	}
	before, err := st.Dump()
	if err != nil {
		t.Fatal(err)
	}
	// A delta for version 2 built on another state: signed, well-formed, wrong base.
	mixed := *open(raw2)
	mixed.Base = open(raw3).Base
	// Delta 1 again, yielding another state: signed by the delta role, yet not what the device
	// applied at that version.
	conflicting := *open(raw1)
	conflicting.State = open(raw3).State
	wrongState := *open(raw2)
	wrongState.State = d1.State
	for _, tt := range []struct {
		name string
		d    *Delta
		want error
	}{
		{"replay", open(raw1), ErrStale},
		{"gap", open(raw3), ErrGap},
		{"mix-and-match", &mixed, ErrBase},
		{"conflict", &conflicting, ErrConflict},
		{"divergence", &wrongState, ErrDiverged},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Apply(st, tt.d)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Apply: %v, want %v", err, tt.want)
			}
			// A replay is not a conflict, nor the other way round.
			if tt.want == ErrStale && errors.Is(err, ErrConflict) || tt.want == ErrConflict && errors.Is(err, ErrStale) {
				t.Fatalf("Apply: %v is both a replay and a conflict", err)
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
	// A delta whose own expiry has passed is still the next link: it is applied, and the store
	// takes its expiry, for verify's freshness rules to judge.
	expired := *open(raw2)
	expired.Expires = time.Now().Add(-time.Minute).Unix()
	if !expired.Expired(time.Now()) || expired.Expired(time.Time{}) {
		t.Fatal("Delta.Expired: want expired at now, never with an unknown clock")
	}
	if digest, err := Apply(st, &expired); err != nil || digest != expired.State {
		t.Fatalf("expired delta 2: %s, %v; want %s", digest, err, expired.State)
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Version() != 2 || snap.Expires() != expired.Expires {
		t.Fatalf("store at version %d expiring %d, want 2 expiring %d", snap.Version(), snap.Expires(), expired.Expires)
	}
}

// TestDeltaNamesStates: a signed delta that leaves out its base or resulting state digest is
// malformed: the device could not tell it reached the fleet's state.
func TestDeltaNamesStates(t *testing.T) {
	f := newFleet(t, 1, 1)
	_, d := f.issueDelta()
	for _, mutate := range []func(*Delta){func(d *Delta) { d.State = "" }, func(d *Delta) { d.Base = "sha256:00" }} {
		bad := *d
		mutate(&bad)
		raw, err := SealDelta(&bad, f.delta)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.device().Open(raw); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "state digests") {
			t.Fatalf("delta without its digests: %v", err)
		}
	}
}

// TestIssueRefusesExpired: an expiry that is not positive is refused before anything is
// written, and so is a delta under a root that has expired (devices would refuse it).
func TestIssueRefusesExpired(t *testing.T) {
	f := newFleet(t, 1, 1)
	f.issueDelta()
	v, state, err := f.h.Latest()
	if err != nil {
		t.Fatal(err)
	}
	for _, exp := range []time.Duration{-time.Hour, 0, time.Nanosecond} {
		if _, _, err := f.is.IssueDelta(DeltaSpec{Expires: exp}, f.delta); err == nil || !strings.Contains(err.Error(), "expires must be positive") {
			t.Errorf("delta expiring in %v: %v", exp, err)
		}
		next := testkey.New(t).Private
		if _, err := f.is.IssueRoot(RootSpec{RootKeys: pubs(next), RootThreshold: 1, DeltaKeys: pubs(f.delta), DeltaThreshold: 1,
			Expires: exp}, append(signers(f.roots...), next)...); err == nil || !strings.Contains(err.Error(), "expires must be positive") {
			t.Errorf("root expiring in %v: %v", exp, err)
		}
	}
	if v2, state2, err := f.h.Latest(); err != nil || v2 != v || state2 != state {
		t.Fatalf("history moved to %d %s (%v), want %d %s", v2, state2, err, v, state)
	}
	if cur, err := f.h.CurrentRoot(); err != nil || cur.Version != 1 {
		t.Fatalf("current root after refusals: %v, %v", cur, err)
	}
	// The fleet's clock passes root 1's expiry.
	f.is.now = func() time.Time { return time.Now().Add(25 * time.Hour) }
	if _, _, err := f.is.IssueDelta(DeltaSpec{Expires: time.Hour}, f.delta); err == nil || !strings.Contains(err.Error(), "root 1 expired") {
		t.Fatalf("delta under an expired root: %v", err)
	}
	if v2, _, _ := f.h.Latest(); v2 != v {
		t.Fatalf("history moved to %d, want %d", v2, v)
	}
}

// TestRootReplayAndConflict: a root the device already holds is a replay, and so is an older
// one; another root of the same version signed by the device's root keys is a conflict.
func TestRootReplayAndConflict(t *testing.T) {
	f := newFleet(t, 1, 1)
	dev := f.device()
	if _, err := dev.Next(f.first); !errors.Is(err, ErrRootOld) || errors.Is(err, ErrConflict) {
		t.Fatalf("root 1 again: %v", err)
	}
	// A forked history: the same root keys issue another root 1.
	forked := Root{Fleet: "f1", Version: 1, Expires: time.Now().Add(time.Hour).Unix(), Keys: ders(t, f.roots[0], f.delta),
		Root: Role{KeyIDs: ids(t, f.roots[0]), Threshold: 1}, Deltas: Role{KeyIDs: ids(t, f.roots[0]), Threshold: 1}}
	raw, err := SealRoot(&forked, f.roots[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Next(raw); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "conflicting signed root 1") {
		t.Fatalf("another root 1 signed by the root keys: %v", err)
	}
	// Another root 1 that the device's root keys did not sign proves nothing.
	other := testkey.New(t).Private
	forked.Keys, forked.Root.KeyIDs, forked.Deltas.KeyIDs = ders(t, other), ids(t, other), ids(t, other)
	if raw, err = SealRoot(&forked, other); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Next(raw); !errors.Is(err, ErrRootVersion) || errors.Is(err, ErrConflict) {
		t.Fatalf("another root 1 signed by strangers: %v", err)
	}
	// After a rotation, root 1 is old.
	next, err := dev.Next(f.rotate())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.Next(f.first); !errors.Is(err, ErrRootOld) {
		t.Fatalf("root 1 at root 2: %v", err)
	}
}

func TestHistoryAfter(t *testing.T) {
	f := newFleet(t, 1, 1)
	for range 3 {
		f.issueDelta()
	}
	f.rotate()
	_, d4 := f.issueDelta()
	// issued: root1 d1 d2 d3 root2 d4
	if v, digest, err := f.h.Latest(); err != nil || v != 4 || digest != d4.State {
		t.Fatalf("Latest = %d %s %v, want 4 %s", v, digest, err, d4.State)
	}
	for _, tt := range []struct {
		root, version uint64
		want          [][]byte
	}{
		{0, 0, f.issued},
		{1, 0, f.issued[1:]},
		{1, 2, f.issued[3:]},
		{1, 3, f.issued[4:]},
		{2, 3, f.issued[5:]},
		{2, 4, nil},
	} {
		got, latest, err := f.h.After(tt.root, tt.version, MaxBatchBytes)
		if err != nil {
			t.Fatal(err)
		}
		if latest != 4 || len(got) != len(tt.want) {
			t.Fatalf("After(%d, %d): %d messages, latest %d; want %d, 4", tt.root, tt.version, len(got), latest, len(tt.want))
		}
		for i := range got {
			if !bytes.Equal(got[i], tt.want[i]) {
				t.Fatalf("After(%d, %d)[%d] differs", tt.root, tt.version, i)
			}
		}
	}
	// A small byte budget still returns one message.
	if got, _, _ := f.h.After(0, 0, 1); len(got) != 1 {
		t.Fatalf("After with a tiny budget: %d messages", len(got))
	}
	// A second reader of the same directory sees the same log.
	h2, err := OpenHistory(f.h.dir)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := h2.After(0, 0, MaxBatchBytes)
	if err != nil || len(got) != len(f.issued) {
		t.Fatalf("second reader: %d messages, %v", len(got), err)
	}
	if _, err := h2.Issue(); err == nil {
		t.Fatal("two issuers at once")
	}
}

func FuzzOpen(f *testing.F) {
	fl := newFleet(f, 1, 1)
	good, _ := fl.issueDelta()
	f.Add(good)
	f.Add(fl.first)
	f.Add([]byte{0xd8, 0x62, 0x84, 0x40, 0xa0, 0x40, 0x80})
	dev := fl.device()
	f.Fuzz(func(t *testing.T, msg []byte) {
		u, err := dev.Open(msg)
		if err != nil {
			return
		}
		if u.Delta == nil && u.Root == nil {
			t.Fatal("nothing opened without error")
		}
		// Only what the fleet signed can verify; anything else is a forgery.
		var a, b cose.SignMessage
		if a.UnmarshalCBOR(msg) != nil || b.UnmarshalCBOR(good) != nil || !bytes.Equal(a.Payload, b.Payload) {
			t.Fatalf("accepted a message with a payload the fleet never signed: %x", msg)
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	b, _ := EncodeBatch(Batch{Fleet: "f1", Latest: 3, Messages: [][]byte{{1, 2}}})
	f.Add(b)
	r, _ := EncodeRequest(Request{Device: "d", Root: 1, Version: 2})
	f.Add(r)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if b, err := DecodeBatch(raw); err == nil {
			again, err := EncodeBatch(b)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeBatch(again); err != nil {
				t.Fatalf("re-encoded batch does not decode: %v", err)
			}
		}
		DecodeRequest(raw)
	})
}
