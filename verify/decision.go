package verify

// Where an accepted signature came from.
const (
	SourceTrustStore  = "trust-store"
	SourceImageLayout = "image-layout"
)

// Decision records what decided a verification, so a CLI can print why. It marshals to JSON.
type Decision struct {
	Ref          string `json:"ref"`
	Digest       string `json:"digest"`
	KeyID        string `json:"key_id,omitempty"`
	Source       string `json:"signature_source,omitempty"` // SourceTrustStore or SourceImageLayout
	TrustVersion uint64 `json:"trust_version"`
	// TrustState is the trust store's state digest; empty in ad-hoc key mode.
	TrustState string `json:"trust_state,omitempty"`
}
