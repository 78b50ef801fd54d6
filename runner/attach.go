package runner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
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
	attachKprobe
	attachKretprobe
	attachFentry
	attachFexit
	attachUprobe
	attachUretprobe
	attachSocketFilter
	attachIter
)

// program says how one program of the gadget is attached.
type program struct {
	name    string // key in CollectionSpec.Programs
	section string
	kind    attachKind
	group   string // tracepoint category; tracepoints only
	target  string // tracepoint name, kernel function, iterator target (task) or, for uprobes, the symbol
	path    string // uprobes only: the executable or library
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
	// socket and socket/<anything>: a socket filter, which needs no target.
	if section == "socket" || strings.HasPrefix(section, "socket/") {
		p.kind = attachSocketFilter
		return p, nil
	}
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
	case "iter":
		// The target (task, task_file, tcp, ...) was resolved when the program was loaded.
		// Iterators over one map's elements would need that map at attach time.
		if rest == "bpf_map_elem" || rest == "bpf_sk_storage_map" || rest == "sockmap" {
			return p, fmt.Errorf("section %q: %w: iterators over a map's elements", section, errUnsupportedAttach)
		}
		p.kind, p.target = attachIter, rest
	case "kprobe", "kretprobe", "fentry", "fexit":
		// A kernel function, by name only (no +offset, no module prefix).
		if strings.ContainsAny(rest, "/+: \t") {
			return p, fmt.Errorf("section %q: want %s/<kernel function>", section, kind)
		}
		p.kind = map[string]attachKind{"kprobe": attachKprobe, "kretprobe": attachKretprobe,
			"fentry": attachFentry, "fexit": attachFexit}[kind]
		p.target = rest
	case "uprobe", "uretprobe":
		// uprobe/<absolute path>:<symbol>; the path may itself contain '/'.
		i := strings.LastIndexByte(rest, ':')
		if i <= 0 || i == len(rest)-1 || !strings.HasPrefix(rest, "/") || strings.ContainsAny(rest[i+1:], "/+ \t") {
			return p, fmt.Errorf("section %q: want %s/<absolute path>:<symbol>", section, kind)
		}
		p.kind = map[string]attachKind{"uprobe": attachUprobe, "uretprobe": attachUretprobe}[kind]
		p.path, p.target = rest[:i], rest[i+1:]
	default:
		return p, fmt.Errorf("section %q: %w %q", section, errUnsupportedAttach, kind)
	}
	return p, nil
}

// attach attaches p. The caller owns the returned link (a [link.Link], or
// for a socket filter the socket running it) and must close it.
func (p program) attach(prog *ebpf.Program) (io.Closer, error) {
	var (
		l   io.Closer
		err error
	)
	switch p.kind {
	case attachTracepoint:
		l, err = link.Tracepoint(p.group, p.target, prog, nil)
	case attachRawTracepoint:
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.target, Program: prog})
	case attachBTFTracepoint, attachFentry, attachFexit:
		// The target was resolved from the section name when the program was loaded.
		l, err = link.AttachTracing(link.TracingOptions{Program: prog})
		if errors.Is(err, ebpf.ErrNotSupported) && p.kind != attachBTFTracepoint {
			err = fmt.Errorf("fentry/fexit are not supported by this kernel (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, BPF trampolines): %w", err)
		}
	case attachKprobe, attachKretprobe:
		if err = probesSupported("kprobe"); err == nil {
			if p.kind == attachKprobe {
				l, err = link.Kprobe(p.target, prog, nil)
			} else {
				l, err = link.Kretprobe(p.target, prog, nil)
			}
			if errors.Is(err, ebpf.ErrNotSupported) {
				err = fmt.Errorf("kprobes are not supported by this kernel (CONFIG_KPROBES): %w", err)
			}
		}
	case attachUprobe, attachUretprobe:
		if err = probesSupported("uprobe"); err == nil {
			var ex *link.Executable
			if ex, err = link.OpenExecutable(p.path); err == nil {
				if p.kind == attachUprobe {
					l, err = ex.Uprobe(p.target, prog, nil)
				} else {
					l, err = ex.Uretprobe(p.target, prog, nil)
				}
			}
			if errors.Is(err, ebpf.ErrNotSupported) {
				err = fmt.Errorf("uprobes are not supported by this kernel (CONFIG_UPROBES): %w", err)
			}
		}
	case attachSocketFilter:
		l, err = openSocketFilter(prog)
	case attachIter:
		// A *link.Iter: reading it runs the program (see readIterator).
		l, err = link.AttachIter(link.IterOptions{Program: prog})
	default:
		err = fmt.Errorf("%w %d", errUnsupportedAttach, p.kind)
	}
	if err != nil {
		return nil, fmt.Errorf("attach %s (section %s): %w", p.name, p.section, err)
	}
	return l, nil
}

// sysfsEventSources and tracefsDirs are where the kernel offers the two ways
// cilium/ebpf creates a k- or uprobe: a perf PMU, or the tracefs probe_events
// file. Variables so tests can point them elsewhere.
var (
	sysfsEventSources = "/sys/bus/event_source/devices"
	tracefsDirs       = []string{tracefsDir, "/sys/kernel/debug/tracing"}
)

// probesSupported tells whether the kernel can create probes of type typ
// ("kprobe" or "uprobe"), so that a kernel built without them gets an error
// that names the missing feature rather than a missing file. It returns an
// error wrapping [ebpf.ErrNotSupported] when it cannot.
func probesSupported(typ string) error {
	if _, err := os.Stat(filepath.Join(sysfsEventSources, typ, "type")); err == nil {
		return nil
	}
	// Without the PMU, cilium/ebpf falls back to tracefs, which a minimal
	// init may not have mounted.
	ensureTracefs()
	for _, dir := range tracefsDirs {
		if _, err := os.Stat(filepath.Join(dir, typ+"_events")); err == nil {
			return nil
		}
	}
	config := map[string]string{"kprobe": "CONFIG_KPROBES", "uprobe": "CONFIG_UPROBES"}[typ]
	return fmt.Errorf("%ss are not supported by this kernel (%s): no %s PMU in %s and no %s_events in tracefs: %w",
		typ, config, typ, sysfsEventSources, typ, ebpf.ErrNotSupported)
}

// lockdownFile tells the kernel's lockdown mode when securityfs is mounted.
// A variable so tests can point it elsewhere.
var lockdownFile = "/sys/kernel/security/lockdown"

// trampolineRefusal says, as far as bpfleet can tell, why the kernel refused
// with EPERM to load an fentry/fexit program on kernel function fn. Such a
// program runs from a BPF trampoline that ftrace calls directly from fn's
// entry (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS); a kernel without them
// fails differently, at attach (see attach). A locked-down kernel
// (confidentiality) closes tracefs, and hardened kernels refuse ftrace's
// function hooks, which tracefs shows as available_filter_functions refused
// even to root.
func trampolineRefusal(fn string) string {
	mode := "unknown"
	if b, err := os.ReadFile(lockdownFile); err == nil {
		// "none [integrity] confidentiality": the mode in force is bracketed.
		if _, rest, ok := strings.Cut(string(b), "["); ok {
			mode, _, _ = strings.Cut(rest, "]")
		}
	}
	if mode == "confidentiality" {
		return "the kernel is locked down (lockdown: confidentiality)"
	}
	ensureTracefs()
	for _, dir := range tracefsDirs {
		path := filepath.Join(dir, "available_filter_functions")
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Sprintf("ftrace refuses to hook kernel functions, which BPF trampolines attach through (%v)", err)
		}
		defer f.Close()
		listed, err := listsFunction(f, fn)
		switch {
		case err != nil:
			return fmt.Sprintf("bpfleet cannot tell why: reading %s: %v", path, err)
		case !listed:
			return fmt.Sprintf("ftrace cannot hook %s (not in %s)", fn, path)
		}
		return fmt.Sprintf("bpfleet cannot tell why (lockdown: %s; ftrace can hook %s)", mode, fn)
	}
	return "the kernel has no dynamic ftrace (CONFIG_DYNAMIC_FTRACE: no available_filter_functions in tracefs), which BPF trampolines attach through"
}

// listsFunction tells whether available_filter_functions r lists kernel
// function fn. Its lines are "<function>" or "<function> [<module>]".
func listsFunction(r io.Reader, fn string) (bool, error) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		if name, _, _ := strings.Cut(s.Text(), " "); name == fn {
			return true, nil
		}
	}
	return false, s.Err()
}
