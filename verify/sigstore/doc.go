// Package sigstore verifies Sigstore bundles (v0.1 to v0.3; message signatures and DSSE
// envelopes around in-toto statements) with sigstore-go, fully offline.
//
// What is trusted is given by the caller as bytes and values, never fetched: public keys
// (trust.Key, for key-signed bundles) and a Sigstore trusted_root.json (Fulcio CAs, Rekor
// logs, CT logs, timestamp authorities) with a certificate identity policy (for keyless
// bundles). The bundle and the artifact are evidence. Nothing here uses sigstore-go's pkg/tuf,
// root.FetchTrustedRoot, root.NewLiveTrustedRoot or any other helper that goes online; a
// device gets its trusted root through bpfleet's own signed trust updates.
//
// Why a package of its own: sigstore-go's verify, bundle and root packages link net/http,
// crypto/tls, gRPC and a TUF client (root imports pkg/tuf; tlog imports Rekor's generated
// HTTP client), although the verification code paths used here do no I/O. Package verify,
// which decides what runs on the device, must not link those (its TestNoNetworkPackages), so
// it checks key-signed bundles itself and this package is used by the command line
// (`bpfleet verify-bundle`, the sigstore-conformance protocol). TestNoNetworkUse here checks
// that verifying never dials, resolves or sends HTTP, and TestNoOnlineHelpers that this
// package's code names none of the online helpers.
//
// Lifecycle: everything is a pure function of its inputs; there is nothing to close. A
// trusted root has no built-in default and no expiry check of its own: whoever delivers it
// decides how stale it may be.
package sigstore
