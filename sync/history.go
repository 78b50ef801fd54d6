package sync

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	gosync "sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
)

// History is the operator's record of a fleet: every sealed root and delta in the order it was
// issued (the log that catch-up serves, one file per message under log/), and the fleet's
// trust state (a trust store under trust/, the same one devices keep, from which each delta's
// digests are computed). Any number of processes may read the log; issuing takes an exclusive
// lock on the directory.
type History struct {
	dir string

	mu      gosync.Mutex
	entries []entry // the log as indexed so far, in order
}

type entry struct {
	file    string
	root    bool
	version uint64
	state   string // a delta's resulting state digest
	size    int
}

// OpenHistory opens (creating if needed) the history in dir.
func OpenHistory(dir string) (*History, error) {
	if err := os.MkdirAll(filepath.Join(dir, "log"), 0o700); err != nil {
		return nil, fmt.Errorf("open history: %w", err)
	}
	h := &History{dir: dir}
	if err := h.refresh(); err != nil {
		return nil, err
	}
	return h, nil
}

// refresh indexes log files written since the last call (by this or another process).
func (h *History) refresh() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	names, err := os.ReadDir(filepath.Join(h.dir, "log"))
	if err != nil {
		return fmt.Errorf("read history: %w", err)
	}
	var files []string
	for _, n := range names {
		if strings.HasSuffix(n.Name(), ".cbor") {
			files = append(files, n.Name())
		}
	}
	sort.Strings(files)
	for _, f := range files[len(h.entries):] {
		raw, err := os.ReadFile(filepath.Join(h.dir, "log", f))
		if err != nil {
			return fmt.Errorf("read history: %w", err)
		}
		u, err := Inspect(raw)
		if err != nil {
			return fmt.Errorf("history %s: %w", f, err)
		}
		e := entry{file: f, size: len(raw)}
		if u.Root != nil {
			e.root, e.version = true, u.Root.Version
		} else {
			e.version, e.state = u.Delta.Version, u.Delta.State
		}
		h.entries = append(h.entries, e)
	}
	return nil
}

// After returns the sealed messages a device with root version root and trust version
// version lacks, in issue order, as many as fit in maxBytes (at least one), and the latest
// trust version the history holds.
func (h *History) After(root, version uint64, maxBytes int) ([][]byte, uint64, error) {
	if err := h.refresh(); err != nil {
		return nil, 0, err
	}
	h.mu.Lock()
	entries := h.entries
	h.mu.Unlock()
	var latest uint64
	start := -1
	for i, e := range entries {
		if !e.root {
			latest = e.version
		}
		if start < 0 && ((e.root && e.version > root) || (!e.root && e.version > version)) {
			start = i
		}
	}
	var out [][]byte
	total := 0
	for i := start; start >= 0 && i < len(entries); i++ {
		if len(out) > 0 && total+entries[i].size > maxBytes {
			break
		}
		raw, err := os.ReadFile(filepath.Join(h.dir, "log", entries[i].file))
		if err != nil {
			return nil, 0, err
		}
		out = append(out, raw)
		total += len(raw)
	}
	return out, latest, nil
}

// Issuer appends to a history. Only one process may issue at a time. It keeps the fleet's
// trust store open until Close: opening Badger for every delta would dominate the cost of
// issuing many.
type Issuer struct {
	h     *History
	lock  *os.File
	state *store.Store
	// now stamps expiry times; tests replace it.
	now func() time.Time
}

// Issue locks the history for issuing. Close releases it.
func (h *History) Issue() (*Issuer, error) {
	f, err := os.OpenFile(filepath.Join(h.dir, "issue.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("history %s is being written by another bpfleetctl: %w", h.dir, err)
	}
	if err := h.refresh(); err != nil {
		f.Close()
		return nil, err
	}
	s, err := store.Open(filepath.Join(h.dir, "trust"), store.Options{})
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Issuer{h: h, lock: f, state: s, now: time.Now}, nil
}

// Close closes the fleet's trust store and releases the issuing lock.
func (is *Issuer) Close() error {
	err := is.state.Close()
	if lerr := is.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

// append writes raw as the next log file, atomically.
func (is *Issuer) append(raw []byte) error {
	h := is.h
	h.mu.Lock()
	seq := len(h.entries) + 1
	h.mu.Unlock()
	name := fmt.Sprintf("%012d.cbor", seq)
	tmp := filepath.Join(h.dir, "log", "."+name+".tmp")
	if err := writeSync(tmp, raw); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(h.dir, "log", name)); err != nil {
		return err
	}
	return h.refresh()
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// CurrentRoot returns the newest root in the history, or nil if there is none.
func (h *History) CurrentRoot() (*TrustedRoot, error) {
	if err := h.refresh(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.entries) - 1; i >= 0; i-- {
		if h.entries[i].root {
			raw, err := os.ReadFile(filepath.Join(h.dir, "log", h.entries[i].file))
			if err != nil {
				return nil, err
			}
			return OpenRoot(raw)
		}
	}
	return nil, nil
}

// RootSpec describes the next root to issue.
type RootSpec struct {
	Fleet          string // required for the first root; must not change later
	RootKeys       []crypto.PublicKey
	RootThreshold  uint64
	DeltaKeys      []crypto.PublicKey
	DeltaThreshold uint64
	Expires        time.Duration
}

// IssueRoot seals the next root with keys (for a rotation: a threshold of the current root's
// keys and of the new one's), checks that a device holding the current root would accept it,
// and appends it.
func (is *Issuer) IssueRoot(spec RootSpec, keys ...crypto.Signer) ([]byte, error) {
	// Expiry is stamped in whole seconds: less than one is expired on arrival.
	if spec.Expires < time.Second {
		return nil, fmt.Errorf("issue root: expires must be positive, at least 1s (got %v): a root that is already expired leaves devices unable to accept deltas", spec.Expires)
	}
	cur, err := is.h.CurrentRoot()
	if err != nil {
		return nil, err
	}
	r := Root{Fleet: spec.Fleet, Version: 1, Expires: is.now().Add(spec.Expires).Unix(),
		Root: Role{Threshold: spec.RootThreshold}, Deltas: Role{Threshold: spec.DeltaThreshold}}
	if cur != nil {
		if spec.Fleet != "" && spec.Fleet != cur.Fleet {
			return nil, fmt.Errorf("issue root: history is for fleet %q, not %q", cur.Fleet, spec.Fleet)
		}
		r.Fleet, r.Version = cur.Fleet, cur.Version+1
	}
	seen := map[string]bool{}
	addKeys := func(role *Role, pubs []crypto.PublicKey) error {
		for _, pub := range pubs {
			der, kid, err := derAndID(pub)
			if err != nil {
				return err
			}
			role.KeyIDs = append(role.KeyIDs, kid)
			if !seen[string(kid)] {
				seen[string(kid)] = true
				r.Keys = append(r.Keys, der)
			}
		}
		return nil
	}
	if err := addKeys(&r.Root, spec.RootKeys); err != nil {
		return nil, err
	}
	if err := addKeys(&r.Deltas, spec.DeltaKeys); err != nil {
		return nil, err
	}
	raw, err := SealRoot(&r, keys...)
	if err != nil {
		return nil, err
	}
	// Refuse to publish what devices would reject.
	if cur == nil {
		_, err = OpenRoot(raw)
	} else {
		_, err = cur.Next(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("issue root %d: devices would reject it: %w", r.Version, err)
	}
	return raw, is.append(raw)
}

func derAndID(pub crypto.PublicKey) ([]byte, []byte, error) {
	kid, err := KeyID(pub)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	return der, kid, err
}

// DeltaSpec describes the records of the next delta.
type DeltaSpec struct {
	Keys        []trust.Key
	Signatures  []trust.Signature
	Revocations []trust.Revocation
	Policy      *trust.Policy
	TrustedRoot []byte
	Expires     time.Duration
}

// IssueDelta builds the next delta on the fleet's current state, seals it with delta-role
// keys, checks that the current root accepts it, appends it and advances the fleet's state.
func (is *Issuer) IssueDelta(spec DeltaSpec, keys ...crypto.Signer) ([]byte, *Delta, error) {
	if spec.Expires < time.Second {
		return nil, nil, fmt.Errorf("issue delta: expires must be positive, at least 1s (got %v): a delta that is already expired is stale on arrival, and devices refuse gadgets under strict policy", spec.Expires)
	}
	cur, err := is.h.CurrentRoot()
	if err != nil {
		return nil, nil, err
	}
	if cur == nil {
		return nil, nil, errors.New("issue delta: the history has no root yet (bpfleetctl root)")
	}
	if now := is.now(); cur.Expired(now) {
		// Devices holding it refuse its deltas until a newer root comes.
		return nil, nil, fmt.Errorf("issue delta: root %d expired at %s: issue the next root first (bpfleetctl root)",
			cur.Version, time.Unix(cur.Expires, 0).UTC().Format(time.RFC3339))
	}
	s := is.state
	snap, err := s.Snapshot()
	if err != nil {
		return nil, nil, err
	}
	d := &Delta{Fleet: cur.Fleet, Version: snap.Version() + 1, Base: snap.StateDigest(),
		Expires: is.now().Add(spec.Expires).Unix(), Keys: spec.Keys, Signatures: spec.Signatures,
		Revocations: spec.Revocations, Policy: spec.Policy, TrustedRoot: spec.TrustedRoot}
	if d.State, err = s.Digest(d.Change()); err != nil {
		return nil, nil, fmt.Errorf("issue delta %d: %w", d.Version, err)
	}
	raw, err := SealDelta(d, keys...)
	if err != nil {
		return nil, nil, err
	}
	if len(raw) > MaxMessageSize {
		return nil, nil, fmt.Errorf("issue delta %d: %w: %d bytes, devices take at most %d; split the records over several deltas",
			d.Version, ErrTooLarge, len(raw), MaxMessageSize)
	}
	if _, err := cur.Open(raw); err != nil {
		return nil, nil, fmt.Errorf("issue delta %d: devices would reject it: %w", d.Version, err)
	}
	// Log first: a delta in the log but not yet in the state is re-derivable; the reverse
	// would fork the chain.
	if err := is.append(raw); err != nil {
		return nil, nil, err
	}
	if _, err := s.Apply(d.Change()); err != nil {
		return nil, nil, fmt.Errorf("issue delta %d: advance fleet state: %w", d.Version, err)
	}
	return raw, d, nil
}

// Latest returns the fleet's current trust version and state digest, as the last delta in
// the log names them (version 0 and no digest before the first delta). It reads only the log,
// so it needs no lock and works while another process issues.
func (h *History) Latest() (uint64, string, error) {
	if err := h.refresh(); err != nil {
		return 0, "", err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.entries) - 1; i >= 0; i-- {
		if !h.entries[i].root {
			return h.entries[i].version, h.entries[i].state, nil
		}
	}
	return 0, "", nil
}
