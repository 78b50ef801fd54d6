// Package verify decides, fully offline, whether a gadget image in the local OCI layout may
// run, and hands the runner the eBPF program only as an Approved value, which nothing outside
// this package can make.
//
// What is trusted: only the public keys of the device's trust store (trust.Reader.Keys), or,
// in ad-hoc mode (GadgetWithKeys, `--key FILE`), the keys given. Everything else is evidence
// to check: the layout's files, index.json, tags, and signatures from either the trust store
// (pushed with the trust state) or the layout (cosign's `sha256-<hex>.sig` tag, as
// `ig image export` ships it). A signature is a cosign simple-signing payload with an ECDSA
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
//     index entry), take its single eBPF program layer and read it (hash checked against the
//     manifest). A file changed on disk anywhere on the chain fails with ErrTampered.
//
// A rejected gadget never yields an Approved: every error path returns nil. Errors say why,
// begin with "verify <ref>:", and match the sentinels below with errors.Is. Nothing here
// touches the network; a signature missing locally is a rejection (IG would try a registry).
//
// Not handled yet: sigstore bundle v0.3 and OCI 1.1 referrer signatures (images signed only
// that way are reported as unsigned), certificates and keyless identities, and policies on
// docker-reference. Key revocation is whatever the trust store no longer returns.
package verify
