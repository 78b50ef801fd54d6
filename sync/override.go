package sync

import (
	"crypto"
	"fmt"

	"github.com/bpfleet/bpfleet/internal/trust"
)

// ContentTypeOverride marks a break-glass override.
const ContentTypeOverride = "application/vnd.bpfleet.override.v1+cbor"

// Override is a break-glass order (see trust.Override). It is signed by a threshold of the
// root role, not the delta role, because it suspends verification; it is not part of the delta
// chain, because it is for one device and must not change the fleet's state digest.
type Override = trust.Override

// SealOverride signs o with root-role keys.
func SealOverride(o *Override, keys ...crypto.Signer) ([]byte, error) {
	if !trust.ValidDigest(o.Digest) || o.Device == "" || o.Reason == "" {
		return nil, fmt.Errorf("seal override: needs a device, a sha256 digest and a reason")
	}
	msg, err := seal(ContentTypeOverride, o, keys...)
	if err != nil {
		return nil, fmt.Errorf("seal override: %w", err)
	}
	return msg, nil
}

// openOverride verifies an override against the root role and checks it is well-formed and
// for this fleet; whether it is for this device and still valid is the device's check.
func (t *TrustedRoot) openOverride(env *envelope) (*Override, error) {
	if err := env.verify(t.Root.Root, t.keys, "override"); err != nil {
		return nil, err
	}
	var o Override
	if err := env.decode(&o); err != nil {
		return nil, err
	}
	if o.Fleet != t.Fleet {
		return nil, fmt.Errorf("%w: override for fleet %q, this device is in %q", ErrWrongFleet, o.Fleet, t.Fleet)
	}
	if !trust.ValidDigest(o.Digest) || o.Device == "" || o.Reason == "" {
		return nil, fmt.Errorf("%w: override needs a device, a sha256 digest and a reason", ErrMalformed)
	}
	return &o, nil
}
