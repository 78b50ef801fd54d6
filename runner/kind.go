package runner

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Marker prefixes of the gadget kinds that are not tracers.
const (
	mapIterPrefix     = "gadget_mapiter_"
	snapshotterPrefix = "gadget_snapshotter_"
)

// parseNonTracer reads the gadget's map iterator or snapshotter marker. It
// returns nil and no error when the gadget has neither, leaving tracers to
// parseGadget. A gadget is exactly one tracer, map iterator or snapshotter:
// two markers of any kinds are refused.
func parseNonTracer(spec *ebpf.CollectionSpec) (*gadget, error) {
	var markers []string
	nonTracer := 0
	for typ, err := range spec.Types.All() {
		if err != nil {
			return nil, fmt.Errorf("read BTF: %w", err)
		}
		v, ok := typ.(*btf.Var)
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(v.Name, mapIterPrefix), strings.HasPrefix(v.Name, snapshotterPrefix):
			nonTracer++
		case !strings.HasPrefix(v.Name, tracerPrefix):
			continue
		}
		markers = append(markers, v.Name)
	}
	if nonTracer == 0 {
		return nil, nil
	}
	if len(markers) > 1 {
		slices.Sort(markers)
		return nil, fmt.Errorf("%d gadget markers (%s): a gadget is exactly one tracer, map iterator or snapshotter",
			len(markers), strings.Join(markers, ", "))
	}
	if name, ok := strings.CutPrefix(markers[0], mapIterPrefix); ok {
		return parseMapIter(spec, markers[0], name)
	}
	return parseSnapshotter(spec, markers[0], strings.TrimPrefix(markers[0], snapshotterPrefix))
}

// markerParts splits what follows a marker's prefix at "___" and checks that
// there are between min and max non-empty parts; want describes the form.
func markerParts(marker, rest string, min, max int, want string) ([]string, error) {
	parts := strings.Split(rest, markerSeparator)
	if len(parts) < min || len(parts) > max || slices.Contains(parts, "") {
		return nil, fmt.Errorf("malformed marker %q: want %s", marker, want)
	}
	return parts, nil
}

// structType resolves typ, as a map declares its key or value, to a struct.
func structType(typ btf.Type) (*btf.Struct, bool) {
	_, t := resolve(typ)
	s, ok := t.(*btf.Struct)
	return s, ok
}
