package verify

import (
	"errors"

	"github.com/bpfleet/bpfleet/internal/oci"
)

// Reasons for rejection, for errors.Is. Messages carry the details (digests, counts, keys).
var (
	// ErrNotFound: the reference names no image in the layout.
	ErrNotFound = oci.ErrNotFound
	// ErrNoTrustedKeys: there is no usable key to verify with.
	ErrNoTrustedKeys = errors.New("no trusted keys")
	// ErrUnsigned: neither the trust store nor the layout has a signature for the digest.
	ErrUnsigned = errors.New("unsigned")
	// ErrUntrusted: there are signatures, but none verifies with a trusted key.
	ErrUntrusted = errors.New("untrusted")
	// ErrPayload: a signature verifies with a trusted key, but what it signed is not a valid
	// cosign payload for this digest (also matches cosign.ErrPayload or cosign.ErrWrongDigest).
	ErrPayload = errors.New("signed payload rejected")
	// ErrTampered: a blob on the signed digest chain does not match its digest or size; it is
	// oci.ErrBlobMismatch.
	ErrTampered = oci.ErrBlobMismatch
	// ErrNoPlatform: the image index has no manifest for linux/GOARCH.
	ErrNoPlatform = errors.New("no manifest for this platform")
	// ErrNoProgram: the manifest does not have exactly one eBPF program layer.
	ErrNoProgram = errors.New("no single eBPF program layer")
	// ErrDenied: the policy's deny-list names the digest.
	ErrDenied = errors.New("denied by policy")
	// ErrRevoked: the fleet revoked the digest.
	ErrRevoked = errors.New("revoked")
	// ErrStale: the trust state is past its expiry and the scope's level is strict.
	ErrStale = errors.New("trust is stale")
)

// Reason names the kind of a verification error in one stable word, for scripts (`bpfleet
// verify -o json`): "denied", "revoked", "stale", "tampered", "payload", "no_trusted_keys",
// "untrusted", "unsigned", "no_platform", "no_program", "not_found", or "error" for anything
// else (an unreadable store, say). When an error matches several sentinels, the first in that
// order wins: what the fleet refused before what the image lacks. Reason(nil) is "".
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "error"
}

var reasons = []struct {
	err  error
	name string
}{
	{ErrDenied, "denied"},
	{ErrRevoked, "revoked"},
	{ErrStale, "stale"},
	{ErrTampered, "tampered"},
	{ErrPayload, "payload"},
	{ErrNoTrustedKeys, "no_trusted_keys"},
	{ErrUntrusted, "untrusted"},
	{ErrUnsigned, "unsigned"},
	{ErrNoPlatform, "no_platform"},
	{ErrNoProgram, "no_program"},
	{ErrNotFound, "not_found"},
}
