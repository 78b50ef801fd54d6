package sigstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// Reasons for rejection, for errors.Is. Messages carry the details.
var (
	// ErrInvalidBundle: the bundle is not valid JSON, has an unknown media type or version, or
	// is structurally invalid (e.g. a v0.2+ transparency-log entry without inclusion proof).
	ErrInvalidBundle = errors.New("invalid bundle")
	// ErrTrustMaterial: the options cannot verify this bundle: a key-signed bundle and no
	// key, a certificate-signed bundle and no trusted root or no identity, or a trusted root,
	// key or identity that does not parse.
	ErrTrustMaterial = errors.New("unusable trust material")
	// ErrNotVerified: a check failed: signature, artifact binding, certificate chain, SCT,
	// transparency-log entry, timestamp or certificate identity.
	ErrNotVerified = errors.New("bundle does not verify")
)

// Identity is a certificate identity policy for keyless bundles: the Fulcio certificate's
// subject alternative name (SAN) and OIDC issuer must each match, exactly or by regular
// expression. Regular expressions are anchored: "https://github.com/acme/.*" matches the whole
// SAN, not any SAN that contains it. Give at least one of each pair.
type Identity struct {
	SubjectExact, SubjectRegex string
	IssuerExact, IssuerRegex   string
}

// String describes the policy, for messages.
func (id Identity) String() string {
	pick := func(exact, re string) string {
		if re != "" {
			return "~" + anchor(re)
		}
		return exact
	}
	return fmt.Sprintf("subject %s, issuer %s", pick(id.SubjectExact, id.SubjectRegex), pick(id.IssuerExact, id.IssuerRegex))
}

// BundleOptions is what the caller trusts. Which part applies is decided by the bundle: a
// key-signed bundle is verified with Keys, a certificate-signed one with TrustedRootJSON and
// Identities.
type BundleOptions struct {
	// Keys are trusted public keys (PKIX DER). A key-signed bundle must verify with one of
	// them: the one its publicKey hint names is tried first, then the others (the hint is
	// unauthenticated). Keys carry no validity window: revoking a key is the trust store's job.
	Keys []trust.Key
	// TrustedRootJSON is a Sigstore trusted_root.json. It is required for certificate-signed
	// bundles. When given, every bundle must also satisfy what it allows checking: a
	// transparency-log entry if it lists Rekor logs, an RFC 3161 timestamp if it lists
	// timestamp authorities and the bundle has one, and for certificates an SCT if it lists
	// CT logs and a verified time (log integrated time or timestamp) to check the chain at.
	// Without it, a key-signed bundle is checked by its signature alone.
	TrustedRootJSON []byte
	// Identities are accepted certificate identities; any one matching suffices. Required
	// for certificate-signed bundles.
	Identities []Identity
}

// Artifact is what a bundle must sign: the artifact's bytes or file, or only its SHA-256
// digest. For an OCI image, the digest of the image index that will run.
type Artifact struct {
	data   []byte
	path   string
	digest []byte
}

// ArtifactBytes is an artifact given by its content.
func ArtifactBytes(data []byte) Artifact { return Artifact{data: bytes.Clone(data)} }

// ArtifactFile is an artifact read from path when verifying.
func ArtifactFile(path string) Artifact { return Artifact{path: path} }

// ArtifactDigest is an artifact given by its digest "sha256:<64 hex>", e.g. an OCI image
// index digest. A message signature made with Ed25519 cannot be checked against a digest.
func ArtifactDigest(digest string) (Artifact, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	sum, err := hex.DecodeString(h)
	if !ok || err != nil || len(sum) != sha256.Size {
		return Artifact{}, fmt.Errorf("artifact digest %q: want sha256:<64 hex digits>", digest)
	}
	return Artifact{digest: sum}, nil
}

// ParseArtifact reads the sigstore-conformance FILE_OR_DIGEST argument: "sha256:<hex>" is a
// digest, anything else a file path.
func ParseArtifact(fileOrDigest string) (Artifact, error) {
	if strings.HasPrefix(fileOrDigest, "sha256:") {
		return ArtifactDigest(fileOrDigest)
	}
	if fileOrDigest == "" {
		return Artifact{}, errors.New("empty artifact path")
	}
	return ArtifactFile(fileOrDigest), nil
}

// String describes the artifact, for messages.
func (a Artifact) String() string {
	switch {
	case a.digest != nil:
		return "sha256:" + hex.EncodeToString(a.digest)
	case a.path != "":
		return a.path
	}
	return fmt.Sprintf("%d bytes", len(a.data))
}

// policy returns the artifact policy for one verification and a function that releases it.
func (a Artifact) policy() (sgverify.ArtifactPolicyOption, func(), error) {
	switch {
	case a.digest != nil:
		return sgverify.WithArtifactDigest("sha256", a.digest), func() {}, nil
	case a.path != "":
		f, err := os.Open(a.path)
		if err != nil {
			return nil, nil, fmt.Errorf("artifact: %w", err)
		}
		return sgverify.WithArtifact(f), func() { f.Close() }, nil
	}
	return sgverify.WithArtifact(bytes.NewReader(a.data)), func() {}, nil
}

// Timestamp is a verified time at which the signature existed.
type Timestamp struct {
	// Kind is "Tlog" (a transparency log's integrated time) or "TimestampAuthority"
	// (an RFC 3161 timestamp), as sigstore-go names them.
	Kind string    `json:"kind"`
	URI  string    `json:"uri,omitempty"`
	Time time.Time `json:"time"`
}

// BundleResult says what verified a bundle. It marshals to JSON.
type BundleResult struct {
	// MediaType is the bundle's media type, which carries its version.
	MediaType string `json:"media_type"`
	// Content is "dsse" (an envelope, normally an in-toto statement) or "message-signature".
	Content string `json:"content"`
	// KeyID is trust.Key.ID of the key that verified a key-signed bundle.
	KeyID string `json:"key_id,omitempty"`
	// Subject and Issuer are the verified certificate's SAN and OIDC issuer (keyless), which
	// matched one of the Identities.
	Subject string `json:"subject,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	// PredicateType is the in-toto statement's predicate type (DSSE bundles).
	PredicateType string `json:"predicate_type,omitempty"`
	// Timestamps are the verified observer timestamps; empty for a key-signed bundle checked
	// without a trusted root.
	Timestamps []Timestamp `json:"timestamps,omitempty"`
}

// VerifyBundle verifies a Sigstore bundle (JSON) over artifact with the trust in opts, without
// any network access. See BundleOptions for which checks apply. Errors begin with
// "verify bundle:" and match ErrInvalidBundle, ErrTrustMaterial or ErrNotVerified.
func VerifyBundle(bundleJSON []byte, artifact Artifact, opts BundleOptions) (BundleResult, error) {
	res, err := verifyBundle(bundleJSON, artifact, opts)
	if err != nil {
		return BundleResult{}, fmt.Errorf("verify bundle: %w", err)
	}
	return res, nil
}

func verifyBundle(bundleJSON []byte, artifact Artifact, opts BundleOptions) (BundleResult, error) {
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return BundleResult{}, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	var tr *root.TrustedRoot
	if len(opts.TrustedRootJSON) > 0 {
		var err error
		if tr, err = root.NewTrustedRootFromJSON(opts.TrustedRootJSON); err != nil {
			return BundleResult{}, fmt.Errorf("%w: trusted root: %w", ErrTrustMaterial, err)
		}
	}
	vc, err := b.VerificationContent()
	if err != nil {
		return BundleResult{}, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	res := BundleResult{MediaType: b.MediaType, Content: "message-signature"}
	if b.GetDsseEnvelope() != nil {
		res.Content = "dsse"
	}
	var r *sgverify.VerificationResult
	if pk := vc.PublicKey(); pk != nil {
		r, res.KeyID, err = verifyWithKeys(&b, pk.Hint(), artifact, tr, opts.Keys)
	} else {
		r, err = verifyKeyless(&b, artifact, tr, opts.Identities)
	}
	if err != nil {
		return BundleResult{}, err
	}
	if r.Statement != nil {
		res.PredicateType = r.Statement.PredicateType
	}
	if r.Signature != nil && r.Signature.Certificate != nil {
		res.Subject = r.Signature.Certificate.SubjectAlternativeName
		res.Issuer = r.Signature.Certificate.Issuer
	}
	for _, t := range r.VerifiedTimestamps {
		res.Timestamps = append(res.Timestamps, Timestamp{Kind: t.Type, URI: t.URI, Time: t.Timestamp})
	}
	return res, nil
}

// verifierOptions derives the verifier's requirements from what the trusted root can check,
// with the thresholds sigstore-conformance expects (one of each).
func verifierOptions(b *bundle.Bundle, tr *root.TrustedRoot, certificate bool) ([]sgverify.VerifierOption, error) {
	if tr == nil {
		// Key-signed bundle, keys only: the signature is all there is to check.
		return []sgverify.VerifierOption{sgverify.WithNoObserverTimestamps()}, nil
	}
	var opts []sgverify.VerifierOption
	if certificate && len(tr.CTLogs()) > 0 {
		opts = append(opts, sgverify.WithSignedCertificateTimestamps(1))
	}
	timed := false
	tsa, err := b.Timestamps()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidBundle, err)
	}
	if len(tr.TimestampingAuthorities()) > 0 && len(tsa) > 0 {
		opts = append(opts, sgverify.WithSignedTimestamps(1))
		timed = true
	}
	if len(tr.RekorLogs()) > 0 {
		opts = append(opts, sgverify.WithTransparencyLog(1))
		if b.HasInclusionPromise() {
			opts = append(opts, sgverify.WithIntegratedTimestamps(1))
			timed = true
		}
	}
	if !timed {
		if certificate {
			return nil, fmt.Errorf("%w: the bundle has no timestamp this trusted root can verify (RFC 3161 timestamps: %d, trusted timestamp authorities: %d, Rekor inclusion promise: %v, trusted Rekor logs: %d), so its short-lived certificate cannot be checked",
				ErrNotVerified, len(tsa), len(tr.TimestampingAuthorities()), b.HasInclusionPromise(), len(tr.RekorLogs()))
		}
		opts = append(opts, sgverify.WithNoObserverTimestamps())
	}
	return opts, nil
}

// verifyWithKeys verifies a key-signed bundle with each key in turn, the one named by hint
// first, and returns the result and the ID of the key that verified.
func verifyWithKeys(b *bundle.Bundle, hint string, artifact Artifact, tr *root.TrustedRoot, keys []trust.Key) (*sgverify.VerificationResult, string, error) {
	if len(keys) == 0 {
		return nil, "", fmt.Errorf("%w: the bundle is signed with a key (hint %q) and no key is given", ErrTrustMaterial, hint)
	}
	vopts, err := verifierOptions(b, tr, false)
	if err != nil {
		return nil, "", err
	}
	ordered := slices.Clone(keys)
	slices.SortStableFunc(ordered, func(x, y trust.Key) int {
		switch hx, hy := keyHint(x) == hint, keyHint(y) == hint; {
		case hx && !hy:
			return -1
		case hy && !hx:
			return 1
		}
		return 0
	})
	var errs []string
	var lastErr error
	for _, k := range ordered {
		r, err := verifyWithKey(b, k, artifact, tr, vopts)
		if err == nil {
			return r, k.ID(), nil
		}
		lastErr = err
		errs = append(errs, fmt.Sprintf("key %.16s…: %v", k.ID(), err))
	}
	if len(ordered) == 1 {
		return nil, "", lastErr
	}
	// Keep the sentinel of the last failure for errors.Is; the message has them all.
	return nil, "", fmt.Errorf("none of the %d keys verifies: %s: %w", len(ordered), strings.Join(errs, "; "), sentinel(lastErr))
}

func verifyWithKey(b *bundle.Bundle, k trust.Key, artifact Artifact, tr *root.TrustedRoot, vopts []sgverify.VerifierOption) (*sgverify.VerificationResult, error) {
	pub, err := k.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTrustMaterial, err)
	}
	sv, err := signature.LoadDefaultVerifier(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrTrustMaterial, k.ID(), err)
	}
	// This key answers for whatever hint the bundle has: the hint only ordered the attempts.
	// No validity window: the trust store revokes a key by no longer returning it.
	keyMaterial := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		return root.NewExpiringKey(sv, time.Time{}, time.Time{}), nil
	})
	var material root.TrustedMaterial = keyMaterial
	if tr != nil {
		material = root.TrustedMaterialCollection{tr, keyMaterial}
	}
	return verifyWith(b, material, vopts, artifact, sgverify.WithKey())
}

// verifyKeyless verifies a certificate-signed bundle against the trusted root and identities.
func verifyKeyless(b *bundle.Bundle, artifact Artifact, tr *root.TrustedRoot, identities []Identity) (*sgverify.VerificationResult, error) {
	if tr == nil {
		return nil, fmt.Errorf("%w: the bundle is signed with a certificate and no trusted root is given", ErrTrustMaterial)
	}
	if len(identities) == 0 {
		return nil, fmt.Errorf("%w: the bundle is signed with a certificate and no certificate identity is given", ErrTrustMaterial)
	}
	var policy []sgverify.PolicyOption
	for i, id := range identities {
		ci, err := sgverify.NewShortCertificateIdentity(id.IssuerExact, anchor(id.IssuerRegex), id.SubjectExact, anchor(id.SubjectRegex))
		if err != nil {
			return nil, fmt.Errorf("%w: identity %d (%s): %w", ErrTrustMaterial, i+1, id, err)
		}
		policy = append(policy, sgverify.WithCertificateIdentity(ci))
	}
	vopts, err := verifierOptions(b, tr, true)
	if err != nil {
		return nil, err
	}
	return verifyWith(b, tr, vopts, artifact, policy...)
}

func verifyWith(b *bundle.Bundle, material root.TrustedMaterial, vopts []sgverify.VerifierOption, artifact Artifact, policy ...sgverify.PolicyOption) (*sgverify.VerificationResult, error) {
	v, err := sgverify.NewVerifier(material, vopts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTrustMaterial, err)
	}
	artifactPolicy, release, err := artifact.policy()
	if err != nil {
		return nil, err
	}
	defer release()
	r, err := v.Verify(b, sgverify.NewPolicy(artifactPolicy, policy...))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotVerified, err)
	}
	return r, nil
}

// keyHint is the public-key hint cosign writes for a key: base64 of the SHA-256 of its DER.
func keyHint(k trust.Key) string {
	sum := sha256.Sum256(k.DER)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// anchor makes a regular expression match a whole value; "" stays "" (no regexp).
func anchor(re string) string {
	if re == "" {
		return ""
	}
	return "^(?:" + re + ")$"
}

// sentinel returns the package sentinel err matches, so an error summarising several
// attempts still matches with errors.Is.
func sentinel(err error) error {
	for _, s := range []error{ErrInvalidBundle, ErrTrustMaterial, ErrNotVerified} {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}

// ReadBundleFile reads a bundle file with a size cap (bundles are a few KiB; DSSE
// attestations such as SBOMs can be larger).
func ReadBundleFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read bundle %s: %w", path, err)
	}
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("bundle %s: larger than %d bytes", path, MaxBundleSize)
	}
	return data, nil
}

// MaxBundleSize bounds a bundle file read by ReadBundleFile.
const MaxBundleSize = 16 << 20

// Keyless verifies a certificate-signed bundle attached to an OCI image, for the device path
// (it has the shape of verify.KeylessVerifier): the bundle must verify against the fleet's
// trusted root, its certificate must match one of ids, its in-toto statement must be cosign's
// image signature and its subject exactly the image index digest. It returns the certificate
// subject (SAN) that matched.
func Keyless(bundleJSON []byte, digest string, trustedRoot []byte, ids []trust.Identity) (string, error) {
	artifact, err := ArtifactDigest(digest)
	if err != nil {
		return "", err
	}
	opts := BundleOptions{TrustedRootJSON: trustedRoot}
	for _, id := range ids {
		opts.Identities = append(opts.Identities, Identity{SubjectExact: id.Subject, SubjectRegex: id.SubjectRegexp,
			IssuerExact: id.Issuer, IssuerRegex: id.IssuerRegexp})
	}
	res, err := VerifyBundle(bundleJSON, artifact, opts)
	if err != nil {
		return "", err
	}
	if res.Subject == "" {
		return "", fmt.Errorf("%w: not a certificate-signed bundle", ErrNotVerified)
	}
	if res.Content != "dsse" || res.PredicateType != cosign.PredicateTypeSign {
		return "", fmt.Errorf("%w: signs %s %q, not a cosign image signature", ErrNotVerified, res.Content, res.PredicateType)
	}
	return res.Subject, nil
}
