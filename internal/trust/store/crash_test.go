package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
)

// A process killed (or a device losing power) after Badger created its memtable WAL (NNNNN.mem,
// a new one at every Open) or a value log file (NNNNNN.vlog) but before it sized the file
// leaves an empty file.
// Badger v4.9.6 then fails the next Open with z.NewFile ("Create a new file"), although the
// file holds nothing (dgraph-io/badger#2207, fix proposed in #2331); that same failed Open
// sizes the file, so a second Open succeeds. A device must come back from such a crash on its
// first start: Open has to cope. agent.TestSyncAgentKilledDuringApply hits this window about
// once in 40 SIGKILLs.
func TestOpenAfterCrashLeftEmptyFile(t *testing.T) {
	for _, name := range []string{"00001.mem", "000002.vlog"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			want, err := s.Apply(Change{Version: 1, Base: emptyDigest(t, s), Keys: []trust.Key{testkey.New(t).Public}})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// What the crash leaves.
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err = Open(dir, Options{})
			if err != nil {
				t.Fatalf("open after a crash left an empty %s: %v", name, err)
			}
			defer s.Close()
			if err := s.Verify(); err != nil {
				t.Fatal(err)
			}
			snap, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if snap.Version() != 1 || snap.StateDigest() != want {
				t.Fatalf("after reopening: version %d %s, want 1 %s", snap.Version(), snap.StateDigest(), want)
			}
		})
	}
}
