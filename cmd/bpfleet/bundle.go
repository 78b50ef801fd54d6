package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/spf13/cobra"

	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/verify/sigstore"
)

// verifyBundleCmd is `bpfleet verify-bundle`, the bundle-verification half of the
// sigstore-conformance client protocol:
//
//	bpfleet verify-bundle --bundle FILE --certificate-identity ID --certificate-oidc-issuer URL [--trusted-root FILE] FILE_OR_DIGEST
//	bpfleet verify-bundle --bundle FILE --key KEY.pem [--trusted-root FILE] FILE_OR_DIGEST
//
// Exit status 0 means verified; anything else rejected, with the reason on stderr.
func verifyBundleCmd() *cobra.Command {
	var (
		out                     outputFormat
		bundlePath, trustedRoot string
		keys                    []string
		identity, identityRe    string
		issuer, issuerRe        string
	)
	c := &cobra.Command{
		Use:   "verify-bundle --bundle FILE (--certificate-identity ID --certificate-oidc-issuer URL | --key KEY.pem) [--trusted-root FILE] FILE_OR_DIGEST",
		Short: "Verify a Sigstore bundle over a file or a sha256 digest, offline",
		Long: "Verify a Sigstore bundle (v0.1 to v0.3) over FILE_OR_DIGEST (a path, or sha256:<hex>) with no\n" +
			"network access. A key-signed bundle needs --key; a certificate-signed (keyless) bundle needs\n" +
			"--trusted-root (a Sigstore trusted_root.json; none is built in) and the signer's identity.\n" +
			"With --trusted-root, transparency-log entries, timestamps and SCTs are required as it allows.\n" +
			"Identity regular expressions are anchored. Exit status 0 means verified.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			artifact, err := sigstore.ParseArtifact(args[0])
			if err != nil {
				return err
			}
			bundleJSON, err := sigstore.ReadBundleFile(bundlePath)
			if err != nil {
				return err
			}
			var opts sigstore.BundleOptions
			if trustedRoot != "" {
				if opts.TrustedRootJSON, err = os.ReadFile(trustedRoot); err != nil {
					return fmt.Errorf("trusted root: %w", err)
				}
			}
			for _, path := range keys {
				k, err := loadPublicKeyPEM(path)
				if err != nil {
					return err
				}
				opts.Keys = append(opts.Keys, k)
			}
			hasIdentity := identity != "" || identityRe != "" || issuer != "" || issuerRe != ""
			switch {
			case len(keys) == 0 && !hasIdentity:
				return fmt.Errorf("give --key, or --certificate-identity and --certificate-oidc-issuer")
			case hasIdentity && trustedRoot == "":
				return fmt.Errorf("--trusted-root is required with a certificate identity (no trusted root is built in)")
			case hasIdentity:
				opts.Identities = []sigstore.Identity{{SubjectExact: identity, SubjectRegex: identityRe, IssuerExact: issuer, IssuerRegex: issuerRe}}
			}

			res, err := sigstore.VerifyBundle(bundleJSON, artifact, opts)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if out == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			signer := "key " + res.KeyID
			if res.KeyID == "" {
				signer = fmt.Sprintf("%s (issuer %s)", res.Subject, res.Issuer)
			}
			fmt.Fprintf(w, "verified %s\n  bundle:     %s, %s\n  signed by:  %s\n", artifact, res.MediaType, res.Content, signer)
			for _, t := range res.Timestamps {
				fmt.Fprintf(w, "  timestamp:  %s %s %s\n", t.Time.UTC().Format("2006-01-02T15:04:05Z"), t.Kind, t.URI)
			}
			return nil
		},
	}
	addOutputFlag(c, &out)
	f := c.Flags()
	f.StringVar(&bundlePath, "bundle", "", "Sigstore bundle file (JSON)")
	f.StringArrayVar(&keys, "key", nil, "trusted public key, PEM (repeatable; for key-signed bundles)")
	f.StringVar(&identity, "certificate-identity", "", "expected certificate subject alternative name")
	f.StringVar(&identityRe, "certificate-identity-regexp", "", "expected certificate subject alternative name, as an anchored regular expression")
	f.StringVar(&issuer, "certificate-oidc-issuer", "", "expected OIDC issuer of the certificate")
	f.StringVar(&issuerRe, "certificate-oidc-issuer-regexp", "", "expected OIDC issuer, as an anchored regular expression")
	f.StringVar(&trustedRoot, "trusted-root", "", "Sigstore trusted_root.json (required for keyless bundles)")
	_ = c.MarkFlagRequired("bundle")
	c.MarkFlagsMutuallyExclusive("certificate-identity", "certificate-identity-regexp")
	c.MarkFlagsMutuallyExclusive("certificate-oidc-issuer", "certificate-oidc-issuer-regexp")
	return c
}

// loadPublicKeyPEM reads a PEM public key (PKIX, as cosign.pub) of any type sigstore supports.
func loadPublicKeyPEM(path string) (trust.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return trust.Key{}, fmt.Errorf("key: %w", err)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(data)
	if err != nil {
		return trust.Key{}, fmt.Errorf("key %s: %w", path, err)
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return trust.Key{}, fmt.Errorf("key %s: %w", path, err)
	}
	return trust.Key{DER: der}, nil
}
