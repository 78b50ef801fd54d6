package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// roundWriter collects a run's columns output and counts the round
// headings in it. The printer writes on Run's goroutine, before it calls
// OnEvent there, so OnEvent can read rounds without locking.
type roundWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	rounds int
	first  chan struct{} // closed at the first heading
}

func newRoundWriter() *roundWriter { return &roundWriter{first: make(chan struct{})} }

func (w *roundWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.HasPrefix(p, []byte("--- ")) {
		if w.rounds == 0 {
			close(w.first)
		}
		w.rounds++
	}
	return w.buf.Write(p)
}

func (w *roundWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// fileIO writes chunks to a new file at path and reads them back in reads
// of readSize bytes, all from one locked OS thread, whose ID it returns.
func fileIO(path string, chunks []int, readSize int) (tid int, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	total := 0
	for i, n := range chunks {
		if _, err := f.Write(bytes.Repeat([]byte{byte('a' + i)}, n)); err != nil {
			return 0, err
		}
		total += n
	}
	if _, err := f.Seek(0, 0); err != nil {
		return 0, err
	}
	buf := make([]byte, readSize)
	for total > 0 {
		n, err := f.Read(buf[:min(readSize, total)])
		if err != nil {
			return 0, err
		}
		total -= n
	}
	return unix.Gettid(), nil
}

// TestTopFile does known I/O on a file of its own while top_file runs and
// checks the rows: exact counts once summed over the rounds (each round
// shows only what happened since the one before), the file's identity as
// stat() gives it, the order of the rows and the columns output. It then
// checks that nothing stays loaded.
func TestTopFile(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "top_file")
	path := t.TempDir() + "/" + uniqueName("topfile-")
	name := path[strings.LastIndexByte(path, '/')+1:]
	chunks, readSize := []int{1000, 2000, 3000, 4000}, 2000 // 4 writes, 5 reads, 10000 bytes

	requireNothingHeld(t)
	type seen struct {
		round int
		ev    Event
	}
	var (
		rows    []seen
		during  map[kernelObject]bool
		heldErr error
	)
	out := newRoundWriter()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rounds := make(chan int, 100)
	done := runNamed(ctx, "top_file", elf, Options{
		Output:   out,
		Interval: 100 * time.Millisecond,
		Timeout:  30 * time.Second,
		Params:   map[string]string{"target_pid": strconv.Itoa(os.Getpid())},
		OnEvent: func(ev Event) {
			if during == nil && heldErr == nil {
				during, heldErr = heldBPFObjects()
			}
			rows = append(rows, seen{out.rounds, ev})
			if f, _ := ev.Value("file"); f == name {
				select {
				case rounds <- out.rounds:
				default: // the test only needs the last ones
				}
			}
		},
	})
	// The first heading means the programs are attached.
	waitWhileRunning(t, out.first, done, "a first round")
	tid, err := fileIO(path, chunks, readSize)
	if err != nil {
		t.Fatal(err)
	}
	// Read on until two rounds after the last one with a row for the file.
	last := waitWhileRunning(t, rounds, done, "a row for "+name)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case last = <-rounds:
		default:
		}
		out.mu.Lock()
		n := out.rounds
		out.mu.Unlock()
		if n >= last+2 || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	res := wait(t, done, "the run to end")
	if res.err != nil {
		t.Fatal(res.err)
	}
	if heldErr != nil {
		t.Fatal(heldErr)
	}

	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	sums := map[string]uint64{}
	byRound := map[int][]Event{}
	var fileRounds []int
	for _, r := range rows {
		byRound[r.round] = append(byRound[r.round], r.ev)
		if pid, _ := r.ev.Value("pid"); pid != uint32(os.Getpid()) {
			t.Errorf("row for pid %v despite target_pid %d: %v", pid, os.Getpid(), r.ev)
		}
		if f, _ := r.ev.Value("file"); f != name {
			continue
		}
		fileRounds = append(fileRounds, r.round)
		checkFields(t, r.ev, map[string]any{"tid": uint32(tid), "comm": testComm(t), "type": "REGULAR",
			"dev": uint32(st.Dev), "inode": st.Ino})
		for _, c := range []string{"reads", "writes", "rbytes", "wbytes"} {
			v, _ := r.ev.Value(c)
			sums[c] += v.(uint64)
		}
	}
	want := map[string]uint64{"reads": 5, "writes": 4, "rbytes": 10000, "wbytes": 10000}
	if !maps.Equal(sums, want) {
		t.Errorf("counts for %s summed over rounds %v: %v, want %v (a round that was not cleared repeats counts)",
			name, fileRounds, sums, want)
	}
	if out.rounds < slices.Max(fileRounds)+2 {
		t.Errorf("only %d rounds, want two after the last row for the file (round %d)", out.rounds, slices.Max(fileRounds))
	}
	// Rows sorted by the first value field, reads, descending.
	for round, evs := range byRound {
		if !slices.IsSortedFunc(evs, func(a, b Event) int {
			ra, _ := a.Value("reads")
			rb, _ := b.Value("reads")
			return compareIntegers(rb, ra)
		}) {
			t.Errorf("round %d not sorted by reads, descending: %v", round, evs)
		}
	}

	// As printed: a heading per round, the header, the row.
	text := out.String()
	headings := 0
	var printedRow bool
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "--- ") {
			headings++
			continue
		}
		f := strings.Fields(line)
		if len(f) == 11 && f[3] == name {
			printedRow = slices.Equal(f[:7], []string{strconv.Itoa(os.Getpid()), strconv.Itoa(tid), testComm(t), name, "REGULAR",
				strconv.FormatUint(st.Dev, 10), strconv.FormatUint(st.Ino, 10)})
		}
	}
	if headings != out.rounds || !strings.Contains(text, "\nPID ") || !printedRow {
		t.Errorf("output has %d headings for %d rounds, header line %v, row for %s %v:\n%s",
			headings, out.rounds, strings.Contains(text, "\nPID "), name, printedRow, text)
	}
	if want := (Stats{Kind: KindMapIterator, Events: uint64(len(rows)), Rounds: uint64(out.rounds)}); *res.stats != want {
		t.Errorf("stats %+v, want %+v: every row printed, in every round", *res.stats, want)
	}

	// 12 programs; maps stats, calls, .rodata (parameters) and .bss (markers).
	checkReleased(t, during, 12, 4)
}

// --max-events counts rows, and so do the Stats: not the rows of the round
// that were never printed. JSON prints one object per row, nothing else,
// each with its round's time first.
func TestTopFileMaxEventsJSON(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "top_file")
	dir := t.TempDir()
	var out bytes.Buffer
	var printed int
	start := time.Now()
	done := runNamed(context.Background(), "top_file", elf, Options{
		Output: &out,
		Format: FormatJSON,
		// Long enough for the loop below to touch more than 3 files a round.
		Interval:  200 * time.Millisecond,
		Timeout:   30 * time.Second,
		MaxEvents: 3,
		Params:    map[string]string{"target_pid": strconv.Itoa(os.Getpid())},
		Fields:    []string{"file", "writes", "wbytes"},
		OnEvent:   func(Event) { printed++ },
	})
	// Each call writes two new files, so every round has rows for several.
	var n int
	stop := triggerLoop(t, func() error {
		for range 2 {
			n++
			if _, err := fileIO(fmt.Sprintf("%s/f%d", dir, n), []int{10}, 10); err != nil {
				return err
			}
		}
		return nil
	})
	res := wait(t, done, "3 rows")
	end := time.Now()
	stop()
	if res.err != nil {
		t.Fatal(res.err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if printed != 3 || len(lines) != 3 {
		t.Fatalf("%d rows passed to OnEvent, output:\n%s\nwant 3 rows", printed, out.String())
	}
	var prev time.Time
	for _, l := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		if len(obj) != 4 || !strings.HasPrefix(l, `{"round":"`) || obj["file"] == nil || obj["writes"] == nil || obj["wbytes"] == nil {
			t.Errorf("output line %q, want the round then the 3 selected fields", l)
		}
		s, _ := obj["round"].(string)
		at, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || len(s) != len("2006-01-02T15:04:05.000000000Z") || !strings.HasSuffix(s, "Z") ||
			at.Before(start) || at.After(end) || at.Before(prev) {
			t.Errorf("round %q (%v): want UTC with nanoseconds, during the run (%s to %s), not before the previous row's",
				s, err, start.UTC().Format(time.RFC3339Nano), end.UTC().Format(time.RFC3339Nano))
		}
		prev = at
	}
	if st := res.stats; st.Kind != KindMapIterator || st.Events != 3 || st.Filtered != 0 || st.Printed() != 3 || st.Rounds == 0 {
		t.Errorf("stats %+v, want the 3 rows printed in at least one round", *st)
	}
}

// A map iterator field named round would print twice in a JSON row.
func TestMapIterRoundFieldClash(t *testing.T) {
	elf := rename(t, gadgetELF(t, "top_file"), "reads", "round")
	stats, err := run(context.Background(), "top_file", elf, Options{Format: FormatJSON})
	const want = `run gadget top_file: map iterator file: field round would clash with the "round" member JSON rows get; leave it out with Options.Fields`
	if err == nil || err.Error() != want || stats != nil {
		t.Errorf("got error %v, stats %v; want %q", err, stats, want)
	}
}

func TestNegativeInterval(t *testing.T) {
	_, err := run(context.Background(), "top_file", nil, Options{Interval: -time.Second})
	if err == nil || !strings.Contains(err.Error(), "negative Timeout, MaxEvents or Interval") {
		t.Fatalf("got %v, want the negative interval refused", err)
	}
}

// A run that ends between rounds prints what was counted since the last one
// as a last round: here the whole run is shorter than one interval.
func TestTopFileLastRound(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "top_file")
	path := t.TempDir() + "/" + uniqueName("lastround-")
	out := newRoundWriter()
	var writes atomic.Int64
	stop := triggerLoop(t, func() error {
		_, err := fileIO(path, []int{100}, 100)
		if err == nil {
			writes.Add(1)
		}
		return err
	})
	stats, err := run(context.Background(), "top_file", elf, Options{
		Output: out, Interval: time.Hour, Timeout: 700 * time.Millisecond,
		Params: map[string]string{"target_pid": strconv.Itoa(os.Getpid())},
	})
	stop()
	if err != nil {
		t.Fatal(err)
	}
	name := path[strings.LastIndexByte(path, '/')+1:]
	if stats.Rounds != 1 || stats.Events == 0 || out.rounds != 1 || !strings.Contains(out.String(), name) {
		t.Errorf("stats %+v, %d headings; want one last round with a row for %s (%d writes):\n%s", *stats, out.rounds, name, writes.Load(), out.String())
	}
}
