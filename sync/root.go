package sync

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Errors about roots and freshness.
var (
	ErrRootVersion = errors.New("root version is not the next one")
	// ErrRootOld is a root the device already has, or an older one: a replay, harmless.
	ErrRootOld    = errors.New("root is not newer than the device's (replay)")
	ErrWrongFleet = errors.New("message is for another fleet")
	ErrExpired    = errors.New("expired")
)

// Role names the keys allowed to sign one kind of message and how many of them must.
type Role struct {
	KeyIDs    [][]byte `cbor:"1,keyasint"`
	Threshold uint64   `cbor:"2,keyasint"`
}

func (r Role) has(kid []byte) bool {
	for _, k := range r.KeyIDs {
		if bytes.Equal(k, kid) {
			return true
		}
	}
	return false
}

// Root is the fleet's root of trust, as in TUF: the keys of the root role, which sign roots,
// and of the delta role, which sign deltas, each with a threshold. A device is provisioned with
// one root and from then on accepts only the next version, signed by thresholds of both the
// root it has and the new one.
type Root struct {
	Fleet   string   `cbor:"1,keyasint"`
	Version uint64   `cbor:"2,keyasint"`
	Expires int64    `cbor:"3,keyasint"` // Unix seconds
	Keys    [][]byte `cbor:"4,keyasint"` // DER SubjectPublicKeyInfo of every key a role names
	Root    Role     `cbor:"5,keyasint"`
	Deltas  Role     `cbor:"6,keyasint"`
}

// SealRoot signs r with the given keys (old and new root keys, for a rotation).
func SealRoot(r *Root, keys ...crypto.Signer) ([]byte, error) {
	if _, err := r.parseKeys(); err != nil {
		return nil, fmt.Errorf("seal root %d: %w", r.Version, err)
	}
	msg, err := seal(ContentTypeRoot, r, keys...)
	if err != nil {
		return nil, fmt.Errorf("seal root %d: %w", r.Version, err)
	}
	return msg, nil
}

// TrustedRoot is a root whose signatures were verified, ready to verify what it signs.
type TrustedRoot struct {
	Root
	// Raw is the root message as received; it is what the device stores.
	Raw  []byte
	keys map[string]crypto.PublicKey
}

// parseKeys checks the root's structure and indexes its keys by key id.
func (r *Root) parseKeys() (map[string]crypto.PublicKey, error) {
	if r.Fleet == "" || r.Version == 0 {
		return nil, fmt.Errorf("%w: root needs a fleet and a version ≥ 1", ErrMalformed)
	}
	keys := map[string]crypto.PublicKey{}
	for i, der := range r.Keys {
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return nil, fmt.Errorf("%w: root key %d: %v", ErrMalformed, i, err)
		}
		sum := sha256.Sum256(der)
		keys[string(sum[:])] = pub
	}
	for name, role := range map[string]Role{"root": r.Root, "deltas": r.Deltas} {
		if role.Threshold == 0 || role.Threshold > uint64(len(role.KeyIDs)) {
			return nil, fmt.Errorf("%w: %s role: threshold %d with %d key(s)", ErrMalformed, name, role.Threshold, len(role.KeyIDs))
		}
		for _, kid := range role.KeyIDs {
			if _, ok := keys[string(kid)]; !ok {
				return nil, fmt.Errorf("%w: %s role names key %x that the root does not carry", ErrMalformed, name, kid)
			}
		}
	}
	return keys, nil
}

// OpenRoot verifies a root the device takes as given, such as the one it was provisioned
// with: a threshold of its own root role must have signed it.
func OpenRoot(raw []byte) (*TrustedRoot, error) {
	env, r, keys, err := parseRoot(raw)
	if err != nil {
		return nil, err
	}
	if err := env.verify(r.Root, keys, fmt.Sprintf("root %d", r.Version)); err != nil {
		return nil, err
	}
	return &TrustedRoot{Root: *r, Raw: raw, keys: keys}, nil
}

func parseRoot(raw []byte) (*envelope, *Root, map[string]crypto.PublicKey, error) {
	env, err := parseEnvelope(raw)
	if err != nil {
		return nil, nil, nil, err
	}
	if env.contentType != ContentTypeRoot {
		return nil, nil, nil, fmt.Errorf("%w: content type %q is not a root", ErrMalformed, env.contentType)
	}
	// The root's own keys are needed to check its signatures, so it is decoded first; nothing
	// in it is trusted until a threshold of the current root's keys signed it.
	var r Root
	if err := env.decode(&r); err != nil {
		return nil, nil, nil, err
	}
	keys, err := r.parseKeys()
	if err != nil {
		return nil, nil, nil, err
	}
	return env, &r, keys, nil
}

// Next verifies the root that follows t: the same fleet, version t.Version+1, signed by a
// threshold of t's root role and a threshold of its own. A device that missed several
// rotations walks them one at a time.
func (t *TrustedRoot) Next(raw []byte) (*TrustedRoot, error) {
	env, r, keys, err := parseRoot(raw)
	if err != nil {
		return nil, err
	}
	if r.Fleet != t.Fleet {
		return nil, fmt.Errorf("%w: root for %q, device is in %q", ErrWrongFleet, r.Fleet, t.Fleet)
	}
	if r.Version == t.Version {
		return nil, t.same(env, r.Version)
	}
	if r.Version < t.Version {
		// Its signers are roots the device has let go of: it cannot be verified, and it
		// cannot take the device back either.
		return nil, fmt.Errorf("%w: got root %d, have %d", ErrRootOld, r.Version, t.Version)
	}
	if r.Version != t.Version+1 {
		return nil, fmt.Errorf("%w: got root %d, have %d", ErrRootVersion, r.Version, t.Version)
	}
	if err := env.verify(t.Root.Root, t.keys, fmt.Sprintf("root %d by the keys of root %d", r.Version, t.Version)); err != nil {
		return nil, err
	}
	if err := env.verify(r.Root, keys, fmt.Sprintf("root %d by its own keys", r.Version)); err != nil {
		return nil, err
	}
	return &TrustedRoot{Root: *r, Raw: raw, keys: keys}, nil
}

// same judges a root of t's own version: the same content is a replay (ErrRootOld); other
// content signed by a threshold of t's root role is a conflict (ErrConflict), since those keys
// signed two different roots of one version; anything else proves nothing (ErrRootVersion).
func (t *TrustedRoot) same(env *envelope, version uint64) error {
	mine, err := parseEnvelope(t.Raw)
	if err != nil {
		return fmt.Errorf("the device's own root: %w", err)
	}
	if bytes.Equal(env.msg.Payload, mine.msg.Payload) {
		return fmt.Errorf("%w: root %d again", ErrRootOld, version)
	}
	if err := env.verify(t.Root.Root, t.keys, fmt.Sprintf("root %d", version)); err != nil {
		return fmt.Errorf("%w: got another root %d, have root %d (%v)", ErrRootVersion, version, t.Version, err)
	}
	return fmt.Errorf("conflicting signed root %d: signed by this device's root keys but differs from the root %d it holds: %w",
		version, t.Version, ErrConflict)
}

// Expired reports whether the root's expiry has passed at now. A zero now (the device does
// not know the time) never expires anything: see trust.ClockKnown.
func (t *TrustedRoot) Expired(now time.Time) bool {
	return !now.IsZero() && now.Unix() > t.Expires
}
