// Package oci stores gadget images in an OCI image layout: the on-disk format Inspektor Gadget
// uses for its local store and for `ig image export` (an `oci-layout` marker, `index.json`, and
// content-addressed files under `blobs/sha256/`). Tags are index.json entries carrying the
// annotation org.opencontainers.image.ref.name; cosign keeps legacy signatures in the same
// layout under tags named `sha256-<hex>.sig`.
//
// Integrity, not authenticity: every blob is checked against the sha256 and size of the
// descriptor that names it, when it is imported and again each time ReadBlob reads it, so a
// file changed on disk is reported (ErrBlobMismatch) rather than used. Whether an image may run
// is decided elsewhere (package verify) from signatures over the image digest.
//
// Concurrency and crash safety: blobs are written to a temporary file under `ingest/` and
// renamed into place, so a blob file is either absent or complete. index.json is rewritten
// whole (temp file + rename) while holding an exclusive flock on the layout directory, so
// several processes may import and tag at the same time; readers take no lock and always see
// an old or a new index, never a mix. An import copies and checks every blob before any
// becomes visible and changes index.json last. A crash can leave unreferenced files in
// `ingest/` or `blobs/`; they waste space but are never listed. Nothing is garbage collected.
//
// A Layout holds no open files; it needs no Close.
package oci
