package verify

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
)

const gadgetRef = "ghcr.io/acme/trace_open:v1"

// otherArch is an architecture that is not this machine's.
func otherArch() string {
	if runtime.GOARCH == "s390x" {
		return "riscv64"
	}
	return "s390x"
}

func TestGadget(t *testing.T) {
	type env struct {
		l       *oci.Layout
		tr      *memTrust
		digest  string // the packaged gadget's index digest
		trusted signer
		other   signer
	}
	tests := []struct {
		name    string
		ref     string             // gadgetRef when empty
		setup   func(e *env) error // returns nil or an error the result must also match
		source  string             // expected Decision.Source when accepted
		program string             // expected program body when accepted ("original" when empty)
		wantErr []error
		wantMsg string // substring of the error, %s is replaced by the current gadget digest
	}{
		{name: "signature in the layout", source: SourceImageLayout, setup: func(e *env) error {
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			return nil
		}},
		{name: "signature in the trust store", source: SourceTrustStore, setup: func(e *env) error {
			e.tr.sigs[e.digest] = []trust.Signature{e.trusted.sign(t, e.digest)}
			return nil
		}},
		{name: "trust store is tried first", source: SourceTrustStore, setup: func(e *env) error {
			e.tr.sigs[e.digest] = []trust.Signature{e.trusted.sign(t, e.digest)}
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			return nil
		}},
		{name: "untrusted store signature, trusted layout signature", source: SourceImageLayout, setup: func(e *env) error {
			e.tr.sigs[e.digest] = []trust.Signature{e.other.sign(t, e.digest)}
			toLayout(t, e.l, e.other.sign(t, e.digest))
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			return nil
		}},
		{name: "short name", ref: "trace_open:v1", source: SourceImageLayout, setup: func(e *env) error {
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			return nil
		}},
		{name: "single manifest", ref: "ghcr.io/acme/single:v1", source: SourceTrustStore, program: "single", setup: func(e *env) error {
			idxDesc := packageGadget(t, e.l, "ghcr.io/acme/single:v1", "single", "")
			idx, _ := e.l.ReadIndex(idxDesc)
			if err := e.l.Tag("ghcr.io/acme/single:v1", idx.Manifests[0]); err != nil {
				return err
			}
			e.tr.sigs[idx.Manifests[0].Digest] = []trust.Signature{e.trusted.sign(t, idx.Manifests[0].Digest)}
			return nil
		}},
		{name: "unsigned", wantErr: []error{ErrUnsigned}, wantMsg: "unsigned: no signature for %s in the trust store or the image", setup: func(e *env) error { return nil }},
		{name: "untrusted key", wantErr: []error{ErrUntrusted},
			wantMsg: "untrusted: 2 signature(s) for %s (1 in the trust store, 1 in the image) but none verifies with the 1 trusted key(s)",
			setup: func(e *env) error {
				e.tr.sigs[e.digest] = []trust.Signature{e.other.sign(t, e.digest)}
				toLayout(t, e.l, e.other.sign(t, e.digest))
				return nil
			}},
		{name: "payload changed after signing", wantErr: []error{ErrUntrusted}, setup: func(e *env) error {
			s := e.trusted.sign(t, e.digest)
			s.Payload = []byte(strings.Replace(string(s.Payload), "example.com", "evil.example", 1))
			e.tr.sigs[e.digest] = []trust.Signature{s}
			return nil
		}},
		{name: "tampered ELF on disk", wantErr: []error{ErrTampered}, wantMsg: "eBPF program layer: blob", setup: func(e *env) error {
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			layer := programLayer(t, e.l, gadgetRef)
			flipBlobByte(t, e.l, layer.Digest)
			return fmt.Errorf("names %s", layer.Digest)
		}},
		{name: "tampered index on disk", wantErr: []error{ErrTampered}, wantMsg: "image index: blob %s", setup: func(e *env) error {
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			flipBlobByte(t, e.l, e.digest)
			return nil
		}},
		{name: "tampered manifest on disk", wantErr: []error{ErrTampered}, wantMsg: "manifest: blob", setup: func(e *env) error {
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			d, _ := e.l.Lookup(gadgetRef)
			idx, _ := e.l.ReadIndex(d)
			flipBlobByte(t, e.l, idx.Manifests[0].Digest)
			return nil
		}},
		{name: "re-packaged modified ELF", wantErr: []error{ErrUnsigned}, wantMsg: "no signature for %s", setup: func(e *env) error {
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			e.tr.sigs[e.digest] = []trust.Signature{e.trusted.sign(t, e.digest)}
			e.digest = packageGadget(t, e.l, gadgetRef, "modified", "").Digest
			return nil
		}},
		{name: "re-packaged, old signature copied to the new digest", wantErr: []error{ErrPayload, cosign.ErrWrongDigest},
			wantMsg: "verifies with key", setup: func(e *env) error {
				old := e.trusted.sign(t, e.digest)
				e.digest = packageGadget(t, e.l, gadgetRef, "modified", "").Digest
				old.Digest = e.digest
				toLayout(t, e.l, old)
				return nil
			}},
		{name: "payload for another digest in the store", wantErr: []error{ErrPayload, cosign.ErrWrongDigest}, setup: func(e *env) error {
			s := e.trusted.sign(t, "sha256:"+strings.Repeat("1", 64))
			e.tr.sigs[e.digest] = []trust.Signature{s}
			return nil
		}},
		{name: "duplicate JSON keys in the signed payload", wantErr: []error{ErrPayload, cosign.ErrPayload}, wantMsg: "duplicate key",
			setup: func(e *env) error {
				payload := `{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"` + e.digest +
					`","docker-manifest-digest":"` + e.digest + `"},"type":"cosign container image signature"},"optional":null}`
				e.tr.sigs[e.digest] = []trust.Signature{e.trusted.signPayload(t, e.digest, []byte(payload))}
				return nil
			}},
		{name: "damaged signature payload in the layout", wantErr: []error{ErrUnsigned, ErrTampered}, setup: func(e *env) error {
			s := e.trusted.sign(t, e.digest)
			toLayout(t, e.l, s)
			flipBlobByte(t, e.l, oci.Digest(s.Payload))
			return nil
		}},
		{name: "no trusted keys", wantErr: []error{ErrNoTrustedKeys}, setup: func(e *env) error {
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			e.tr.keys = nil
			return nil
		}},
		{name: "unusable key", wantErr: []error{ErrNoTrustedKeys}, wantMsg: "none of 1 key(s) is usable", setup: func(e *env) error {
			toLayout(t, e.l, e.trusted.sign(t, e.digest))
			e.tr.keys = []trust.Key{{DER: []byte("not a key")}}
			return nil
		}},
		{name: "no manifest for this architecture", wantErr: []error{ErrNoPlatform}, wantMsg: "want linux/" + runtime.GOARCH + ", image has [linux/" + otherArch() + "]",
			setup: func(e *env) error {
				e.digest = packageGadget(t, e.l, gadgetRef, "original", otherArch()).Digest
				toLayout(t, e.l, e.trusted.sign(t, e.digest))
				return nil
			}},
		{name: "unknown reference", ref: "nothing", wantErr: []error{ErrNotFound}, setup: func(e *env) error { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := oci.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			e := &env{l: l, trusted: newSigner(t), other: newSigner(t)}
			e.tr = &memTrust{version: 7, keys: []trust.Key{e.trusted.key}, sigs: map[string][]trust.Signature{}}
			e.digest = packageGadget(t, l, gadgetRef, "original", "").Digest
			extra := tt.setup(e)
			ref := tt.ref
			if ref == "" {
				ref = gadgetRef
			}

			a, err := Gadget(e.tr, l, ref)
			if tt.wantErr != nil {
				if a != nil {
					t.Errorf("rejected gadget returned an Approved")
				}
				for _, want := range tt.wantErr {
					if !errors.Is(err, want) {
						t.Errorf("error %v is not %v", err, want)
					}
				}
				if err == nil {
					return
				}
				t.Log(err)
				if !strings.HasPrefix(err.Error(), "verify "+ref+": ") {
					t.Errorf("error %q lacks the verify prefix", err)
				}
				if tt.wantMsg != "" && !strings.Contains(err.Error(), strings.ReplaceAll(tt.wantMsg, "%s", e.digest)) {
					t.Errorf("error %q does not contain %q", err, strings.ReplaceAll(tt.wantMsg, "%s", e.digest))
				}
				if extra != nil && !strings.Contains(err.Error(), strings.TrimPrefix(extra.Error(), "names ")) {
					t.Errorf("error %q: want it to %v", err, extra)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tt.program
			if want == "" {
				want = "original"
			}
			signed, _ := l.Resolve(ref)
			if string(a.Program()) != string(bpfELF(want)) || a.Ref() != ref || a.Digest() != signed.Digest {
				t.Errorf("Approved = ref %s digest %s program %q", a.Ref(), a.Digest(), a.Program())
			}
			wantDecision := Decision{Ref: ref, Digest: signed.Digest, KeyID: e.trusted.key.ID(), Source: tt.source, Format: FormatLegacy, TrustVersion: 7, TrustState: testState,
				Level: trust.Strict, Scope: "(default)", Verified: true}
			if !reflect.DeepEqual(a.Decision(), wantDecision) {
				t.Errorf("Decision = %+v\nwant %+v", a.Decision(), wantDecision)
			}
		})
	}
}

func TestGadgetWithKeys(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	digest := packageGadget(t, l, gadgetRef, "original", "").Digest
	trusted, other := newSigner(t), newSigner(t)

	if _, err := GadgetWithKeys([]trust.Key{trusted.key}, l, gadgetRef); !errors.Is(err, ErrUnsigned) {
		t.Errorf("before signing: %v, want ErrUnsigned", err)
	}
	toLayout(t, l, trusted.sign(t, digest))
	a, err := GadgetWithKeys([]trust.Key{other.key, trusted.key}, l, gadgetRef)
	if err != nil {
		t.Fatal(err)
	}
	want := Decision{Ref: gadgetRef, Digest: digest, KeyID: trusted.key.ID(), Source: SourceImageLayout, Format: FormatLegacy,
		Level: trust.Strict, Scope: "(default)", Verified: true}
	if !reflect.DeepEqual(a.Decision(), want) || string(a.Program()) != string(bpfELF("original")) {
		t.Errorf("Decision = %+v, want %+v", a.Decision(), want)
	}
	if _, err := GadgetWithKeys([]trust.Key{other.key}, l, gadgetRef); !errors.Is(err, ErrUntrusted) {
		t.Errorf("other key: %v, want ErrUntrusted", err)
	}
	if _, err := GadgetWithKeys(nil, l, gadgetRef); !errors.Is(err, ErrNoTrustedKeys) {
		t.Errorf("no keys: %v, want ErrNoTrustedKeys", err)
	}
}
