package cosign

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

const pemPublicKey = "PUBLIC KEY"

// PassFunc supplies the password of an encrypted private key; confirm is true when a new key
// is being encrypted.
type PassFunc = cryptoutils.PassFunc

// PasswordFromEnv reads the password from $COSIGN_PASSWORD, as cosign does when it is set. An
// unset variable means an empty password, since bpfleetctl never prompts.
func PasswordFromEnv(bool) ([]byte, error) { return []byte(os.Getenv("COSIGN_PASSWORD")), nil }

// GenerateKeyPair creates an ECDSA P-256 key pair in exactly cosign's formats: the private key
// PKCS#8-encoded, encrypted with scrypt and NaCl secretbox under the password from pf, as an
// "ENCRYPTED SIGSTORE PRIVATE KEY" PEM block (cosign.key), and the public key as PKIX
// "PUBLIC KEY" PEM (cosign.pub).
func GenerateKeyPair(pf PassFunc) (privPEM, pubPEM []byte, err error) {
	privPEM, pubPEM, err = cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), pf)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	return privPEM, pubPEM, nil
}

// LoadPrivateKey parses an ECDSA private key: cosign's encrypted cosign.key (old and new PEM
// types, decrypted with the password from pf), or plain "PRIVATE KEY" / "EC PRIVATE KEY" PEM.
func LoadPrivateKey(pemBytes []byte, pf PassFunc) (*ecdsa.PrivateKey, error) {
	key, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, pf)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key: %T is not an ECDSA key", key)
	}
	return ec, nil
}

// LoadPrivateKeyFile reads a private key file with LoadPrivateKey.
func LoadPrivateKeyFile(path string, pf PassFunc) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := LoadPrivateKey(b, pf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// LoadPublicKeyFile reads a cosign.pub-style public key file.
func LoadPublicKeyFile(path string) (*ecdsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := LoadPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// LoadPublicKeyDER reads a public key file and returns the key's DER SubjectPublicKeyInfo, the
// form in which trust deltas carry keys.
func LoadPublicKeyDER(path string) ([]byte, error) {
	key, err := LoadPublicKeyFile(path)
	if err != nil {
		return nil, err
	}
	return x509.MarshalPKIXPublicKey(key)
}

// LoadPublicKey parses a PKIX "PUBLIC KEY" PEM (a cosign.pub file) holding an ECDSA key.
func LoadPublicKey(pemBytes []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("public key: no PEM block")
	}
	if block.Type != pemPublicKey {
		return nil, fmt.Errorf("public key: unexpected PEM block %q", block.Type)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	ec, ok := key.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key: %T is not an ECDSA key", key)
	}
	return ec, nil
}
