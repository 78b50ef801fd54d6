package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
	"github.com/bpfleet/bpfleet/verify"
	"github.com/bpfleet/bpfleet/verify/sigstore"
)

// TrustState is what the device's trust store holds, in brief.
type TrustState struct {
	Version     uint64 `json:"version"`
	StateDigest string `json:"state_digest"`
	// Expires is when the fleet said this state goes stale; nil (omitted) for a store that
	// never received trust.
	Expires *time.Time `json:"expires,omitempty"`
	// Stale: Expires has passed, judged as verify judges it (trust.Expired; an unknown clock
	// is never stale), so gadgets under strict policy are refused.
	Stale       bool `json:"stale"`
	Keys        int  `json:"keys"`
	Signatures  int  `json:"signatures"`
	Revocations int  `json:"revocations"` // revoked keys, keyless identities and digests
	Policy      bool `json:"policy"`      // the fleet delivered a verification policy
}

// existingDataDir refuses a path that is not a bpfleet data directory: one that does not
// exist, or holds neither an image store nor a trust store. Only importing and the agent
// create those: a command that reads would otherwise make a mistyped --data-dir (/tmp, ~)
// look like a device with no images and no trust.
func existingDataDir(dataDir string) error {
	fi, err := os.Stat(dataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("data directory %s does not exist (is --data-dir right? `bpfleet image import` and the agent create it)", dataDir)
	case err != nil:
		return fmt.Errorf("data directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("data directory %s is not a directory (is --data-dir right?)", dataDir)
	}
	hasImages, err := exists(imageDir(dataDir))
	if err != nil {
		return err
	}
	hasTrust, err := exists(trustDir(dataDir))
	if err != nil {
		return err
	}
	if !hasImages && !hasTrust {
		return fmt.Errorf("%s is not a bpfleet data directory: it has neither images/ nor trust/ (is --data-dir right? `bpfleet image import` and the agent create them)", dataDir)
	}
	return nil
}

// exists reports whether path exists.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// openImages opens the image store of a data directory. A device that has trust but never
// imported an image has none, and reading it must not create one: that is oci.ErrNotFound.
func openImages(dataDir string) (*oci.Layout, error) {
	if err := existingDataDir(dataDir); err != nil {
		return nil, err
	}
	if ok, err := exists(imageDir(dataDir)); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("%w: no images imported into %s yet", oci.ErrNotFound, dataDir)
		}
		return nil, err
	}
	return oci.Open(imageDir(dataDir))
}

// openTrust opens the trust store of a data directory whose agent created it; nil if it has
// none (no trust received yet).
func openTrust(dataDir string) (*store.Store, error) {
	if err := existingDataDir(dataDir); err != nil {
		return nil, err
	}
	if ok, err := exists(trustDir(dataDir)); err != nil || !ok {
		return nil, err
	}
	return store.Open(trustDir(dataDir), store.Options{})
}

// TrustStatus reads the trust store's state, judging staleness at now.
func TrustStatus(dataDir string, now time.Time) (TrustState, error) {
	snap, err := snapshot(dataDir)
	if err != nil {
		return TrustState{}, err
	}
	st := TrustState{Version: snap.Version(), StateDigest: snap.StateDigest(), Keys: len(snap.Keys()),
		Stale: trust.Expired(snap.Expires(), trust.ClockKnown(now)), Signatures: snap.SignatureCount(),
		Revocations: snap.RevocationCount(), Policy: snap.Policy() != nil}
	if snap.Expires() != 0 {
		t := time.Unix(snap.Expires(), 0).UTC()
		st.Expires = &t
	}
	return st, nil
}

// snapshot checks the trust store against its digest, copies the trust state out and lets go
// of the store at once, so that the agent can keep applying deltas while the caller verifies
// and runs. A store changed behind bpfleet's back is refused, not trusted. A device with no
// store yet has the empty state.
func snapshot(dataDir string) (*store.Snapshot, error) {
	s, err := openTrust(dataDir)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return store.Empty(), nil
	}
	defer s.Close()
	if err := s.Verify(); err != nil {
		return nil, err
	}
	return s.Snapshot()
}

// ImportImage imports an OCI image layout directory or tar into the device's image store.
func ImportImage(dataDir, src string) ([]oci.Descriptor, error) {
	// A source that is not there creates nothing; what is wrong inside one is found once the
	// layout is open (an empty images/ may then stay: it lists as no images).
	if _, err := os.Stat(src); err != nil {
		return nil, fmt.Errorf("import %s: %w", src, err)
	}
	l, err := oci.Open(imageDir(dataDir)) // creates the data directory on a fresh device
	if err != nil {
		return nil, err
	}
	return l.Import(src)
}

// Images lists the device's images.
func Images(dataDir string) ([]oci.Image, error) {
	l, err := openImages(dataDir)
	if errors.Is(err, oci.ErrNotFound) {
		return []oci.Image{}, nil // nothing imported yet
	}
	if err != nil {
		return nil, err
	}
	return l.List()
}

// ApproveRun verifies ref for running it. When a break-glass override is what lets it through,
// the use is written to the audit log first: no audit record, no run.
func ApproveRun(dataDir, ref string) (*verify.Approved, error) {
	g, err := Verify(dataDir, ref, nil)
	if err != nil {
		return nil, err
	}
	d := g.Decision()
	if d.Override == nil {
		return g, nil
	}
	s, err := openTrust(dataDir)
	if err == nil && s == nil {
		err = fmt.Errorf("trust store %s is gone", trustDir(dataDir))
	}
	if err != nil {
		return nil, fmt.Errorf("record break-glass use: %w", err)
	}
	defer s.Close()
	err = s.Audit(store.AuditEntry{Time: time.Now().UTC(), Event: "override-used", Digest: d.Digest, Ref: ref, Detail: d.Override.Reason})
	if err != nil {
		return nil, fmt.Errorf("record break-glass use: %w", err)
	}
	return g, nil
}

// AuditLog returns the device's audit log (break-glass overrides received and used).
func AuditLog(dataDir string) ([]store.AuditEntry, error) {
	s, err := openTrust(dataDir)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return []store.AuditEntry{}, nil // no trust store, so nothing received or used yet
	}
	defer s.Close()
	return s.AuditLog()
}

// Verify verifies the gadget ref offline: against the trust store, or, when keyFiles are
// given, against exactly those public keys (ad-hoc mode, like `cosign verify --key`).
func Verify(dataDir, ref string, keyFiles []string) (*verify.Approved, error) {
	images, err := openImages(dataDir)
	if err != nil {
		return nil, err
	}
	if len(keyFiles) > 0 {
		var keys []trust.Key
		for _, path := range keyFiles {
			der, err := cosign.LoadPublicKeyDER(path)
			if err != nil {
				return nil, err
			}
			keys = append(keys, trust.Key{DER: der})
		}
		// The keys given replace the fleet's keys, not what the fleet denied or revoked.
		snap, err := snapshot(dataDir)
		if err != nil {
			return nil, fmt.Errorf("read the device's deny-list and revocations, which apply with --key too: %w", err)
		}
		return verify.Gadget(verify.KeysUnder(keys, snap), images, ref)
	}
	snap, err := snapshot(dataDir)
	if err != nil {
		return nil, err
	}
	g, err := verify.Gadget(snap, images, ref, verify.WithKeyless(sigstore.Keyless))
	if snap.Version() == 0 && errors.Is(err, verify.ErrNoTrustedKeys) {
		// Say why there are none: on a new device that is the normal state, not a fault.
		return nil, fmt.Errorf("%w (no trust received yet: the agent has applied no delta to %s)", err, dataDir)
	}
	return g, err
}

// RemoveImage untags ref (a tag, short name, pinned reference or digest, resolved as every
// command resolves it) in the device's image store and deletes what nothing else uses. It
// returns the tags removed and how many blobs were deleted.
func RemoveImage(dataDir, ref string) ([]string, int, error) {
	l, err := openImages(dataDir)
	if err != nil {
		return nil, 0, err
	}
	return l.Remove(ref)
}

// TagImage gives the image src also the name dst, which oci.CheckImageTag must accept. It
// returns the digest dst now names and the one it named before ("" if it is new), so that the
// caller can say when a tag moved.
func TagImage(dataDir, src, dst string) (digest, prev string, err error) {
	if err := oci.CheckImageTag(dst); err != nil {
		return "", "", err
	}
	l, err := openImages(dataDir)
	if err != nil {
		return "", "", err
	}
	d, err := l.Resolve(src)
	if err != nil {
		return "", "", err
	}
	switch old, err := l.Lookup(dst); {
	case err == nil:
		prev = old.Digest
	case !errors.Is(err, oci.ErrNotFound):
		return "", "", err
	}
	// Compare-and-swap, so that the digest reported as replaced is the one that was.
	if err := l.TagIfUnchanged(dst, prev, d); err != nil {
		return "", "", err
	}
	return d.Digest, prev, nil
}

// ExportImages writes refs, with their signatures, as an OCI layout directory or (dst ending
// in .tar) its tar.
func ExportImages(dataDir, dst string, refs ...string) error {
	l, err := openImages(dataDir)
	if err != nil {
		return err
	}
	return l.Export(dst, refs...)
}

// ImageInfo describes an image for `bpfleet image inspect`.
type ImageInfo struct {
	Ref         string            `json:"ref"`
	Digest      string            `json:"digest"`
	MediaType   string            `json:"media_type"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platforms   []PlatformInfo    `json:"platforms"`
	// Signatures found in the image store (not the trust store), by format.
	LegacySignatures int `json:"legacy_signatures"`
	Referrers        int `json:"referrers"`
}

// PlatformInfo is one architecture's manifest of an image.
type PlatformInfo struct {
	Platform string      `json:"platform"`
	Manifest string      `json:"manifest"`
	Layers   []LayerInfo `json:"layers"`
}

// LayerInfo is one layer of a manifest. It is not an oci.Descriptor because this is bpfleet's
// own output, snake_case like the rest, while OCI's JSON is camelCase.
type LayerInfo struct {
	MediaType   string            `json:"media_type"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// InspectImage reads an image's structure; it verifies nothing (use Verify for that), but every
// blob it reads is digest-checked.
func InspectImage(dataDir, ref string) (ImageInfo, error) {
	l, err := openImages(dataDir)
	if err != nil {
		return ImageInfo{}, err
	}
	d, err := l.Resolve(ref)
	if err != nil {
		return ImageInfo{}, err
	}
	info := ImageInfo{Ref: ref, Digest: d.Digest, MediaType: d.MediaType, Platforms: []PlatformInfo{}}
	manifests := []oci.Descriptor{d}
	if oci.IsIndex(d.MediaType) {
		idx, err := l.ReadIndex(d)
		if err != nil {
			return info, err
		}
		info.Annotations, manifests = idx.Annotations, idx.Manifests
	}
	for _, m := range manifests {
		manifest, err := l.ReadManifest(m)
		if err != nil {
			return info, err
		}
		p := "unknown"
		if m.Platform != nil {
			p = m.Platform.OS + "/" + m.Platform.Architecture
		}
		layers := make([]LayerInfo, len(manifest.Layers))
		for i, l := range manifest.Layers {
			layers[i] = LayerInfo{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size, Annotations: l.Annotations}
		}
		info.Platforms = append(info.Platforms, PlatformInfo{Platform: p, Manifest: m.Digest, Layers: layers})
	}
	sigs, err := cosign.ReadSignatures(l, d.Digest)
	if err != nil {
		return info, err
	}
	refs, err := cosign.ReadReferrers(l, d.Digest)
	if err != nil {
		return info, err
	}
	info.LegacySignatures, info.Referrers = len(sigs), len(refs)
	return info, nil
}
