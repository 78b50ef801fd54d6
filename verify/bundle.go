package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
)

// Key-based verification of a Sigstore bundle attached to an image, the way the device checks
// it: with the trust store's public keys and nothing else.
//
// This deliberately does not use sigstore-go: its verify, bundle and root packages link an
// HTTP client, gRPC and a TUF updater (see TestNoNetworkPackages), and what a key-based check
// needs is small: one ECDSA signature over DSSE's pre-authentication encoding (or over the
// image digest, for a message signature), then the signed statement. The full Sigstore
// verifier, with certificates, transparency-log proofs and timestamps against a trusted root,
// is package verify/sigstore; its tests check that both agree on key-signed bundles.
//
// What this path does not check: transparency-log entries and RFC 3161 timestamps in the
// bundle (the trust store holds keys, not a Rekor key or a TSA chain; a key is trusted for as
// long as the trust store returns it, exactly as for simple-signing signatures), and
// certificate-based (keyless) bundles, which are refused here.

// Sigstore bundle media types (protobuf-specs), v0.1 to v0.3.
var bundleMediaTypes = []string{
	"application/vnd.dev.sigstore.bundle+json;version=0.1",
	"application/vnd.dev.sigstore.bundle+json;version=0.2",
	"application/vnd.dev.sigstore.bundle+json;version=0.3",
	"application/vnd.dev.sigstore.bundle.v0.3+json",
}

// errKeyless: a certificate-signed bundle reached the key-only path.
var errKeyless = errors.New("certificate (keyless) bundle: needs a Sigstore trusted root and an identity policy, which the trust store does not provide")

// sigstoreBundle is the part of a bundle's JSON (protobuf-specs, camelCase names, bytes as
// standard base64) that a key-based check reads. Anything else, such as transparency-log
// entries and timestamps, is ignored.
type sigstoreBundle struct {
	MediaType            string `json:"mediaType"`
	VerificationMaterial struct {
		PublicKey *struct {
			Hint string `json:"hint"`
		} `json:"publicKey"`
		Certificate          json.RawMessage `json:"certificate"`
		X509CertificateChain json.RawMessage `json:"x509CertificateChain"`
	} `json:"verificationMaterial"`
	DSSEEnvelope *struct {
		Payload     []byte `json:"payload"`
		PayloadType string `json:"payloadType"`
		Signatures  []struct {
			Sig []byte `json:"sig"`
		} `json:"signatures"`
	} `json:"dsseEnvelope"`
	MessageSignature *struct {
		MessageDigest *struct {
			Algorithm string `json:"algorithm"`
			Digest    []byte `json:"digest"`
		} `json:"messageDigest"`
		Signature []byte `json:"signature"`
	} `json:"messageSignature"`
}

// parseBundle decodes a bundle and checks its shape: a known media type, key-based
// verification material, and exactly one of a DSSE envelope or a message signature.
func parseBundle(raw []byte) (*sigstoreBundle, error) {
	var b sigstoreBundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("bundle JSON: %w", err)
	}
	if !slices.Contains(bundleMediaTypes, b.MediaType) {
		return nil, fmt.Errorf("unsupported bundle media type %q", b.MediaType)
	}
	vm := b.VerificationMaterial
	if len(vm.Certificate) > 0 || len(vm.X509CertificateChain) > 0 {
		return nil, errKeyless
	}
	if vm.PublicKey == nil {
		return nil, errors.New("bundle has no verification material")
	}
	switch {
	case b.DSSEEnvelope != nil && b.MessageSignature != nil:
		return nil, errors.New("bundle has both a DSSE envelope and a message signature")
	case b.DSSEEnvelope != nil:
		if len(b.DSSEEnvelope.Signatures) == 0 {
			return nil, errors.New("DSSE envelope has no signature")
		}
	case b.MessageSignature != nil:
		if len(b.MessageSignature.Signature) == 0 {
			return nil, errors.New("message signature is empty")
		}
	default:
		return nil, errors.New("bundle has neither a DSSE envelope nor a message signature")
	}
	return &b, nil
}

// hintFirst orders keys so that the one the bundle's public-key hint names (base64 of the
// SHA-256 of its DER, as cosign writes it) comes first. The hint is unauthenticated: it only
// saves work, every key is still tried.
func hintFirst(keys []trustedKey, hint string) []trustedKey {
	raw, err := base64.StdEncoding.DecodeString(hint)
	if err != nil || len(raw) != sha256.Size {
		return keys
	}
	want := hex.EncodeToString(raw)
	ordered := slices.Clone(keys)
	slices.SortStableFunc(ordered, func(a, b trustedKey) int {
		switch {
		case a.id == want && b.id != want:
			return -1
		case b.id == want && a.id != want:
			return 1
		}
		return 0
	})
	return ordered
}

// verifyKeyedBundle checks a key-signed Sigstore bundle against keys and requires that what
// it signs binds exactly digest, the image (index) digest. It returns the ID of the key that
// verified. An error wraps ErrPayload when a trusted key did sign the bundle but what it signed
// is not a cosign signature of digest; any other error says why no key verified it.
func verifyKeyedBundle(raw []byte, digest string, keys []trustedKey) (string, error) {
	b, err := parseBundle(raw)
	if err != nil {
		return "", err
	}
	keys = hintFirst(keys, b.VerificationMaterial.PublicKey.Hint)

	if ms := b.MessageSignature; ms != nil {
		// A message signature over the image manifest bytes signs their SHA-256, which is
		// the image digest: verify over the digest we expect, never over the bundle's
		// unauthenticated messageDigest, which must merely agree.
		h, err := oci.DigestHex(digest)
		if err != nil {
			return "", err
		}
		want, _ := hex.DecodeString(h)
		for _, k := range keys {
			if pub, ok := k.pub.(*ecdsa.PublicKey); !ok || !ecdsa.VerifyASN1(pub, want, ms.Signature) {
				continue
			}
			if md := ms.MessageDigest; md == nil || md.Algorithm != "SHA2_256" || !bytes.Equal(md.Digest, want) {
				return "", fmt.Errorf("%w: message signature by key %s: its messageDigest does not state %s", ErrPayload, k.id, digest)
			}
			return k.id, nil
		}
		return "", fmt.Errorf("message signature over %s verifies with none of the %d trusted key(s)", digest, len(keys))
	}

	env := b.DSSEEnvelope
	pae := cosign.PAE(env.PayloadType, env.Payload)
	for _, k := range keys {
		for _, s := range env.Signatures {
			if cosign.VerifySignature(k.pub, pae, s.Sig) != nil {
				continue
			}
			// Signed by a trusted key: only now look at what was signed.
			if env.PayloadType != cosign.DSSEPayloadTypeInToto {
				return "", fmt.Errorf("%w: bundle signed by key %s has DSSE payload type %q, not an in-toto statement", ErrPayload, k.id, env.PayloadType)
			}
			st, err := cosign.ParseStatement(env.Payload, digest)
			if err != nil {
				return "", fmt.Errorf("%w: bundle signed by key %s: %w", ErrPayload, k.id, err)
			}
			if st.PredicateType != cosign.PredicateTypeSign {
				return "", fmt.Errorf("%w: bundle signed by key %s is an attestation (predicate type %q), not a cosign image signature (%s)",
					ErrPayload, k.id, st.PredicateType, cosign.PredicateTypeSign)
			}
			return k.id, nil
		}
	}
	return "", fmt.Errorf("DSSE envelope verifies with none of the %d trusted key(s)", len(keys))
}
