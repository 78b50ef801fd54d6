package runner

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// failingWriter takes n writes, then fails.
type failingWriter struct {
	bytes.Buffer
	n int
}

var errFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, errFull
	}
	w.n--
	return w.Buffer.Write(p)
}

func TestOutputQueue(t *testing.T) {
	// Every line arrives, in order, however the writer batches them.
	var out bytes.Buffer
	q := newOutputQueue(&out, nil)
	var want strings.Builder
	for i := range 10000 {
		line := strings.Repeat("x", i%97) + "\n"
		want.WriteString(line)
		if _, err := q.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.flush(); err != nil || out.String() != want.String() {
		t.Fatalf("flush: %v; %d bytes written, want %d", err, out.Len(), want.Len())
	}

	// A failed write is reported by the next Writes and by flush, and the queue
	// never blocks once it failed.
	w := &failingWriter{n: 1}
	q = newOutputQueue(w, nil)
	q.Write([]byte("first\n"))
	<-waitFor(t, func() bool { return w.n == 0 })
	q.Write([]byte("second\n"))
	var err error
	for i := 0; i < 10000 && err == nil; i++ {
		_, err = q.Write([]byte("more\n"))
	}
	if !errors.Is(err, errFull) {
		t.Errorf("Write after a failed write: %v, want %v", err, errFull)
	}
	if err := q.flush(); !errors.Is(err, errFull) || w.String() != "first\n" {
		t.Errorf("flush: %v, written %q; want %v and only the first line", err, w.String(), errFull)
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
			if held := ownBPFObjects(t); len(held) != 0 {
				t.Errorf("process holds %v after the run, its output still blocked", held)
			}
		})
	}
}
