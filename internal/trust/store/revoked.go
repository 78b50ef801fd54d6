package store

import "github.com/bpfleet/bpfleet/internal/trust"

// RevokedKeys returns the keys delivered and later revoked (verify.RevokedKeys): verification
// names the revoked key that made a signature instead of calling it untrusted.
func (s *Snapshot) RevokedKeys() []trust.Key {
	var out []trust.Key
	for _, k := range s.keys {
		if s.revoked[trust.Revocation{Kind: trust.RevokeKey, Value: k.ID()}] {
			out = append(out, k)
		}
	}
	return out
}
