package oci

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// bpfELF returns a minimal ELF64 relocatable object for the BPF machine followed by body, so
// different bodies give different programs.
func bpfELF(body string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	b.Write(make([]byte, 9))
	hdr := struct {
		Type, Machine                                        uint16
		Version                                              uint32
		Entry, Phoff, Shoff                                  uint64
		Flags                                                uint32
		Ehsize, Phentsize, Phnum, Shentsize, Shnum, Shstrndx uint16
	}{Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_BPF), Version: 1, Ehsize: 64, Shentsize: 64}
	binary.Write(&b, binary.LittleEndian, hdr)
	b.WriteString(body)
	return b.Bytes()
}

var testCreated = time.Date(2025, 10, 20, 12, 0, 0, 0, time.UTC)

// newGadgetLayout packages one gadget per ref into a new layout and returns it.
func newGadgetLayout(t *testing.T, refs ...string) *Layout {
	t.Helper()
	l, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs {
		_, err := l.PackageGadget(Gadget{Ref: ref, Arch: "amd64", Program: bpfELF(ref), Metadata: []byte("name: " + ref + "\n"), Created: testCreated})
		if err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// blobNames lists the files under blobs/sha256.
func blobNames(t *testing.T, l *Layout) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.Dir(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// flipByte changes one byte of a blob file in place.
func flipByte(t *testing.T, l *Layout, digest string, offset int) {
	t.Helper()
	h, err := DigestHex(digest)
	if err != nil {
		t.Fatal(err)
	}
	path := l.blobPath(h)
	data := readFile(t, path)
	data[offset] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// sharedFixture returns the IG signature-store fixture layout, skipping when the shared tree
// is not checked out next to the repository.
func sharedFixture(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "ig-signature-store", "oci-layout")
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		t.Skipf("shared IG fixture not available (want ../shared next to the repository root): %v", err)
	}
	return dir
}
