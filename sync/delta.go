package sync

import (
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
)

// Errors about a delta's place in the chain.
var (
	ErrStale       = errors.New("delta version is not newer than the store (replay or rollback)")
	ErrGap         = errors.New("delta is ahead of the store: missing deltas in between")
	ErrBase        = errors.New("delta applies to another state (mix-and-match)")
	ErrDiverged    = errors.New("state after applying differs from the state the delta names")
	ErrUnknownType = errors.New("unknown message type")
	// ErrConflict marks a validly signed message that contradicts what the device already
	// holds: a delta for the device's version that yields another state, or another root of
	// the device's root version. A replay is byte-for-byte what the device has and is harmless;
	// a conflict means the fleet's history forked or a signing key is in other hands.
	ErrConflict = errors.New("forked history or compromised key")
)

// Delta is a signed set of additions to a device's trust, one link of a hash chain: it names
// the state it applies to and the state it yields. See docs/protocol.md for the CDDL.
type Delta struct {
	Fleet   string `cbor:"1,keyasint"`
	Version uint64 `cbor:"2,keyasint"` // the trust version it brings a device to: Base's + 1
	Base    string `cbor:"3,keyasint"` // state digest at Version-1
	State   string `cbor:"4,keyasint"` // state digest after applying
	// Expires is when the state this delta yields goes stale (Unix seconds). It judges the
	// device's newest state only (verify's freshness rules): a delta is applied whatever its
	// own expiry, so that a device catching up can pass through old deltas.
	Expires int64 `cbor:"5,keyasint"`
	// Keys are public keys to trust for gadget signatures.
	Keys []trust.Key `cbor:"6,keyasint,omitempty"`
	// Signatures are cosign simple-signing signatures for image index digests.
	Signatures []trust.Signature `cbor:"7,keyasint,omitempty"`
	// Revocations withdraw keys, keyless identities and digests.
	Revocations []trust.Revocation `cbor:"8,keyasint,omitempty"`
	// Policy, when present, replaces the fleet's verification policy.
	Policy *trust.Policy `cbor:"9,keyasint,omitempty"`
	// TrustedRoot, when present, replaces the Sigstore trusted_root.json for keyless signatures.
	TrustedRoot []byte `cbor:"10,keyasint,omitempty"`
}

// Change is the store change the delta describes.
func (d *Delta) Change() store.Change {
	return store.Change{Version: d.Version, Base: d.Base, State: d.State, Expires: d.Expires,
		Keys: d.Keys, Signatures: d.Signatures, Revocations: d.Revocations, Policy: d.Policy, TrustedRoot: d.TrustedRoot}
}

// Expired reports whether the state d yields is stale at now; a zero now (clock unknown, see
// trust.ClockKnown) never is.
func (d *Delta) Expired(now time.Time) bool {
	return !now.IsZero() && now.Unix() > d.Expires
}

// SealDelta signs d with delta-role keys.
func SealDelta(d *Delta, keys ...crypto.Signer) ([]byte, error) {
	msg, err := seal(ContentTypeDelta, d, keys...)
	if err != nil {
		return nil, fmt.Errorf("seal delta %d: %w", d.Version, err)
	}
	return msg, nil
}

// Update is one verified message: the next root, a delta or a break-glass override.
type Update struct {
	Root     *TrustedRoot
	Delta    *Delta
	Override *Override
}

// Open checks a received message against the device's current root and returns what it
// carries. Roots must be t's successor (see Next); deltas must be signed by a threshold of
// t's delta role and be for t's fleet. Where the delta fits the store is Apply's business.
func (t *TrustedRoot) Open(raw []byte) (Update, error) {
	env, err := parseEnvelope(raw)
	if err != nil {
		return Update{}, err
	}
	switch env.contentType {
	case ContentTypeRoot:
		next, err := t.Next(raw)
		return Update{Root: next}, err
	case ContentTypeDelta:
		if err := env.verify(t.Deltas, t.keys, "delta"); err != nil {
			return Update{}, err
		}
		var d Delta
		if err := env.decode(&d); err != nil {
			return Update{}, err
		}
		if d.Fleet != t.Fleet {
			return Update{}, fmt.Errorf("%w: delta %d is for fleet %q, this device is in %q", ErrWrongFleet, d.Version, d.Fleet, t.Fleet)
		}
		// Both ends of the link must be named: without State the device could not tell that it
		// reached the state the fleet did.
		if !trust.ValidDigest(d.Base) || !trust.ValidDigest(d.State) {
			return Update{}, fmt.Errorf("%w: delta %d must name its base and resulting state digests (sha256:<hex>)", ErrMalformed, d.Version)
		}
		return Update{Delta: &d}, nil
	case ContentTypeOverride:
		o, err := t.openOverride(env)
		return Update{Override: o}, err
	default:
		return Update{}, fmt.Errorf("%w: %q", ErrUnknownType, env.contentType)
	}
}

// Apply writes an opened delta into the store when it is the next link of the chain, and
// returns the new state digest. It refuses a delta the store already has (ErrStale; or
// ErrConflict when it is for the store's version but names another state), one that is ahead
// (ErrGap: catch up first), one built on another state (ErrBase), and one after which the
// store's digest would not be the one the delta names (ErrDiverged). In every case the store is
// left as it was.
//
// Expiry is not checked: versions and the hash chain already stop a replay or rollback, and a
// device that was away past an old delta's expiry must still pass through it (and get its
// revocations). The store takes the newest delta's expiry, and verify judges that (strict
// refuses stale trust, the other levels warn); see [Delta.Expired].
func Apply(s *store.Store, d *Delta) (string, error) {
	return ApplyChain(s, []*Delta{d})
}

// ApplyChain applies consecutive deltas in one store transaction, hashing the state once (see
// store.ApplyChain): what a device does with a catch-up batch. Errors are Apply's; on any
// error nothing was written, and applying the deltas one at a time tells which one is at fault.
func ApplyChain(s *store.Store, ds []*Delta) (string, error) {
	changes := make([]store.Change, len(ds))
	for i, d := range ds {
		changes[i] = d.Change()
	}
	digest, err := s.ApplyChain(changes)
	switch {
	case errors.Is(err, store.ErrOld):
		if cerr := conflict(s, ds); cerr != nil {
			return "", cerr
		}
		return "", fmt.Errorf("%w: %v", ErrStale, err)
	case errors.Is(err, store.ErrAhead):
		return "", fmt.Errorf("%w: %v", ErrGap, err)
	case errors.Is(err, store.ErrBase):
		return "", fmt.Errorf("%w: %v", ErrBase, err)
	case errors.Is(err, store.ErrState):
		return "", fmt.Errorf("%w: %v", ErrDiverged, err)
	}
	return digest, err
}

// conflict tells a replay from a fork, for deltas the store is not behind: one for the store's
// own version that names another state is a conflict. Only the current version's digest is
// kept, so an older delta cannot be told apart and counts as a replay.
func conflict(s *store.Store, ds []*Delta) error {
	head, err := s.Head()
	if err != nil {
		return err
	}
	for _, d := range ds {
		if d.Version == head.Version && d.State != head.StateDigest {
			return fmt.Errorf("conflicting signed delta %d: it yields state %s, this device holds %s at that version: %w",
				d.Version, d.State, head.StateDigest, ErrConflict)
		}
	}
	return nil
}

// Rejected reports whether err is the protocol refusing a message, which redelivery cannot
// change, rather than a failure of the store, after which the message must be tried again.
func Rejected(err error) bool {
	for _, e := range []error{ErrTooLarge, ErrMalformed, ErrThreshold, ErrBadSignature, ErrUnknownType,
		ErrWrongFleet, ErrRootVersion, ErrRootOld, ErrConflict, ErrExpired, ErrStale, ErrGap, ErrBase, ErrDiverged, store.ErrInvalid} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Inspect decodes a sealed message without checking its signatures, for operator tools that
// need to read what they hold. Devices must use TrustedRoot.Open.
func Inspect(raw []byte) (Update, error) {
	env, err := parseEnvelope(raw)
	if err != nil {
		return Update{}, err
	}
	switch env.contentType {
	case ContentTypeRoot:
		var r Root
		if err := env.decode(&r); err != nil {
			return Update{}, err
		}
		return Update{Root: &TrustedRoot{Root: r, Raw: raw}}, nil
	case ContentTypeDelta:
		var d Delta
		if err := env.decode(&d); err != nil {
			return Update{}, err
		}
		return Update{Delta: &d}, nil
	case ContentTypeOverride:
		var o Override
		if err := env.decode(&o); err != nil {
			return Update{}, err
		}
		return Update{Override: &o}, nil
	}
	return Update{}, fmt.Errorf("%w: %q", ErrUnknownType, env.contentType)
}
