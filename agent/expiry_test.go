package agent

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"debug/elf"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/sync"
	"github.com/bpfleet/bpfleet/verify"
)

// bpfObject returns the smallest ELF object for the BPF machine: enough to package a gadget
// image that verify can approve (nothing here loads it).
func bpfObject(t *testing.T) []byte {
	t.Helper()
	h := elf.Header64{Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_BPF), Version: uint32(elf.EV_CURRENT), Ehsize: 64, Shentsize: 64}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, h); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestSyncExpiredDeltas: a device that was away past a delta's expiry still passes through it
// (finding 1: it used to stay at version 0 forever), and expiry judges only the newest trust it
// holds. A new device catches up over a history whose delta 1 expired and delta 2 is fresh, and
// holds delta 1's key, signature and revocation; then a delta that is already expired when it
// arrives is applied too (its revocation takes effect), the agent warns, and verify under
// strict policy refuses the now stale trust.
func TestSyncExpiredDeltas(t *testing.T) {
	tf := newTestFleet(t)
	// The device's clock runs 30 minutes ahead of the fleet's: a delta issued to expire in 10
	// minutes is expired when it arrives, with no waiting. Root 1 (1 h) is still fresh.
	deviceNow := func() time.Time { return time.Now().Add(30 * time.Minute) }
	dev := tf.device("away")
	dev.now = deviceNow

	// A gadget in the device's image store, signed by a key delta 1 brings.
	const ref = "example.com/stale:v1"
	images, err := oci.Open(imageDir(dev.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := images.PackageGadget(oci.Gadget{Ref: ref, Arch: runtime.GOARCH, Program: bpfObject(t), Metadata: []byte("name: stale\n")})
	if err != nil {
		t.Fatal(err)
	}
	gadgetKey := testkey.New(t).Private
	der, err := x509.MarshalPKIXPublicKey(gadgetKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	payload, err := cosign.NewPayload(desc.Digest, "example.com/stale")
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cosign.Sign(gadgetKey, payload)
	if err != nil {
		t.Fatal(err)
	}
	revoked1 := trust.Revocation{Kind: trust.RevokeDigest, Value: "sha256:" + strings.Repeat("a", 64)}
	revoked3 := trust.Revocation{Kind: trust.RevokeDigest, Value: "sha256:" + strings.Repeat("b", 64)}
	issue := func(spec sync.DeltaSpec) ([]byte, *sync.Delta) {
		t.Helper()
		raw, d, err := tf.issuer.IssueDelta(spec, tf.deltaKey)
		if err != nil {
			t.Fatal(err)
		}
		return raw, d
	}
	_, d1 := issue(sync.DeltaSpec{Keys: []trust.Key{{DER: der}}, Signatures: []trust.Signature{{Digest: desc.Digest, Payload: payload, Signature: sig}},
		Revocations: []trust.Revocation{revoked1}, Expires: 10 * time.Minute})
	_, d2 := issue(sync.DeltaSpec{Expires: 50 * time.Minute}) // a heartbeat, fresh for the device
	if !d1.Expired(deviceNow()) || d2.Expired(deviceNow()) {
		t.Fatal("the test's clocks do not make delta 1 expired and delta 2 fresh")
	}
	tf.serve(clientID("serve"), "g1")
	tf.waitServing()
	dev.start()
	s := dev.waitConverged(tf, 20*time.Second)
	if s.Version != 2 || s.LastRejection != "" || !s.Expires.Equal(time.Unix(d2.Expires, 0)) {
		t.Fatalf("status %+v, want version 2 expiring at delta 2's %v, no rejection", s, time.Unix(d2.Expires, 0).UTC())
	}
	checkAppliedOnce(t, "away", dev.log.String(), 2)
	if c := dev.log.count("expired at"); c != 0 {
		t.Fatalf("fresh trust reported as expired:\n%s", dev.log.String())
	}
	snap, err := snapshot(dev.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Revoked(revoked1) || len(snap.Keys()) != 1 {
		t.Fatalf("delta 1's revocation or key missing: revoked %t, %d key(s)", snap.Revoked(revoked1), len(snap.Keys()))
	}
	if _, err := verify.Gadget(snap, images, ref, verify.WithNow(deviceNow())); err != nil {
		t.Fatalf("verify on fresh trust: %v", err)
	}
	if st, err := TrustStatus(dev.dataDir, deviceNow()); err != nil || st.Stale {
		t.Fatalf("trust status of the trust verify accepts: %+v, %v; want not stale", st, err)
	}

	// Delta 3 is expired on arrival: applied all the same, and the trust is now stale.
	raw3, d3 := issue(sync.DeltaSpec{Revocations: []trust.Revocation{revoked3}, Expires: 10 * time.Minute})
	tf.publishAll([][]byte{raw3})
	s = dev.waitConverged(tf, 20*time.Second)
	if s.Version != 3 || s.LastRejection != "" || !s.Expires.Equal(time.Unix(d3.Expires, 0)) {
		t.Fatalf("status %+v, want version 3 expiring at delta 3's %v", s, time.Unix(d3.Expires, 0).UTC())
	}
	dev.waitLog(`level=WARN msg="trust version 3 expired at `+time.Unix(d3.Expires, 0).UTC().Format(time.RFC3339)+
		`: gadgets under strict policy are refused until a fresh delta arrives"`, 1)
	if snap, err = snapshot(dev.dataDir); err != nil {
		t.Fatal(err)
	}
	if !snap.Revoked(revoked3) || snap.Expires() != d3.Expires {
		t.Fatalf("delta 3 not in the store: revoked %t, expires %d", snap.Revoked(revoked3), snap.Expires())
	}
	// What `bpfleet trust status` and the agent's log say of it.
	st, err := TrustStatus(dev.dataDir, deviceNow())
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Unix(d3.Expires, 0).UTC()
	if st.Expires == nil || !st.Expires.Equal(expires) {
		t.Errorf("trust status expires %v, want %v", st.Expires, expires)
	}
	st.Expires = nil
	if want := (TrustState{Version: 3, StateDigest: snap.StateDigest(), Stale: true, Keys: 1, Signatures: 1, Revocations: 2}); st != want {
		t.Errorf("trust status %+v, want %+v", st, want)
	}
	dev.waitLog(`msg="delta applied" version=3 keys=0 signatures=0 revocations=1 policy=false trusted_root=false`, 1)
	_, err = verify.Gadget(snap, images, ref, verify.WithNow(deviceNow()))
	if !errors.Is(err, verify.ErrStale) || !strings.Contains(err.Error(), "trust version 3 expired") {
		t.Fatalf("verify under strict policy on stale trust: %v", err)
	}
}

// TestSyncThroughExpiredOldRoot: a new device catches up through root 1, which expired and
// which root 2 (with a new delta key) replaced. The deltas root 1's key signed are applied
// because a verified successor is in the same batch; before, they were refused and, once
// root 2 was in place, could never be verified again.
func TestSyncThroughExpiredOldRoot(t *testing.T) {
	tf := newTestFleet(t)
	tf.mustIssue(2, 0)
	nextRoot, nextDelta := testkey.New(t).Private, testkey.New(t).Private
	if _, err := tf.issuer.IssueRoot(sync.RootSpec{RootKeys: []crypto.PublicKey{nextRoot.Public()}, RootThreshold: 1,
		DeltaKeys: []crypto.PublicKey{nextDelta.Public()}, DeltaThreshold: 1, Expires: 3 * time.Hour}, tf.rootKey, nextRoot); err != nil {
		t.Fatal(err)
	}
	tf.deltaKey = nextDelta
	tf.mustIssue(1, 0)
	tf.serve(clientID("serve"), "g1")
	tf.waitServing()

	dev := tf.device("late")
	dev.now = func() time.Time { return time.Now().Add(90 * time.Minute) } // past root 1 (1 h), not root 2 (3 h)
	dev.start()
	s := dev.waitConverged(tf, 20*time.Second)
	if s.Root != 2 || s.Version != 3 || s.LastRejection != "" {
		t.Fatalf("status %+v, want root 2, version 3, no rejection", s)
	}
	checkAppliedOnce(t, "late", dev.log.String(), 3)
}

// waitLog waits until the device's log holds s.
func (d *device) waitLog(s string, n int) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for d.log.count(s) < n {
		if time.Now().After(deadline) {
			d.t.Fatalf("log never had %d× %q:\n%s", n, s, tail(d.log.String(), 15))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
