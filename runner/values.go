package runner

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Typedef and struct names that give a value its meaning.
const (
	errnoTag      = "gadget_errno"
	signalTag     = "gadget_signal"
	l3EndpointTag = "gadget_l3endpoint"
	l4EndpointTag = "gadget_l4endpoint"
)

// Errno is an error number, the value of a gadget_errno field. It prints as
// its name (ENOENT), as "0" for no error, and as its number when it has no
// name.
type Errno int32

func (e Errno) String() string {
	if e != 0 {
		if name := unix.ErrnoName(unix.Errno(e)); name != "" {
			return name
		}
	}
	return strconv.Itoa(int(e))
}

// MarshalText makes JSON print an Errno as its String.
func (e Errno) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// Signal is a signal number, the value of a gadget_signal field. It prints as
// its name (SIGUSR1), or as its number when it has no name.
type Signal int32

func (s Signal) String() string {
	if name := unix.SignalName(unix.Signal(s)); name != "" {
		return name
	}
	return strconv.Itoa(int(s))
}

// MarshalText makes JSON print a Signal as its String.
func (s Signal) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Widths of the longest errno and signal names, for columns.
const (
	errnoWidth  = len("EPROTONOSUPPORT")
	signalWidth = len("SIGSTKFLT")
)

// newTaggedInt decodes the integers whose tag gives them a Go type of
// their own; ok is false for other tags.
func newTaggedInt(tag string, t *btf.Int) (f fieldDecoder, ok bool, err error) {
	if tag != errnoTag && tag != signalTag {
		return fieldDecoder{}, false, nil
	}
	if t.Size != 1 && t.Size != 2 && t.Size != 4 && t.Size != 8 || t.Encoding&btf.Bool != 0 {
		return fieldDecoder{}, true, fmt.Errorf("%s must be an integer of 1, 2, 4 or 8 bytes, not %s", tag, t.Name)
	}
	size, signed := t.Size, t.Encoding&btf.Signed != 0
	shift := 64 - 8*size
	value := func(b []byte) int64 {
		v := readUint(b, size)
		if signed {
			return int64(v<<shift) >> shift
		}
		return int64(v)
	}
	if tag == errnoTag {
		check := namedCheck(fmt.Sprintf("an errno (%s), printed as its name (such as ENOENT), 0, or the number of an errno without a name", errnoTag),
			func(s string) (int64, bool) {
				n, ok := errnoNumbers()[s]
				return int64(n), ok
			}, func(n int64) string {
				if n < 0 { // as decoded
					n = -n
				}
				return Errno(n).String()
			})
		return fieldDecoder{tag: tag, size: size, width: errnoWidth, check: check, decode: func(b []byte) any {
			n := value(b)
			if n < 0 { // -ENOENT, as system calls return errors
				n = -n
			}
			return Errno(n)
		}}, true, nil
	}
	check := namedCheck(fmt.Sprintf("a signal (%s), printed as its name (such as SIGTERM) or the number of a signal without a name", signalTag),
		func(s string) (int64, bool) {
			n := unix.SignalNum(s)
			return int64(n), n != 0
		}, func(n int64) string { return Signal(n).String() })
	return fieldDecoder{tag: tag, size: size, width: signalWidth, check: check, decode: func(b []byte) any {
		return Signal(value(b))
	}}, true, nil
}

// newEndpoint decodes a struct gadget_l3endpoint into a netip.Addr and a
// struct gadget_l4endpoint into a netip.AddrPort, from the offsets of their
// members in BTF: addr (16 bytes), version (1 byte: 4 or 6) and, for l4,
// port (2 bytes, host order). A version other than 4 or 6 gives the zero
// Addr or AddrPort, which prints as "". ok is false for other structs.
func newEndpoint(s *btf.Struct) (f fieldDecoder, ok bool, err error) {
	l4 := s.Name == l4EndpointTag
	if !l4 && s.Name != l3EndpointTag {
		return fieldDecoder{}, false, nil
	}
	member := func(name string, size uint32) (uint32, error) {
		for _, m := range s.Members {
			if m.Name != name {
				continue
			}
			if m.BitfieldSize != 0 || m.Offset%8 != 0 {
				return 0, fmt.Errorf("struct %s: %s is a bitfield", s.Name, name)
			}
			got, err := btf.Sizeof(m.Type)
			if err != nil || uint32(got) != size || m.Offset.Bytes()+size > s.Size {
				return 0, fmt.Errorf("struct %s: %s must be %d bytes", s.Name, name, size)
			}
			return m.Offset.Bytes(), nil
		}
		return 0, fmt.Errorf("struct %s has no member %s", s.Name, name)
	}
	addrOff, err := member("addr", 16)
	if err != nil {
		return fieldDecoder{}, true, err
	}
	versionOff, err := member("version", 1)
	if err != nil {
		return fieldDecoder{}, true, err
	}
	addr := func(b []byte) netip.Addr {
		switch b[versionOff] {
		case 4:
			return netip.AddrFrom4([4]byte(b[addrOff : addrOff+4]))
		case 6:
			return netip.AddrFrom16([16]byte(b[addrOff : addrOff+16]))
		}
		return netip.Addr{}
	}
	if !l4 {
		return fieldDecoder{tag: s.Name, size: s.Size, width: len("255.255.255.255"), check: endpointCheck(false), decode: func(b []byte) any {
			return addr(b)
		}}, true, nil
	}
	portOff, err := member("port", 2)
	if err != nil {
		return fieldDecoder{}, true, err
	}
	return fieldDecoder{tag: s.Name, size: s.Size, width: len("255.255.255.255:65535"), check: endpointCheck(true), decode: func(b []byte) any {
		a := addr(b)
		if !a.IsValid() {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(a, uint16(readUint(b[portOff:], 2)))
	}}, true, nil
}
