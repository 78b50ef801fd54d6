package runner

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
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
	lines  chan queuedLine
	stop   <-chan struct{} // the run's end
	failed chan struct{}   // closed once a write failed; err says why
	err    error
	wrote  chan struct{} // signalled after each write that went through
	ended  chan struct{} // closed once every line was written, or a write failed

	nextIsEvent bool     // set by event for the next Write
	queued      progress // what Write took, on Run's goroutine
	// written is the progress of the last line written whole, stored by the
	// writer goroutine: what the output took of what was queued.
	written atomic.Pointer[progress]
}

// progress counts lines, and the events among them (a header or a round's
// heading is not one), from the first line queued.
type progress struct{ lines, events uint64 }

// queuedLine is a line and the queue's progress once it was queued.
type queuedLine struct {
	text []byte
	at   progress
}

// maxBatch bounds what one write to the output holds.
const maxBatch = 64 << 10

func newOutputQueue(w io.Writer, stop <-chan struct{}) *outputQueue {
	q := &outputQueue{w: w, lines: make(chan queuedLine, 4096), stop: stop, failed: make(chan struct{}),
		wrote: make(chan struct{}, 1), ended: make(chan struct{})}
	q.written.Store(&progress{})
	go q.write()
	return q
}

// event tells the queue that the next Write is an event's line, so that
// flush counts what it could not print in events.
func (q *outputQueue) event() { q.nextIsEvent = true }

// Write queues a copy of p: printers reuse their buffers.
func (q *outputQueue) Write(p []byte) (int, error) {
	at := q.queued
	at.lines++
	if q.nextIsEvent {
		at.events++
	}
	q.nextIsEvent = false
	line := queuedLine{append([]byte(nil), p...), at}
	select {
	case <-q.failed:
		return 0, q.err
	case <-q.stop:
		// Still queued when there is room: the lines of the run's last
		// moments are printed if the output takes them.
		select {
		case q.lines <- line:
		default:
			return 0, errRunEnded
		}
	case q.lines <- line:
	}
	q.queued = at
	return len(p), nil
}

func (q *outputQueue) write() {
	defer close(q.ended)
	var batch []byte
	for line := range q.lines {
		batch = append(batch[:0], line.text...)
		at := line.at
	more:
		for len(batch) < maxBatch {
			select {
			case l, ok := <-q.lines:
				if !ok {
					break more
				}
				batch = append(batch, l.text...)
				at = l.at
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
		q.written.Store(&at)
		select {
		case q.wrote <- struct{}{}:
		default:
		}
	}
}

// flush waits until every queued line was written and returns the first
// write error, and how many of the events queued were not written: after a
// failed write, or when flush gave up. A slow output is waited for as long
// as it takes lines; one that takes nothing for stallTimeout is given up on,
// with an error that says how many lines were not printed (those of a write
// still blocked included: the output may have taken some of its bytes), and
// a goroutine is left blocked on it until it takes them or the process
// exits. No Write may follow.
func (q *outputQueue) flush() (unprinted uint64, err error) {
	close(q.lines)
	stalled := time.NewTimer(stallTimeout)
	defer stalled.Stop()
	for {
		select {
		case <-q.ended:
			return q.queued.events - q.written.Load().events, q.err
		case <-q.wrote:
			stalled.Reset(stallTimeout)
		case <-stalled.C:
			written := q.written.Load()
			return q.queued.events - written.events, fmt.Errorf("the output took nothing for %v: gave up on %d unprinted line(s)",
				stallTimeout, q.queued.lines-written.lines)
		}
	}
}
