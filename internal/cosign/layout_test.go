package cosign

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/testkey"
)

func openLayout(t *testing.T) *oci.Layout {
	t.Helper()
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func decodeJSON(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSignatureManifestMatchesCosign writes the fixture's own payload and signature and
// compares the result with the manifest cosign wrote: same JSON values (key order aside), and
// a config blob identical to the byte. Cosign also stored a Rekor bundle annotation, which we
// do not produce.
func TestSignatureManifestMatchesCosign(t *testing.T) {
	blobs := filepath.Join(fixtureDir(t), "oci-layout", "blobs", "sha256")
	sig, _ := base64.StdEncoding.DecodeString(fixtureSignature)

	l := openLayout(t)
	desc, err := WriteSignature(l, fixtureSignedDigest, []byte(fixturePayload), sig)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := l.ReadBlob(desc)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := os.ReadFile(filepath.Join(blobs, strings.TrimPrefix(fixtureSigManifest, "sha256:")))
	if err != nil {
		t.Fatal(err)
	}
	want := decodeJSON(t, theirs)
	layer := want.(map[string]any)["layers"].([]any)[0].(map[string]any)
	delete(layer["annotations"].(map[string]any), "dev.sigstore.cosign/bundle")
	if got := decodeJSON(t, ours); !reflect.DeepEqual(got, want) {
		t.Errorf("signature manifest\n%s\ndiffers from cosign's (without bundle)\n%s", ours, theirs)
	}

	m, err := l.ReadManifest(desc)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := l.ReadBlob(m.Config)
	cosignCfg, _ := os.ReadFile(filepath.Join(blobs, "ad6db79c435b78a9ace1e8c8a5c62dce3979a3ce81350b972401b57b7769e890"))
	if string(cfg) != string(cosignCfg) {
		t.Errorf("config\n%s\nwant\n%s", cfg, cosignCfg)
	}
	if tag, _ := SignatureTag(fixtureSignedDigest); tag != "sha256-20296fb8a8c8a97808229625945da73f5f4d5843800317ead8c203081156cc9c.sig" {
		t.Errorf("SignatureTag = %s", tag)
	}
	if tagged, err := l.Lookup("sha256-20296fb8a8c8a97808229625945da73f5f4d5843800317ead8c203081156cc9c.sig"); err != nil || tagged.Digest != desc.Digest {
		t.Errorf("signature tag = %s, %v", tagged.Digest, err)
	}
}

func TestWriteSignatureAccumulates(t *testing.T) {
	l := openLayout(t)
	digest := oci.Digest([]byte("some index"))
	key1, key2 := testkey.New(t).Private, testkey.New(t).Private
	p1, _ := NewPayload(digest, "example.com/one")
	p2, _ := NewPayload(digest, "example.com/two")
	s1, _ := Sign(key1, p1)
	s2, _ := Sign(key2, p2)

	if sigs, err := ReadSignatures(l, digest); err != nil || sigs != nil {
		t.Fatalf("ReadSignatures before signing = %v, %v", sigs, err)
	}
	first, err := WriteSignature(l, digest, p1, s1)
	if err != nil {
		t.Fatal(err)
	}
	second, err := WriteSignature(l, digest, p2, s2)
	if err != nil {
		t.Fatal(err)
	}
	if second.Digest == first.Digest {
		t.Fatal("second signature did not change the manifest")
	}
	if again, err := WriteSignature(l, digest, p1, s1); err != nil || again.Digest != second.Digest {
		t.Errorf("re-adding the first signature = %s, %v; want unchanged %s", again.Digest, err, second.Digest)
	}

	sigs, err := ReadSignatures(l, digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 2 || string(sigs[0].Payload) != string(p1) || string(sigs[1].Payload) != string(p2) {
		t.Fatalf("ReadSignatures = %d signatures: %+v", len(sigs), sigs)
	}
	if VerifySignature(&key1.PublicKey, sigs[0].Payload, sigs[0].Signature) != nil ||
		VerifySignature(&key2.PublicKey, sigs[1].Payload, sigs[1].Signature) != nil {
		t.Error("signatures read back do not verify")
	}

	m, _ := l.ReadManifest(second)
	cfg, _ := l.ReadBlob(m.Config)
	var c sigConfig
	json.Unmarshal(cfg, &c)
	if want := []string{oci.Digest(p1), oci.Digest(p2)}; !reflect.DeepEqual(c.RootFS.DiffIDs, want) || len(c.History) != 2 {
		t.Errorf("config after append = %s", cfg)
	}

	// A damaged payload makes the stored signatures unreadable, naming the blob.
	h, _ := oci.DigestHex(sigs[1].Layer.Digest)
	path := filepath.Join(l.Dir(), "blobs", "sha256", h)
	os.WriteFile(path, append(p2[:len(p2)-1], ' '), 0o644)
	if _, err := ReadSignatures(l, digest); !errors.Is(err, oci.ErrBlobMismatch) || !strings.Contains(err.Error(), sigs[1].Layer.Digest) {
		t.Errorf("ReadSignatures with a damaged payload = %v", err)
	}
}

func TestReadSignaturesFromIGLayout(t *testing.T) {
	fixture := filepath.Join(fixtureDir(t), "oci-layout")
	l := openLayout(t)
	if _, err := l.Import(fixture); err != nil {
		t.Fatal(err)
	}
	sigs, err := ReadSignatures(l, fixtureSignedDigest)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 1 || string(sigs[0].Payload) != fixturePayload || base64.StdEncoding.EncodeToString(sigs[0].Signature) != fixtureSignature {
		t.Fatalf("ReadSignatures = %+v", sigs)
	}
	// The OCI 1.1 referrer signature of another image is not a legacy .sig tag.
	if sigs, err := ReadSignatures(l, "sha256:2f096beb75baadce98f52500552f1d7eabf19f4c35007869350d6f496084e992"); err != nil || sigs != nil {
		t.Errorf("ReadSignatures(oci11 image) = %v, %v", sigs, err)
	}
}
