package runner

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// errUnsupportedAttach is returned for a program whose ELF section names an
// attach type bpfleet does not implement.
var errUnsupportedAttach = errors.New("unsupported attach type")

type attachKind int

const (
	attachTracepoint attachKind = iota
	attachRawTracepoint
	attachBTFTracepoint
)

// program says how one program of the gadget is attached.
type program struct {
	name    string // key in CollectionSpec.Programs
	section string
	kind    attachKind
	group   string // tracepoint category; tracepoints only
	target  string // tracepoint name
}

// planAttach decides, from the section names alone, how every program is
// attached, so a gadget asking for an unsupported hook is refused before any
// of it is loaded into the kernel.
func planAttach(spec *ebpf.CollectionSpec) ([]program, error) {
	if len(spec.Programs) == 0 {
		return nil, errors.New("ELF has no programs")
	}
	names := slices.Sorted(maps.Keys(spec.Programs))
	plan := make([]program, 0, len(names))
	for _, name := range names {
		p, err := parseSection(spec.Programs[name].SectionName)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", name, err)
		}
		p.name = name
		plan = append(plan, p)
	}
	return plan, nil
}

func parseSection(section string) (program, error) {
	p := program{section: section}
	kind, rest, found := strings.Cut(section, "/")
	if !found || rest == "" {
		return p, fmt.Errorf("section %q: %w %q", section, errUnsupportedAttach, kind)
	}
	switch kind {
	case "tracepoint":
		group, name, ok := strings.Cut(rest, "/")
		if !ok || group == "" || name == "" || strings.Contains(name, "/") {
			return p, fmt.Errorf("section %q: want tracepoint/<category>/<name>", section)
		}
		p.kind, p.group, p.target = attachTracepoint, group, name
	case "raw_tracepoint", "raw_tp":
		p.kind, p.target = attachRawTracepoint, rest
	case "tp_btf":
		p.kind, p.target = attachBTFTracepoint, rest
	default:
		return p, fmt.Errorf("section %q: %w %q", section, errUnsupportedAttach, kind)
	}
	return p, nil
}

// attach attaches p. The caller owns the returned link and must close it.
func (p program) attach(prog *ebpf.Program) (link.Link, error) {
	var (
		l   link.Link
		err error
	)
	switch p.kind {
	case attachTracepoint:
		l, err = link.Tracepoint(p.group, p.target, prog, nil)
	case attachRawTracepoint:
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.target, Program: prog})
	case attachBTFTracepoint:
		// The target was resolved from the section name when the program was loaded.
		l, err = link.AttachTracing(link.TracingOptions{Program: prog})
	}
	if err != nil {
		return nil, fmt.Errorf("attach %s (section %s): %w", p.name, p.section, err)
	}
	return l, nil
}
