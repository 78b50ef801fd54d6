package trust

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Revocation withdraws trust from a key, a keyless signing identity or an image digest. It is
// delivered in a trust delta and takes effect, offline, for every later verification,
// including of images that verified before.
type Revocation struct {
	Kind  string `cbor:"1,keyasint"` // RevokeKey, RevokeIdentity or RevokeDigest
	Value string `cbor:"2,keyasint"` // hex key id, certificate SAN, or "sha256:<hex>"
}

// Kinds of revocation.
const (
	RevokeKey      = "key"
	RevokeIdentity = "identity"
	RevokeDigest   = "digest"
)

// Validate checks that r names a kind and a well-formed value.
func (r Revocation) Validate() error {
	switch r.Kind {
	case RevokeKey:
		if len(r.Value) != 64 || strings.Trim(r.Value, "0123456789abcdef") != "" {
			return fmt.Errorf("revoke key %q: want a 64-hex-digit key id", r.Value)
		}
	case RevokeIdentity:
		if r.Value == "" {
			return errors.New("revoke identity: empty")
		}
	case RevokeDigest:
		if !ValidDigest(r.Value) {
			return fmt.Errorf("revoke digest %q: want sha256:<64 hex>", r.Value)
		}
	default:
		return fmt.Errorf("revocation kind %q: want key, identity or digest", r.Kind)
	}
	return nil
}

// ValidDigest reports whether d is "sha256:" and 64 lowercase hex digits.
func ValidDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	return ok && len(h) == 64 && strings.Trim(h, "0123456789abcdef") == ""
}

// Level is how strictly a scope's gadgets are verified, after Notation's trust policy levels.
type Level string

// Verification levels, strictest first.
const (
	// Strict enforces integrity, authenticity, revocation and fresh trust.
	Strict Level = "strict"
	// Permissive enforces integrity, authenticity and revocation; stale trust is logged.
	Permissive Level = "permissive"
	// Audit enforces integrity and revocation; a missing or untrusted signature is logged.
	Audit Level = "audit"
	// Skip verifies nothing but integrity; never allowed for a wildcard scope.
	Skip Level = "skip"
)

// Identity is a keyless signer accepted in a scope: a certificate subject (SAN) and OIDC
// issuer, each matched exactly or by a regular expression (anchored).
type Identity struct {
	Subject       string `cbor:"1,keyasint,omitempty" json:"subject,omitempty"`
	SubjectRegexp string `cbor:"2,keyasint,omitempty" json:"subject_regexp,omitempty"`
	Issuer        string `cbor:"3,keyasint,omitempty" json:"issuer,omitempty"`
	IssuerRegexp  string `cbor:"4,keyasint,omitempty" json:"issuer_regexp,omitempty"`
}

// Scope applies a level (and accepted identities) to the gadgets it matches.
type Scope struct {
	// Match is "*" (every gadget), an exact reference or name ("trace_exec",
	// "ghcr.io/acme/trace_exec:v1"), a repository prefix ending in "/*" ("ghcr.io/acme/*"),
	// or an index digest ("sha256:<hex>").
	Match      string     `cbor:"1,keyasint" json:"match"`
	Level      Level      `cbor:"2,keyasint" json:"level"`
	Identities []Identity `cbor:"3,keyasint,omitempty" json:"identities,omitempty"`
}

// Policy is the fleet's verification policy, delivered by trust deltas. The most specific
// matching scope decides (digest, then exact reference, then the longest prefix, then "*");
// with no matching scope, or no policy at all, verification is Strict.
type Policy struct {
	Scopes []Scope `cbor:"1,keyasint,omitempty" json:"scopes,omitempty"`
	// Allow lists digests that may run without a signature (integrity is still checked).
	Allow []string `cbor:"2,keyasint,omitempty" json:"allow,omitempty"`
	// Deny lists digests that never run, whatever signs them.
	Deny []string `cbor:"3,keyasint,omitempty" json:"deny,omitempty"`
}

// Validate rejects a policy a device could not apply safely.
func (p *Policy) Validate() error {
	seen := map[string]bool{}
	for i, s := range p.Scopes {
		switch s.Level {
		case Strict, Permissive, Audit:
		case Skip:
			if s.Match == "*" || strings.HasSuffix(s.Match, "/*") {
				return fmt.Errorf("scope %d (%q): level skip is not allowed for a wildcard scope", i, s.Match)
			}
		default:
			return fmt.Errorf("scope %d (%q): unknown level %q", i, s.Match, s.Level)
		}
		if s.Match == "" {
			return fmt.Errorf("scope %d: empty match", i)
		}
		if seen[s.Match] {
			return fmt.Errorf("scope %d: %q appears twice", i, s.Match)
		}
		seen[s.Match] = true
		for j, id := range s.Identities {
			if (id.Subject == "") == (id.SubjectRegexp == "") || (id.Issuer == "") == (id.IssuerRegexp == "") {
				return fmt.Errorf("scope %q identity %d: give exactly one of subject/subject_regexp and one of issuer/issuer_regexp", s.Match, j)
			}
			for _, re := range []string{id.SubjectRegexp, id.IssuerRegexp} {
				if _, err := regexp.Compile(re); err != nil {
					return fmt.Errorf("scope %q identity %d: %w", s.Match, j, err)
				}
			}
		}
	}
	for _, list := range [][]string{p.Allow, p.Deny} {
		for _, d := range list {
			if !ValidDigest(d) {
				return fmt.Errorf("allow/deny entry %q: want sha256:<64 hex>", d)
			}
		}
	}
	return nil
}

// ScopeFor returns the scope that decides for an image, given the reference it was asked by,
// its repository (the reference without tag) and its index digest; the zero Scope with level
// Strict when none matches.
func (p *Policy) ScopeFor(ref, repo, digest string) Scope {
	best, bestRank, bestLen := Scope{Match: "(default)", Level: Strict}, 0, 0
	if p == nil {
		return best
	}
	for _, s := range p.Scopes {
		rank, n := 0, len(s.Match)
		switch {
		case s.Match == digest:
			rank = 4
		case !strings.HasPrefix(s.Match, "sha256:") && (s.Match == ref || s.Match == repo):
			rank = 3 // a digest scope is for that digest only, never a name spelled like it
		case strings.HasSuffix(s.Match, "/*") && strings.HasPrefix(repo, strings.TrimSuffix(s.Match, "*")):
			rank = 2
		case s.Match == "*":
			rank = 1
		}
		if rank > bestRank || (rank == bestRank && rank > 0 && n > bestLen) {
			best, bestRank, bestLen = s, rank, n
		}
	}
	return best
}
