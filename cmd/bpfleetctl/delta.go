package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/sync"
)

func deltaCmd() *cobra.Command {
	var fleet, signingKey, out string
	var version uint64
	var trustKeys, layouts []string
	c := &cobra.Command{
		Use:   "delta",
		Short: "Build a trust delta (gadget keys and signatures) signed with the fleet's update key",
		Long: "Build a trust delta and seal it with the fleet's update key (COSE_Sign1, ES256).\n" +
			"--trust-key adds a public key devices will trust for gadget signatures;\n" +
			"--signatures-from adds every cosign signature found in an OCI layout for its tagged images.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			key, err := cosign.LoadPrivateKeyFile(signingKey, cosign.PasswordFromEnv)
			if err != nil {
				return err
			}
			d := &sync.Delta{Fleet: fleet, Version: version}
			for _, path := range trustKeys {
				der, err := cosign.LoadPublicKeyDER(path)
				if err != nil {
					return err
				}
				d.Keys = append(d.Keys, trust.Key{DER: der})
			}
			for _, dir := range layouts {
				sigs, err := layoutSignatures(dir)
				if err != nil {
					return err
				}
				d.Signatures = append(d.Signatures, sigs...)
			}
			msg, err := sync.Seal(d, key)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, msg, 0o644); err != nil {
				return err
			}
			fmt.Printf("delta v%d for fleet %s: %d key(s), %d signature(s), %d bytes -> %s\n",
				version, fleet, len(d.Keys), len(d.Signatures), len(msg), out)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&fleet, "fleet", "", "fleet the delta is for")
	f.Uint64Var(&version, "version", 0, "trust version the delta brings devices to (must exceed theirs)")
	f.StringVar(&signingKey, "signing-key", "", "the fleet's update private key")
	f.StringArrayVar(&trustKeys, "trust-key", nil, "public key to trust for gadget signatures (repeatable)")
	f.StringArrayVar(&layouts, "signatures-from", nil, "OCI layout whose images' signatures to include (repeatable)")
	f.StringVarP(&out, "output", "o", "", "file to write the sealed delta to")
	for _, name := range []string{"fleet", "version", "signing-key", "output"} {
		c.MarkFlagRequired(name)
	}
	return c
}

// layoutSignatures collects the cosign signatures of every image tagged in a layout.
func layoutSignatures(dir string) ([]trust.Signature, error) {
	l, err := oci.Open(dir)
	if err != nil {
		return nil, err
	}
	images, err := l.List()
	if err != nil {
		return nil, err
	}
	var out []trust.Signature
	for _, img := range images {
		sigs, err := cosign.ReadSignatures(l, img.Digest)
		if err != nil {
			return nil, fmt.Errorf("signatures of %s: %w", img.Ref, err)
		}
		for _, s := range sigs {
			out = append(out, trust.Signature{Digest: img.Digest, Payload: s.Payload, Signature: s.Signature})
		}
	}
	return out, nil
}

func publishCmd() *cobra.Command {
	var broker, fleet, device string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "publish FILE...",
		Short: "Publish sealed deltas to the fleet with QoS 1, optionally waiting for a device to apply them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var msgs [][]byte
			var last uint64
			for _, path := range args {
				msg, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				d, err := sync.Inspect(msg)
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				if d.Fleet != fleet {
					return fmt.Errorf("%s: delta is for fleet %q, not %q", path, d.Fleet, fleet)
				}
				last = max(last, d.Version)
				msgs = append(msgs, msg)
			}
			b := sync.Broker{URL: broker}
			clientID := fmt.Sprintf("bpfleetctl-%d", os.Getpid())
			if err := sync.Publish(ctx, b, clientID, sync.DeltaTopic(fleet), false, msgs...); err != nil {
				return err
			}
			fmt.Printf("published %d delta(s) to %s on %s\n", len(msgs), sync.DeltaTopic(fleet), broker)
			if device == "" {
				return nil
			}
			s, err := sync.WaitStatus(ctx, b, clientID+"-wait", fleet, device, func(s sync.Status) bool {
				return s.Version >= last
			})
			if err != nil {
				return err
			}
			fmt.Printf("device %s applied version %d, state %s\n", device, s.Version, s.StateDigest)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	f.StringVar(&fleet, "fleet", "", "fleet to publish to")
	f.StringVar(&device, "wait-device", "", "wait until this device reports the highest published version")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	c.MarkFlagRequired("fleet")
	return c
}
