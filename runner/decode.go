package runner

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Event is one decoded event: the fields of the event struct in declaration
// order, nested structs flattened.
type Event []Field

// Field is one decoded member of an event struct.
//
// Value holds, by the member's BTF type: int8/16/32/64 or uint8/16/32/64 for
// integers of that size, bool, string for char arrays (cut at the first NUL)
// and for enums (the enumerator's name, or the number if no name matches),
// time.Time (UTC) for a gadget_timestamp, [Errno] for a gadget_errno,
// [Signal] for a gadget_signal, [Syscall] for a gadget_syscall, netip.Addr
// for a struct gadget_l3endpoint, netip.AddrPort for a struct
// gadget_l4endpoint (the zero value when the endpoint holds no address), and
// []any of those for other arrays.
type Field struct {
	Name  string // member name; "outer.inner" for members of nested structs
	Tag   string // the gadget_* typedef the member was declared with, "" if none
	Value any
}

// Value returns the value of the field called name.
func (e Event) Value(name string) (any, bool) {
	for _, f := range e {
		if f.Name == name {
			return f.Value, true
		}
	}
	return nil, false
}

const timestampTag = "gadget_timestamp"

// timeLayout is RFC 3339 with a fixed nanosecond width, so that timestamps line up.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// bootTime is the wall-clock time at which CLOCK_BOOTTIME was zero, measured
// once: gadget timestamps are boot-time nanoseconds.
var bootTime = sync.OnceValue(func() time.Time {
	var boot, real unix.Timespec
	// Errors are impossible for these clock IDs on Linux.
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot)
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &real)
	return time.Unix(real.Unix()).Add(-time.Duration(boot.Nano()))
})

// decoder turns the raw bytes of one event struct into an Event.
type decoder struct {
	size   uint32
	fields []fieldDecoder
}

type fieldDecoder struct {
	name   string
	tag    string
	offset uint32
	size   uint32
	width  int // widest text a value can print as; 0 if unbounded
	fit    fit // how a terminal-width line may narrow its column
	decode func([]byte) any
	// check refuses a filter value no value of the field prints as (see
	// filter.go); nil lets any text through.
	check func(string) error
}

// fit says how a column gives way when a line must fit a terminal
// (Options.Width).
type fit int

const (
	fitFixed  fit = iota // keeps its width: times, names of errnos and signals, addresses
	fitText              // text (comm, paths): narrows first, longer values are cut, ending in "…"
	fitNumber            // integers: narrow to numberColumnWidth next, never cut (a longer one shifts its line)
)

// newDecoder plans the decoding of s from its BTF. Members it cannot decode
// (bitfields, pointers, unions, floats) are errors: a gadget whose events
// would print wrong is refused rather than run.
func newDecoder(s *btf.Struct) (*decoder, error) {
	d := &decoder{size: s.Size}
	if err := d.addMembers("", 0, s); err != nil {
		return nil, fmt.Errorf("event struct %s: %w", s.Name, err)
	}
	if len(d.fields) == 0 {
		return nil, fmt.Errorf("event struct %s has no fields", s.Name)
	}
	return d, nil
}

func (d *decoder) addMembers(prefix string, base uint32, s *btf.Struct) error {
	for _, m := range s.Members {
		name := prefix + m.Name
		if m.BitfieldSize != 0 || m.Offset%8 != 0 {
			return fmt.Errorf("field %s: bitfields are not supported", name)
		}
		offset := base + m.Offset.Bytes()
		tag, typ := resolve(m.Type)
		if nested, ok := typ.(*btf.Struct); ok {
			f, isEndpoint, err := newEndpoint(nested)
			if err != nil {
				return fmt.Errorf("field %s: %w", name, err)
			}
			if isEndpoint {
				if offset+f.size > d.size {
					return fmt.Errorf("field %s: %d bytes at offset %d overrun the %d-byte struct", name, f.size, offset, d.size)
				}
				f.name, f.offset = name, offset
				d.fields = append(d.fields, f)
				continue
			}
			// Members of an anonymous struct belong to the enclosing struct in C.
			inner := prefix
			if m.Name != "" {
				inner = name + "."
			}
			if err := d.addMembers(inner, offset, nested); err != nil {
				return err
			}
			continue
		}
		f, err := newField(tag, typ)
		if err != nil {
			return fmt.Errorf("field %s: %w", name, err)
		}
		if offset+f.size > d.size {
			return fmt.Errorf("field %s: %d bytes at offset %d overrun the %d-byte struct", name, f.size, offset, d.size)
		}
		f.name, f.offset = name, offset
		d.fields = append(d.fields, f)
	}
	return nil
}

// resolve skips typedefs and qualifiers, remembering the outermost gadget_*
// typedef on the way: that name says what the value means.
func resolve(typ btf.Type) (tag string, _ btf.Type) {
	for {
		switch t := typ.(type) {
		case *btf.Typedef:
			if tag == "" && strings.HasPrefix(t.Name, "gadget_") {
				tag = t.Name
			}
			typ = t.Type
		case *btf.Const:
			typ = t.Type
		case *btf.Volatile:
			typ = t.Type
		case *btf.Restrict:
			typ = t.Type
		default:
			return tag, typ
		}
	}
}

func newField(tag string, typ btf.Type) (fieldDecoder, error) {
	arr, ok := typ.(*btf.Array)
	if !ok {
		return newScalar(tag, typ)
	}

	elemTag, elem := resolve(arr.Type)
	if tag == "" {
		tag = elemTag // gadget_comm is declared as the element type of comm[]
	}
	if isChar(elem) || tag == "gadget_comm" || tag == "gadget_pcomm" {
		n := arr.Nelems
		maxLen := int(max(n, 1) - 1)
		return fieldDecoder{tag: tag, size: n, width: maxLen, fit: fitText, check: textCheck(maxLen), decode: func(b []byte) any {
			b = b[:n]
			if i := indexNUL(b); i >= 0 {
				b = b[:i]
			}
			return string(b)
		}}, nil
	}

	el, err := newScalar(elemTag, elem)
	if err != nil {
		return fieldDecoder{}, fmt.Errorf("array element: %w", err)
	}
	n, size := arr.Nelems, el.size
	return fieldDecoder{tag: tag, size: n * size, decode: func(b []byte) any {
		values := make([]any, n)
		for i := range values {
			values[i] = el.decode(b[uint32(i)*size:])
		}
		return values
	}}, nil
}

func isChar(typ btf.Type) bool {
	i, ok := typ.(*btf.Int)
	return ok && i.Size == 1 && (i.Name == "char" || i.Encoding&btf.Char != 0)
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

func newScalar(tag string, typ btf.Type) (fieldDecoder, error) {
	switch t := typ.(type) {
	case *btf.Int:
		if f, ok, err := newTaggedInt(tag, t); ok {
			return f, err
		}
		if tag == syscallTag {
			return newSyscall(t)
		}
		if tag == timestampTag {
			if t.Size != 8 || t.Encoding&btf.Signed != 0 {
				return fieldDecoder{}, fmt.Errorf("%s must be a 64-bit unsigned integer, not %s", timestampTag, t.Name)
			}
			return fieldDecoder{tag: tag, size: 8, width: len(time.Time{}.Format(timeLayout)), check: timestampCheck, decode: func(b []byte) any {
				return bootTime().Add(time.Duration(binary.NativeEndian.Uint64(b))).UTC()
			}}, nil
		}
		if t.Encoding&btf.Bool != 0 {
			return fieldDecoder{tag: tag, size: t.Size, width: len("false"), check: boolCheck, decode: func(b []byte) any {
				return readUint(b, t.Size) != 0
			}}, nil
		}
		return newInt(tag, t.Size, t.Encoding&btf.Signed != 0)
	case *btf.Enum:
		return newEnum(tag, t)
	default:
		return fieldDecoder{}, fmt.Errorf("unsupported type %s", typ)
	}
}

func newInt(tag string, size uint32, signed bool) (fieldDecoder, error) {
	f := fieldDecoder{tag: tag, size: size}
	switch {
	case size == 1 && signed:
		f.decode = func(b []byte) any { return int8(b[0]) }
	case size == 2 && signed:
		f.decode = func(b []byte) any { return int16(binary.NativeEndian.Uint16(b)) }
	case size == 4 && signed:
		f.decode = func(b []byte) any { return int32(binary.NativeEndian.Uint32(b)) }
	case size == 8 && signed:
		f.decode = func(b []byte) any { return int64(binary.NativeEndian.Uint64(b)) }
	case size == 1:
		f.decode = func(b []byte) any { return b[0] }
	case size == 2:
		f.decode = func(b []byte) any { return binary.NativeEndian.Uint16(b) }
	case size == 4:
		f.decode = func(b []byte) any { return binary.NativeEndian.Uint32(b) }
	case size == 8:
		f.decode = func(b []byte) any { return binary.NativeEndian.Uint64(b) }
	default:
		return f, fmt.Errorf("unsupported %d-byte integer", size)
	}
	f.fit = fitNumber
	f.check = intCheck(size, signed)
	bits := 8 * size
	if signed {
		f.width = len(strconv.FormatInt(-1<<(bits-1), 10))
	} else {
		f.width = len(strconv.FormatUint(1<<bits-1, 10))
	}
	return f, nil
}

func newEnum(tag string, e *btf.Enum) (fieldDecoder, error) {
	if e.Size != 1 && e.Size != 2 && e.Size != 4 && e.Size != 8 {
		return fieldDecoder{}, fmt.Errorf("unsupported %d-byte enum %s", e.Size, e.Name)
	}
	names := make(map[uint64]string, len(e.Values))
	values := make(map[string]uint64, len(e.Values))
	list := make([]string, len(e.Values))
	width := 0
	for i, v := range e.Values {
		names[v.Value] = v.Name
		values[v.Name] = v.Value
		list[i] = v.Name
		width = max(width, len(v.Name))
	}
	prints := func(v uint64) string {
		if name, ok := names[v]; ok {
			return name
		}
		if e.Signed {
			return strconv.FormatInt(int64(v), 10)
		}
		return strconv.FormatUint(v, 10)
	}
	typ := fmt.Sprintf("enum %s, printed as one of its names (%s) or the number of a value without one", e.Name, strings.Join(list, ", "))
	check := namedCheck(typ, func(s string) (int64, bool) {
		v, ok := values[s]
		return int64(v), ok
	}, func(n int64) string { return prints(uint64(n)) })
	shift := 64 - 8*e.Size
	return fieldDecoder{tag: tag, size: e.Size, width: width, check: check, decode: func(b []byte) any {
		v := readUint(b, e.Size)
		if e.Signed {
			// BTF stores signed enumerators sign-extended to 64 bits.
			v = uint64(int64(v<<shift) >> shift)
		}
		return prints(v)
	}}, nil
}

func readUint(b []byte, size uint32) uint64 {
	switch size {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.NativeEndian.Uint16(b))
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	default:
		return binary.NativeEndian.Uint64(b)
	}
}

func (d *decoder) decode(raw []byte) (Event, error) {
	if len(raw) < int(d.size) {
		return nil, fmt.Errorf("event of %d bytes, want %d", len(raw), d.size)
	}
	ev := make(Event, len(d.fields))
	for i, f := range d.fields {
		ev[i] = Field{Name: f.name, Tag: f.tag, Value: f.decode(raw[f.offset : f.offset+f.size])}
	}
	return ev, nil
}
