package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"
)

// Keys in the Badger database. Everything under trustPrefix is trust state and goes into the
// state digest; everything under metaPrefix describes it.
const (
	trustPrefix = "t/"
	keyPrefix   = trustPrefix + "key/"
	sigPrefix   = trustPrefix + "sig/"
	revPrefix   = trustPrefix + "rev/"
	policyKey   = trustPrefix + "policy"
	sigstoreKey = trustPrefix + "sigstore-trusted-root"
	metaPrefix  = "m/"
	// Device-local records, outside the state digest: break-glass overrides (for this
	// device only) and the audit log of their use.
	overridePrefix = "o/"
	auditPrefix    = "a/"
	versionKey     = metaPrefix + "version"
	digestKey      = metaPrefix + "digest"
	expiresKey     = metaPrefix + "expires"
	rootKey        = metaPrefix + "root"
	rootVerKey     = metaPrefix + "root_version"
)

// digestDomain separates our state digests from any other SHA-256 use.
const digestDomain = "bpfleet-trust-state-v1\x00"

// recordEnc encodes records deterministically: their bytes go into the state digest.
var recordEnc, _ = cbor.CoreDetEncOptions().EncMode()

// Why Apply refuses a change; test with errors.Is.
var (
	ErrOld   = errors.New("version not newer than the store's")
	ErrAhead = errors.New("version skips ahead of the store's")
	ErrBase  = errors.New("base digest is not the store's digest")
	ErrState = errors.New("resulting digest is not the one the change names")
	// ErrInvalid marks records that can never be stored (an unparsable key, a malformed
	// digest), as opposed to failures of the store itself.
	ErrInvalid = errors.New("invalid record")
)

// Options tunes a store. The zero value is what devices use.
type Options struct {
	// LockWait is how long Open waits for another bpfleet process to release the store.
	// Zero means 10 seconds.
	LockWait time.Duration
}

// Store is an open trust store. It is not safe for use after Close.
type Store struct {
	db   *badger.DB
	lock *os.File
}

// Open opens (creating if needed) the trust store in dir.
func Open(dir string, o Options) (*Store, error) {
	if o.LockWait == 0 {
		o.LockWait = 10 * time.Second
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open trust store: %w", err)
	}
	lock, err := acquire(filepath.Join(dir, "bpfleet.lock"), o.LockWait)
	if err != nil {
		return nil, fmt.Errorf("open trust store %s: %w", dir, err)
	}
	if err := removeEmptyLogs(dir); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open trust store %s: %w", dir, err)
	}
	opts := lowMemory(dir)
	db, err := badger.Open(opts)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open trust store %s: %w", dir, err)
	}
	// Refuse a store this platform cannot keep: a Badger that garbles records would lose
	// trust silently (see for32Bit).
	if err := selfCheck(db, opts); err != nil {
		db.Close()
		lock.Close()
		return nil, fmt.Errorf("open trust store %s: %w", dir, err)
	}
	return &Store{db: db, lock: lock}, nil
}

// removeEmptyLogs deletes zero-length memtable WAL (.mem) and value log (.vlog) files. A crash
// or power loss between Badger creating such a file and sizing it leaves it empty, and Badger
// v4.9 then refuses to open the store (dgraph-io/badger#2207). An empty file holds no data, so
// removing it loses nothing; we hold the store's lock, so no one is writing it.
func removeEmptyLogs(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); ext != ".mem" && ext != ".vlog" {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() && fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// lowMemory are Badger options for small devices: Badger's defaults reserve a 64 MiB memtable
// and map gigabytes of address space; these open at a few MB of RSS. The memtable size also
// bounds one transaction (Badger allows 15% of it), hence one atomic change: 8 MiB admits
// about 1.2 MB, more than the largest message the protocol accepts (1 MiB). Writes are synced
// so that an acknowledged delta survives power loss.
func lowMemory(dir string) badger.Options {
	o := badger.DefaultOptions(dir).
		WithLogger(nil).
		WithSyncWrites(true).
		WithMemTableSize(8 << 20).
		WithNumMemtables(1).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(4 << 20).
		WithValueLogFileSize(4 << 20).
		WithValueThreshold(1 << 10).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithCompression(options.None).
		WithNumCompactors(2).
		WithNumGoroutines(2)
	if bits.UintSize == 32 {
		o = for32Bit(o)
	}
	return o
}

// for32Bit works around a ristretto bug that corrupts tables on 32-bit platforms (386, armv7):
// Badger builds each table in a z.Allocator, whose Allocate records a move to its next buffer
// as uint64((bufIdx+1)<<32) with bufIdx an int; on 32-bit that shift is 0, so once a builder
// outgrows the allocator's first buffer it starts again at offset 0 of that buffer, over the
// blocks it has already written. Present in ristretto v2.2.0 through v2.4.2 at least
// (z/allocator.go). The first buffer is sized from the table size Badger asks for, 2×TableSize
// rounded up to a power of two, and that is all a 32-bit build can use. The memtable flush
// writes a whole memtable (8 MiB) into one level-0 table built with TableSize =
// BaseTableSize (2 MiB above: a 4 MiB buffer), which overflows it: 100,000 small records
// garble or panic. Tables as large as the memtable and a multiplier of 1 make every table
// builder's buffer 16 MiB, twice the most any of our tables holds.
// Not covered: a level-0-to-level-0 compaction asks for a table of MaxUint32 bytes, which a
// 32-bit int makes -1 and the allocator then 512 bytes whenever Badger's pool has none to
// reuse. Badger only does that with at least four idle level-0 tables it cannot move down,
// which a trust store's few MB hardly produce; the probe records Open checks would show it.
// TestBigStoreRoundTrip, run as a 386 and an armv7 binary by scripts/store32.sh, checks this.
func for32Bit(o badger.Options) badger.Options {
	o = o.WithBaseTableSize(o.MemTableSize)
	o.TableSizeMultiplier = 1
	return o
}

// acquire takes an exclusive flock on path, polling until wait has passed.
func acquire(path string, wait time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("store is in use by another bpfleet process (waited %s): %w", wait, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close flushes and closes the store and releases its lock.
func (s *Store) Close() error {
	err := s.db.Close()
	if cerr := s.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

// Change is a set of additions to the trust state: one link of a hash chain that takes the
// store from version Version-1 with digest Base to Version with digest State.
type Change struct {
	Version     uint64
	Base        string // the store's digest before; required
	State       string // the digest after; empty to compute it (the operator's side does)
	Expires     int64  // Unix seconds after which this state is stale
	Keys        []trust.Key
	Signatures  []trust.Signature
	Revocations []trust.Revocation
	// Policy, when set, replaces the verification policy.
	Policy *trust.Policy
	// TrustedRoot, when set, replaces the Sigstore trusted_root.json used for keyless
	// verification.
	TrustedRoot []byte
}

// Apply validates c against the store and writes it in one transaction. It returns the new state
// digest. On any error nothing was written.
func (s *Store) Apply(c Change) (string, error) {
	return s.apply([]Change{c}, true)
}

// ApplyChain applies consecutive changes in one transaction and computes the state digest once,
// which makes catching up on many small deltas linear instead of quadratic. Each change must
// follow the previous one (next version, base equal to its State); the intermediate digests are
// taken from the changes, and the final one must be what the records hash to. The result is the
// state applying them one by one gives; on any error nothing was written, and the caller can
// apply them one by one to find which one is at fault.
func (s *Store) ApplyChain(cs []Change) (string, error) {
	if len(cs) == 0 {
		return "", errors.New("apply chain: no changes")
	}
	return s.apply(cs, true)
}

// Digest returns the state digest Apply(c) would yield, writing nothing.
func (s *Store) Digest(c Change) (string, error) {
	return s.apply([]Change{c}, false)
}

// validate checks a change's records and returns its policy's encoding (nil if it has none).
func validate(c Change) ([]byte, error) {
	for i, k := range c.Keys {
		if _, err := k.PublicKey(); err != nil {
			return nil, fmt.Errorf("apply version %d: %w: key %d: %w", c.Version, ErrInvalid, i, err)
		}
	}
	for i, sig := range c.Signatures {
		if !trust.ValidDigest(sig.Digest) {
			return nil, fmt.Errorf("apply version %d: %w: signature %d: malformed digest %q", c.Version, ErrInvalid, i, sig.Digest)
		}
		if len(sig.Payload) == 0 || len(sig.Signature) == 0 {
			return nil, fmt.Errorf("apply version %d: %w: signature %d for %s: empty payload or signature", c.Version, ErrInvalid, i, sig.Digest)
		}
	}
	for i, r := range c.Revocations {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("apply version %d: %w: revocation %d: %w", c.Version, ErrInvalid, i, err)
		}
	}
	if c.TrustedRoot != nil && !json.Valid(c.TrustedRoot) {
		return nil, fmt.Errorf("apply version %d: %w: trusted root is not JSON", c.Version, ErrInvalid)
	}
	if c.Policy == nil {
		return nil, nil
	}
	if err := c.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("apply version %d: %w: policy: %w", c.Version, ErrInvalid, err)
	}
	return recordEnc.Marshal(c.Policy)
}

// write sets a change's records in txn.
func write(txn *badger.Txn, c Change, policy []byte) error {
	for _, k := range c.Keys {
		if err := txn.Set([]byte(keyPrefix+k.ID()), k.DER); err != nil {
			return err
		}
	}
	for _, sig := range c.Signatures {
		v, err := recordEnc.Marshal(sig)
		if err != nil {
			return err
		}
		if err := txn.Set([]byte(sigPrefix+sig.Digest+"/"+sig.ID()), v); err != nil {
			return err
		}
	}
	for _, r := range c.Revocations {
		if err := txn.Set([]byte(revPrefix+r.Kind+"/"+r.Value), nil); err != nil {
			return err
		}
	}
	if policy != nil {
		if err := txn.Set([]byte(policyKey), policy); err != nil {
			return err
		}
	}
	if c.TrustedRoot != nil {
		if err := txn.Set([]byte(sigstoreKey), c.TrustedRoot); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) apply(cs []Change, commit bool) (string, error) {
	policies := make([][]byte, len(cs))
	for i, c := range cs {
		var err error
		if policies[i], err = validate(c); err != nil {
			return "", err
		}
	}
	first, last := cs[0], cs[len(cs)-1]
	var digest string
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	err := func() error {
		current, err := version(txn)
		if err != nil {
			return err
		}
		if first.Version <= current {
			return fmt.Errorf("%w: change is version %d, store is at %d", ErrOld, first.Version, current)
		}
		if first.Version > current+1 {
			return fmt.Errorf("%w: change is version %d, store is at %d", ErrAhead, first.Version, current)
		}
		base, err := currentDigest(txn, current)
		if err != nil {
			return err
		}
		if first.Base != base {
			return fmt.Errorf("%w: change %d applies to %s, store %d is %s", ErrBase, first.Version, first.Base, current, base)
		}
		for i, c := range cs {
			if i > 0 {
				prev := cs[i-1]
				if c.Version != prev.Version+1 || prev.State == "" || c.Base != prev.State {
					return fmt.Errorf("%w: change %d does not follow change %d in the chain", ErrBase, c.Version, prev.Version)
				}
			}
			if err := write(txn, c, policies[i]); err != nil {
				return err
			}
		}
		if err := txn.Set([]byte(versionKey), binary.BigEndian.AppendUint64(nil, last.Version)); err != nil {
			return err
		}
		if err := txn.Set([]byte(expiresKey), binary.BigEndian.AppendUint64(nil, uint64(last.Expires))); err != nil {
			return err
		}
		sum, err := stateDigest(txn, last.Version)
		if err != nil {
			return err
		}
		if last.State != "" && last.State != sum {
			return fmt.Errorf("%w: change %d names %s, records hash to %s", ErrState, last.Version, last.State, sum)
		}
		digest = sum
		if err := txn.Set([]byte(digestKey), []byte(sum)); err != nil {
			return err
		}
		if !commit {
			return nil
		}
		return txn.Commit()
	}()
	if err != nil {
		if len(cs) > 1 {
			return "", fmt.Errorf("apply versions %d-%d: %w", first.Version, last.Version, err)
		}
		return "", fmt.Errorf("apply version %d: %w", first.Version, err)
	}
	return digest, nil
}

func version(txn *badger.Txn) (uint64, error) { return readUint(txn, versionKey) }

// currentDigest is the stored digest, or for a new store the digest of the empty state.
func currentDigest(txn *badger.Txn, ver uint64) (string, error) {
	if ver == 0 {
		return stateDigest(txn, 0)
	}
	item, err := txn.Get([]byte(digestKey))
	if err != nil {
		return "", fmt.Errorf("read state digest: %w", err)
	}
	d, err := item.ValueCopy(nil)
	return string(d), err
}

// readUint reads a big-endian uint64 record, 0 if absent.
func readUint(txn *badger.Txn, key string) (uint64, error) {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("corrupt %s record (%d bytes)", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetRoot stores the device's current root message. Its version must be the stored root's
// plus one, or any version for a store that has none yet (provisioning). The store keeps the
// raw message; verifying it is the caller's job.
func (s *Store) SetRoot(ver uint64, raw []byte) error {
	return s.db.Update(func(txn *badger.Txn) error {
		current, err := readUint(txn, rootVerKey)
		if err != nil {
			return err
		}
		if current != 0 && ver != current+1 {
			return fmt.Errorf("set root %d: store has root %d", ver, current)
		}
		if err := txn.Set([]byte(rootKey), raw); err != nil {
			return err
		}
		return txn.Set([]byte(rootVerKey), binary.BigEndian.AppendUint64(nil, ver))
	})
}

// Root returns the stored root message, or nil if there is none yet.
func (s *Store) Root() ([]byte, error) {
	var raw []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(rootKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		raw, err = item.ValueCopy(nil)
		return err
	})
	return raw, err
}

// SetOverride stores a break-glass override for this device, replacing any earlier one for
// the same digest. Overrides are not trust state: the fleet's digest does not cover them.
func (s *Store) SetOverride(o trust.Override) error {
	v, err := recordEnc.Marshal(o)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(overridePrefix+o.Digest), v)
	})
}

// AuditEntry is one record of the device's audit log.
type AuditEntry struct {
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	Digest string    `json:"digest,omitempty"`
	Ref    string    `json:"ref,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Audit appends e to the audit log, synced to disk before it returns.
func (s *Store) Audit(e AuditEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error {
		// Big-endian nanoseconds keep the log in time order; the entry's own bytes break
		// ties between entries in the same nanosecond.
		key := binary.BigEndian.AppendUint64([]byte(auditPrefix), uint64(e.Time.UnixNano()))
		sum := sha256.Sum256(v)
		return txn.Set(append(key, sum[:8]...), v)
	})
}

// AuditLog returns the audit log, oldest first.
func (s *Store) AuditLog() ([]AuditEntry, error) {
	out := []AuditEntry{} // an empty log is [] in `trust audit -o json`, not null
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(auditPrefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("corrupt audit entry: %w", err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// stateDigest hashes the version and every trust record in key order. Each key and value is
// length-prefixed so that no two different states hash the same input.
func stateDigest(txn *badger.Txn, ver uint64) (string, error) {
	h := stateHash(ver)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(trustPrefix), PrefetchValues: false})
	defer it.Close()
	var buf []byte
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(buf[:0])
		if err != nil {
			return "", err
		}
		buf = v
		k := item.Key()
		h.Write(binary.AppendUvarint(nil, uint64(len(k))))
		h.Write(k)
		h.Write(binary.AppendUvarint(nil, uint64(len(v))))
		h.Write(v)
	}
	return sumDigest(h), nil
}

// stateHash starts a state digest: everything else it hashes is trust records.
func stateHash(ver uint64) hash.Hash {
	h := sha256.New()
	h.Write([]byte(digestDomain))
	h.Write(binary.BigEndian.AppendUint64(nil, ver))
	return h
}

func sumDigest(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// Empty is the trust state of a store that never received trust, what a new store's Snapshot
// returns, without a store: reading a device's trust before its agent created the store must
// not create one.
func Empty() *Snapshot {
	return &Snapshot{digest: sumDigest(stateHash(0)), signatures: map[string][]trust.Signature{},
		revoked: map[trust.Revocation]bool{}, overrides: map[string]trust.Override{}}
}

// Snapshot is a consistent in-memory copy of the trust state. It implements Reader.
type Snapshot struct {
	version     uint64
	digest      string
	expires     int64
	keys        []trust.Key
	signatures  map[string][]trust.Signature
	revoked     map[trust.Revocation]bool
	policy      *trust.Policy
	trustedRoot []byte
	overrides   map[string]trust.Override
}

// Snapshot reads the whole trust state in one read transaction.
func (s *Store) Snapshot() (*Snapshot, error) {
	snap := Empty() // readHead replaces its version and digest
	err := s.db.View(func(txn *badger.Txn) error {
		if err := readHead(txn, snap); err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(trustPrefix), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := string(item.Key())
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			switch {
			case strings.HasPrefix(k, keyPrefix):
				snap.keys = append(snap.keys, trust.Key{DER: v})
			case strings.HasPrefix(k, sigPrefix):
				var sig trust.Signature
				if err := cbor.Unmarshal(v, &sig); err != nil {
					return fmt.Errorf("corrupt signature record %q: %w", k, err)
				}
				snap.signatures[sig.Digest] = append(snap.signatures[sig.Digest], sig)
			case strings.HasPrefix(k, revPrefix):
				kind, value, _ := strings.Cut(strings.TrimPrefix(k, revPrefix), "/")
				snap.revoked[trust.Revocation{Kind: kind, Value: value}] = true
			case k == policyKey:
				snap.policy = &trust.Policy{}
				if err := cbor.Unmarshal(v, snap.policy); err != nil {
					return fmt.Errorf("corrupt policy record: %w", err)
				}
			case k == sigstoreKey:
				snap.trustedRoot = v
			default:
				return fmt.Errorf("unknown trust record %q", k)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read trust snapshot: %w", err)
	}
	return snap, nil
}

// Head describes the trust state without its records. It is not a trust.Reader on purpose:
// nothing can verify against it.
type Head struct {
	Version     uint64
	StateDigest string
	Expires     int64 // Unix seconds; 0 for a new store
	Overrides   []trust.Override
}

// Head reads the version, digest, expiry and overrides: what the agent reports, at a fraction
// of a full Snapshot's cost on a large store.
func (s *Store) Head() (Head, error) {
	snap := &Snapshot{overrides: map[string]trust.Override{}}
	if err := s.db.View(func(txn *badger.Txn) error { return readHead(txn, snap) }); err != nil {
		return Head{}, fmt.Errorf("read trust state: %w", err)
	}
	return Head{Version: snap.version, StateDigest: snap.digest, Expires: snap.expires, Overrides: snap.Overrides()}, nil
}

// readHead fills snap's version, digest, expiry and overrides.
func readHead(txn *badger.Txn, snap *Snapshot) error {
	var err error
	if snap.version, err = version(txn); err != nil {
		return err
	}
	if snap.digest, err = currentDigest(txn, snap.version); err != nil {
		return err
	}
	expires, err := readUint(txn, expiresKey)
	if err != nil {
		return err
	}
	snap.expires = int64(expires)
	return readOverrides(txn, snap.overrides)
}

func readOverrides(txn *badger.Txn, into map[string]trust.Override) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(overridePrefix), PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		var o trust.Override
		if err := cbor.Unmarshal(v, &o); err != nil {
			return fmt.Errorf("corrupt override record: %w", err)
		}
		into[o.Digest] = o
	}
	return nil
}

// Verify recomputes the state digest from the records and compares it with the stored one, to
// catch a store that was changed behind bpfleet's back or damaged.
func (s *Store) Verify() error {
	return s.db.View(func(txn *badger.Txn) error {
		ver, err := version(txn)
		if err != nil || ver == 0 {
			return err
		}
		item, err := txn.Get([]byte(digestKey))
		if err != nil {
			return fmt.Errorf("verify trust store: read digest: %w", err)
		}
		stored, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		got, err := stateDigest(txn, ver)
		if err != nil {
			return err
		}
		if got != string(stored) {
			return fmt.Errorf("verify trust store: records hash to %s but the store says %s", got, stored)
		}
		return nil
	})
}

// Dump returns every key and value in the database, for tests and diagnostics that must prove a
// store unchanged.
func (s *Store) Dump() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = v
		}
		return nil
	})
	return out, err
}

// Version implements Reader.
func (s *Snapshot) Version() uint64 { return s.version }

// StateDigest implements Reader.
func (s *Snapshot) StateDigest() string { return s.digest }

// Keys implements Reader: every key delivered and not revoked.
func (s *Snapshot) Keys() []trust.Key {
	var out []trust.Key
	for _, k := range s.keys {
		if !s.revoked[trust.Revocation{Kind: trust.RevokeKey, Value: k.ID()}] {
			out = append(out, k)
		}
	}
	return out
}

// Revoked implements Reader.
func (s *Snapshot) Revoked(r trust.Revocation) bool { return s.revoked[r] }

// Policy implements Reader; nil when the fleet delivered none.
func (s *Snapshot) Policy() *trust.Policy { return s.policy }

// Override implements Reader: the break-glass override stored for digest, if any (whether it
// is still valid is the caller's check).
func (s *Snapshot) Override(digest string) *trust.Override {
	if o, ok := s.overrides[digest]; ok {
		return &o
	}
	return nil
}

// Overrides returns every stored override.
func (s *Snapshot) Overrides() []trust.Override {
	out := make([]trust.Override, 0, len(s.overrides))
	for _, o := range s.overrides {
		out = append(out, o)
	}
	return out
}

// TrustedRoot implements Reader; nil when the fleet delivered none.
func (s *Snapshot) TrustedRoot() []byte { return s.trustedRoot }

// Expires is when the fleet said this state goes stale (Unix seconds; 0 for a new store).
func (s *Snapshot) Expires() int64 { return s.expires }

// SignatureCount is the number of signatures held, over all digests.
func (s *Snapshot) SignatureCount() int {
	n := 0
	for _, sigs := range s.signatures {
		n += len(sigs)
	}
	return n
}

// RevocationCount is the number of revocations held: keys, keyless identities and digests.
func (s *Snapshot) RevocationCount() int { return len(s.revoked) }

// SignaturesFor implements Reader.
func (s *Snapshot) SignaturesFor(digest string) []trust.Signature { return s.signatures[digest] }
