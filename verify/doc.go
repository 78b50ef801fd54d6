// Package verify decides, fully offline, whether a gadget image in the local OCI layout may
// run, and hands the runner the eBPF program only as an Approved value, which nothing outside
// this package can make.
//
// What is trusted: only the public keys of the device's trust store (trust.Reader.Keys), or,
// in ad-hoc mode (GadgetWithKeys, `--key FILE`), the keys given; on a device with a trust
// store, ad-hoc mode (KeysUnder) still refuses what the fleet denied or revoked. Everything
// else is evidence to check: the layout's files, index.json, tags, and signatures from either
// the trust store (pushed with the trust state) or the layout (cosign's `sha256-<hex>.sig`
// tag, as `ig image export` ships it). A signature is a cosign simple-signing payload with an ECDSA
// P-256 / SHA-256 signature; the signed digest is that of the image index, as with IG.
//
// Order of checks, each only after the previous one passed:
//  1. resolve the reference to a descriptor in index.json (names are not trusted: the digest is
//     what gets verified);
//  2. for each candidate signature, trust store first: verify it over the raw payload bytes
//     with each trusted key, and only then parse the payload, strictly, requiring the cosign
//     type and that it binds exactly this digest;
//  3. walk the digest chain down from the signed digest: read the index (its bytes must hash to
//     the signed digest), pick the linux/GOARCH manifest, read it (hash checked against the
//     index entry), read its config blob (the gadget metadata) and its single eBPF program
//     layer (hashes checked against the manifest). A file changed on disk anywhere on the
//     chain fails with ErrTampered naming the blob's digest.
//
// A rejected gadget never yields an Approved: every error path returns nil. Errors say why,
// begin with "verify <ref>:", and match the sentinels below with errors.Is. Nothing here
// touches the network; a signature missing locally is a rejection (IG would try a registry).
//
// Signature formats: trust-store records and the layout's legacy `.sig` tag (cosign simple
// signing), OCI 1.1 referrers (simple signing), and key-signed Sigstore bundle referrers whose
// in-toto predicate is cosign's image signature; notation signatures are recognised and
// refused. Keyless (certificate-signed) bundles are checked, for scopes whose policy names
// identities, by an injected KeylessVerifier (verify/sigstore's, against the fleet's delivered
// trusted root), so that this package itself links nothing that can reach the network.
// Revoked keys are those the trust store no longer returns; a reader that still holds them
// (RevokedKeys) lets a signature made with one be refused as ErrRevoked naming the key, rather
// than as untrusted. Reason gives an error's kind in one stable word, for scripts.
//
// Policy (see docs/verification.md): the deny-list and revoked digests refuse first; a
// signature that does not verify may still be let through by the scope's level (audit, skip),
// the allow-list or a break-glass override, and the Decision then says so (Verified false,
// Warnings); stale trust is refused at level strict; integrity is enforced at every level.
package verify
