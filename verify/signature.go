package verify

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// Signature verifies that ref names an image (index or single manifest) whose digest carries
// a signature by a trusted key, without looking below the signed digest. Gadget does this
// first; alone it serves images that are not runnable gadgets, and explaining a decision.
func Signature(t trust.Reader, images *oci.Layout, ref string) (Decision, error) {
	desc, err := images.Resolve(ref)
	if err != nil {
		return Decision{}, fmt.Errorf("verify %s: %w", ref, err)
	}
	_, d, err := signature(t, images, ref, desc, nil)
	if err != nil {
		return Decision{}, fmt.Errorf("verify %s: %w", ref, err)
	}
	return d, nil
}

// KeysOnly is a trust.Reader that trusts exactly keys and holds no signatures, for ad-hoc
// verification with keys given on the command line; signatures then come from the layout.
func KeysOnly(keys []trust.Key) trust.Reader { return keyReader{keys: keys} }

// KeysUnder is KeysOnly on a device that has a trust store: it trusts exactly keys, yet what
// the device's fleet refuses stays refused — digests on its deny-list or revoked, and keys and
// identities it revoked (a given key the fleet revoked is reported as ErrRevoked). Nothing else
// of device is used: not its keys, signatures, policy levels, allow-list, overrides or expiry.
func KeysUnder(keys []trust.Key, device trust.Reader) trust.Reader {
	return keyReader{keys: keys, device: device}
}

type keyReader struct {
	keys   []trust.Key
	device trust.Reader // nil: nothing is denied or revoked
}

func (k keyReader) Version() uint64                        { return 0 }
func (k keyReader) StateDigest() string                    { return "" }
func (k keyReader) Keys() []trust.Key                      { return k.keysRevoked(false) }
func (k keyReader) RevokedKeys() []trust.Key               { return k.keysRevoked(true) }
func (k keyReader) SignaturesFor(string) []trust.Signature { return nil }
func (k keyReader) Override(string) *trust.Override        { return nil }
func (k keyReader) Expires() int64                         { return 0 }
func (k keyReader) TrustedRoot() []byte                    { return nil }

func (k keyReader) Revoked(r trust.Revocation) bool { return k.device != nil && k.device.Revoked(r) }

// Policy keeps only the device's deny-list: the given keys decide, strictly.
func (k keyReader) Policy() *trust.Policy {
	if k.device == nil || k.device.Policy() == nil || len(k.device.Policy().Deny) == 0 {
		return nil
	}
	return &trust.Policy{Deny: slices.Clone(k.device.Policy().Deny)}
}

func (k keyReader) keysRevoked(revoked bool) []trust.Key {
	var out []trust.Key
	for _, key := range k.keys {
		if k.Revoked(trust.Revocation{Kind: trust.RevokeKey, Value: key.ID()}) == revoked {
			out = append(out, key)
		}
	}
	return out
}

// RevokedKeys is implemented by trust readers that still hold the keys the fleet revoked (the
// device's store snapshot, KeysUnder), so that a signature made with one is refused as revoked
// rather than as untrusted or for want of trusted keys.
type RevokedKeys interface {
	RevokedKeys() []trust.Key
}

// revokedKeys returns the usable keys t holds but the fleet revoked.
func revokedKeys(t trust.Reader) []trustedKey {
	r, ok := t.(RevokedKeys)
	if !ok {
		return nil
	}
	var keys []trustedKey
	for _, k := range r.RevokedKeys() {
		if pub, err := k.PublicKey(); err == nil {
			keys = append(keys, trustedKey{id: k.ID(), pub: pub})
		}
	}
	return keys
}

type trustedKey struct {
	id  string
	pub crypto.PublicKey
}

func trustedKeys(t trust.Reader) ([]trustedKey, error) {
	all := t.Keys()
	var keys []trustedKey
	var firstErr error
	for _, k := range all {
		pub, err := k.PublicKey()
		if err != nil {
			firstErr = err
			continue
		}
		keys = append(keys, trustedKey{id: k.ID(), pub: pub})
	}
	if len(keys) == 0 {
		if firstErr != nil {
			return nil, fmt.Errorf("%w: none of %d key(s) is usable: %w", ErrNoTrustedKeys, len(all), firstErr)
		}
		return nil, ErrNoTrustedKeys
	}
	return keys, nil
}

// signature resolves ref and returns its descriptor with the decision of the first candidate
// signature that verifies with a trusted key and binds exactly that digest. Candidates, in
// order: the trust store's, the layout's legacy `.sig` tag, then the layout's OCI 1.1
// referrers of the digest (simple-signing referrers, then key-signed Sigstore bundles, in
// index.json order).
// keyless is what checking certificate-signed bundles needs; nil when the scope allows none.
// keyless is what a keyless bundle must satisfy: a certificate from the trusted root whose
// identity each of the image's policy scopes accepts (one identity list per scope).
type keyless struct {
	verify     KeylessVerifier
	root       []byte
	identities [][]trust.Identity
}

// check verifies a keyless bundle for digest against every scope's identities and returns the
// signer's identity.
func (kl *keyless) check(bundle []byte, digest string) (string, error) {
	var subject string
	for _, ids := range kl.identities {
		s, err := kl.verify(bundle, digest, kl.root, ids)
		if err != nil {
			return "", err
		}
		subject = s
	}
	return subject, nil
}

// signature looks for a trusted signature of desc, the image ref resolved to: resolved once by
// the caller, so that what is checked here is what the caller checked and runs.
func signature(t trust.Reader, images *oci.Layout, ref string, desc oci.Descriptor, kl *keyless) (oci.Descriptor, Decision, error) {
	if !oci.IsIndex(desc.MediaType) && !oci.IsManifest(desc.MediaType) {
		return oci.Descriptor{}, Decision{}, fmt.Errorf("%s is a %q, not an image index or manifest", desc.Digest, desc.MediaType)
	}
	keys, noKeys := trustedKeys(t)
	revoked := revokedKeys(t)
	if noKeys != nil && kl == nil && len(revoked) == 0 {
		return oci.Descriptor{}, Decision{}, noKeys
	}
	d := Decision{Ref: ref, Digest: desc.Digest, TrustVersion: t.Version(), TrustState: t.StateDigest()}

	// payloadErr remembers a signature that a trusted key made over a payload we reject: that
	// is reported in preference to "untrusted", being the more precise reason.
	var payloadErr error
	accept := func(source, format string, payload, sig []byte) bool {
		for _, k := range keys {
			if cosign.VerifySignature(k.pub, payload, sig) != nil {
				continue
			}
			if _, err := cosign.ParsePayload(payload, desc.Digest); err != nil {
				payloadErr = fmt.Errorf("%w: a %s %s signature verifies with key %s, but: %w", ErrPayload, source, format, k.id, err)
				return false
			}
			d.KeyID, d.Source, d.Format = k.id, source, format
			return true
		}
		return false
	}

	stored := t.SignaturesFor(desc.Digest)
	for _, s := range stored {
		if accept(SourceTrustStore, FormatLegacy, s.Payload, s.Signature) {
			return desc, d, nil
		}
	}
	inLayout, layoutErr := cosign.ReadSignatures(images, desc.Digest)
	for _, s := range inLayout {
		if accept(SourceImageLayout, FormatLegacy, s.Payload, s.Signature) {
			return desc, d, nil
		}
	}
	refs, refErr := readReferrers(images, desc.Digest)
	for _, s := range refs.simple {
		if accept(SourceImageLayout, FormatOCI11Referrer, s.Payload, s.Signature) {
			return desc, d, nil
		}
	}
	var bundleErrs []error
	for _, b := range refs.bundles {
		keyID, err := verifyKeyedBundle(b.data, desc.Digest, keys)
		if errors.Is(err, errKeyless) && kl != nil {
			var subject string
			if subject, err = kl.check(b.data, desc.Digest); err == nil {
				if t.Revoked(trust.Revocation{Kind: trust.RevokeIdentity, Value: subject}) {
					err = fmt.Errorf("%w: signer identity %s", ErrRevoked, subject)
				} else {
					d.Identity, d.Source, d.Format = subject, SourceImageLayout, FormatBundle
					return desc, d, nil
				}
			}
		}
		switch {
		case err == nil:
			d.KeyID, d.Source, d.Format = keyID, SourceImageLayout, FormatBundle
			return desc, d, nil
		case errors.Is(err, ErrPayload):
			payloadErr = fmt.Errorf("referrer %s: %w", b.manifest, err)
		default:
			bundleErrs = append(bundleErrs, fmt.Errorf("bundle in referrer %s: %w", b.manifest, err))
		}
	}

	// Said before anything else: "untrusted" or "no trusted keys" would hide that the fleet
	// withdrew the key that signed this.
	var simple []simpleSignature
	for _, s := range stored {
		simple = append(simple, simpleSignature{s.Payload, s.Signature})
	}
	for _, s := range slices.Concat(inLayout, refs.simple) {
		simple = append(simple, simpleSignature{s.Payload, s.Signature})
	}
	if id := revokedSigner(revoked, desc.Digest, simple, refs.bundles); id != "" {
		return oci.Descriptor{}, Decision{}, fmt.Errorf("%w: %s is signed by key %s, which the fleet revoked", ErrRevoked, desc.Digest, id)
	}
	if noKeys != nil && kl == nil {
		return oci.Descriptor{}, Decision{}, noKeys
	}

	inImage := len(inLayout) + len(refs.simple) + len(refs.bundles)
	var err error
	switch n := len(stored) + inImage; {
	case payloadErr != nil:
		err = payloadErr
	case n == 0 && len(refs.unsupported) > 0:
		err = fmt.Errorf("%w: no cosign signature for %s in the trust store or the image; %w (bpfleet verifies cosign signatures only): %s",
			ErrUnsigned, desc.Digest, ErrUnsupportedSignature, strings.Join(refs.unsupported, ", "))
	case n == 0:
		err = fmt.Errorf("%w: no signature for %s in the trust store or the image", ErrUnsigned, desc.Digest)
	default:
		where := fmt.Sprintf("%d in the trust store, %d in the image", len(stored), inImage)
		if len(refs.simple)+len(refs.bundles) > 0 {
			where += fmt.Sprintf(": %d %s, %d %s, %d %s", len(inLayout), FormatLegacy,
				len(refs.simple), FormatOCI11Referrer, len(refs.bundles), FormatBundle)
		}
		err = fmt.Errorf("%w: %d signature(s) for %s (%s) but none verifies with the %d trusted key(s)",
			ErrUntrusted, n, desc.Digest, where, len(keys))
		if len(bundleErrs) > 0 {
			err = fmt.Errorf("%w; %w", err, joinErrors(bundleErrs))
		}
	}
	if layoutErr != nil {
		err = fmt.Errorf("%w; the image's signatures could not be read: %w", err, layoutErr)
	}
	if refErr != nil {
		err = fmt.Errorf("%w; some of the image's referrers could not be read: %w", err, refErr)
	}
	return oci.Descriptor{}, Decision{}, err
}

// simpleSignature is a cosign simple-signing payload and its signature, wherever it came from.
type simpleSignature struct{ payload, sig []byte }

// revokedSigner returns the id of a revoked key that made one of the signatures (simple-signing
// or key-signed bundles) over exactly digest, or "" if none did.
func revokedSigner(revoked []trustedKey, digest string, simple []simpleSignature, bundles []referrerBundle) string {
	for _, k := range revoked {
		for _, s := range simple {
			if cosign.VerifySignature(k.pub, s.payload, s.sig) != nil {
				continue
			}
			if _, err := cosign.ParsePayload(s.payload, digest); err == nil {
				return k.id
			}
		}
	}
	for _, b := range bundles {
		if id, err := verifyKeyedBundle(b.data, digest, revoked); err == nil {
			return id
		}
	}
	return ""
}
