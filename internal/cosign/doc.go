// Package cosign implements the parts of cosign's key-based "simple signing" scheme that
// bpfleet needs on both sides: the operator CLI signs gadget images, the device verifies them.
//
//   - keys.go: ECDSA P-256 key pairs as PEM (PKIX "PUBLIC KEY", as in cosign.pub).
//   - payload.go: the simple-signing JSON that binds an image digest, built for signing and
//     parsed strictly, and only after its signature has been checked over the raw bytes.
//   - sign.go: ECDSA ASN.1 signatures over SHA-256 of the payload, as cosign makes them.
//   - layout.go: cosign's legacy storage of signatures in an OCI layout, the manifest tagged
//     `sha256-<hex>.sig`, which is what `cosign sign`, `ig image export` and IG's verifier use.
//
// Newer cosign formats (sigstore bundle v0.3 and OCI 1.1 referrers) are not handled yet, and
// neither are certificates, Rekor entries or timestamps: trust comes from public keys alone.
package cosign
