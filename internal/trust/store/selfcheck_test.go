package store

import (
	"bytes"
	"errors"
	"math/bits"
	"strings"
	"testing"
	"time"
)

func TestSelfCheckPasses(t *testing.T) {
	dir := t.TempDir()
	for range 2 {
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SelfCheck(); err != nil {
			t.Fatal(err)
		}
		d, err := s.Dump()
		if err != nil {
			t.Fatal(err)
		}
		for i := range probeCount {
			if !bytes.Equal(d[string(probeKey(i))], probeRecordValue(i)) {
				t.Fatalf("probe record %d missing or wrong", i)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// setCorrupt makes the self-check read a flipped byte at stage, for the rest of the test.
func setCorrupt(t *testing.T, stage string) {
	corruptProbe = func(s string, v []byte) []byte {
		if s != stage || len(v) == 0 {
			return v
		}
		c := bytes.Clone(v)
		c[len(c)/2] ^= 0x40
		return c
	}
	t.Cleanup(func() { corruptProbe = nil })
}

func wantSelfCheckError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrSelfCheck) || !strings.Contains(err.Error(), "trust store self-check failed on this platform: ") {
		t.Fatalf("got %v, want a self-check failure", err)
	}
}

// A store whose probe records read back damaged is refused at Open, and its lock released.
func TestOpenRefusesStoreFailingSelfCheck(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setCorrupt(t, "record")
	_, err = Open(dir, Options{LockWait: time.Millisecond})
	wantSelfCheckError(t, err)
	// A new store too: the records are checked right after they are first written.
	_, err = Open(t.TempDir(), Options{})
	wantSelfCheckError(t, err)
	corruptProbe = nil
	s, err = Open(dir, Options{LockWait: time.Millisecond})
	if err != nil {
		t.Fatalf("open after a refused open: %v", err)
	}
	s.Close()
}

// The table probe (run once per process by Open, and by every SelfCheck) fails when a table
// reads back wrong.
func TestSelfCheckTableProbeCanFail(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	setCorrupt(t, "table")
	err = s.SelfCheck()
	wantSelfCheckError(t, err)
	if !strings.Contains(err.Error(), "table probe") {
		t.Fatalf("got %v, want the table probe to fail", err)
	}
}

// On a 32-bit platform the table probe catches the real ristretto allocator bug: with the
// options before for32Bit it fails, with the store's options it passes.
func TestTableProbeCatchesAllocatorBug(t *testing.T) {
	if bits.UintSize != 32 {
		t.Skip("the allocator bug is 32-bit only; scripts/store32.sh runs this test as 386 and armv7")
	}
	dir := t.TempDir()
	o := lowMemory(dir)
	start := time.Now()
	if err := probeTables(o); err != nil {
		t.Fatalf("with the store's options: %v", err)
	}
	t.Logf("table probe took %s", time.Since(start))
	o = o.WithBaseTableSize(2 << 20)
	o.TableSizeMultiplier = 2
	if err := probeTables(o); err == nil {
		t.Fatal("table probe passed with the options that corrupt tables on 32-bit")
	} else {
		t.Logf("with the former options: %v", err)
	}
}
