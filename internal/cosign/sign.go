package cosign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// ErrBadSignature: the signature does not verify over the payload with the given key.
var ErrBadSignature = errors.New("signature does not verify")

// Sign returns an ASN.1 ECDSA signature over SHA-256(payload), as `cosign sign --key` makes.
func Sign(key *ecdsa.PrivateKey, payload []byte) ([]byte, error) {
	digest := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

// VerifySignature checks an ASN.1 ECDSA signature over SHA-256 of the raw payload bytes (the
// hash cosign uses for keys of every ECDSA curve). Only ECDSA keys are accepted.
func VerifySignature(pub crypto.PublicKey, payload, sig []byte) error {
	key, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("verify: %T is not an ECDSA key", pub)
	}
	digest := sha256.Sum256(payload)
	if !ecdsa.VerifyASN1(key, digest[:], sig) {
		return ErrBadSignature
	}
	return nil
}
