package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/trust/store"
)

// TestTrustStatusExpiry: `trust status` says when the trust expires and, once it has, that
// strict scopes refuse gadgets; before any trust it says so and JSON has no expiry.
func TestTrustStatusExpiry(t *testing.T) {
	e := newE2E(t)
	for _, tt := range []struct {
		name    string
		expires time.Duration // from now; 0: never received trust
		want    string
	}{
		{"fresh", 2*time.Hour + 30*time.Second, " (in 2h)"},
		{"stale", -3 * time.Minute, " (expired 3m ago: strict scopes refuse gadgets until a fresh delta arrives)"},
		{"never", 0, ""},
	} {
		e.dataDir = filepath.Join(e.work, tt.name)
		s, err := store.Open(filepath.Join(e.dataDir, "trust"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := "expires:      never received trust"
		if tt.expires != 0 {
			at := time.Now().Add(tt.expires).Unix()
			_, err = s.Apply(store.Change{Version: 1, Base: store.Empty().StateDigest(), Expires: at})
			want = "expires:      " + time.Unix(at, 0).UTC().Format(time.RFC3339) + tt.want
		}
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		if out := e.device("trust", "status"); !strings.Contains(out, "\n"+want+"\n") {
			t.Errorf("%s: trust status:\n%s\nwant the line %q", tt.name, out, want)
		}
		out := e.device("trust", "status", "-o", "json")
		if stale := strings.Contains(out, `"stale": true`); stale != (tt.expires < 0) || strings.Contains(out, `"expires"`) != (tt.expires != 0) {
			t.Errorf("%s: trust status -o json:\n%s", tt.name, out)
		}
	}
}

// TestWrongDataDir: a read-only command on an existing directory that is not a device's (a
// mistyped --data-dir) refuses, naming it, and leaves it empty.
func TestWrongDataDir(t *testing.T) {
	e := newE2E(t)
	e.dataDir = t.TempDir()
	for _, args := range [][]string{{"image", "list"}, {"image", "inspect", "x"}, {"image", "export", "x", "-o", e.path("x.tar")},
		{"verify", "x"}, {"run", "x"}, {"trust", "status"}, {"trust", "audit"}} {
		out, err := e.tryDevice(args...)
		want := e.dataDir + " is not a bpfleet data directory: it has neither images/ nor trust/ (is --data-dir right?"
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("bpfleet %s: %v\n%s\nwant %q", strings.Join(args, " "), err, out, want)
		}
		if entries, err := os.ReadDir(e.dataDir); err != nil || len(entries) != 0 {
			t.Errorf("bpfleet %s created %v in %s (%v)", strings.Join(args, " "), entries, e.dataDir, err)
		}
	}
}

func TestRoughly(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second: "45s", 3*time.Minute + 20*time.Second: "3m", 2*time.Hour - 400*time.Millisecond: "2h",
		90 * time.Minute: "1h30m", 47*time.Hour + 59*time.Minute: "47h59m", 80 * time.Hour: "3d",
	} {
		if got := roughly(d); got != want {
			t.Errorf("roughly(%v) = %q, want %q", d, got, want)
		}
	}
}
