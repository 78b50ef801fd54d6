package runner

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfleet/bpfleet/verify"
)

// Options controls a run. The zero value prints columns to os.Stdout until
// the context is done.
type Options struct {
	// Output is where events are printed; nil means os.Stdout, io.Discard
	// prints nothing. A file (a pipe, a terminal) is written to from a queue
	// (see the package doc), any other writer directly, on Run's goroutine.
	Output    io.Writer
	Format    Format        // FormatColumns (default) or FormatJSON
	Timeout   time.Duration // stop this long after Run began; 0 means until ctx is done
	MaxEvents int           // stop after this many events passed Filters; 0 means no limit
	// Params sets the gadget's parameters by name (see [Params]); the others
	// keep their defaults. Values are parsed by the parameter's type.
	Params map[string]string
	// Fields selects the fields printed, in that order, by name as in
	// [Field.Name]; nil prints them all.
	Fields []string
	// Filters keep only the events that match every one of them; the others
	// are counted in Stats.Filtered and neither printed nor passed to OnEvent.
	Filters []Filter
	// OnEvent, if set, is called with every event (all its fields, whatever
	// Fields says) after it is printed, on Run's goroutine: while it runs no
	// events are read, and a full ring buffer loses events.
	OnEvent func(Event)
	// Interval is how often a map iterator gadget's map is read, printed
	// and cleared; 0 means DefaultInterval. Other gadgets ignore it.
	Interval time.Duration
	// Width, if positive, is the width of the terminal FormatColumns prints
	// to, in characters: each line is fitted to it if it can be (see
	// FormatColumns). 0 prints values whole, as a pipe or a file wants them.
	Width int

	// Set by Run from the verified image, and by tests (btfgen.go).
	btfgen    []byte                    // the image's btfgen layer; nil if it has none
	kernelBTF func() (*btf.Spec, error) // the kernel's BTF; nil means the kernel's own, as cilium/ebpf finds it
}

// Kind is what sort of gadget ran: its events, rows or records are counted
// alike in Stats, but they are not the same thing.
type Kind string

// The kinds of gadget (doc.go, Map iterators and snapshotters).
const (
	KindTracer      Kind = "tracer"       // Stats count events
	KindMapIterator Kind = "map iterator" // Stats count rows, in Rounds
	KindSnapshotter Kind = "snapshotter"  // Stats count records
)

// Stats describes what a run printed. Events, rows or records that were
// never looked at, such as the rest of a map iterator's round once
// MaxEvents was reached, are not counted: Events - Filtered - Unprinted
// were printed.
type Stats struct {
	Kind Kind
	// Events counts the tracer's events, the map iterator's rows or the
	// snapshotter's records that were printed, left out by Options.Filters,
	// or not printed because the output failed or stopped taking them.
	Events   uint64
	Filtered uint64 // events, rows or records left out by Options.Filters
	// Unprinted counts the events, rows or records that passed the filters
	// but were never written whole to the output: its write failed, or the
	// output stopped taking lines and the run's end gave up on them (see
	// the package doc).
	Unprinted uint64
	Lost      uint64 // events dropped, mostly because the ring buffer or a CPU's perf buffer was full
	Rounds    uint64 // rounds a map iterator printed (a heading each in columns); 0 for other kinds
}

// Printed is how many events, rows or records were printed.
func (s *Stats) Printed() uint64 { return s.Events - s.Filtered - s.Unprinted }

// Run loads and attaches an approved gadget and prints its events until ctx
// is done, the timeout passes or MaxEvents is reached; those three end a run
// without error. Everything Run created in the kernel is released before it
// returns. The returned Stats is nil when the gadget never ran: it failed a
// check (parameters, fields, filters, ...) or the kernel refused to load it.
// Otherwise it is not nil, and after an error it tells what was seen before.
func Run(ctx context.Context, g *verify.Approved, opts Options) (*Stats, error) {
	opts.btfgen = g.BTFGen()
	return run(ctx, g.Ref(), g.Program(), opts)
}

// run does Run's work on a gadget ELF that does not need to come from
// verify, so tests can run objects they build.
func run(ctx context.Context, name string, elf []byte, opts Options) (*Stats, error) {
	if opts.Timeout < 0 || opts.MaxEvents < 0 || opts.Interval < 0 {
		return nil, fmt.Errorf("run gadget %s: negative Timeout, MaxEvents or Interval", name)
	}
	runCtx := ctx
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	out := opts.Output
	if out == nil {
		out = os.Stdout
	}
	// A file (stdout: a pipe, a terminal) can block; other writers are the
	// caller's own and are written to directly, on Run's goroutine.
	var q *outputQueue
	if f, ok := out.(*os.File); ok {
		q = newOutputQueue(f, runCtx.Done())
		out = q
	}
	stats, err := runGadget(runCtx, elf, opts, out)
	if errors.Is(err, errRunEnded) {
		err = nil // the output was blocked when the run ended: the end, not a failure
	}
	// Everything the run created in the kernel is released by now; what it
	// printed is still written, if the output takes it.
	if q != nil {
		unprinted, ferr := q.flush()
		if stats != nil {
			stats.Unprinted += unprinted
		}
		if ferr != nil && err == nil {
			err = fmt.Errorf("print: %w", ferr)
		}
	}
	if err != nil {
		return stats, fmt.Errorf("run gadget %s: %w", name, err)
	}
	return stats, nil
}

// loadError explains a refused load.
func loadError(plan []program, target *coreTarget, err error) error {
	if target.missing != "" {
		return fmt.Errorf("load: %s, and the gadget is compiled for CO-RE against it: %w", target.missing, err)
	}
	// Without the privilege, cilium/ebpf's hint (raise RLIMIT_MEMLOCK) would
	// send a user the wrong way.
	if errors.Is(err, unix.EPERM) {
		if caps, cerr := effectiveCapabilities(); cerr == nil {
			if reason := privilegeRefusal(caps); reason != "" {
				return fmt.Errorf("load: %s: %w", reason, unix.EPERM)
			}
		}
	}
	// An fentry/fexit program refused with EPERM before the verifier ran:
	// cilium/ebpf then suggests raising RLIMIT_MEMLOCK, which kernels since
	// 5.11 no longer charge, so say what the kernel refuses instead.
	if p, ok := failedProgram(plan, err); ok && (p.kind == attachFentry || p.kind == attachFexit) && errors.Is(err, unix.EPERM) {
		err = fmt.Errorf("%s program %s (section %s) is refused by this kernel: %s: %w",
			strings.SplitN(p.section, "/", 2)[0], p.name, p.section, trampolineRefusal(p.target), unix.EPERM)
	}
	if target.entry != "" {
		err = fmt.Errorf("with CO-RE types from the image's btfgen entry %s: %w", target.entry, err)
	}
	if ierr := iterLoadError(plan, err); ierr != nil {
		return ierr
	}
	return fmt.Errorf("load: %w", err)
}

// failedProgram finds the program whose load err reports. cilium/ebpf loads
// a collection's programs in no fixed order and names the one that failed
// ("program <name>: ...").
func failedProgram(plan []program, err error) (program, bool) {
	for _, p := range plan {
		if strings.Contains(err.Error(), "program "+p.name+": ") {
			return p, true
		}
	}
	return program{}, false
}

// runGadget runs the gadget until ctx is done (the caller's end or the
// timeout), printing to out. It returns nil Stats until the gadget is
// attached: nothing ran.
func runGadget(ctx context.Context, elf []byte, opts Options, out io.Writer) (*Stats, error) {
	// Everything about the gadget is checked before the first kernel object exists.
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(elf))
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	g, err := parseGadget(spec)
	if err != nil {
		return nil, err
	}
	params, err := parseParams(spec)
	if err != nil {
		return nil, err
	}
	if err := applyParams(spec, params, opts.Params); err != nil {
		return nil, err
	}
	v, err := newView(g.decoder, opts.Fields, opts.Filters)
	if err != nil {
		return nil, err
	}
	if g.mapIter != nil && opts.Format == FormatJSON {
		for _, c := range v.columns {
			if g.decoder.fields[c].name == roundKey {
				return nil, fmt.Errorf("map iterator %s: field %s would clash with the %q member JSON rows get; leave it out with Options.Fields",
					g.mapIter.name, roundKey, roundKey)
			}
		}
	}
	p, err := newPrinter(out, opts.Format, g.decoder, v.columns, opts.Width)
	if err != nil {
		return nil, err
	}
	for _, prog := range g.attach {
		if prog.kind == attachTracepoint {
			if err := ensureTracefs(); err != nil {
				return nil, err
			}
			break
		}
	}

	// For every global variable, cilium/ebpf maps its section's memory into
	// this process and only unmaps it when the garbage collector finds it
	// unused, which would keep those maps in the kernel after Close. The
	// programs do not need the accessors, so none are created; parameters
	// were written into the sections' contents, which the loader then uses.
	spec.Variables = nil
	loadOpts, target, err := prepareLoad(spec, g.events, opts)
	if err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, loadOpts)
	if err != nil {
		return nil, loadError(g.attach, target, err)
	}
	defer coll.Close()

	stats := &Stats{Kind: g.kind()}
	queue, _ := out.(*outputQueue)
	e := &emitter{dec: g.decoder, view: v, printer: p, queue: queue, onEvent: opts.OnEvent, maxEvents: opts.MaxEvents, stats: stats}
	if ran, err := runLoaded(ctx, coll, g, e, opts); !ran {
		return nil, err
	} else if err != nil {
		return stats, err
	}
	return stats, nil
}

// runLoaded attaches the loaded gadget and runs it until its end; ran is
// false when it failed before it was attached. The caller closes coll;
// runLoaded closes everything else it opens.
func runLoaded(ctx context.Context, coll *ebpf.Collection, g *gadget, e *emitter, opts Options) (ran bool, err error) {
	stats := e.stats
	if g.snapshot != nil {
		return runSnapshot(ctx, coll, g, e)
	}
	// A tracer's reader opens before its programs are attached: a perf event
	// array drops what a CPU sends before that CPU's buffer exists.
	var rd eventReader
	if g.mapIter == nil {
		var err error
		if rd, err = newEventReader(coll.Maps[g.events], stats); err != nil {
			return false, fmt.Errorf("read events from %s: %w", g.events, err)
		}
		defer rd.Close() // when attaching fails; closing it twice is harmless
	}
	for _, prog := range g.attach {
		l, err := prog.attach(coll.Programs[prog.name])
		if err != nil {
			return false, err
		}
		defer l.Close()
	}

	if g.mapIter != nil {
		return true, runMapIter(ctx, coll, g, e, opts)
	}
	// Closing the reader is how a blocked read learns that ctx is done. If that
	// already began, wait for it to finish: the reader maps the ring buffer's
	// (or perf buffers') memory, which keeps the map alive until it is unmapped.
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		rd.Close()
		close(closed)
	})
	defer func() {
		if stop() {
			rd.Close()
		} else {
			<-closed
		}
	}()

	if err := e.printer.start(); err != nil {
		return true, fmt.Errorf("print: %w", err)
	}
	err = readEvents(rd, e)
	if errors.Is(err, os.ErrClosed) && ctx.Err() != nil {
		err = nil
	}
	if g.lost != nil {
		lost, lerr := readCounter(coll.Maps[g.lost.SectionName], g.lost)
		if lerr != nil {
			err = errors.Join(err, fmt.Errorf("read %s: %w", g.lost.Name, lerr))
		}
		stats.Lost += lost
	}
	return true, err
}

// readCounter reads a 64-bit global variable through its section's map.
func readCounter(section *ebpf.Map, v *ebpf.VariableSpec) (uint64, error) {
	value, err := section.LookupBytes(uint32(0))
	if err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint64(value[v.Offset:]), nil
}

// readEvents emits the tracer's events until MaxEvents passed the filters
// or reading fails (os.ErrClosed once the run's end closed the reader).
func readEvents(rd eventReader, e *emitter) error {
	for {
		sample, err := rd.next()
		if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		if more, err := e.record(sample); err != nil || !more {
			return err
		}
	}
}

// emitter takes what a gadget produces to the caller, the same way for a
// tracer's events, a snapshotter's records and a map iterator's rows: it
// counts them in stats, leaves out (and counts) those the filters reject,
// prints the others and then passes them to OnEvent.
type emitter struct {
	dec       *decoder
	view      *view
	printer   printer
	queue     *outputQueue // what printer writes to, if a queue; nil otherwise
	onEvent   func(Event)
	maxEvents int // 0: no limit
	stats     *Stats
}

// record decodes and emits one raw event or record. more is false once
// maxEvents events have passed the filters.
func (e *emitter) record(raw []byte) (more bool, err error) {
	e.stats.Events++
	ev, err := e.dec.decode(raw)
	if err != nil {
		return false, fmt.Errorf("decode event: %w", err)
	}
	if !e.keep(ev) {
		return true, nil
	}
	if err := e.show(ev); err != nil {
		return false, err
	}
	return e.maxEvents == 0 || e.stats.Events-e.stats.Filtered < uint64(e.maxEvents), nil
}

// keep tells whether ev passes the filters, counting it in Stats.Filtered
// when it does not.
func (e *emitter) keep(ev Event) bool {
	if e.view.match(ev) {
		return true
	}
	e.stats.Filtered++
	return false
}

// show prints ev, then passes it to OnEvent. An event the output refused
// counts in Stats.Unprinted; the queue's flush counts those it took but
// could not write.
func (e *emitter) show(ev Event) error {
	if e.queue != nil {
		e.queue.event()
	}
	if err := e.printer.print(ev); err != nil {
		e.stats.Unprinted++
		return fmt.Errorf("print: %w", err)
	}
	if e.onEvent != nil {
		e.onEvent(ev)
	}
	return nil
}
