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
)

// MaxMessageSize caps any message before it is decoded.
const MaxMessageSize = 1 << 20

// Content types of the payloads the protocol signs.
const (
	ContentTypeRoot  = "application/vnd.bpfleet.root.v1+cbor"
	ContentTypeDelta = "application/vnd.bpfleet.delta.v1+cbor"
)

// coseSignTag prefixes a tagged COSE_Sign message (tag 98), the only tag the protocol allows.
var coseSignTag = []byte{0xd8, 0x62}

// Errors a device reports for a rejected message; test with errors.Is.
var (
	ErrTooLarge     = errors.New("message too large")
	ErrMalformed    = errors.New("malformed message")
	ErrThreshold    = errors.New("not enough valid signatures from the role's keys")
	ErrBadSignature = errors.New("signature does not verify")
)

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

// KeyID identifies a key in the protocol: the SHA-256 of its DER SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// seal encodes v deterministically and signs it with every key, as one COSE_Sign message.
func seal(contentType string, v any, keys ...crypto.Signer) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("no signing keys")
	}
	payload, err := encMode.Marshal(v)
	if err != nil {
		return nil, err
	}
	msg := cose.NewSignMessage()
	msg.Headers.Protected[cose.HeaderLabelContentType] = contentType
	msg.Payload = payload
	signers := make([]cose.Signer, len(keys))
	for i, k := range keys {
		kid, err := KeyID(k.Public())
		if err != nil {
			return nil, err
		}
		if signers[i], err = cose.NewSigner(cose.AlgorithmES256, k); err != nil {
			return nil, err
		}
		sig := cose.NewSignature()
		sig.Headers.Protected[cose.HeaderLabelAlgorithm] = cose.AlgorithmES256
		sig.Headers.Protected[cose.HeaderLabelKeyID] = kid
		msg.Signatures = append(msg.Signatures, sig)
	}
	if err := msg.Sign(rand.Reader, nil, signers...); err != nil {
		return nil, err
	}
	return msg.MarshalCBOR()
}

// envelope is a received message whose structure was checked but whose signatures were not.
type envelope struct {
	msg         cose.SignMessage
	contentType string
}

// parseEnvelope checks size and structure before anything else looks at a message.
func parseEnvelope(raw []byte) (*envelope, error) {
	if len(raw) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxMessageSize)
	}
	if !bytes.HasPrefix(raw, coseSignTag) {
		return nil, fmt.Errorf("%w: not a COSE_Sign message", ErrMalformed)
	}
	if err := strict.Wellformed(raw[len(coseSignTag):]); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	var e envelope
	if err := e.msg.UnmarshalCBOR(raw); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	ct, ok := e.msg.Headers.Protected[cose.HeaderLabelContentType].(string)
	if !ok {
		return nil, fmt.Errorf("%w: no content type", ErrMalformed)
	}
	e.contentType = ct
	return &e, nil
}

// verify counts the distinct keys of role whose signatures verify over the bytes as received,
// and fails unless they reach the role's threshold.
func (e *envelope) verify(role Role, keys map[string]crypto.PublicKey, what string) error {
	valid := map[string]bool{}
	var bad int
	for _, sig := range e.msg.Signatures {
		if alg, err := sig.Headers.Protected.Algorithm(); err != nil || alg != cose.AlgorithmES256 {
			bad++
			continue
		}
		kid, _ := sig.Headers.Protected[cose.HeaderLabelKeyID].([]byte)
		id := string(kid)
		pub, ok := keys[id]
		if !ok || !role.has(kid) || valid[id] {
			continue
		}
		verifier, err := cose.NewVerifier(cose.AlgorithmES256, pub)
		if err == nil {
			err = sig.Verify(verifier, e.msg.Headers.RawProtected, e.msg.Payload, nil)
		}
		if err != nil {
			bad++
			continue
		}
		valid[id] = true
	}
	if uint64(len(valid)) < role.Threshold || role.Threshold == 0 {
		if bad > 0 && len(valid) == 0 {
			return fmt.Errorf("%w: %s: %d signature(s) failed to verify", ErrBadSignature, what, bad)
		}
		return fmt.Errorf("%w: %s: %d of %d required (%d signature(s) present)", ErrThreshold, what, len(valid), role.Threshold, len(e.msg.Signatures))
	}
	return nil
}

// decode strictly decodes the payload; call it only after verify.
func (e *envelope) decode(v any) error {
	if err := strict.Unmarshal(e.msg.Payload, v); err != nil {
		return fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	return nil
}
