package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

// snapshotter is a gadget_snapshotter_<name>___<struct>___<prog>... gadget:
// BPF iterator programs that write records of one struct with
// bpf_seq_write, read once.
type snapshotter struct {
	name     string
	programs []string // in the order the marker lists them
}

func parseSnapshotter(spec *ebpf.CollectionSpec, marker, rest string) (*gadget, error) {
	parts, err := markerParts(marker, rest, 3, 5, snapshotterPrefix+"<name>___<struct>___<program> (up to 3 programs)")
	if err != nil {
		return nil, err
	}
	s := &snapshotter{name: parts[0], programs: parts[2:]}
	var record *btf.Struct
	if err := spec.Types.TypeByName(parts[1], &record); err != nil {
		return nil, fmt.Errorf("snapshotter %s: record struct %s: %w", s.name, parts[1], err)
	}
	dec, err := newDecoder(record)
	if err != nil {
		return nil, fmt.Errorf("snapshotter %s: %w", s.name, err)
	}

	plan, err := planAttach(spec)
	if err != nil {
		return nil, err
	}
	// Every program is one of the snapshot's iterators: anything else would
	// be attached for nothing, as the run ends once they were read.
	for _, p := range plan {
		if !slices.Contains(s.programs, p.name) {
			return nil, fmt.Errorf("snapshotter %s: program %s (section %s) is not one of its iterators (%s)",
				s.name, p.name, p.section, marker)
		}
		if p.kind != attachIter {
			return nil, fmt.Errorf("snapshotter %s: program %s is in section %s, want iter/<target>", s.name, p.name, p.section)
		}
	}
	for i, name := range s.programs {
		if _, ok := spec.Programs[name]; !ok {
			return nil, fmt.Errorf("snapshotter %s: no program %q", s.name, name)
		}
		if slices.Contains(s.programs[:i], name) {
			return nil, fmt.Errorf("snapshotter %s: program %s is listed twice", s.name, name)
		}
	}
	return &gadget{decoder: dec, attach: plan, snapshot: s}, nil
}

// runSnapshot attaches each iterator in turn and reads all it writes, then
// prints the records until MaxEvents were printed; a done ctx or the
// timeout stops it between iterators and between records. The caller has
// loaded the gadget and releases it; the links are closed here, each once
// it was read. ran is false when the first iterator could not be read.
func runSnapshot(ctx context.Context, coll *ebpf.Collection, g *gadget, e *emitter) (ran bool, err error) {
	var records [][]byte
	for i, name := range g.snapshot.programs {
		if ctx.Err() != nil {
			return true, nil
		}
		at := slices.IndexFunc(g.attach, func(p program) bool { return p.name == name })
		recs, err := readIterator(g.attach[at], coll.Programs[name], g.decoder.size)
		if err != nil {
			return i > 0, fmt.Errorf("snapshotter %s: %w", g.snapshot.name, err)
		}
		records = append(records, recs...)
	}

	if err := e.printer.start(); err != nil {
		return true, fmt.Errorf("print: %w", err)
	}
	for _, rec := range records {
		if ctx.Err() != nil {
			return true, nil
		}
		if more, err := e.record(rec); err != nil || !more {
			return true, err
		}
	}
	return true, nil
}

// readIterator attaches the iterator program p, reads everything it writes
// and splits that into records of size bytes.
func readIterator(p program, prog *ebpf.Program, size uint32) ([][]byte, error) {
	l, err := p.attach(prog)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	rd, err := l.(*link.Iter).Open()
	if err != nil {
		return nil, fmt.Errorf("open iterator %s (section %s): %w", p.name, p.section, err)
	}
	defer rd.Close()
	out, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("read iterator %s (section %s): %w", p.name, p.section, err)
	}
	records, err := splitRecords(out, size)
	if err != nil {
		return nil, fmt.Errorf("iterator %s (section %s): %w", p.name, p.section, err)
	}
	return records, nil
}

// splitRecords cuts an iterator's output into records of size bytes. The
// programs write whole structs, so anything else means the gadget's record
// struct is not what they write.
func splitRecords(out []byte, size uint32) ([][]byte, error) {
	if size == 0 || uint32(len(out))%size != 0 {
		return nil, fmt.Errorf("wrote %d bytes, not a whole number of %d-byte records", len(out), size)
	}
	records := make([][]byte, 0, uint32(len(out))/size)
	for len(out) > 0 {
		records = append(records, out[:size:size])
		out = out[size:]
	}
	return records, nil
}

// iterLoadError explains a refused load of a gadget whose iterator has no
// target in this kernel: each kind of BPF iterator (task, task_file, ...)
// is a kernel function bpf_iter_<target> found through the kernel's BTF,
// and kernels before 5.8 have none. It returns nil for any other refusal.
func iterLoadError(plan []program, err error) error {
	kernel, kerr := btf.LoadKernelSpec()
	if kerr != nil {
		return nil // loadError names the missing BTF
	}
	for _, p := range plan {
		if p.kind != attachIter {
			continue
		}
		var fn *btf.Func
		if kerr := kernel.TypeByName("bpf_iter_"+p.target, &fn); errors.Is(kerr, btf.ErrNotFound) {
			return fmt.Errorf("load: program %s (section %s) is a BPF iterator over %q, which this kernel does not have (no bpf_iter_%s in its BTF; BPF iterators need Linux 5.8 or later): %w",
				p.name, p.section, p.target, p.target, err)
		}
	}
	return nil
}
