package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	gosync "sync"
	"time"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
	"github.com/bpfleet/bpfleet/verify"
	"github.com/bpfleet/bpfleet/verify/sigstore"
)

// The gadgets of the bench device: trace_exec for start-up, trace_open for throughput (open()
// calls come far faster than execs, enough to make a reader the bottleneck).
const (
	gadgetRef     = "trace_exec:latest"
	throughputRef = "trace_open:latest"
)

// device is a device data directory as `bpfleet run` uses it: images/ holds trace_exec and
// trace_open (built by `make gadgets`) packaged for this machine, trust/ the sig fleet's
// signatures plus one delta that signs both index digests.
type device struct {
	dir    string
	images *oci.Layout
	snap   *store.Snapshot
	elf    map[string][]byte // the gadgets' eBPF objects by ref
}

var (
	devOnce gosync.Once
	dev     *device
	devErr  error
)

func (e *env) device() (*device, error) {
	devOnce.Do(func() { dev, devErr = e.newDevice() })
	return dev, devErr
}

func (e *env) newDevice() (*device, error) {
	bf, err := e.sigFleet()
	if err != nil {
		return nil, err
	}
	d := &device{dir: filepath.Join(e.work, "device"), elf: make(map[string][]byte)}
	if d.images, err = oci.Open(filepath.Join(d.dir, "images")); err != nil {
		return nil, err
	}
	var sigs []trust.Signature
	for _, ref := range []string{gadgetRef, throughputRef} {
		name, _, _ := strings.Cut(ref, ":")
		elf, err := os.ReadFile(filepath.Join(e.build, "gadgets", name+".bpf.o"))
		if err != nil {
			return nil, err
		}
		meta, _ := os.ReadFile(filepath.Join(e.repo, "gadgets", name, "gadget.yaml"))
		desc, err := d.images.PackageGadget(oci.Gadget{Ref: ref, Arch: runtime.GOARCH, Program: elf, Metadata: meta,
			Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)})
		if err != nil {
			return nil, err
		}
		d.elf[ref] = elf
		sigs = append(sigs, bf.signer.sign(desc.Digest, name))
	}
	raw, _, err := bf.issue(nil, sigs)
	if err != nil {
		return nil, err
	}
	trustDir := filepath.Join(d.dir, "trust")
	if err := preload(trustDir, bf.root, append(append([][]byte{}, bf.deltas...), raw)); err != nil {
		return nil, err
	}
	s, err := store.Open(trustDir, store.Options{})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := s.SetRoot(bf.root.Version, bf.rootRaw); err != nil {
		return nil, err
	}
	d.snap, err = s.Snapshot()
	return d, err
}

// timeN runs f n times after a warm-up and returns the samples in milliseconds.
func timeN(n, warm int, f func() error) ([]float64, error) {
	for range warm {
		if err := f(); err != nil {
			return nil, err
		}
	}
	out := make([]float64, 0, n)
	for range n {
		t := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		out = append(out, ms(time.Since(t)))
	}
	return out, nil
}

func benchVerify(e *env) {
	n := knobInt("BPFLEET_BENCH_VERIFY_N", 1000)
	row := Row{Group: "verify", Figure: "cached offline verification, key-based (verify.Gadget p50)", Unit: "ms", Goal: "≤ 2 ms p50"}
	d, err := e.device()
	if err != nil {
		row.Result, row.Note = "NOT MEASURED", err.Error()
		e.add(row)
		return
	}
	samples, err := timeN(n, 20, func() error {
		_, err := verify.Gadget(d.snap, d.images, gadgetRef, verify.WithKeyless(sigstore.Keyless))
		return err
	})
	if err != nil {
		row.Result, row.Note = "NOT MEASURED", err.Error()
		e.add(row)
		return
	}
	s := newStats(samples)
	row.Value, row.Detail = f64(s.p(0.5)), s.detail("ms")
	// The ECDSA P-256 verification alone, the floor of any key-based check.
	sig := d.snap.SignaturesFor(mustResolve(d.images))
	pub, _ := d.snap.Keys()[0].PublicKey()
	if len(sig) == 1 {
		ecdsa, _ := timeN(n, 20, func() error { return cosign.VerifySignature(pub, sig[0].Payload, sig[0].Signature) })
		row.Detail["ecdsa_verify_p50"] = fmt.Sprintf("%.3fms", newStats(ecdsa).p(0.5))
	}
	row.Note = fmt.Sprintf("trace_exec signed by a key from the trust store, snapshot of %d signatures in memory; includes reading and hashing index, manifest and program blobs from disk", d.snap.SignatureCount())
	row.check(2, false)
	e.add(row)

	// What a user runs: the CLI opens the Badger store, re-hashes it (Store.Verify) and reads
	// a full snapshot before the same verification.
	cli := Row{Group: "verify", Figure: "`bpfleet verify trace_exec` as a process (p50 of 20)", Unit: "ms", Result: "INFO"}
	bin := filepath.Join(e.build, "bin", "bpfleet")
	cs, err := timeN(20, 2, func() error {
		return exec.Command(bin, "--data-dir", d.dir, "verify", gadgetRef).Run()
	})
	if err != nil {
		cli.Result, cli.Note = "NOT MEASURED", err.Error()
	} else {
		st := newStats(cs)
		cli.Value, cli.Detail = f64(st.p(0.5)), st.detail("ms")
		cli.Note = "process start + store open + Store.Verify (digest over every record) + Snapshot + the verification above"
	}
	e.add(cli)

	benchKeyless(e, n)
}

func mustResolve(l *oci.Layout) string {
	d, _ := l.Resolve(gadgetRef)
	return d.Digest
}

func benchKeyless(e *env, n int) {
	row := Row{Group: "verify", Figure: "offline verification, keyless (sigstore.VerifyBundle p50)", Unit: "ms", Goal: "≤ 10 ms p50"}
	dir := "/work/shared/fixtures/sigstore-conformance"
	if v := os.Getenv("BPFLEET_BENCH_CONFORMANCE"); v != "" {
		dir = v
	}
	bundleJSON, err := os.ReadFile(filepath.Join(dir, "bundle-verify", "happy-path-v0.3", "bundle.sigstore.json"))
	root, rerr := os.ReadFile(filepath.Join(dir, "trusted_root.json"))
	artifact, aerr := os.ReadFile(filepath.Join(dir, "a.txt"))
	if err != nil || rerr != nil || aerr != nil {
		row.Result = "NOT MEASURED"
		row.Note = fmt.Sprintf("sigstore-conformance fixture not available in %s (%v %v %v); no keyless gadget fixture exists", dir, err, rerr, aerr)
		e.add(row)
		return
	}
	sum := sha256.Sum256(artifact)
	art, err := sigstore.ArtifactDigest("sha256:" + hex.EncodeToString(sum[:]))
	if err != nil {
		row.Result, row.Note = "NOT MEASURED", err.Error()
		e.add(row)
		return
	}
	opts := sigstore.BundleOptions{TrustedRootJSON: root, Identities: []sigstore.Identity{{
		SubjectExact: "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
		IssuerExact:  "https://token.actions.githubusercontent.com"}}}
	samples, err := timeN(n, 10, func() error {
		_, err := sigstore.VerifyBundle(bundleJSON, art, opts)
		return err
	})
	if err != nil {
		row.Result, row.Note = "NOT MEASURED", "conformance happy-path-v0.3 does not verify: "+err.Error()
		e.add(row)
		return
	}
	s := newStats(samples)
	row.Value, row.Detail = f64(s.p(0.5)), s.detail("ms")
	row.Detail["trusted_root_bytes"] = len(root)
	row.Note = "sigstore-conformance happy-path-v0.3 (Fulcio chain, SCT, Rekor entry) over a.txt's digest, production trusted_root.json parsed on every call as sigstore.Keyless does; not a gadget image (no keyless-signed gadget fixture)"
	row.check(10, false)
	e.add(row)
}
