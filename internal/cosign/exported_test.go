package cosign

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/testkey"
)

// Layouts written by the tools that export cosign-signed images from a registry, as the real
// cosign v2.6.5 and crane v0.22.1 write them (cmd/bpfleet/interop_test.go runs the tools):
//
//   - `cosign save --dir D REF`: no tags at all; each index.json entry says what it is with a
//     "kind" annotation, the image "dev.cosignproject.cosign/imageIndex" (or ".../image") and
//     its legacy signature manifest "dev.cosignproject.cosign/sigs". It does not save
//     Sigstore-bundle referrers (sigstore/cosign#4507).
//   - `crane pull --format=oci --annotate-ref REF... D`: each entry tagged with the full
//     reference it was pulled by, so the helper tags are "registry/repo:sha256-<hex>.sig" and
//     "registry/repo:sha256-<hex>" (the referrers fallback tag), not the bare tags that IG's
//     store and bpfleetctl write.

// exportLayout writes a source layout (as a tool would) holding every blob of from, with
// index.json replaced by entries.
func exportLayout(t *testing.T, from *oci.Layout, entries ...oci.Descriptor) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(from.Dir())); err != nil {
		t.Fatal(err)
	}
	idx, err := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex, Manifests: entries})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func annotated(d oci.Descriptor, kv ...string) oci.Descriptor {
	d.Annotations = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Annotations[kv[i]] = kv[i+1]
	}
	return d
}

// signedImage writes a small image manifest named name into l and a cosign legacy signature
// of it; it returns the image and signature manifest descriptors.
func signedImage(t *testing.T, l *oci.Layout, name string) (image, sig oci.Descriptor, payload []byte) {
	t.Helper()
	cfg, err := l.WriteBlob(oci.MediaTypeImageConfig, []byte(`{"name":"`+name+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := json.Marshal(oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest, Config: cfg, Layers: []oci.Descriptor{}})
	if err != nil {
		t.Fatal(err)
	}
	if image, err = l.WriteBlob(oci.MediaTypeManifest, m); err != nil {
		t.Fatal(err)
	}
	if payload, err = NewPayload(image.Digest, "127.0.0.1:5000/gadgets/"+name); err != nil {
		t.Fatal(err)
	}
	s, err := Sign(testkey.New(t).Private, payload)
	if err != nil {
		t.Fatal(err)
	}
	if sig, err = WriteSignature(l, image.Digest, payload, s); err != nil {
		t.Fatal(err)
	}
	return image, sig, payload
}

func importInto(t *testing.T, l *oci.Layout, src string) {
	t.Helper()
	if _, err := l.Import(src); err != nil {
		t.Fatal(err)
	}
}

// TestReadSignaturesCosignSave: two images exported with `cosign save` and imported into one
// device layout; each image's signature is found, and only its own.
func TestReadSignaturesCosignSave(t *testing.T) {
	build := openLayout(t)
	imgA, sigA, payloadA := signedImage(t, build, "a")
	imgB, sigB, payloadB := signedImage(t, build, "b")
	device := openLayout(t)
	importInto(t, device, exportLayout(t, build,
		annotated(imgA, AnnotationKind, KindImage), annotated(sigA, AnnotationKind, KindSignatures)))
	importInto(t, device, exportLayout(t, build,
		annotated(imgB, AnnotationKind, KindImageIndex), annotated(sigB, AnnotationKind, KindSignatures)))

	saved, err := SavedImages(device)
	if err != nil || !slices.Equal(saved, []string{imgA.Digest, imgB.Digest}) {
		t.Fatalf("SavedImages = %q, %v; want the two images %s %s", saved, err, imgA.Digest, imgB.Digest)
	}
	for _, tt := range []struct {
		image   oci.Descriptor
		payload []byte
	}{{imgA, payloadA}, {imgB, payloadB}} {
		sigs, err := ReadSignatures(device, tt.image.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if len(sigs) != 1 || string(sigs[0].Payload) != string(tt.payload) {
			t.Errorf("signatures of %s: %d, want its one payload %s", tt.image.Digest, len(sigs), tt.payload)
		}
	}
	// Another image's saved signature manifest damaged on disk does not hide this one's.
	if err := os.WriteFile(filepath.Join(device.Dir(), "blobs", "sha256", sigB.Digest[len("sha256:"):]), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if sigs, err := ReadSignatures(device, imgA.Digest); err != nil || len(sigs) != 1 {
		t.Errorf("with B's signature manifest damaged: %d signatures of A, %v", len(sigs), err)
	}
	// A damaged tagged signature manifest is reported.
	tagged := openLayout(t)
	tagA, _ := SignatureTag(imgA.Digest)
	importInto(t, tagged, exportLayout(t, build, annotated(sigA, oci.AnnotationRefName, tagA)))
	if err := os.WriteFile(filepath.Join(tagged.Dir(), "blobs", "sha256", sigA.Digest[len("sha256:"):]), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSignatures(tagged, imgA.Digest); err == nil || !strings.Contains(err.Error(), "signature manifest "+tagA) {
		t.Errorf("damaged tagged signature manifest: err = %v", err)
	}
	// A "kind" annotation on a tagged entry is the tag's business, not cosign save's.
	other := openLayout(t)
	importInto(t, other, exportLayout(t, build, annotated(sigA, AnnotationKind, KindSignatures, oci.AnnotationRefName, "not-a-signature-tag")))
	if sigs, err := ReadSignatures(other, imgA.Digest); err != nil || len(sigs) != 0 {
		t.Errorf("tagged entry with a kind annotation: %d signatures, %v; want none", len(sigs), err)
	}
	importInto(t, other, exportLayout(t, build, annotated(imgA, AnnotationKind, KindImage, oci.AnnotationRefName, "v1")))
	if saved, err := SavedImages(other); err != nil || len(saved) != 0 {
		t.Errorf("SavedImages of a layout whose images are tagged = %q, %v; want none", saved, err)
	}
}

// TestReadSignaturesFullReferenceTag: `crane pull --annotate-ref` tags the signature manifest
// "registry/repo:sha256-<hex>.sig".
func TestReadSignaturesFullReferenceTag(t *testing.T) {
	build := openLayout(t)
	img, sig, payload := signedImage(t, build, "a")
	tag, err := SignatureTag(img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	device := openLayout(t)
	importInto(t, device, exportLayout(t, build,
		annotated(img, oci.AnnotationRefName, "127.0.0.1:5000/gadgets/a:v1"),
		annotated(sig, oci.AnnotationRefName, "127.0.0.1:5000/gadgets/a:"+tag)))
	sigs, err := ReadSignatures(device, img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 1 || string(sigs[0].Payload) != string(payload) {
		t.Fatalf("%d signatures, want the one of %s", len(sigs), img.Digest)
	}
	// The tag must be the whole last component: "…:xsha256-<hex>.sig" is another tag.
	other := openLayout(t)
	importInto(t, other, exportLayout(t, build, annotated(sig, oci.AnnotationRefName, "127.0.0.1:5000/gadgets/a:x"+tag)))
	if sigs, err := ReadSignatures(other, img.Digest); err != nil || len(sigs) != 0 {
		t.Errorf("tag x%s: %d signatures, %v; want none", tag, len(sigs), err)
	}
}

// TestReadReferrersFullReferenceFallbackTag: the referrers fallback index pulled with
// `crane pull --annotate-ref` is tagged "registry/repo:sha256-<hex>"; the bundle referrer it
// lists (cosign v2.6 `sign --new-bundle-format` pushes it so to a registry without the
// referrers API) is found.
func TestReadReferrersFullReferenceFallbackTag(t *testing.T) {
	build := openLayout(t)
	img, _, _ := signedImage(t, build, "a")
	bundle, err := build.WriteBlob(ArtifactTypeBundle, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	if err != nil {
		t.Fatal(err)
	}
	empty, err := build.WriteBlob("application/vnd.oci.empty.v1+json", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	subject := oci.Descriptor{MediaType: img.MediaType, Digest: img.Digest, Size: img.Size}
	m, err := json.Marshal(oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest, ArtifactType: ArtifactTypeBundle,
		Config: empty, Layers: []oci.Descriptor{bundle}, Subject: &subject})
	if err != nil {
		t.Fatal(err)
	}
	referrer, err := build.WriteBlob(oci.MediaTypeManifest, m)
	if err != nil {
		t.Fatal(err)
	}
	// As cosign wrote it: the index entry's artifactType is the config's media type.
	listed := referrer
	listed.ArtifactType = "application/vnd.oci.empty.v1+json"
	fi, err := json.Marshal(oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex, Manifests: []oci.Descriptor{listed}})
	if err != nil {
		t.Fatal(err)
	}
	fallback, err := build.WriteBlob(oci.MediaTypeIndex, fi)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := ReferrersTag(img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	device := openLayout(t)
	importInto(t, device, exportLayout(t, build,
		annotated(fallback, oci.AnnotationRefName, "127.0.0.1:5000/gadgets/a:"+tag),
		annotated(img, oci.AnnotationRefName, "127.0.0.1:5000/gadgets/a:v1")))
	refs, err := ReadReferrers(device, img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 || refs[0].Manifest.Digest != referrer.Digest || refs[0].ArtifactType != ArtifactTypeBundle || len(refs[0].Bundles) != 1 {
		t.Fatalf("referrers %+v, want the bundle referrer %s", refs, referrer.Digest)
	}
}
