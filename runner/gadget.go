package runner

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Names of the global variables through which a gadget describes itself. They
// are never read at run time; only their BTF names matter.
const (
	tracerPrefix    = "gadget_tracer_"
	markerSeparator = "___"
	lostSuffix      = "_lost_samples"
)

// gadget is what the ELF conventions say about a gadget, found in its
// CollectionSpec before anything is loaded into the kernel.
type gadget struct {
	tracer  string             // tracer name, e.g. "exec"
	events  string             // ring buffer map the tracer's events come from
	lost    *ebpf.VariableSpec // "<events>_lost_samples" counter, nil if the gadget has none
	decoder *decoder           // decodes one event struct
	attach  []program          // programs to attach, sorted by name

	// A map iterator or a snapshotter (kind.go) has no tracer, events or
	// lost; its decoder decodes a map entry or a record.
	mapIter  *mapIter
	snapshot *snapshotter
}

// kind tells what sort of gadget g is.
func (g *gadget) kind() Kind {
	switch {
	case g.mapIter != nil:
		return KindMapIterator
	case g.snapshot != nil:
		return KindSnapshotter
	}
	return KindTracer
}

// parseGadget reads the tracer marker and checks everything it refers to.
// bpfleet runs exactly one tracer per gadget, fed by a BPF ring buffer or a
// perf event array.
// Map iterators and snapshotters are parsed by parseNonTracer instead.
func parseGadget(spec *ebpf.CollectionSpec) (*gadget, error) {
	if spec.Types == nil {
		return nil, errors.New("ELF has no BTF")
	}
	if g, err := parseNonTracer(spec); g != nil || err != nil {
		return g, err
	}
	var markers []string
	for typ, err := range spec.Types.All() {
		if err != nil {
			return nil, fmt.Errorf("read BTF: %w", err)
		}
		if v, ok := typ.(*btf.Var); ok && strings.HasPrefix(v.Name, tracerPrefix) {
			markers = append(markers, v.Name)
		}
	}
	switch len(markers) {
	case 0:
		return nil, fmt.Errorf("no %s*, %s* or %s* variable: not a tracer gadget, map iterator or snapshotter",
			tracerPrefix, mapIterPrefix, snapshotterPrefix)
	case 1:
	default:
		slices.Sort(markers)
		return nil, fmt.Errorf("%d tracers (%s): only one per gadget is supported",
			len(markers), strings.Join(markers, ", "))
	}

	parts := strings.Split(strings.TrimPrefix(markers[0], tracerPrefix), markerSeparator)
	if len(parts) != 3 || slices.Contains(parts, "") {
		return nil, fmt.Errorf("malformed tracer marker %q: want %s<name>%s<map>%s<struct>",
			markers[0], tracerPrefix, markerSeparator, markerSeparator)
	}
	g := &gadget{tracer: parts[0], events: parts[1]}
	structName := parts[2]

	m, ok := spec.Maps[g.events]
	if !ok {
		return nil, fmt.Errorf("tracer %s: no map %q", g.tracer, g.events)
	}
	if m.Type != ebpf.RingBuf && m.Type != ebpf.PerfEventArray {
		return nil, fmt.Errorf("tracer %s: map %s is a %s, want a ring buffer or a perf event array", g.tracer, g.events, m.Type)
	}

	var event *btf.Struct
	if err := spec.Types.TypeByName(structName, &event); err != nil {
		return nil, fmt.Errorf("tracer %s: event struct %s: %w", g.tracer, structName, err)
	}
	dec, err := newDecoder(event)
	if err != nil {
		return nil, fmt.Errorf("tracer %s: %w", g.tracer, err)
	}
	g.decoder = dec

	if v, ok := spec.Variables[g.events+lostSuffix]; ok {
		section := spec.Maps[v.SectionName]
		if v.Size() != 8 || v.Constant() || section == nil || v.Offset+8 > section.ValueSize {
			return nil, fmt.Errorf("tracer %s: %s must be a writable 8-byte counter", g.tracer, v.Name)
		}
		g.lost = v
	}

	g.attach, err = planAttach(spec)
	if err != nil {
		return nil, err
	}
	return g, nil
}
