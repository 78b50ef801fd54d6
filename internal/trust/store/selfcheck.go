package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
)

// ErrSelfCheck marks a store that Open refused because this platform (CPU architecture,
// Badger/ristretto build) does not give back what it was given. Test with errors.Is.
var ErrSelfCheck = errors.New("trust store self-check failed on this platform")

// Records of the self-check, outside the trust state (trustPrefix) and so outside its digest.
const probePrefix = "p/"

// probeCount probe records, the last ones past the value-log threshold so that both places
// Badger keeps values are read.
const probeCount = 16

// corruptProbe, when set by a test, changes what the self-check reads (stage "table" for the
// table-builder probe, "record" for the stored probe records) before it is compared. Nil in
// production: the check compares exactly what Badger returned.
var corruptProbe func(stage string, v []byte) []byte

func probeRead(stage string, v []byte) []byte {
	if corruptProbe != nil {
		return corruptProbe(stage, v)
	}
	return v
}

// probeValue is the deterministic value of probe record or table entry i: the same on every
// device and every run, so two stores with the same trust state dump alike.
func probeValue(stage string, i, n int) []byte { return appendProbeValue(nil, stage, i, n) }

func appendProbeValue(v []byte, stage string, i, n int) []byte {
	seed := sha256.Sum256(binary.BigEndian.AppendUint64([]byte(stage), uint64(i)))
	v = v[:0]
	for len(v) < n {
		v = append(v, seed[:]...)
	}
	return v[:n]
}

var (
	platformOnce sync.Once
	platformErr  error
)

// selfCheck is what Open runs on every store it opens: the table-builder probe (once per
// process) and the stored probe records (written once per store, read back at every open).
func selfCheck(db *badger.DB, o badger.Options) error {
	platformOnce.Do(func() { platformErr = probeTables(o) })
	if platformErr != nil {
		return fmt.Errorf("%w: %w", ErrSelfCheck, platformErr)
	}
	if err := noPanic(func() error { return probeRecords(db) }); err != nil {
		return fmt.Errorf("%w: %w", ErrSelfCheck, err)
	}
	return nil
}

// noPanic runs f, turning a panic into an error: Badger panics, rather than fails, on some
// garbled tables (those a 32-bit build wrote before for32Bit, for one).
func noPanic(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("badger panicked reading the store: %v", r)
		}
	}()
	return f()
}

// SelfCheck runs the checks Open runs (the table probe again, not just once per process) and
// then Verify: the records must hash to the stored state digest. Unlike Verify it reports a
// Badger panic on a garbled store as an error.
func (s *Store) SelfCheck() error {
	if err := probeTables(s.db.Opts()); err != nil {
		return fmt.Errorf("%w: %w", ErrSelfCheck, err)
	}
	if err := noPanic(func() error { return probeRecords(s.db) }); err != nil {
		return fmt.Errorf("%w: %w", ErrSelfCheck, err)
	}
	if err := noPanic(s.Verify); err != nil {
		return fmt.Errorf("%w: %w", ErrSelfCheck, err)
	}
	return nil
}

// probeTables builds a Badger table in memory with the table options Badger derives from o and
// reads every entry back: the code path that ristretto's 32-bit allocator bug corrupts (see
// for32Bit). A store whose tables come back garbled would lose trust records silently.
//
// On 32-bit platforms it builds what a memtable flush of this store builds, a level-0 table
// holding a whole memtable, to prove that it fits the allocator's first buffer (the only one
// a 32-bit build can use); that costs about 35 MB of peak RSS and 40 ms (386) to 200 ms
// (armv7 under QEMU), once per process. Elsewhere the allocator's growth works, and a 256 KiB
// table with a 16 KiB target size exercises that growth (four new buffers) at a fraction of
// the memory. The builder copies what it is given, so one value buffer serves every entry.
func probeTables(o badger.Options) (err error) {
	defer func() {
		// A garbled table makes Badger's readers panic rather than fail.
		if r := recover(); r != nil {
			err = fmt.Errorf("table probe: reading a table back panicked: %v", r)
		}
	}()
	topts := table.Options{
		TableSize:          uint64(o.BaseTableSize),
		BlockSize:          o.BlockSize,
		BloomFalsePositive: o.BloomFalsePositive,
		Compression:        o.Compression,
		ChkMode:            o.ChecksumVerificationMode,
	}
	fill := int(o.MemTableSize)
	if bits.UintSize != 32 {
		topts.TableSize, fill = 16<<10, 256<<10
	}
	// Values just under the value-log threshold, as many as fill a memtable.
	vlen := int(o.ValueThreshold) - 1
	n := fill / (vlen + 16)
	b := table.NewTableBuilder(topts)
	var want []byte
	for i := range n {
		want = appendProbeValue(want, "table", i, vlen)
		b.Add(y.KeyWithTs(probeKey(i), 1), y.ValueStruct{Value: want}, 0)
	}
	data := b.Finish()
	b.Close()
	tbl, err := table.OpenInMemoryTable(data, 1, &topts)
	if err != nil {
		return fmt.Errorf("table probe: %w", err)
	}
	defer tbl.DecrRef()
	it := tbl.NewIterator(0)
	defer it.Close()
	i := 0
	for it.Rewind(); it.Valid(); it.Next() {
		if i >= n || !bytes.Equal(y.ParseKey(it.Key()), probeKey(i)) {
			return fmt.Errorf("table probe: entry %d of %d has key %q", i, n, y.ParseKey(it.Key()))
		}
		want = appendProbeValue(want, "table", i, vlen)
		if v := probeRead("table", it.Value().Value); !bytes.Equal(v, want) {
			return fmt.Errorf("table probe: entry %d of %d (%q) read back wrong", i, n, probeKey(i))
		}
		i++
	}
	if i != n {
		return fmt.Errorf("table probe: read %d of %d entries back", i, n)
	}
	return nil
}

func probeKey(i int) []byte { return fmt.Appendf(nil, "%s%06d", probePrefix, i) }

func probeRecordValue(i int) []byte {
	n := 8 + 64*i
	if i >= probeCount-2 {
		n = 3000 + i // past the value-log threshold
	}
	return probeValue("record", i, n)
}

// probeRecords writes the probe records into a store that lacks them (a new store, or one from
// before the self-check) and checks every one of them. They live on with the store, through
// memtable flushes and compactions, so damage to its tables shows at a later open.
func probeRecords(db *badger.DB) error {
	var missing bool
	check := func(txn *badger.Txn) error {
		missing = false
		for i := range probeCount {
			item, err := txn.Get(probeKey(i))
			if errors.Is(err, badger.ErrKeyNotFound) && i == 0 {
				missing = true
				return nil
			}
			if err != nil {
				return fmt.Errorf("probe record %q: %w", probeKey(i), err)
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("probe record %q: %w", probeKey(i), err)
			}
			if !bytes.Equal(probeRead("record", v), probeRecordValue(i)) {
				return fmt.Errorf("probe record %q read back wrong (%d bytes)", probeKey(i), len(v))
			}
		}
		return nil
	}
	if err := db.View(check); err != nil {
		return err
	}
	if !missing {
		return nil
	}
	err := db.Update(func(txn *badger.Txn) error {
		for i := range probeCount {
			if err := txn.Set(probeKey(i), probeRecordValue(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write probe records: %w", err)
	}
	if err := db.View(check); err != nil {
		return err
	}
	if missing {
		return errors.New("probe records written but not found")
	}
	return nil
}
