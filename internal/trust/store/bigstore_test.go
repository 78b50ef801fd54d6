package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/bpfleet/bpfleet/internal/trust"
)

// envInt reads a positive integer knob, def when unset.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// bigValue is the value of key i at generation gen: its length varies from a few bytes to past
// the value-log threshold (1 KiB), so both values kept in the LSM tree and values kept in the
// value log are covered.
func bigValue(i int, gen uint8) []byte {
	seed := sha256.Sum256(binary.BigEndian.AppendUint64([]byte{gen}, uint64(i)))
	n := 8 + int(seed[0])%120
	if i%97 == 0 {
		n = 1500 + int(seed[1])*8
	}
	v := make([]byte, 0, n)
	for len(v) < n {
		v = append(v, seed[:]...)
	}
	return v[:n]
}

func bigKey(i int) []byte { return fmt.Appendf(nil, "x/%08d", i) }

// TestBigStoreRoundTrip writes many records (BPFLEET_STORE_KEYS, default 100,000) through the
// store's own Badger options, then reopens the store several times (BPFLEET_STORE_RESTARTS,
// default 3), overwriting a quarter of the records each time, and reads every record back after
// every reopen. A trust change applied alongside must keep verifying against its digest.
// Badger v4.9.6 with ristretto v2.2.0 lost or garbled records here on 32-bit platforms;
// scripts/store32.sh runs this test as a 386 (and, under qemu-arm, armv7) binary.
func TestBigStoreRoundTrip(t *testing.T) {
	n := envInt(t, "BPFLEET_STORE_KEYS", 100_000)
	restarts := envInt(t, "BPFLEET_STORE_RESTARTS", 3)
	const chunk = 4000 // about 0.5 MB per transaction, well under Badger's limit for us
	dir := t.TempDir()
	gen := make([]uint8, n)
	start := time.Now()

	write := func(s *Store, from, to int, g uint8) {
		t.Helper()
		for lo := from; lo < to; lo += chunk {
			hi := min(lo+chunk, to)
			err := s.db.Update(func(txn *badger.Txn) error {
				for i := lo; i < hi; i++ {
					if err := txn.Set(bigKey(i), bigValue(i, g)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("write records %d-%d: %v", lo, hi, err)
			}
			for i := lo; i < hi; i++ {
				gen[i] = g
			}
		}
	}
	check := func(s *Store, round int) {
		t.Helper()
		seen, bad := 0, 0
		var first string
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("x/"), PrefetchValues: false})
			defer it.Close()
			var buf []byte
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()
				i, err := strconv.Atoi(string(k[2:]))
				v, verr := item.ValueCopy(buf[:0])
				buf = v
				switch {
				case err != nil || i < 0 || i >= n || i != seen:
					bad++
					if first == "" {
						first = fmt.Sprintf("unexpected key %q at position %d", k, seen)
					}
				case verr != nil || !bytes.Equal(v, bigValue(i, gen[i])):
					bad++
					if first == "" {
						first = fmt.Sprintf("key %q: wrong value (%d bytes, err %v)", k, len(v), verr)
					}
				}
				seen++
			}
			// Point reads too: they take a different path (table index, bloom filters) than
			// the iterator.
			for i := 0; i < n; i += 101 {
				item, err := txn.Get(bigKey(i))
				if err != nil {
					return fmt.Errorf("get %q: %w", bigKey(i), err)
				}
				v, err := item.ValueCopy(nil)
				if err != nil || !bytes.Equal(v, bigValue(i, gen[i])) {
					return fmt.Errorf("get %q: wrong value (%d bytes, err %v)", bigKey(i), len(v), err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if seen != n || bad != 0 {
			t.Fatalf("round %d: read %d of %d records back, %d wrong; first: %s", round, seen, n, bad, first)
		}
		if err := s.Verify(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}

	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	revs := make([]trust.Revocation, 500)
	for i := range revs {
		revs[i] = trust.Revocation{Kind: trust.RevokeKey, Value: fmt.Sprintf("%064x", i)}
	}
	if _, err := s.Apply(Change{Version: 1, Base: emptyDigest(t, s), Revocations: revs}); err != nil {
		t.Fatal(err)
	}
	write(s, 0, n, 0)
	check(s, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for r := 1; r <= restarts; r++ {
		if s, err = Open(dir, Options{}); err != nil {
			t.Fatalf("reopen %d: %v", r, err)
		}
		check(s, r)
		// Overwrite a different quarter each time, so compactions rewrite old tables.
		q := n / 4
		lo := (r - 1) % 4 * q
		write(s, lo, lo+q, uint8(r))
		check(s, r)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s, restarts+1)
	t.Logf("%d records, %d restarts, round trip intact in %s", n, restarts, time.Since(start).Round(time.Millisecond))
}
