package trust

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// Key is a public key the fleet trusts for verifying gadget signatures.
type Key struct {
	// DER is the key's PKIX SubjectPublicKeyInfo, the bytes inside a cosign.pub PEM block.
	DER []byte `cbor:"1,keyasint"`
}

// ID names a key by the hex SHA-256 of its DER encoding (the same value sigstore uses as a
// public-key hint, in hex rather than base64).
func (k Key) ID() string { return KeyID(k.DER) }

// KeyID returns the hex SHA-256 of a DER-encoded public key.
func KeyID(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// PublicKey parses the key.
func (k Key) PublicKey() (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(k.DER)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", k.ID(), err)
	}
	return pub, nil
}

// Signature is a detached cosign simple-signing signature over an image index digest.
type Signature struct {
	// Digest is the signed image index digest, "sha256:<hex>".
	Digest string `cbor:"1,keyasint"`
	// Payload is the exact simple-signing JSON that was signed.
	Payload []byte `cbor:"2,keyasint"`
	// Signature is the raw ASN.1 ECDSA signature over SHA-256(Payload).
	Signature []byte `cbor:"3,keyasint"`
}

// ID names a signature by the hex SHA-256 of its signature bytes, so that the same
// signature delivered twice is stored once.
func (s Signature) ID() string {
	sum := sha256.Sum256(s.Signature)
	return hex.EncodeToString(sum[:])
}

// Reader is the read side of the trust store, all that verification needs. Every method reads
// from a single consistent view of the store.
type Reader interface {
	// Version is the version of the last applied trust delta (0 for a new store).
	Version() uint64
	// StateDigest is "sha256:<hex>" over the whole trust state (see docs/protocol.md).
	StateDigest() string
	// Keys returns every key trusted for gadget signatures.
	Keys() []Key
	// SignaturesFor returns the signatures delivered for an image index digest.
	SignaturesFor(digest string) []Signature
	// Revoked reports whether the fleet revoked a key, identity or digest.
	Revoked(Revocation) bool
	// Policy is the fleet's verification policy; nil means every gadget is verified Strict.
	Policy() *Policy
	// Override returns the break-glass override stored for an image digest, if any; whether
	// it is still valid is the caller's check.
	Override(digest string) *Override
	// Expires is when the fleet said this trust goes stale, Unix seconds; 0 if it never said.
	Expires() int64
	// TrustedRoot is the Sigstore trusted_root.json the fleet delivered for keyless
	// signatures; nil if none.
	TrustedRoot() []byte
}
