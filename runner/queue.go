package runner

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// errRunEnded is what a write returns when the run ended while the output
// was not taking lines: the run's end, not an error of its own.
var errRunEnded = errors.New("the run ended while its output was blocked")

// stallTimeout is how long the end of a run waits for an output that takes
// nothing before it gives up on the lines still queued.
const stallTimeout = time.Second

// outputQueue writes a run's output on a goroutine of its own, so that a
// reader of stdout that stopped reading (a full pipe, a stalled SSH session,
// a terminal on hold) cannot keep the run from ending and the gadget
// attached: Write waits only while the queue is full, and not past the
// run's end. Lines that arrive together are written together.
type outputQueue struct {
	w      io.Writer
	lines  chan []byte
	stop   <-chan struct{} // the run's end
	failed chan struct{}   // closed once a write failed; err says why
	err    error
	wrote  chan struct{} // signalled after each write that went through
	ended  chan struct{} // closed once every line was written, or a write failed
}

// maxBatch bounds what one write to the output holds.
const maxBatch = 64 << 10

func newOutputQueue(w io.Writer, stop <-chan struct{}) *outputQueue {
	q := &outputQueue{w: w, lines: make(chan []byte, 4096), stop: stop, failed: make(chan struct{}),
		wrote: make(chan struct{}, 1), ended: make(chan struct{})}
	go q.write()
	return q
}

// Write queues a copy of p: printers reuse their buffers.
func (q *outputQueue) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...)
	select {
	case <-q.failed:
		return 0, q.err
	case <-q.stop:
		// Still queued when there is room: the lines of the run's last
		// moments are printed if the output takes them.
		select {
		case q.lines <- line:
			return len(p), nil
		default:
			return 0, errRunEnded
		}
	case q.lines <- line:
		return len(p), nil
	}
}

func (q *outputQueue) write() {
	defer close(q.ended)
	var batch []byte
	for line := range q.lines {
		batch = append(batch[:0], line...)
	more:
		for len(batch) < maxBatch {
			select {
			case l, ok := <-q.lines:
				if !ok {
					break more
				}
				batch = append(batch, l...)
			default:
				break more
			}
		}
		if _, err := q.w.Write(batch); err != nil {
			q.err = err
			close(q.failed)
			for range q.lines { // until flush: Write must never block on a dead queue
			}
			return
		}
		select {
		case q.wrote <- struct{}{}:
		default:
		}
	}
}

// flush waits until every queued line was written and returns the first
// write error. A slow output is waited for as long as it takes lines; one
// that takes nothing for stallTimeout is given up on, with an error that
// says how many lines were not printed, and a goroutine is left blocked on
// it until it takes them or the process exits. No Write may follow.
func (q *outputQueue) flush() error {
	close(q.lines)
	stalled := time.NewTimer(stallTimeout)
	defer stalled.Stop()
	for {
		select {
		case <-q.ended:
			return q.err
		case <-q.wrote:
			stalled.Reset(stallTimeout)
		case <-stalled.C:
			return fmt.Errorf("the output took nothing for %v: gave up on %d unprinted line(s)", stallTimeout, len(q.lines))
		}
	}
}
