package verify

import "github.com/bpfleet/bpfleet/internal/trust"

// Where an accepted signature came from.
const (
	SourceTrustStore  = "trust-store"
	SourceImageLayout = "image-layout"
)

// Which signature format verified.
const (
	// FormatLegacy: a cosign simple-signing payload and its signature, from the trust store or
	// from the layout's `sha256-<hex>.sig` tag.
	FormatLegacy = "legacy"
	// FormatOCI11Referrer: a simple-signing payload in an OCI 1.1 referrer manifest of
	// artifact type application/vnd.dev.cosign.artifact.sig.v1+json.
	FormatOCI11Referrer = "oci11-referrer"
	// FormatBundle: a key-signed Sigstore bundle (cosign v3), found as an OCI 1.1 referrer.
	FormatBundle = "bundle"
)

// Decision records what decided a verification, so a CLI can print why. It marshals to JSON.
type Decision struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	KeyID  string `json:"key_id,omitempty"`
	// Identity is the certificate subject (SAN) of a keyless signature that verified.
	Identity string `json:"identity,omitempty"`
	Source   string `json:"signature_source,omitempty"` // SourceTrustStore or SourceImageLayout
	// Format is the format of the signature that verified: FormatLegacy,
	// FormatOCI11Referrer or FormatBundle.
	Format       string `json:"signature_format,omitempty"`
	TrustVersion uint64 `json:"trust_version"`
	// TrustState is the trust store's state digest; empty in ad-hoc key mode.
	TrustState string `json:"trust_state,omitempty"`
	// Level and Scope say which policy scope decided, at what level ("strict" with no
	// policy).
	Level trust.Level `json:"level"`
	Scope string      `json:"scope"`
	// Verified is false when the gadget was let through without a valid signature: by the
	// allow-list, a break-glass override, or a permissive policy level.
	Verified bool `json:"verified"`
	// Override is the break-glass override that let the gadget through, if one did; the
	// caller must record its use.
	Override *trust.Override `json:"override,omitempty"`
	// Warnings are what the level let pass: a missing signature in audit mode, stale trust in
	// permissive mode, an unknown clock.
	Warnings []string `json:"warnings,omitempty"`
}
