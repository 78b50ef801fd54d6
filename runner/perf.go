package runner

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/perf"
	"github.com/cilium/ebpf/ringbuf"
)

// A tracer's events reach user space through its map: a BPF ring buffer,
// one for all CPUs, or a perf event array, one buffer per CPU. Older
// Inspektor Gadget gadgets declare perf event arrays, and gadget/buffer.h
// falls back to one on kernels without ring buffers (see matchTracerMap).

// perfBufferPerCPU is the size of each CPU's perf buffer: as much as the
// built-in gadgets' ring buffers hold for all CPUs together, since a burst
// of events usually comes from one CPU.
const perfBufferPerCPU = 256 << 10

// eventReader reads a tracer's events.
type eventReader interface {
	// next returns the next event's bytes, valid until the following call.
	// After Close it fails with an error matching os.ErrClosed.
	next() ([]byte, error)
	// Close interrupts a blocked next and releases the buffers.
	Close() error
}

// newEventReader opens a reader on tracer map m. Events a perf buffer drops
// because it is full are added to stats.Lost as the kernel reports them.
func newEventReader(m *ebpf.Map, stats *Stats) (eventReader, error) {
	switch m.Type() {
	case ebpf.RingBuf:
		rd, err := ringbuf.NewReader(m)
		if err != nil {
			return nil, fmt.Errorf("ring buffer: %w", err)
		}
		return &ringbufReader{rd: rd}, nil
	case ebpf.PerfEventArray:
		rd, err := perf.NewReader(m, perfBufferPerCPU)
		if err != nil {
			return nil, fmt.Errorf("perf event array: %w", err)
		}
		return &perfReader{rd: rd, lost: &stats.Lost}, nil
	}
	return nil, fmt.Errorf("a %s map does not carry events", m.Type())
}

type ringbufReader struct {
	rd  *ringbuf.Reader
	rec ringbuf.Record
}

func (r *ringbufReader) next() ([]byte, error) {
	if err := r.rd.ReadInto(&r.rec); err != nil {
		return nil, err
	}
	return r.rec.RawSample, nil
}

func (r *ringbufReader) Close() error { return r.rd.Close() }

type perfReader struct {
	rd   *perf.Reader
	rec  perf.Record
	lost *uint64
}

// next skips the records by which the kernel reports, once a CPU's buffer
// has room again, how many samples it dropped there.
func (r *perfReader) next() ([]byte, error) {
	for {
		if err := r.rd.ReadInto(&r.rec); err != nil {
			return nil, err
		}
		if r.rec.LostSamples == 0 {
			return r.rec.RawSample, nil
		}
		*r.lost += r.rec.LostSamples
	}
}

func (r *perfReader) Close() error { return r.rd.Close() }
