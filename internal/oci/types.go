package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Media types and annotations of the OCI image spec v1.1 that this package reads or writes.
const (
	MediaTypeIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeImageConfig = "application/vnd.oci.image.config.v1+json"

	// Docker schema 2 equivalents, still found in layouts copied from registries.
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"

	AnnotationRefName     = "org.opencontainers.image.ref.name"
	AnnotationTitle       = "org.opencontainers.image.title"
	AnnotationDescription = "org.opencontainers.image.description"
	AnnotationCreated     = "org.opencontainers.image.created"
)

// Size limits. Gadget blobs (eBPF objects, metadata, BTF archives) are at most a few MiB; the
// caps keep a hostile or broken layout from exhausting memory or disk on a small device.
const (
	// MaxBlobSize is the largest blob ReadBlob returns or Import copies.
	MaxBlobSize = 64 << 20
	// MaxManifestSize bounds index.json, image indexes and manifests (the registry-side
	// limit commonly enforced for manifests).
	MaxManifestSize = 4 << 20
)

// Descriptor points at a blob by media type, digest and size (OCI image spec "descriptor").
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Data         []byte            `json:"data,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
}

// Platform says which OS and CPU a manifest in an image index is for.
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

// Index is an OCI image index; index.json at the root of a layout has the same shape.
type Index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Manifests     []Descriptor      `json:"manifests"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Sentinel errors, for errors.Is.
var (
	// ErrBlobMismatch: a blob's content does not hash to, or is not the size of, its descriptor.
	ErrBlobMismatch = errors.New("blob does not match its descriptor")
	// ErrNotFound: no image for a reference, or no such blob.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: a short name matches several tags.
	ErrAmbiguous = errors.New("ambiguous reference")
	// ErrTooLarge: a blob is bigger than the caps above.
	ErrTooLarge = errors.New("blob too large")
	// ErrTagChanged: TagIfUnchanged found the tag pointing elsewhere.
	ErrTagChanged = errors.New("tag changed concurrently")
)

// Digest returns the OCI digest "sha256:<hex>" of data.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// DigestHex checks that d is a well-formed "sha256:<64 lowercase hex>" digest and returns the
// hex part. Other algorithms are refused: a layout blob path is built from it.
func DigestHex(d string) (string, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return "", fmt.Errorf("invalid digest %q: want sha256:<64 lowercase hex>", d)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("invalid digest %q: want sha256:<64 lowercase hex>", d)
	}
	return h, nil
}

// IsIndex reports whether a media type is an image index (OCI or Docker manifest list).
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeIndex || mediaType == mediaTypeDockerList
}

// IsManifest reports whether a media type is an image manifest (OCI or Docker schema 2).
func IsManifest(mediaType string) bool {
	return mediaType == MediaTypeManifest || mediaType == mediaTypeDockerManifest
}

func checkDescriptor(d Descriptor) error {
	if _, err := DigestHex(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("blob %s: negative size %d", d.Digest, d.Size)
	}
	if d.Size > MaxBlobSize {
		return fmt.Errorf("blob %s: %d bytes: %w (limit %d)", d.Digest, d.Size, ErrTooLarge, MaxBlobSize)
	}
	return nil
}
