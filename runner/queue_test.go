package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// afterFirstWrite takes its first write, closing took, then does what
// later does to each write: a failing output or one that stopped taking lines.
type afterFirstWrite struct {
	bytes.Buffer
	took  chan struct{}
	later func() error
}

func newAfterFirstWrite(later func() error) *afterFirstWrite {
	return &afterFirstWrite{took: make(chan struct{}), later: later}
}

func (w *afterFirstWrite) Write(p []byte) (int, error) {
	select {
	case <-w.took:
		if err := w.later(); err != nil {
			return 0, err
		}
	default:
		close(w.took)
	}
	return w.Buffer.Write(p)
}

var errFull = errors.New("disk full")

func TestOutputQueue(t *testing.T) {
	// Every line arrives, in order, however the writer batches them, and
	// none is left unprinted.
	var out bytes.Buffer
	q := newOutputQueue(&out, nil)
	var want strings.Builder
	for i := range 10000 {
		line := strings.Repeat("x", i%97) + "\n"
		want.WriteString(line)
		if i%2 == 1 {
			q.event()
		}
		if _, err := q.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if unprinted, err := q.flush(); err != nil || unprinted != 0 || out.String() != want.String() {
		t.Fatalf("flush: %v, %d unprinted; %d bytes written, want %d", err, unprinted, out.Len(), want.Len())
	}

	// A failed write is reported by the next Writes and by flush, the queue
	// never blocks once it failed, and every event it took after the first
	// line is unprinted.
	w := newAfterFirstWrite(func() error { return errFull })
	q = newOutputQueue(w, nil)
	q.event()
	q.Write([]byte("first\n"))
	<-w.took
	var err error
	var took uint64
	for i := 0; i < 10000 && err == nil; i++ {
		q.event()
		if _, err = q.Write([]byte("more\n")); err == nil {
			took++
		}
	}
	if !errors.Is(err, errFull) || took == 0 {
		t.Errorf("Write after a failed write: %v after %d lines, want %v after at least the one that failed", err, took, errFull)
	}
	if unprinted, err := q.flush(); !errors.Is(err, errFull) || unprinted != took || w.String() != "first\n" {
		t.Errorf("flush: %v, %d unprinted, written %q; want %v, %d unprinted and only the first line", err, unprinted, w.String(), errFull, took)
	}
}

// flush gives up on an output that takes nothing and counts what it did not
// write: the header was written, the line of a write still blocked was not;
// a round's heading is a line, not an event.
func TestOutputQueueGivesUp(t *testing.T) {
	release := make(chan struct{})
	defer close(release) // the writer goroutine then writes the rest and ends
	w := newAfterFirstWrite(func() error { <-release; return nil })
	q := newOutputQueue(w, nil)
	q.Write([]byte("HEADER\n"))
	<-w.took
	for i := range 10 {
		if i == 5 {
			q.Write([]byte("--- heading\n"))
		}
		q.event()
		if _, err := q.Write([]byte("event\n")); err != nil {
			t.Fatal(err)
		}
	}
	unprinted, err := q.flush()
	const want = "the output took nothing for 1s: gave up on 11 unprinted line(s)"
	if unprinted != 10 || err == nil || err.Error() != want {
		t.Errorf("flush: %d unprinted, error %v; want 10 and %q", unprinted, err, want)
	}
}

// waitFor is closed once cond holds (checked every millisecond, for 5 s at most).
func waitFor(t *testing.T, cond func() bool) <-chan struct{} {
	done := make(chan struct{})
	deadline := time.Now().Add(5 * time.Second)
	go func() {
		for !cond() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		close(done)
	}()
	return done
}

// An output that stops taking lines (a reader of the pipe that never reads)
// neither outlasts the timeout or Ctrl-C nor keeps the gadget in the kernel.
func TestRunEndsWithBlockedOutput(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_open")
	for _, tc := range []struct {
		name   string
		opts   Options
		cancel bool // cancel the context once the output is blocked, as on Ctrl-C
	}{
		{name: "timeout", opts: Options{Timeout: 500 * time.Millisecond}},
		{name: "context cancelled", cancel: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireNothingHeld(t)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close() // at last: the writer goroutine still blocked on w then fails and ends
			defer w.Close()
			var shown atomic.Int64
			opts := tc.opts
			opts.Output = w
			opts.OnEvent = func(Event) { shown.Add(1) }

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := runNamed(ctx, "trace_open", elf, opts)
			// Opens by this process: far more lines than the pipe and the queue hold.
			stop := triggerLoop(t, func() error {
				for range 200 {
					f, err := os.Open("/dev/null")
					if err != nil {
						return err
					}
					f.Close()
				}
				return nil
			})
			defer stop()
			if tc.cancel {
				// Blocked once no more events get through for a while.
				var last int64 = -1
				<-waitFor(t, func() bool {
					n := shown.Load()
					blocked := n > 0 && n == last
					last = n
					time.Sleep(100 * time.Millisecond)
					return blocked
				})
				cancel()
			}
			res := wait(t, done, "the run to end with its output blocked")
			const want = "run gadget trace_open: print: the output took nothing for 1s: gave up on "
			if res.stats == nil || res.err == nil || !strings.HasPrefix(res.err.Error(), want) {
				t.Fatalf("run: stats %v, error %v; want stats and an error starting %q", res.stats, res.err, want)
			}
			// Still blocked: every line up to the queue's capacity was taken, none written.
			if res.stats.Events < 4096 {
				t.Errorf("%d events: the output never blocked", res.stats.Events)
			}
			var lines uint64
			if _, err := fmt.Sscanf(strings.TrimPrefix(res.err.Error(), want), "%d unprinted line(s)", &lines); err != nil || lines == 0 {
				t.Fatalf("error %q: want the number of unprinted lines", res.err)
			}
			// The header was written before the output blocked, so every unprinted line is
			// an event's; the event the full queue refused as the run ended (if it did) was
			// passed to OnEvent no more than printed.
			s := res.stats
			refused := s.Events - s.Filtered - uint64(shown.Load())
			if refused > 1 || s.Unprinted != lines+refused || s.Printed()+s.Unprinted+s.Filtered != s.Events || s.Printed() != uint64(shown.Load())-lines {
				t.Errorf("stats %+v, %d shown to OnEvent, %d lines unprinted: want Unprinted = the lines and the event refused at the end (%d), Printed() = the %d shown - the lines",
					*s, shown.Load(), lines, refused, shown.Load())
			}
			if held := ownBPFObjects(t); len(held) != 0 {
				t.Errorf("process holds %v after the run, its output still blocked", held)
			}
		})
	}
}
