package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/runner"
)

func keygenCmd() *cobra.Command {
	var prefix string
	c := &cobra.Command{
		Use:   "keygen",
		Short: "Generate an ECDSA P-256 key pair as cosign does (PREFIX.key, PREFIX.pub)",
		Long: "Generate an ECDSA P-256 key pair in cosign's formats. The private key is encrypted with\n" +
			"the password in $COSIGN_PASSWORD, which must be set: COSIGN_PASSWORD= (empty) makes a key\n" +
			"without a password, as with cosign, but only when asked for.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			// cosign prompts when the variable is unset; bpfleetctl never prompts, so an
			// unset variable must not quietly become an empty password.
			if _, ok := os.LookupEnv("COSIGN_PASSWORD"); !ok {
				return errors.New("COSIGN_PASSWORD is not set: set it to the new key's password (COSIGN_PASSWORD= for a key without one)")
			}
			priv, pub, err := cosign.GenerateKeyPair(cosign.PasswordFromEnv)
			if err != nil {
				return err
			}
			if err := writeNew(prefix+".key", priv, 0o600); err != nil {
				return err
			}
			if err := writeNew(prefix+".pub", pub, 0o644); err != nil {
				return err
			}
			fmt.Printf("wrote %s.key and %s.pub\n", prefix, prefix)
			return nil
		},
	}
	c.Flags().StringVar(&prefix, "output-key-prefix", "cosign", "path prefix of the key files")
	return c
}

// writeNew refuses to overwrite: losing a signing key is not something to do by accident.
func writeNew(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func packageCmd() *cobra.Command {
	var layout, ref, elfPath, metadata, arch, created, btfgen string
	c := &cobra.Command{
		Use:   "package",
		Short: "Package an eBPF object as an Inspektor Gadget OCI image in a layout",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			prog, err := os.ReadFile(elfPath)
			if err != nil {
				return err
			}
			var meta []byte
			if metadata != "" {
				if meta, err = os.ReadFile(metadata); err != nil {
					return err
				}
			}
			// Refused here, not on every device: a program the runner cannot run, or metadata
			// written for another program.
			if err := runner.CheckGadget(prog, meta); err != nil {
				if metadata != "" {
					return fmt.Errorf("--elf %s with --metadata %s: %w", elfPath, metadata, err)
				}
				return fmt.Errorf("--elf %s: %w", elfPath, err)
			}
			g := oci.Gadget{Ref: ref, Arch: arch, Program: prog, Metadata: meta}
			if btfgen != "" {
				layer, err := os.ReadFile(btfgen)
				if err != nil {
					return err
				}
				kernels, err := runner.CheckBTFGen(layer)
				if err != nil {
					return fmt.Errorf("--btfgen %s: %w", btfgen, err)
				}
				g.Layers = append(g.Layers, oci.Layer{MediaType: oci.MediaTypeBTFGen, Data: layer})
				fmt.Fprintf(os.Stderr, "btfgen layer: CO-RE types for %d kernel(s)\n", len(kernels))
			}
			if created != "" {
				if g.Created, err = time.Parse(time.RFC3339, created); err != nil {
					return fmt.Errorf("--created: %w", err)
				}
			}
			l, err := oci.Open(layout)
			if err != nil {
				return err
			}
			desc, err := l.PackageGadget(g)
			if err != nil {
				return err
			}
			fmt.Printf("%s %s\n", ref, desc.Digest)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&layout, "layout", "", "OCI image layout directory (created if missing)")
	f.StringVar(&ref, "ref", "", "image reference to tag, e.g. trace_exec:latest")
	f.StringVar(&elfPath, "elf", "", "compiled eBPF object")
	f.StringVar(&metadata, "metadata", "", "gadget metadata YAML (gadget.yaml)")
	f.StringVar(&arch, "arch", runtime.GOARCH, "architecture the object was compiled for")
	f.StringVar(&created, "created", "", "creation time to record (RFC 3339), for reproducible images")
	f.StringVar(&btfgen, "btfgen", "", "btfgen layer to add: a tar(.gz) of <ID>/<VERSION_ID>/<machine>/<release>.btf files (bpftool gen min_core_btf), for kernels without BTF")
	for _, name := range []string{"layout", "ref", "elf"} {
		c.MarkFlagRequired(name)
	}
	return c
}

func signCmd() *cobra.Command {
	var layout, keyPath, identity, format string
	c := &cobra.Command{
		Use:   "sign REF",
		Short: "Sign an image's index digest, offline, in one of cosign's formats, into the layout",
		Long: "Sign an image's index digest with a cosign key, without any registry:\n" +
			"  --format legacy  simple signing under the tag sha256-<hex>.sig (cosign v2's default, what ig verifies first)\n" +
			"  --format oci11   simple signing as an OCI 1.1 referrer (cosign --registry-referrers-mode=oci-1-1)\n" +
			"  --format bundle  a Sigstore bundle v0.3 with an in-toto statement, as an OCI 1.1 referrer (cosign v3's default)",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			key, err := cosign.LoadPrivateKeyFile(keyPath, cosign.PasswordFromEnv)
			if err != nil {
				return err
			}
			l, err := oci.Open(layout)
			if err != nil {
				return err
			}
			desc, err := l.Resolve(args[0])
			if err != nil {
				return err
			}
			if identity == "" {
				identity = oci.Repository(args[0])
			}
			var where string
			switch format {
			case "legacy":
				payload, err := cosign.NewPayload(desc.Digest, identity)
				if err != nil {
					return err
				}
				sig, err := cosign.Sign(key, payload)
				if err != nil {
					return err
				}
				if _, err := cosign.WriteSignature(l, desc.Digest, payload, sig); err != nil {
					return err
				}
				where, _ = cosign.SignatureTag(desc.Digest)
				where = "tag " + where
			case "oci11", "bundle":
				write := cosign.WriteReferrerSignature
				if format == "bundle" {
					write = cosign.WriteBundle
				}
				m, err := write(l, desc, key, identity)
				if err != nil {
					return err
				}
				where = "referrer " + m.Digest
			default:
				return fmt.Errorf("--format %q: want legacy, oci11 or bundle", format)
			}
			fmt.Printf("signed %s %s (%s, %s)\n", args[0], desc.Digest, format, where)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&layout, "layout", "", "OCI image layout directory")
	f.StringVar(&keyPath, "key", "cosign.key", "private key file")
	f.StringVar(&identity, "docker-reference", "", "repository to name in the signature (default: REF without tag)")
	f.StringVar(&format, "format", "legacy", "signature format: legacy, oci11 or bundle")
	c.MarkFlagRequired("layout")
	return c
}
