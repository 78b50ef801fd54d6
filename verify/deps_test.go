package verify

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestNoNetworkPackages keeps verification offline by construction: nothing this package links
// may speak HTTP or TLS. (crypto/x509 brings in package net for IP addresses; that is not a
// client.) The trust store (Badger, which imports expvar and so net/http) is deliberately not a
// dependency: verification reads trust through the trust.Reader interface.
func TestNoNetworkPackages(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/bpfleet/bpfleet/internal/cosign") {
		t.Fatalf("go list output does not look like this package's dependencies: %v", deps)
	}
	for _, forbidden := range []string{"net/http", "net/rpc", "net/smtp", "crypto/tls", "github.com/dgraph-io/badger/v4"} {
		if slices.Contains(deps, forbidden) {
			t.Errorf("verify depends on %s", forbidden)
		}
	}
}
