package verify

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
	Source string `json:"signature_source,omitempty"` // SourceTrustStore or SourceImageLayout
	// Format is the format of the signature that verified: FormatLegacy,
	// FormatOCI11Referrer or FormatBundle.
	Format       string `json:"signature_format,omitempty"`
	TrustVersion uint64 `json:"trust_version"`
	// TrustState is the trust store's state digest; empty in ad-hoc key mode.
	TrustState string `json:"trust_state,omitempty"`
}
