package verify

import (
	"bytes"
	"crypto/ecdsa"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
)

const testState = "sha256:5747e5747e5747e5747e5747e5747e5747e5747e5747e5747e5747e5747e57"

// memTrust is an in-memory trust.Reader.
type memTrust struct {
	version   uint64
	keys      []trust.Key
	sigs      map[string][]trust.Signature
	revoked   map[trust.Revocation]bool
	policy    *trust.Policy
	overrides map[string]*trust.Override
	expires   int64
	root      []byte
	// revokedKeys are delivered keys the fleet revoked, which a store still holds.
	revokedKeys []trust.Key
}

func (m *memTrust) Version() uint64                               { return m.version }
func (m *memTrust) StateDigest() string                           { return testState }
func (m *memTrust) Keys() []trust.Key                             { return m.keys }
func (m *memTrust) SignaturesFor(digest string) []trust.Signature { return m.sigs[digest] }
func (m *memTrust) Revoked(r trust.Revocation) bool               { return m.revoked[r] }
func (m *memTrust) Policy() *trust.Policy                         { return m.policy }
func (m *memTrust) Override(digest string) *trust.Override        { return m.overrides[digest] }
func (m *memTrust) Expires() int64                                { return m.expires }
func (m *memTrust) TrustedRoot() []byte                           { return m.root }
func (m *memTrust) RevokedKeys() []trust.Key                      { return m.revokedKeys }

// signer is a gadget signing key; key is its public half as the trust store keeps it.
type signer struct {
	priv *ecdsa.PrivateKey
	key  trust.Key
}

func newSigner(t *testing.T) signer {
	k := testkey.New(t)
	return signer{priv: k.Private, key: k.Public}
}

// sign returns a trust-store signature binding digest.
func (s signer) sign(t *testing.T, digest string) trust.Signature {
	t.Helper()
	payload, err := cosign.NewPayload(digest, "example.com/gadget")
	if err != nil {
		t.Fatal(err)
	}
	return s.signPayload(t, digest, payload)
}

func (s signer) signPayload(t *testing.T, digest string, payload []byte) trust.Signature {
	t.Helper()
	sig, err := cosign.Sign(s.priv, payload)
	if err != nil {
		t.Fatal(err)
	}
	return trust.Signature{Digest: digest, Payload: payload, Signature: sig}
}

// toLayout stores a signature in the layout, as `cosign sign` would.
func toLayout(t *testing.T, l *oci.Layout, s trust.Signature) {
	t.Helper()
	if _, err := cosign.WriteSignature(l, s.Digest, s.Payload, s.Signature); err != nil {
		t.Fatal(err)
	}
}

// bpfELF returns a minimal ELF64 object for the BPF machine followed by body.
func bpfELF(body string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	b.Write(make([]byte, 9))
	binary.Write(&b, binary.LittleEndian, struct {
		Type, Machine                                        uint16
		Version                                              uint32
		Entry, Phoff, Shoff                                  uint64
		Flags                                                uint32
		Ehsize, Phentsize, Phnum, Shentsize, Shnum, Shstrndx uint16
	}{Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_BPF), Version: 1, Ehsize: 64, Shentsize: 64})
	b.WriteString(body)
	return b.Bytes()
}

// packageGadget packages a gadget for arch (this machine's when empty) under ref.
func packageGadget(t *testing.T, l *oci.Layout, ref, body, arch string) oci.Descriptor {
	t.Helper()
	if arch == "" {
		arch = runtime.GOARCH
	}
	d, err := l.PackageGadget(oci.Gadget{Ref: ref, Arch: arch, Program: bpfELF(body), Metadata: []byte("name: test\n"),
		Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// flipBlobByte changes one byte of a blob file on disk.
func flipBlobByte(t *testing.T, l *oci.Layout, digest string) {
	t.Helper()
	h, _ := oci.DigestHex(digest)
	path := filepath.Join(l.Dir(), "blobs", "sha256", h)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// gadgetManifest returns the manifest of the gadget ref (packaged by packageGadget: one).
func gadgetManifest(t *testing.T, l *oci.Layout, ref string) oci.Manifest {
	t.Helper()
	d, _ := l.Lookup(ref)
	idx, err := l.ReadIndex(d)
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.ReadManifest(idx.Manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// programLayer returns the eBPF layer of the gadget ref for this machine.
func programLayer(t *testing.T, l *oci.Layout, ref string) oci.Descriptor {
	t.Helper()
	return gadgetManifest(t, l, ref).Layers[0]
}
