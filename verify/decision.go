package verify

// Decision records what decided a verification, so a CLI can print why. It marshals to JSON.
type Decision struct {
	Ref          string `json:"ref"`
	Digest       string `json:"digest"`
	KeyID        string `json:"key_id,omitempty"`
	Source       string `json:"signature_source,omitempty"` // "trust-store" or "image-layout"
	TrustVersion uint64 `json:"trust_version"`
}
