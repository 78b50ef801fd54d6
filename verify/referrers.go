package verify

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
)

// ErrUnsupportedSignature: the image carries signatures only in a format bpfleet does not
// verify (notation). Such an error also matches ErrUnsigned: there is no cosign signature.
var ErrUnsupportedSignature = errors.New("signature format not supported")

// imageReferrers is what the OCI 1.1 referrers of an image digest hold, sorted by what
// verification does with it.
type imageReferrers struct {
	// simple are simple-signing signatures from cosign.ArtifactTypeSignature referrers.
	simple []cosign.Signature
	// bundles are Sigstore bundles from cosign.ArtifactTypeBundle referrers.
	bundles []referrerBundle
	// unsupported describes signature referrers of other formats, e.g.
	// "notation signature (referrer sha256:...)".
	unsupported []string
}

type referrerBundle struct {
	manifest string // digest of the referrer manifest holding it
	data     []byte
}

// unsupportedFormats names the referrer artifact types that are signatures bpfleet knows of
// but does not verify. Other artifact types (SBOMs, attestations of other tools) are not
// signatures and are ignored.
var unsupportedFormats = map[string]string{
	cosign.ArtifactTypeNotation: "notation signature",
}

// readReferrers reads and sorts the referrers of digest in images. The error reports the
// referrers that could not be read; what could be read is returned with it.
func readReferrers(images *oci.Layout, digest string) (imageReferrers, error) {
	refs, err := cosign.ReadReferrers(images, digest)
	var out imageReferrers
	for _, r := range refs {
		switch r.ArtifactType {
		case cosign.ArtifactTypeSignature:
			out.simple = append(out.simple, r.Signatures...)
		case cosign.ArtifactTypeBundle:
			for _, b := range r.Bundles {
				out.bundles = append(out.bundles, referrerBundle{manifest: r.Manifest.Digest, data: b})
			}
		default:
			if name, ok := unsupportedFormats[r.ArtifactType]; ok {
				out.unsupported = append(out.unsupported, fmt.Sprintf("%s (%s, referrer %s)", name, r.ArtifactType, r.Manifest.Digest))
			}
		}
	}
	return out, flatten(err)
}

// multiError is a list of errors printed on one line, separated by "; ". It matches each of
// them with errors.Is and errors.As.
type multiError []error

func (m multiError) Error() string {
	parts := make([]string, len(m))
	for i, err := range m {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (m multiError) Unwrap() []error { return m }

// joinErrors is errors.Join printed on one line; nil when errs holds no error.
func joinErrors(errs []error) error {
	var m multiError
	for _, err := range errs {
		if err != nil {
			m = append(m, err)
		}
	}
	switch len(m) {
	case 0:
		return nil
	case 1:
		return m[0]
	}
	return m
}

// flatten turns an errors.Join result (newline-separated) into a one-line multiError.
func flatten(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return joinErrors(j.Unwrap())
	}
	return err
}
