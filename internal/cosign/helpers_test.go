package cosign

import (
	"crypto/ecdsa"
	"os"
	"path/filepath"
	"testing"
)

// fixtureDir returns the shared IG signature fixture, skipping when the shared tree is not
// checked out next to the repository.
func fixtureDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "ig-signature-store")
	if _, err := os.Stat(filepath.Join(dir, "oci-layout", "index.json")); err != nil {
		t.Skipf("shared IG fixture not available (want ../shared next to the repository root): %v", err)
	}
	return dir
}

func fixtureKey(t *testing.T, name string) *ecdsa.PublicKey {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadPublicKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// The fixture's legacy signature: the index it signs, its payload and signature.
const (
	fixtureSignedDigest = "sha256:20296fb8a8c8a97808229625945da73f5f4d5843800317ead8c203081156cc9c"
	fixtureSigManifest  = "sha256:e0c60c886b1ce163e6495fbbbd715343ea2ec86b240c4284f726abea6556f038"
	fixturePayload      = `{"critical":{"identity":{"docker-reference":"ttl.sh/signed_with_cosign_legacy"},"image":{"docker-manifest-digest":"sha256:20296fb8a8c8a97808229625945da73f5f4d5843800317ead8c203081156cc9c"},"type":"cosign container image signature"},"optional":null}`
	fixtureSignature    = "MEQCIE7/pE4x4eH4cbJR3oWQBicoufzcp9468wsP1BlYRRAJAiBedYpR6OTMlkIiuw4dxVICaIBxG6vlmMCIsIFn7Taj2A=="
)
