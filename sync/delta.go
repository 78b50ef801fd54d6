package sync

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
)

// MaxMessageSize caps a delta message before it is decoded.
const MaxMessageSize = 1 << 20

// ContentType marks a COSE payload as a bpfleet trust delta.
const ContentType = "application/vnd.bpfleet.delta.v1+cbor"

// Errors a device reports for a rejected delta; test with errors.Is.
var (
	ErrTooLarge     = errors.New("message too large")
	ErrMalformed    = errors.New("malformed message")
	ErrUnknownKey   = errors.New("signed by a key that is not a trusted update key")
	ErrBadSignature = errors.New("signature does not verify")
	ErrWrongFleet   = errors.New("delta is for another fleet")
	ErrStale        = errors.New("delta version is not newer than the store (replay or rollback)")
)

// Delta is a signed set of additions to a device's trust. CBOR map keys are small integers
// (see docs/protocol.md for the CDDL).
type Delta struct {
	// Fleet names the fleet the delta is for; a device rejects other fleets' deltas.
	Fleet string `cbor:"1,keyasint"`
	// Version is the trust version the delta brings a device to; it must exceed the device's.
	Version uint64 `cbor:"2,keyasint"`
	// Keys are public keys to trust for gadget signatures.
	Keys []trust.Key `cbor:"3,keyasint,omitempty"`
	// Signatures are cosign simple-signing signatures for image index digests.
	Signatures []trust.Signature `cbor:"4,keyasint,omitempty"`
}

var (
	encMode cbor.EncMode
	// strict decodes untrusted bytes: anything CBOR allows that our schema does not use is an
	// error, so two devices can never read one message two ways.
	strict cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	strict, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  65536,
		MaxMapPairs:       1024,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// KeyID identifies an update key in a COSE header: the SHA-256 of its DER public key.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// Seal encodes d deterministically and signs it with an ECDSA P-256 update key.
func Seal(d *Delta, key crypto.Signer) ([]byte, error) {
	payload, err := encMode.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("seal delta %d: %w", d.Version, err)
	}
	kid, err := KeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("seal delta %d: %w", d.Version, err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmES256, key)
	if err != nil {
		return nil, fmt.Errorf("seal delta %d: %w", d.Version, err)
	}
	headers := cose.Headers{Protected: cose.ProtectedHeader{
		cose.HeaderLabelAlgorithm:   cose.AlgorithmES256,
		cose.HeaderLabelContentType: ContentType,
		cose.HeaderLabelKeyID:       kid,
	}}
	msg, err := cose.Sign1Untagged(rand.Reader, signer, headers, payload, nil)
	if err != nil {
		return nil, fmt.Errorf("seal delta %d: %w", d.Version, err)
	}
	return msg, nil
}

// Open checks a received delta message and returns its contents. updateKeys are the keys the
// device was provisioned with; the message must be signed by one of them.
func Open(msg []byte, updateKeys []crypto.PublicKey) (*Delta, error) {
	if len(msg) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(msg), MaxMessageSize)
	}
	if err := strict.Wellformed(msg); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	var env cose.UntaggedSign1Message
	if err := env.UnmarshalCBOR(msg); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if alg, err := env.Headers.Protected.Algorithm(); err != nil || alg != cose.AlgorithmES256 {
		return nil, fmt.Errorf("%w: algorithm must be ES256", ErrMalformed)
	}
	if ct, ok := env.Headers.Protected[cose.HeaderLabelContentType].(string); !ok || ct != ContentType {
		return nil, fmt.Errorf("%w: content type must be %s", ErrMalformed, ContentType)
	}
	kid, _ := env.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
	pub, err := findKey(kid, updateKeys)
	if err != nil {
		return nil, err
	}
	verifier, err := cose.NewVerifier(cose.AlgorithmES256, pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknownKey, err)
	}
	// go-cose verifies over the protected header and payload bytes exactly as received.
	if err := env.Verify(nil, verifier); err != nil {
		return nil, fmt.Errorf("%w: key %x: %v", ErrBadSignature, kid, err)
	}
	var d Delta
	if err := strict.Unmarshal(env.Payload, &d); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	return &d, nil
}

func findKey(kid []byte, keys []crypto.PublicKey) (crypto.PublicKey, error) {
	for _, k := range keys {
		id, err := KeyID(k)
		if err == nil && bytes.Equal(id, kid) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: key id %x (%d update key(s) provisioned)", ErrUnknownKey, kid, len(keys))
}

// Apply writes an opened delta into the store if it is for fleet and newer than the store. It
// returns the store's new state digest.
func Apply(s *store.Store, fleet string, d *Delta) (string, error) {
	if d.Fleet != fleet {
		return "", fmt.Errorf("%w: delta %d is for fleet %q, this device is in %q", ErrWrongFleet, d.Version, d.Fleet, fleet)
	}
	digest, err := s.Apply(store.Change{Version: d.Version, Keys: d.Keys, Signatures: d.Signatures})
	if errors.Is(err, store.ErrVersion) {
		return "", fmt.Errorf("%w: %v", ErrStale, err)
	}
	return digest, err
}

// Inspect decodes a sealed delta without checking its signature, for operator tools that need
// to read what they are about to publish. Devices must use Open.
func Inspect(msg []byte) (*Delta, error) {
	if len(msg) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(msg), MaxMessageSize)
	}
	var env cose.UntaggedSign1Message
	if err := env.UnmarshalCBOR(msg); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	var d Delta
	if err := strict.Unmarshal(env.Payload, &d); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	return &d, nil
}
