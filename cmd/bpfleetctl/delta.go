package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/sync"
)

func loadSigners(paths []string) ([]crypto.Signer, error) {
	var out []crypto.Signer
	for _, p := range paths {
		k, err := cosign.LoadPrivateKeyFile(p, cosign.PasswordFromEnv)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no --sign key given")
	}
	return out, nil
}

func loadPublicKeys(paths []string) ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for _, p := range paths {
		k, err := cosign.LoadPublicKeyFile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// issued writes a sealed message to a file and/or publishes it, as the flags ask.
func issued(raw []byte, out string, publish *brokerFlags, fleet string) error {
	if out != "" {
		if err := os.WriteFile(out, raw, 0o644); err != nil {
			return err
		}
	}
	if publish.url == "" {
		return nil
	}
	b, err := publish.broker()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sync.Publish(ctx, b, clientID(), sync.UpdatesTopic(fleet), false, raw); err != nil {
		return err
	}
	fmt.Printf("published to %s on %s\n", sync.UpdatesTopic(fleet), b.URL)
	return nil
}

// issuer opens the fleet history in stateDir for issuing.
func issuer(stateDir string) (*sync.Issuer, error) {
	h, err := sync.OpenHistory(stateDir)
	if err != nil {
		return nil, err
	}
	return h.Issue()
}

// fleetHistory opens the fleet history in stateDir and its current root, which must exist.
func fleetHistory(stateDir string) (*sync.History, *sync.TrustedRoot, error) {
	h, err := sync.OpenHistory(stateDir)
	if err != nil {
		return nil, nil, err
	}
	root, err := h.CurrentRoot()
	if err != nil {
		return nil, nil, err
	}
	if root == nil {
		return nil, nil, fmt.Errorf("no fleet history in %s: issue a root first (bpfleetctl root)", stateDir)
	}
	return h, root, nil
}

func clientID() string { return fmt.Sprintf("bpfleetctl-%d", os.Getpid()) }

func rootCmd() *cobra.Command {
	var stateDir, fleet, out string
	var broker *brokerFlags
	var rootKeys, deltaKeys, sign []string
	var rootThreshold, deltaThreshold uint64
	var expires time.Duration
	c := &cobra.Command{
		Use:   "root",
		Short: "Issue the fleet's first root, or the next one (a rotation)",
		Long: "Issue a root: the keys allowed to sign roots and deltas, each with a threshold.\n" +
			"The first root (with --fleet) starts a history in --state-dir and is the file devices are\n" +
			"provisioned with (also written to STATE_DIR/root.cbor). A rotation must be signed (--sign) by a\n" +
			"threshold of the current root keys and of the new ones.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			keys, err := loadSigners(sign)
			if err != nil {
				return err
			}
			spec := sync.RootSpec{Fleet: fleet, RootThreshold: rootThreshold, DeltaThreshold: deltaThreshold, Expires: expires}
			if spec.RootKeys, err = loadPublicKeys(rootKeys); err != nil {
				return err
			}
			if spec.DeltaKeys, err = loadPublicKeys(deltaKeys); err != nil {
				return err
			}
			is, err := issuer(stateDir)
			if err != nil {
				return err
			}
			defer is.Close()
			raw, err := is.IssueRoot(spec, keys...)
			if err != nil {
				return err
			}
			u, _ := sync.Inspect(raw)
			if err := os.WriteFile(filepath.Join(stateDir, "root.cbor"), raw, 0o644); err != nil {
				return err
			}
			fmt.Printf("root %d for fleet %s: %d root key(s) (threshold %d), %d delta key(s) (threshold %d), expires %s\n",
				u.Root.Version, u.Root.Fleet, len(spec.RootKeys), rootThreshold, len(spec.DeltaKeys), deltaThreshold,
				time.Unix(u.Root.Expires, 0).UTC().Format(time.RFC3339))
			return issued(raw, out, broker, u.Root.Fleet)
		},
	}
	f := c.Flags()
	f.StringVar(&stateDir, "state-dir", "", "the fleet's history (created by the first root)")
	f.StringVar(&fleet, "fleet", "", "fleet name (first root only)")
	f.StringArrayVar(&rootKeys, "root-key", nil, "public key of the root role (repeatable)")
	f.Uint64Var(&rootThreshold, "root-threshold", 1, "signatures needed on a root")
	f.StringArrayVar(&deltaKeys, "delta-key", nil, "public key of the delta role (repeatable)")
	f.Uint64Var(&deltaThreshold, "delta-threshold", 1, "signatures needed on a delta")
	f.StringArrayVar(&sign, "sign", nil, "private key to sign with (repeatable)")
	f.DurationVar(&expires, "expires", 365*24*time.Hour, "how long the root is valid")
	f.StringVarP(&out, "output", "o", "", "also write the sealed root to this file")
	broker = addBrokerFlags(f, "publish", "", "publish it to this MQTT broker URL")
	c.MarkFlagRequired("state-dir")
	return c
}

func deltaCmd() *cobra.Command {
	var stateDir, out, policyFile, trustedRoot string
	var broker *brokerFlags
	var sign, trustKeys, layouts, revokeKeys, revokeIdentities, revokeDigests []string
	var expires time.Duration
	c := &cobra.Command{
		Use:   "delta",
		Short: "Issue the next trust delta: gadget keys and signatures, on top of the fleet's state",
		Long: "Issue the next delta of the fleet's hash chain, signed (--sign) by delta-role keys.\n" +
			"--trust-key adds a public key devices will trust for gadget signatures;\n" +
			"--signatures-from adds the cosign signatures (legacy .sig and OCI 1.1 referrers) found in an\n" +
			"OCI layout for its tagged images and for the images of a `cosign save` layout (Sigstore bundles\n" +
			"stay with the image: devices verify them from its referrers);\n" +
			"--revoke-key/--revoke-identity/--revoke-digest withdraw trust, offline, for every verification\n" +
			"once the device applies the delta (a gadget already running is not stopped);\n" +
			"--policy replaces the verification policy (JSON, see docs/verification.md);\n" +
			"--trusted-root replaces the Sigstore trusted_root.json for keyless signatures.\n" +
			"A delta with none of these only refreshes the fleet's expiry.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			keys, err := loadSigners(sign)
			if err != nil {
				return err
			}
			spec := sync.DeltaSpec{Expires: expires}
			for _, path := range trustKeys {
				der, err := cosign.LoadPublicKeyDER(path)
				if err != nil {
					return err
				}
				spec.Keys = append(spec.Keys, trust.Key{DER: der})
			}
			for _, dir := range layouts {
				sigs, err := layoutSignatures(dir)
				if err != nil {
					return err
				}
				spec.Signatures = append(spec.Signatures, sigs...)
			}
			for _, k := range revokeKeys {
				id, err := keyID(k)
				if err != nil {
					return err
				}
				spec.Revocations = append(spec.Revocations, trust.Revocation{Kind: trust.RevokeKey, Value: id})
			}
			for _, v := range revokeIdentities {
				spec.Revocations = append(spec.Revocations, trust.Revocation{Kind: trust.RevokeIdentity, Value: v})
			}
			for _, v := range revokeDigests {
				spec.Revocations = append(spec.Revocations, trust.Revocation{Kind: trust.RevokeDigest, Value: v})
			}
			if policyFile != "" {
				b, err := os.ReadFile(policyFile)
				if err != nil {
					return err
				}
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.DisallowUnknownFields()
				spec.Policy = &trust.Policy{}
				if err := dec.Decode(spec.Policy); err != nil {
					return fmt.Errorf("policy %s: %w", policyFile, err)
				}
				if err := spec.Policy.Validate(); err != nil {
					return fmt.Errorf("policy %s: %w", policyFile, err)
				}
			}
			if trustedRoot != "" {
				if spec.TrustedRoot, err = os.ReadFile(trustedRoot); err != nil {
					return err
				}
			}
			is, err := issuer(stateDir)
			if err != nil {
				return err
			}
			defer is.Close()
			raw, d, err := is.IssueDelta(spec, keys...)
			if err != nil {
				return err
			}
			fmt.Printf("delta %d for fleet %s: %d key(s), %d signature(s), %d revocation(s), policy %t, trusted root %t, %d bytes, state %s\n",
				d.Version, d.Fleet, len(d.Keys), len(d.Signatures), len(d.Revocations), d.Policy != nil, d.TrustedRoot != nil, len(raw), d.State)
			return issued(raw, out, broker, d.Fleet)
		},
	}
	f := c.Flags()
	f.StringVar(&stateDir, "state-dir", "", "the fleet's history")
	f.StringArrayVar(&sign, "sign", nil, "delta-role private key to sign with (repeatable)")
	f.StringArrayVar(&trustKeys, "trust-key", nil, "public key to trust for gadget signatures (repeatable)")
	f.StringArrayVar(&layouts, "signatures-from", nil, "OCI layout whose images' signatures to include (repeatable)")
	f.StringArrayVar(&revokeKeys, "revoke-key", nil, "public key file or hex key id to revoke (repeatable)")
	f.StringArrayVar(&revokeIdentities, "revoke-identity", nil, "keyless signer identity (certificate SAN) to revoke (repeatable)")
	f.StringArrayVar(&revokeDigests, "revoke-digest", nil, "image index digest to revoke, sha256:<hex> (repeatable)")
	f.StringVar(&policyFile, "policy", "", "verification policy JSON to deliver")
	f.StringVar(&trustedRoot, "trusted-root", "", "Sigstore trusted_root.json to deliver")
	f.DurationVar(&expires, "expires", 30*24*time.Hour, "how long devices may consider this state fresh")
	f.StringVarP(&out, "output", "o", "", "also write the sealed delta to this file")
	broker = addBrokerFlags(f, "publish", "", "publish it to this MQTT broker URL")
	c.MarkFlagRequired("state-dir")
	return c
}

// keyID accepts a public key file or a hex key id.
func keyID(s string) (string, error) {
	if _, err := os.Stat(s); err == nil {
		der, err := cosign.LoadPublicKeyDER(s)
		if err != nil {
			return "", err
		}
		return trust.KeyID(der), nil
	}
	if r := (trust.Revocation{Kind: trust.RevokeKey, Value: s}); r.Validate() != nil {
		return "", fmt.Errorf("--revoke-key %q: neither a key file nor a 64-hex-digit key id", s)
	}
	return s, nil
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
	// `cosign save` tags nothing: its images are found by their "kind" annotation.
	saved, err := cosign.SavedImages(l)
	if err != nil {
		return nil, err
	}
	for _, d := range saved {
		images = append(images, oci.Image{Ref: d, Digest: d})
	}
	var out []trust.Signature
	seen := map[string]bool{}
	for _, img := range images {
		if seen[img.Digest] {
			continue
		}
		seen[img.Digest] = true
		sigs, err := cosign.ReadSignatures(l, img.Digest)
		if err != nil {
			return nil, fmt.Errorf("signatures of %s: %w", img.Ref, err)
		}
		// OCI 1.1 referrer signatures are the same simple-signing payload and signature
		// as legacy ones, attached differently: a delta carries them alike. A Sigstore
		// bundle has no such form; the device verifies it from the image's own referrers.
		refs, err := cosign.ReadReferrers(l, img.Digest)
		if err != nil {
			return nil, fmt.Errorf("referrers of %s: %w", img.Ref, err)
		}
		bundles := 0
		for _, r := range refs {
			sigs = append(sigs, r.Signatures...)
			bundles += len(r.Bundles)
		}
		if bundles > 0 {
			fmt.Fprintf(os.Stderr, "note: %s has %d Sigstore bundle signature(s), which a delta cannot carry: "+
				"devices verify them from the image's referrers, so ship the image with them (bpfleet image export keeps them)\n", img.Ref, bundles)
		}
		for _, s := range sigs {
			ts := trust.Signature{Digest: img.Digest, Payload: s.Payload, Signature: s.Signature}
			if !slices.ContainsFunc(out, func(o trust.Signature) bool {
				return o.Digest == ts.Digest && bytes.Equal(o.Payload, ts.Payload) && bytes.Equal(o.Signature, ts.Signature)
			}) {
				out = append(out, ts)
			}
		}
	}
	return out, nil
}

func overrideCmd() *cobra.Command {
	var stateDir, device, digest, reason, out string
	var broker *brokerFlags
	var sign []string
	var validFor time.Duration
	c := &cobra.Command{
		Use:   "override",
		Short: "Break glass: let one device run one image digest unverified, for a limited time",
		Long: "Issue a break-glass override, signed by root-role keys (--sign, a threshold of them): the\n" +
			"device may run the image with this index digest even though it does not verify, until the\n" +
			"override expires (at most 7 days). Every use is recorded in the device's audit log and the\n" +
			"device reports its active overrides in its status.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			keys, err := loadSigners(sign)
			if err != nil {
				return err
			}
			_, root, err := fleetHistory(stateDir)
			if err != nil {
				return err
			}
			o := &sync.Override{Fleet: root.Fleet, Device: device, Digest: digest, Reason: reason,
				Expires: time.Now().Add(validFor).Unix()}
			if err := o.Check(device, time.Now()); err != nil {
				return err
			}
			raw, err := sync.SealOverride(o, keys...)
			if err != nil {
				return err
			}
			if _, err := root.Open(raw); err != nil {
				return fmt.Errorf("devices would reject this override: %w", err)
			}
			fmt.Printf("override for %s on %s until %s\n", digest, device, time.Unix(o.Expires, 0).UTC().Format(time.RFC3339))
			return issued(raw, out, broker, root.Fleet)
		},
	}
	f := c.Flags()
	f.StringVar(&stateDir, "state-dir", "", "the fleet's history")
	f.StringVar(&device, "device", "", "the one device the override is for")
	f.StringVar(&digest, "digest", "", "image index digest allowed to run, sha256:<hex>")
	f.StringVar(&reason, "reason", "", "why (recorded in the device's audit log)")
	f.DurationVar(&validFor, "for", 4*time.Hour, "how long the override lasts (at most 168h)")
	f.StringArrayVar(&sign, "sign", nil, "root-role private key to sign with (repeatable)")
	f.StringVarP(&out, "output", "o", "", "also write the sealed override to this file")
	broker = addBrokerFlags(f, "publish", "", "publish it to this MQTT broker URL")
	for _, name := range []string{"state-dir", "device", "digest", "reason"} {
		c.MarkFlagRequired(name)
	}
	return c
}

func publishCmd() *cobra.Command {
	var fleet, device string
	var broker *brokerFlags
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "publish FILE...",
		Short: "Publish sealed roots and deltas to the fleet with QoS 1, optionally waiting for a device to apply them",
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
				u, err := sync.Inspect(msg)
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				var msgFleet string
				switch {
				case u.Root != nil:
					msgFleet = u.Root.Fleet
				case u.Delta != nil:
					msgFleet, last = u.Delta.Fleet, max(last, u.Delta.Version)
				case u.Override != nil:
					msgFleet = u.Override.Fleet
				}
				if msgFleet != fleet {
					return fmt.Errorf("%s: message is for fleet %q, not %q", path, msgFleet, fleet)
				}
				msgs = append(msgs, msg)
			}
			b, err := broker.broker()
			if err != nil {
				return err
			}
			// The device's retained status before publishing, to tell a new rejection from
			// an old one.
			var before sync.Status
			if device != "" {
				peek, cancel := context.WithTimeout(ctx, time.Second)
				before, _ = sync.WaitStatus(peek, b, clientID()+"-peek", fleet, device, func(sync.Status) bool { return true })
				cancel()
			}
			if err := sync.Publish(ctx, b, clientID(), sync.UpdatesTopic(fleet), false, msgs...); err != nil {
				return err
			}
			fmt.Printf("published %d message(s) to %s on %s\n", len(msgs), sync.UpdatesTopic(fleet), b.URL)
			if device == "" {
				return nil
			}
			s, err := sync.WaitStatus(ctx, b, clientID()+"-wait", fleet, device, func(s sync.Status) bool {
				return s.Version >= last || s.LastRejectionAt.After(before.LastRejectionAt)
			})
			if err != nil {
				return fmt.Errorf("waiting for device %s to reach version %d: %w", device, last, err)
			}
			if s.Version < last {
				return fmt.Errorf("device %s rejected an update: %s", device, s.LastRejection)
			}
			fmt.Printf("device %s is at version %d, state %s\n", device, s.Version, s.StateDigest)
			return nil
		},
	}
	f := c.Flags()
	broker = addBrokerFlags(f, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	f.StringVar(&fleet, "fleet", "", "fleet to publish to")
	f.StringVar(&device, "wait-device", "", "wait until this device reports the highest published version")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	c.MarkFlagRequired("fleet")
	return c
}

func serveCmd() *cobra.Command {
	var stateDir, group string
	var broker *brokerFlags
	c := &cobra.Command{
		Use:   "serve",
		Short: "Answer devices' catch-up requests from the fleet's history until interrupted",
		Long: "Answer catch-up requests with the roots and deltas a device lacks. Run several with the\n" +
			"same --group (on one broker or a cluster) to split the load: they share one MQTT shared\n" +
			"subscription, and each needs read access to the history.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			h, err := sync.OpenHistory(stateDir)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			b, err := broker.broker()
			if err != nil {
				return err
			}
			return sync.Serve(ctx, b, clientID(), group, h, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		},
	}
	f := c.Flags()
	f.StringVar(&stateDir, "state-dir", "", "the fleet's history")
	broker = addBrokerFlags(f, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	f.StringVar(&group, "group", "bpfleet-serve", "shared-subscription group of the serving instances")
	c.MarkFlagRequired("state-dir")
	return c
}

func statusCmd() *cobra.Command {
	var stateDir, out string
	var broker *brokerFlags
	var wait time.Duration
	c := &cobra.Command{
		Use:   "status",
		Short: "Show which devices are current, behind, diverged or offline",
		Long: "Read every device's retained status and presence and classify it against the history's newest\n" +
			"root and delta: current, behind (an older root or version), diverged (another digest, or a\n" +
			"root or version the history lacks), offline (with what it last applied), or invalid (its\n" +
			"topic holds a payload it cannot have published, e.g. naming another device). Status is\n" +
			"unsigned and advisory: restrict who writes it with a broker ACL (docs/protocol.md).",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			h, root, err := fleetHistory(stateDir)
			if err != nil {
				return err
			}
			version, digest, err := h.Latest()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait+10*time.Second)
			defer cancel()
			b, err := broker.broker()
			if err != nil {
				return err
			}
			head := sync.FleetHead{Root: root.Version, Version: version, StateDigest: digest}
			reports, err := sync.FleetStatus(ctx, b, clientID(), root.Fleet, head, wait)
			if err != nil {
				return err
			}
			if out == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"fleet": root.Fleet, "root_version": root.Version, "version": version,
					"state_digest": digest, "devices": reports})
			}
			fmt.Printf("fleet %s: root %d, version %d, state %s\n", root.Fleet, root.Version, version, digest)
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DEVICE\tSTATE\tVERSION\tROOT\tLAST SYNC\tLAST REJECTION")
			for _, r := range reports {
				last := "-"
				if !r.LastSync.IsZero() {
					last = r.LastSync.Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", r.Device, r.State, r.Version, r.Root, last, r.LastRejection)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			for _, r := range reports {
				if r.Problem != "" {
					fmt.Fprintf(os.Stderr, "warning: %s: %s\n", r.Device, r.Problem)
				}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&stateDir, "state-dir", "", "the fleet's history")
	broker = addBrokerFlags(f, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL")
	f.DurationVar(&wait, "wait", 2*time.Second, "how long to collect device statuses")
	f.StringVarP(&out, "output", "o", "columns", "output format: columns or json")
	c.MarkFlagRequired("state-dir")
	return c
}
