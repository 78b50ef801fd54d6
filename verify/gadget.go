package verify

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// Option adjusts a verification.
type Option func(*options)

type options struct {
	now     time.Time
	keyless KeylessVerifier
}

// KeylessVerifier checks a certificate-signed (keyless) Sigstore bundle attached to an image
// against the fleet's trusted root and the identities the policy accepts for the image's
// scope, and returns the certificate subject that matched. Package verify/sigstore provides
// one (sigstore.Keyless); it is injected so that this package links nothing that can reach the
// network.
type KeylessVerifier func(bundle []byte, digest string, trustedRoot []byte, identities []trust.Identity) (subject string, err error)

// WithKeyless enables keyless bundles, for scopes whose policy names identities.
func WithKeyless(v KeylessVerifier) Option { return func(o *options) { o.keyless = v } }

// WithNow sets the time against which trust freshness and overrides are judged (default:
// the clock, or unknown if it reads before 2025 — see trust.ClockKnown).
func WithNow(now time.Time) Option { return func(o *options) { o.now = now } }

// Gadget verifies the gadget image ref in images against the trust store t and its policy,
// and returns its eBPF program for this machine's architecture. See the package documentation
// for the checks.
func Gadget(t trust.Reader, images *oci.Layout, ref string, opts ...Option) (*Approved, error) {
	o := options{now: time.Now()}
	for _, opt := range opts {
		opt(&o)
	}
	o.now = trust.ClockKnown(o.now)
	a, err := gadget(t, images, ref, o)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", ref, err)
	}
	return a, nil
}

// GadgetWithKeys is Gadget trusting exactly keys, with signatures taken from the layout only
// and no policy (every check strict).
func GadgetWithKeys(keys []trust.Key, images *oci.Layout, ref string, opts ...Option) (*Approved, error) {
	return Gadget(KeysOnly(keys), images, ref, opts...)
}

func gadget(t trust.Reader, images *oci.Layout, ref string, o options) (*Approved, error) {
	desc, err := images.Resolve(ref)
	if err != nil {
		return nil, err
	}
	policy := t.Policy()
	// One read of index.json for the names and the indexes below: both judge the same store.
	top, err := images.Index()
	if err != nil {
		return nil, err
	}
	scope, scopes := scopeFor(policy, top, desc.Digest)
	// Deny and revocation come before everything, whatever the level or an override says;
	// the rest of the digest chain is checked once it is known.
	if err := withdrawn(t, policy, desc.Digest, ""); err != nil {
		return nil, err
	}
	// A keyless signer must be one that every scope the image's names fall in accepts: a second
	// tag in another scope must not bring its own identities.
	var kl *keyless
	if o.keyless != nil && len(t.TrustedRoot()) > 0 {
		kl = &keyless{verify: o.keyless, root: t.TrustedRoot()}
		for _, s := range scopes {
			if len(s.Identities) == 0 {
				kl = nil
				break
			}
			kl.identities = append(kl.identities, s.Identities)
		}
	}
	signed, decision, sigErr := signature(t, images, ref, desc, kl)
	if sigErr == nil {
		decision.Verified = true
	} else {
		signed = desc
		decision = Decision{Ref: ref, Digest: desc.Digest, TrustVersion: t.Version(), TrustState: t.StateDigest()}
		if err := letThrough(t, policy, scope, desc.Digest, sigErr, o, &decision); err != nil {
			return nil, err
		}
	}
	decision.Level, decision.Scope = scope.Level, scope.Match
	if err := fresh(t, scope.Level, o.now, &decision); err != nil {
		return nil, err
	}
	manifestDesc := signed
	if oci.IsIndex(signed.MediaType) {
		idx, err := images.ReadIndex(signed)
		if err != nil {
			return nil, fmt.Errorf("image index: %w", err)
		}
		if manifestDesc, err = platformManifest(idx, runtime.GOARCH); err != nil {
			return nil, err
		}
	}
	manifest, err := images.ReadManifest(manifestDesc)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	metadata, err := readConfig(images, manifest.Config)
	if err != nil {
		return nil, fmt.Errorf("config (gadget metadata): %w", err)
	}
	var programs, btfgens []oci.Descriptor
	for _, l := range manifest.Layers {
		switch l.MediaType {
		case oci.MediaTypeEBPFProgram:
			programs = append(programs, l)
		case oci.MediaTypeWasmProgram:
			// Said plainly rather than silently: IG would run this layer on every event.
			decision.Warnings = append(decision.Warnings, "the image's WebAssembly layer is not run by bpfleet: "+
				"events are shown as the eBPF program emits them, without the gadget's own post-processing")
		case oci.MediaTypeBTFGen:
			btfgens = append(btfgens, l)
		}
	}
	if len(programs) != 1 {
		return nil, fmt.Errorf("%w: manifest %s has %d layers of type %s", ErrNoProgram, manifestDesc.Digest, len(programs), oci.MediaTypeEBPFProgram)
	}
	// What runs is the program of this manifest: denying or revoking it, or an index that
	// lists it, withdraws it however it was reached (through the index, or as an image of its
	// own, as a layout may list a platform manifest next to its index).
	if manifestDesc.Digest != desc.Digest {
		if err := withdrawn(t, policy, manifestDesc.Digest, "platform manifest"); err != nil {
			return nil, err
		}
	}
	if err := withdrawn(t, policy, programs[0].Digest, "eBPF program layer"); err != nil {
		return nil, err
	}
	if err := withdrawnIndexes(t, policy, images, top, manifestDesc.Digest); err != nil {
		return nil, err
	}
	program, err := images.ReadBlob(programs[0])
	if err != nil {
		return nil, fmt.Errorf("eBPF program layer: %w", err)
	}
	// Like IG, at most one btfgen layer; it is read, digest checked, whatever the kernel, so a
	// tampered one is refused here rather than on the first device without BTF.
	var btfgen []byte
	switch len(btfgens) {
	case 0:
	case 1:
		if btfgen, err = images.ReadBlob(btfgens[0]); err != nil {
			return nil, fmt.Errorf("btfgen layer: %w", err)
		}
	default:
		return nil, fmt.Errorf("manifest %s has %d layers of type %s, want at most one", manifestDesc.Digest, len(btfgens), oci.MediaTypeBTFGen)
	}
	return &Approved{ref: ref, digest: signed.Digest, program: program, btfgen: btfgen, metadata: metadata, decision: decision}, nil
}

// withdrawn refuses a digest of the image's chain that the policy denies or the fleet revoked;
// part names it below the image itself ("" for the image).
func withdrawn(t trust.Reader, policy *trust.Policy, digest, part string) error {
	label := digest
	if part != "" {
		label += " (the image's " + part + ")"
	}
	if policy != nil && slices.Contains(policy.Deny, digest) {
		return fmt.Errorf("%w: %s is on the policy's deny-list", ErrDenied, label)
	}
	if t.Revoked(trust.Revocation{Kind: trust.RevokeDigest, Value: digest}) {
		return fmt.Errorf("%w: the fleet revoked %s", ErrRevoked, label)
	}
	return nil
}

// withdrawnIndexes refuses a manifest that an image index in the store (top, its index.json)
// lists when that index is denied or revoked: its content is the withdrawn image's.
func withdrawnIndexes(t trust.Reader, policy *trust.Policy, images *oci.Layout, top oci.Index, manifest string) error {
	for _, d := range top.Manifests {
		if !oci.IsIndex(d.MediaType) || d.Digest == manifest || withdrawn(t, policy, d.Digest, "") == nil {
			continue
		}
		idx, err := images.ReadIndex(d)
		if err != nil {
			continue // not readable: it cannot be what runs, and verifying it reports the damage
		}
		if slices.ContainsFunc(idx.Manifests, func(m oci.Descriptor) bool { return m.Digest == manifest }) {
			return fmt.Errorf("manifest %s is a platform manifest of image %s: %w", manifest, d.Digest, withdrawn(t, policy, d.Digest, ""))
		}
	}
	return nil
}

// scopeFor picks the policy scope of an image from every name the device has for it (all its
// tags in the layout, helper-shaped ones included), not from the reference it was asked by: a
// short name, a digest or a second tag must not reach a looser scope than the image's own
// name would. Of the scopes its names match, the strictest level decides (decisive); all of
// them are returned too, one per distinct scope, for the rules that must hold in each. An
// untagged image is matched by its digest (and wildcards) alone.
func scopeFor(p *trust.Policy, top oci.Index, digest string) (decisive trust.Scope, all []trust.Scope) {
	var names []string
	for _, d := range top.Manifests {
		if name, ok := d.Annotations[oci.AnnotationRefName]; ok && d.Digest == digest {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		s := p.ScopeFor("", "", digest)
		return s, []trust.Scope{s}
	}
	for i, name := range names {
		s := p.ScopeFor(name, oci.Repository(name), digest)
		if !slices.ContainsFunc(all, func(o trust.Scope) bool { return o.Match == s.Match }) {
			all = append(all, s)
		}
		if i == 0 || strictness(s.Level) > strictness(decisive.Level) {
			decisive = s
		}
	}
	return decisive, all
}

// strictness orders the levels from skip (0) to strict (3).
func strictness(l trust.Level) int {
	return slices.Index([]trust.Level{trust.Skip, trust.Audit, trust.Permissive, trust.Strict}, l)
}

// emptyJSON is the content of the OCI empty descriptor ("{}"), which IG-signed images may use
// as their config: its digest fixes it, so a layout need not hold the blob.
const emptyJSON = "{}"

// readConfig reads the manifest's config blob (IG's gadget metadata) and checks it against its
// descriptor: the signature covers it like the layers, so a changed one is ErrTampered. It
// returns nil for the empty config.
func readConfig(images *oci.Layout, config oci.Descriptor) ([]byte, error) {
	if config.Data != nil {
		// Embedded data stands for the blob and must match the descriptor like it.
		if int64(len(config.Data)) != config.Size || oci.Digest(config.Data) != config.Digest {
			return nil, fmt.Errorf("blob %s (%s): %w: the data embedded in its descriptor hashes to %s (%d bytes)",
				config.Digest, config.MediaType, ErrTampered, oci.Digest(config.Data), len(config.Data))
		}
		return config.Data, nil
	}
	data, err := images.ReadBlob(config)
	if errors.Is(err, ErrNotFound) && config.Digest == oci.Digest([]byte(emptyJSON)) && config.Size == int64(len(emptyJSON)) {
		return nil, nil
	}
	return data, err
}

// letThrough decides whether a gadget whose signature did not verify may still run, and
// records why in d; it returns the signature error when nothing allows it. Integrity (the
// digest chain down to the program) is checked afterwards in every case.
func letThrough(t trust.Reader, policy *trust.Policy, scope trust.Scope, digest string, sigErr error, o options, d *Decision) error {
	if policy != nil && slices.Contains(policy.Allow, digest) {
		d.Warnings = append(d.Warnings, "not verified: "+digest+" is on the policy's allow-list")
		return nil
	}
	if ov := t.Override(digest); ov != nil {
		if err := ov.Check(ov.Device, o.now); err != nil {
			return fmt.Errorf("%w (a break-glass override exists but %w)", sigErr, err)
		}
		d.Override = ov
		d.Warnings = append(d.Warnings, fmt.Sprintf("not verified: break-glass override until %s: %s",
			time.Unix(ov.Expires, 0).UTC().Format(time.RFC3339), ov.Reason))
		return nil
	}
	switch scope.Level {
	case trust.Skip:
		d.Warnings = append(d.Warnings, fmt.Sprintf("not verified: scope %q is at level skip", scope.Match))
		return nil
	case trust.Audit:
		// Audit lets authenticity failures through, not integrity ones.
		if errors.Is(sigErr, ErrTampered) || errors.Is(sigErr, ErrNotFound) {
			return sigErr
		}
		d.Warnings = append(d.Warnings, fmt.Sprintf("not verified (scope %q is at level audit): %v", scope.Match, sigErr))
		return nil
	}
	return sigErr
}

// fresh applies the level's rule on stale trust: strict refuses, the others warn.
func fresh(t trust.Reader, level trust.Level, now time.Time, d *Decision) error {
	expires := t.Expires()
	switch {
	case expires == 0:
		return nil
	case now.IsZero():
		d.Warnings = append(d.Warnings, "the device clock is unknown: trust freshness not checked")
	case trust.Expired(expires, now):
		stale := fmt.Sprintf("trust version %d expired at %s", t.Version(), time.Unix(expires, 0).UTC().Format(time.RFC3339))
		if level == trust.Strict {
			return fmt.Errorf("%w: %s (level strict)", ErrStale, stale)
		}
		d.Warnings = append(d.Warnings, stale)
	}
	return nil
}

// platformManifest picks the first linux/arch manifest of an image index.
func platformManifest(idx oci.Index, arch string) (oci.Descriptor, error) {
	var have []string
	for _, m := range idx.Manifests {
		if m.Platform == nil || !oci.IsManifest(m.MediaType) {
			continue
		}
		if m.Platform.OS == "linux" && m.Platform.Architecture == arch {
			return m, nil
		}
		have = append(have, m.Platform.OS+"/"+m.Platform.Architecture)
	}
	return oci.Descriptor{}, fmt.Errorf("%w: want linux/%s, image has [%s]", ErrNoPlatform, arch, strings.Join(have, " "))
}
