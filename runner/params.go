package runner

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/bpfleet/bpfleet/verify"
)

const (
	paramPrefix       = "gadget_param_"
	maxEntriesSuffix  = "_max_entries"
	paramTypeBool     = "bool"
	paramTypeString   = "string"
	constantSectionRO = ".rodata"
)

// Param is a parameter of a gadget: a const volatile global variable the
// gadget marks with a gadget_param_<name> variable. Its value is written
// into the program's read-only data before the program is loaded, so the
// verifier sees it as a constant.
type Param struct {
	Name string `json:"name"` // the variable's name, as given to Options.Params
	// Type is "bool", "int8" to "int64", "uint8" to "uint64", "string" for a
	// char array, "signal" for a gadget_signal (a name such as SIGTERM or
	// TERM, or a number) and "errno" for a gadget_errno (a name such as
	// ENOENT, or a number).
	Type string `json:"type"`
	// MaxLen is, for a string, the most bytes a value may have: the array's
	// length less one for the terminating NUL. 0 for other types.
	MaxLen  int    `json:"max_len,omitempty"`
	Default string `json:"default"` // the value the gadget was compiled with, as text
	// SizesMap is, for a parameter <map>_max_entries, the map whose
	// max_entries it sets; such a parameter must be positive. "" for others.
	SizesMap string `json:"sizes_map,omitempty"`
	// Description is what the gadget's metadata says of the parameter
	// (params.ebpf.<name>.description in its gadget.yaml); "" if nothing.
	Description string `json:"description,omitempty"`
}

// metadataParams is the part of a gadget's metadata that describes its
// parameters, as Inspektor Gadget's gadget.yaml has it.
type metadataParams struct {
	Params struct {
		EBPF map[string]struct {
			Description string `yaml:"description"`
		} `yaml:"ebpf"`
	} `yaml:"params"`
}

// paramSpec is a Param and where its bytes live.
type paramSpec struct {
	Param
	v      *ebpf.VariableSpec
	encode func(string) ([]byte, error)
}

// Params lists the parameters of an approved gadget, sorted by name, with
// the descriptions its metadata gives them, without loading anything into
// the kernel.
func Params(g *verify.Approved) ([]Param, error) {
	ps, err := params(g.Program(), g.Metadata())
	if err != nil {
		return nil, fmt.Errorf("gadget %s: %w", g.Ref(), err)
	}
	return ps, nil
}

// params lists the parameters of elf; metadata is the image's gadget.yaml
// (nil for none). The ELF alone says what the parameters are: metadata only
// describes them, and says nothing of parameters the program lacks.
func params(elf, metadata []byte) ([]Param, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(elf))
	if err != nil {
		return nil, fmt.Errorf("parse ELF: %w", err)
	}
	specs, err := parseParams(spec)
	if err != nil {
		return nil, err
	}
	meta, err := parseMetadata(metadata)
	if err != nil {
		return nil, err
	}
	out := make([]Param, len(specs))
	for i, p := range specs {
		out[i] = p.Param
		out[i].Description = strings.TrimSpace(meta.Params.EBPF[p.Name].Description)
	}
	return out, nil
}

// parseParams finds the gadget_param_<name> markers and checks that each
// names a constant global of a supported type.
func parseParams(spec *ebpf.CollectionSpec) ([]paramSpec, error) {
	if spec.Types == nil {
		return nil, errors.New("ELF has no BTF")
	}
	var names []string
	for typ, err := range spec.Types.All() {
		if err != nil {
			return nil, fmt.Errorf("read BTF: %w", err)
		}
		if v, ok := typ.(*btf.Var); ok && strings.HasPrefix(v.Name, paramPrefix) {
			names = append(names, strings.TrimPrefix(v.Name, paramPrefix))
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)

	out := make([]paramSpec, 0, len(names))
	for _, name := range names {
		p, err := newParamSpec(spec, name)
		if err != nil {
			return nil, fmt.Errorf("param %s: %w", name, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func newParamSpec(spec *ebpf.CollectionSpec, name string) (paramSpec, error) {
	v, ok := spec.Variables[name]
	if !ok || v.Type == nil {
		return paramSpec{}, fmt.Errorf("marked by %s%s but there is no global variable %s with BTF", paramPrefix, name, name)
	}
	if !v.Constant() {
		return paramSpec{}, fmt.Errorf("variable is in section %s: a parameter must be declared const volatile (section %s)",
			v.SectionName, constantSectionRO)
	}
	size := v.Size()
	if uint32(len(v.Value)) != size {
		return paramSpec{}, fmt.Errorf("initial value of %d bytes for a %d-byte variable", len(v.Value), size)
	}
	p := paramSpec{Param: Param{Name: name}, v: v}
	if m, ok := strings.CutSuffix(name, maxEntriesSuffix); ok && spec.Maps[m] != nil {
		p.SizesMap = m
	}

	tag, typ := resolve(v.Type.Type)
	switch t := typ.(type) {
	case *btf.Int:
		switch {
		case (tag == signalTag || tag == errnoTag) && t.Encoding&btf.Bool == 0 && (t.Size == 1 || t.Size == 2 || t.Size == 4 || t.Size == 8):
			p.Type, p.Default, p.encode = namedIntParam(tag, t, v.Value)
		case t.Encoding&btf.Bool != 0:
			p.Type = paramTypeBool
			p.Default = strconv.FormatBool(readUint(v.Value, t.Size) != 0)
			p.encode = func(s string) ([]byte, error) {
				b, err := strconv.ParseBool(s)
				if err != nil {
					return nil, fmt.Errorf("%q is not a bool (true or false; 1, 0, t and f also do)", s)
				}
				out := make([]byte, t.Size)
				if b {
					putUint(out, t.Size, 1)
				}
				return out, nil
			}
		case t.Size == 1 || t.Size == 2 || t.Size == 4 || t.Size == 8:
			signed := t.Encoding&btf.Signed != 0
			bits := int(8 * t.Size)
			if signed {
				p.Type = "int" + strconv.Itoa(bits)
				raw := readUint(v.Value, t.Size)
				p.Default = strconv.FormatInt(int64(raw<<(64-bits))>>(64-bits), 10)
			} else {
				p.Type = "uint" + strconv.Itoa(bits)
				p.Default = strconv.FormatUint(readUint(v.Value, t.Size), 10)
			}
			p.encode = intEncoder(p.Type, t.Size, signed)
		default:
			return paramSpec{}, fmt.Errorf("unsupported %d-byte integer", t.Size)
		}
	case *btf.Array:
		_, elem := resolve(t.Type)
		if !isChar(elem) || t.Nelems < 2 {
			return paramSpec{}, fmt.Errorf("unsupported type %s: arrays must be char arrays (strings) of 2 or more", typ)
		}
		n := int(t.Nelems)
		p.Type, p.MaxLen = paramTypeString, n-1
		def := v.Value
		if i := indexNUL(def); i >= 0 {
			def = def[:i]
		}
		p.Default = string(def)
		p.encode = func(s string) ([]byte, error) {
			if len(s) > n-1 {
				return nil, fmt.Errorf("%q is %d bytes: a string of at most %d bytes", s, len(s), n-1)
			}
			if strings.IndexByte(s, 0) >= 0 {
				return nil, fmt.Errorf("%q contains a NUL byte", s)
			}
			out := make([]byte, n)
			copy(out, s)
			return out, nil
		}
	default:
		return paramSpec{}, fmt.Errorf("unsupported type %s: want an integer, bool or char array", typ)
	}
	return p, nil
}

// namedIntParam describes a gadget_signal or gadget_errno parameter: its
// default prints by name as events do, and a value may be a name or a
// number. A signal name may leave out its SIG prefix, as kill(1) allows;
// names are not case-sensitive. An errno parameter holds the positive error
// number (ENOENT is 2).
func namedIntParam(tag string, t *btf.Int, initial []byte) (typeName, def string, encode func(string) ([]byte, error)) {
	signed := t.Encoding&btf.Signed != 0
	bits := 8 * t.Size
	raw := readUint(initial, t.Size)
	n := int64(raw)
	if signed {
		n = int64(raw<<(64-bits)) >> (64 - bits)
	}
	intName := "uint"
	if signed {
		intName = "int"
	}
	asInt := intEncoder(intName+strconv.Itoa(int(bits)), t.Size, signed)
	// A number is taken as the kernel would see it: 0 (commonly "any") up to
	// the last real-time signal, or an error number below 4096.
	inRange := func(s string, limit int64, what string) ([]byte, error) {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil && (v < 0 || v > limit) {
			return nil, fmt.Errorf("%d is not %s (0 to %d)", v, what, limit)
		}
		return asInt(s)
	}
	if tag == signalTag {
		return "signal", Signal(n).String(), func(s string) ([]byte, error) {
			if b, err := inRange(s, maxSignal, "a signal number"); err == nil || isNumber(s) {
				return b, err
			}
			name := strings.ToUpper(s)
			if !strings.HasPrefix(name, "SIG") {
				name = "SIG" + name
			}
			num := unix.SignalNum(name)
			if num == 0 {
				return nil, fmt.Errorf("%q is not a signal (a name such as SIGTERM or TERM, or a number)", s)
			}
			return asInt(strconv.Itoa(int(num)))
		}
	}
	return "errno", Errno(n).String(), func(s string) ([]byte, error) {
		if b, err := inRange(s, maxErrno, "an error number"); err == nil || isNumber(s) {
			return b, err
		}
		num, ok := errnoNumbers()[strings.ToUpper(s)]
		if !ok {
			return nil, fmt.Errorf("%q is not an errno (a name such as ENOENT, or a number)", s)
		}
		return asInt(strconv.Itoa(int(num)))
	}
}

// maxSignal is Linux's last real-time signal (SIGRTMAX); maxErrno the
// largest error number a system call returns.
const (
	maxSignal = 64
	maxErrno  = 4095
)

// isNumber tells whether s is written as a decimal integer.
func isNumber(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

// errnoNumbers maps the errno names Errno prints to their numbers.
var errnoNumbers = sync.OnceValue(func() map[string]unix.Errno {
	m := make(map[string]unix.Errno)
	// Linux error numbers are below 4096, the range system calls return
	// errors in.
	for e := unix.Errno(1); e <= maxErrno; e++ {
		if name := unix.ErrnoName(e); name != "" {
			m[name] = e
		}
	}
	return m
})

func intEncoder(typeName string, size uint32, signed bool) func(string) ([]byte, error) {
	bits := int(8 * size)
	return func(s string) ([]byte, error) {
		var raw uint64
		if signed {
			n, err := strconv.ParseInt(s, 0, bits)
			if err != nil {
				return nil, fmt.Errorf("%q is not an %s (%d to %d)", s, typeName, int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
			}
			raw = uint64(n)
		} else {
			n, err := strconv.ParseUint(s, 0, bits)
			if err != nil {
				return nil, fmt.Errorf("%q is not a %s (0 to %d)", s, typeName, uint64(1<<bits-1))
			}
			raw = n
		}
		out := make([]byte, size)
		putUint(out, size, raw)
		return out, nil
	}
}

// putUint is the inverse of readUint.
func putUint(b []byte, size uint32, v uint64) {
	switch size {
	case 1:
		b[0] = byte(v)
	case 2:
		binary.NativeEndian.PutUint16(b, uint16(v))
	case 4:
		binary.NativeEndian.PutUint32(b, uint32(v))
	default:
		binary.NativeEndian.PutUint64(b, v)
	}
}

// applyParams writes the values given for params into the data sections of
// spec, then sizes maps from their <map>_max_entries globals. It must run
// before spec.Variables is dropped: it rewrites the sections' contents
// directly, which is what the loader uses when there are no VariableSpecs.
func applyParams(spec *ebpf.CollectionSpec, specs []paramSpec, values map[string]string) error {
	byName := make(map[string]paramSpec, len(specs))
	for _, p := range specs {
		byName[p.Name] = p
	}
	for _, name := range slices.Sorted(maps.Keys(values)) {
		p, ok := byName[name]
		if !ok {
			known := "it has none"
			if len(specs) > 0 {
				known = "it has " + strings.Join(slices.Sorted(maps.Keys(byName)), ", ")
			}
			return fmt.Errorf("param %s: the gadget has no such parameter (%s)", name, known)
		}
		b, err := p.encode(values[name])
		if err != nil {
			return fmt.Errorf("param %s: %w", name, err)
		}
		// A <map>_max_entries of 0 keeps the size the ELF declares
		// (applyMaxEntries), often a placeholder of 1: never what a user
		// asking for 0 wants.
		if p.SizesMap != "" && !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) {
			return fmt.Errorf("param %s: 0 would leave map %s without room; use a positive value", name, p.SizesMap)
		}
		if err := writeVariable(spec, p.v, b); err != nil {
			return fmt.Errorf("param %s: %w", name, err)
		}
	}
	return applyMaxEntries(spec)
}

// writeVariable replaces the bytes of v in its section's initial contents.
// The contents are copied first: they may share memory with the ELF.
func writeVariable(spec *ebpf.CollectionSpec, v *ebpf.VariableSpec, value []byte) error {
	data, err := sectionData(spec, v)
	if err != nil {
		return err
	}
	if int(v.Offset)+len(value) > len(data) || uint32(len(value)) != v.Size() {
		return fmt.Errorf("%d bytes at offset %d do not fit section %s (%d bytes)", len(value), v.Offset, v.SectionName, len(data))
	}
	data = slices.Clone(data)
	copy(data[v.Offset:], value)
	spec.Maps[v.SectionName].Contents = []ebpf.MapKV{{Key: uint32(0), Value: data}}
	return nil
}

// sectionData returns the initial contents of v's data section.
func sectionData(spec *ebpf.CollectionSpec, v *ebpf.VariableSpec) ([]byte, error) {
	m, ok := spec.Maps[v.SectionName]
	if !ok {
		return nil, fmt.Errorf("no map for section %s", v.SectionName)
	}
	if len(m.Contents) != 1 {
		return nil, fmt.Errorf("section %s has %d initial values, want 1", v.SectionName, len(m.Contents))
	}
	data, ok := m.Contents[0].Value.([]byte)
	if key, kok := m.Contents[0].Key.(uint32); !ok || !kok || key != 0 {
		return nil, fmt.Errorf("section %s: unexpected initial contents", v.SectionName)
	}
	return data, nil
}

// applyMaxEntries sets the max_entries of every map <m> for which the
// gadget has a non-zero integer global <m>_max_entries, as written by
// applyParams.
func applyMaxEntries(spec *ebpf.CollectionSpec) error {
	for _, name := range slices.Sorted(maps.Keys(spec.Variables)) {
		mapName, ok := strings.CutSuffix(name, maxEntriesSuffix)
		if !ok {
			continue
		}
		m, ok := spec.Maps[mapName]
		if !ok || mapName == "" {
			continue
		}
		v := spec.Variables[name]
		size := v.Size()
		if v.Type == nil || size == 0 || size > 8 {
			return fmt.Errorf("%s: want an integer", name)
		}
		if _, typ := resolve(v.Type.Type); !isInt(typ) {
			return fmt.Errorf("%s: want an integer, not %s", name, typ)
		}
		data, err := sectionData(spec, v)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if int(v.Offset+size) > len(data) {
			return fmt.Errorf("%s: beyond the end of section %s", name, v.SectionName)
		}
		n := readUint(data[v.Offset:], size)
		if n == 0 {
			continue
		}
		if n > 1<<32-1 {
			return fmt.Errorf("%s: %d does not fit a map's 32-bit max_entries", name, n)
		}
		if m.Type == ebpf.RingBuf {
			page := uint64(os.Getpagesize())
			if n%page != 0 || n&(n-1) != 0 {
				return fmt.Errorf("%s: ring buffer %s needs a power of two multiple of the page size (%d bytes), not %d",
					name, mapName, page, n)
			}
		}
		m.MaxEntries = uint32(n)
	}
	return nil
}

func isInt(typ btf.Type) bool {
	t, ok := typ.(*btf.Int)
	return ok && t.Encoding&btf.Bool == 0 && (t.Size == 1 || t.Size == 2 || t.Size == 4 || t.Size == 8)
}

// CheckGadget checks an eBPF object and its metadata before they are packaged
// into an image, with the checks Run makes before it loads anything (tracer
// or snapshotter markers, event struct, attach sections, parameters), and
// that the metadata is YAML describing only parameters the program has: a
// gadget.yaml written for another program is caught here rather than
// silently ignored on every device. Nothing is loaded into the kernel.
func CheckGadget(elf, metadata []byte) error {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(elf))
	if err != nil {
		return fmt.Errorf("parse ELF: %w", err)
	}
	if _, err := parseGadget(spec); err != nil {
		return err
	}
	specs, err := parseParams(spec)
	if err != nil {
		return err
	}
	meta, err := parseMetadata(metadata)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(meta.Params.EBPF)) {
		if !slices.ContainsFunc(specs, func(p paramSpec) bool { return p.Name == name }) {
			return fmt.Errorf("gadget metadata describes parameter %s, which the program does not have", name)
		}
	}
	return nil
}

// parseMetadata reads the parameter descriptions of a gadget's metadata
// (nil: none).
func parseMetadata(metadata []byte) (metadataParams, error) {
	var meta metadataParams
	if err := yaml.Unmarshal(metadata, &meta); err != nil {
		return meta, fmt.Errorf("gadget metadata: %w", err)
	}
	return meta, nil
}
