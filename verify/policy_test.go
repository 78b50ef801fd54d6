package verify

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// TestPolicy walks the policy levels, lists, revocation, freshness and break-glass on one
// signed and one unsigned gadget.
func TestPolicy(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const unsignedRef = "ghcr.io/acme/unsigned:v1"
	signed := packageGadget(t, l, gadgetRef, "original", "").Digest
	unsigned := packageGadget(t, l, unsignedRef, "other", "").Digest
	key := newSigner(t)
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	base := func() *memTrust {
		return &memTrust{version: 3, keys: []trust.Key{key.key},
			sigs: map[string][]trust.Signature{signed: {key.sign(t, signed)}}, expires: now.Add(time.Hour).Unix()}
	}
	scopes := func(s ...trust.Scope) *trust.Policy { return &trust.Policy{Scopes: s} }
	override := func(expires time.Time) map[string]*trust.Override {
		return map[string]*trust.Override{unsigned: {Fleet: "f", Device: "d1", Digest: unsigned, Expires: expires.Unix(), Reason: "incident 42"}}
	}
	tests := []struct {
		name     string
		ref      string
		mutate   func(*memTrust)
		now      time.Time
		wantErr  error
		verified bool
		level    trust.Level
		warning  string
	}{
		{name: "signed, no policy", ref: gadgetRef, verified: true, level: trust.Strict},
		{name: "unsigned, no policy", ref: unsignedRef, wantErr: ErrUnsigned},
		{name: "unsigned, audit", ref: unsignedRef, mutate: func(m *memTrust) { m.policy = scopes(trust.Scope{Match: "*", Level: trust.Audit}) },
			level: trust.Audit, warning: "level audit"},
		{name: "unsigned, permissive", ref: unsignedRef, mutate: func(m *memTrust) { m.policy = scopes(trust.Scope{Match: "*", Level: trust.Permissive}) },
			wantErr: ErrUnsigned},
		{name: "unsigned, skip for its repository", ref: unsignedRef, mutate: func(m *memTrust) {
			m.policy = scopes(trust.Scope{Match: "*", Level: trust.Strict}, trust.Scope{Match: "ghcr.io/acme/unsigned", Level: trust.Skip})
		}, level: trust.Skip, warning: "level skip"},
		{name: "unsigned, allow-listed", ref: unsignedRef, mutate: func(m *memTrust) { m.policy = &trust.Policy{Allow: []string{unsigned}} },
			level: trust.Strict, warning: "allow-list"},
		{name: "signed but denied", ref: gadgetRef, mutate: func(m *memTrust) {
			m.policy = &trust.Policy{Deny: []string{signed}, Scopes: []trust.Scope{{Match: "*", Level: trust.Audit}}}
		}, wantErr: ErrDenied},
		{name: "signed but revoked", ref: gadgetRef, mutate: func(m *memTrust) {
			m.revoked = map[trust.Revocation]bool{{Kind: trust.RevokeDigest, Value: signed}: true}
		}, wantErr: ErrRevoked},
		{name: "stale, strict", ref: gadgetRef, now: now.Add(2 * time.Hour), wantErr: ErrStale},
		{name: "stale, permissive", ref: gadgetRef, now: now.Add(2 * time.Hour), mutate: func(m *memTrust) {
			m.policy = scopes(trust.Scope{Match: "*", Level: trust.Permissive})
		}, verified: true, level: trust.Permissive, warning: "expired at"},
		{name: "clock unknown", ref: gadgetRef, now: time.Unix(1000, 0), verified: true, level: trust.Strict, warning: "clock is unknown"},
		{name: "break-glass", ref: unsignedRef, mutate: func(m *memTrust) { m.overrides = override(now.Add(time.Hour)) },
			level: trust.Strict, warning: "incident 42"},
		{name: "break-glass expired", ref: unsignedRef, mutate: func(m *memTrust) { m.overrides = override(now.Add(-time.Minute)) },
			wantErr: ErrUnsigned},
		{name: "break-glass does not beat deny", ref: unsignedRef, mutate: func(m *memTrust) {
			m.overrides = override(now.Add(time.Hour))
			m.policy = &trust.Policy{Deny: []string{unsigned}}
		}, wantErr: ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			if tt.mutate != nil {
				tt.mutate(m)
			}
			at := now
			if !tt.now.IsZero() {
				at = tt.now
			}
			a, err := Gadget(m, l, tt.ref, WithNow(at))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || a != nil {
					t.Fatalf("Gadget = %v, %v; want %v", a, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d := a.Decision()
			if d.Verified != tt.verified || d.Level != tt.level {
				t.Errorf("verified %t level %s, want %t %s", d.Verified, d.Level, tt.verified, tt.level)
			}
			if got := strings.Join(d.Warnings, "; "); (tt.warning == "") != (got == "") || !strings.Contains(got, tt.warning) {
				t.Errorf("warnings %q, want one saying %q", got, tt.warning)
			}
			if (tt.name == "break-glass") != (d.Override != nil) {
				t.Errorf("override = %+v", d.Override)
			}
		})
	}

	// Audit lets a missing signature pass, never a broken digest chain.
	m := base()
	m.policy = scopes(trust.Scope{Match: "*", Level: trust.Audit})
	flipBlobByte(t, l, programLayer(t, l, unsignedRef).Digest)
	if _, err := Gadget(m, l, unsignedRef, WithNow(now)); !errors.Is(err, ErrTampered) {
		t.Fatalf("tampered layer under audit: %v", err)
	}
}

// TestPolicyScopeFromImageNames: the scope comes from the names the device has for the image,
// not from how it was asked for, and the strictest of them decides. A short name, a digest or
// a second, looser tag must not lift the strict rule of the image's own repository.
func TestPolicyScopeFromImageNames(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const ref, labRef = "ghcr.io/acme/unsigned:v1", "lab/other:v1"
	desc := packageGadget(t, l, ref, "unsigned", "")
	lab := packageGadget(t, l, labRef, "other", "")
	// Named only by a helper-shaped tag (which image list hides) under the strict repository.
	hidden := packageGadget(t, l, "ghcr.io/acme/hidden:sha256-"+strings.Repeat("0", 64), "hidden", "")
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	m := &memTrust{version: 1, keys: []trust.Key{newSigner(t).key}, expires: now.Add(time.Hour).Unix(), policy: &trust.Policy{Scopes: []trust.Scope{
		{Match: "*", Level: trust.Audit},
		{Match: "lab/*", Level: trust.Audit},
		{Match: "ghcr.io/acme/*", Level: trust.Strict},
	}}}
	for _, tc := range []struct {
		name, ask string
		extraTag  string      // a second name for the image, given before asking
		level     trust.Level // "": refused as unsigned
	}{
		// The control: an image named only under lab/ runs unsigned, under audit.
		{name: "lab image", ask: labRef, level: trust.Audit},
		{name: "lab image by digest", ask: lab.Digest, level: trust.Audit},
		{name: "its own name", ask: ref},
		{name: "short name", ask: "unsigned:v1"},
		{name: "digest", ask: desc.Digest},
		{name: "digest prefix", ask: desc.Digest[:19]},
		{name: "pinned", ask: "unsigned@" + desc.Digest},
		{name: "a looser second tag", ask: "lab/unsigned:v1", extraTag: "lab/unsigned:v1"},
		{name: "a helper-shaped name counts", ask: "lab/hidden:v1", extraTag: "lab/hidden:v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.extraTag != "" {
				target := desc
				if strings.Contains(tc.extraTag, "hidden") {
					target = hidden
				}
				if err := l.Tag(tc.extraTag, target); err != nil {
					t.Fatal(err)
				}
			}
			a, err := Gadget(m, l, tc.ask, WithNow(now))
			switch {
			case tc.level == "" && !errors.Is(err, ErrUnsigned):
				t.Fatalf("Gadget(%s) = %v, %v; want ErrUnsigned (the strict scope of %s)", tc.ask, a, err, ref)
			case tc.level != "" && (err != nil || a.Decision().Level != tc.level):
				t.Fatalf("Gadget(%s) = %v, %v; want it run at level %s", tc.ask, a, err, tc.level)
			}
		})
	}
}
