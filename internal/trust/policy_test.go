package trust

import "testing"

func TestScopeFor(t *testing.T) {
	const digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	p := &Policy{Scopes: []Scope{
		{Match: "*", Level: Permissive},
		{Match: "ghcr.io/acme/*", Level: Audit},
		{Match: "ghcr.io/acme/tools/*", Level: Strict},
		{Match: "trace_exec", Level: Strict},
		{Match: digest, Level: Skip},
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ref, repo, digest string
		want              string
	}{
		{"trace_exec:latest", "trace_exec", "sha256:x", "trace_exec"},
		{"other", "other", "sha256:x", "*"},
		{"ghcr.io/acme/g:v1", "ghcr.io/acme/g", "sha256:x", "ghcr.io/acme/*"},
		{"ghcr.io/acme/tools/g:v1", "ghcr.io/acme/tools/g", "sha256:x", "ghcr.io/acme/tools/*"},
		{"ghcr.io/acmex/g", "ghcr.io/acmex/g", "sha256:x", "*"},
		{"anything", "anything", digest, digest},
		// A name spelled like the digest is not the digest.
		{digest, digest, "sha256:x", "*"},
	} {
		if got := p.ScopeFor(tt.ref, tt.repo, tt.digest); got.Match != tt.want {
			t.Errorf("ScopeFor(%q) = %q, want %q", tt.ref, got.Match, tt.want)
		}
	}
	var none *Policy
	if s := none.ScopeFor("x", "x", digest); s.Level != Strict {
		t.Fatalf("no policy: %+v", s)
	}
}
