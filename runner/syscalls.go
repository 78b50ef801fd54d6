package runner

import (
	"fmt"
	"strconv"

	"github.com/cilium/ebpf/btf"
)

//go:generate go run gen_syscalls.go

const syscallTag = "gadget_syscall"

// Syscall is a system call number, the value of a gadget_syscall field. It
// prints as the call's name on the architecture bpfleet was built for
// (execve), and as its number when that architecture has no call by that
// number: a call newer than bpfleet's table, or -1, which the kernel reports
// for a task that is not in a system call. The tables come from
// golang.org/x/sys (see gen_syscalls.go); a 32-bit task on a 64-bit kernel
// makes system calls by its own architecture's numbers, which print by the
// 64-bit names.
type Syscall int64

func (s Syscall) String() string {
	if s >= 0 && s < Syscall(len(syscallNames)) && syscallNames[s] != "" {
		return syscallNames[s]
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalText makes JSON print a Syscall as its String.
func (s Syscall) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// newSyscall decodes a gadget_syscall: an integer of any size, signed or not
// (IG declares it __u64; the kernel's syscall_get_nr returns an int).
func newSyscall(t *btf.Int) (fieldDecoder, error) {
	if t.Size != 1 && t.Size != 2 && t.Size != 4 && t.Size != 8 || t.Encoding&btf.Bool != 0 {
		return fieldDecoder{}, fmt.Errorf("%s must be an integer of 1, 2, 4 or 8 bytes, not %s", syscallTag, t.Name)
	}
	size, signed := t.Size, t.Encoding&btf.Signed != 0
	shift := 64 - 8*size
	width := len("-1")
	numbers := make(map[string]int64, len(syscallNames))
	for n, name := range syscallNames {
		width = max(width, len(name))
		if name != "" {
			numbers[name] = int64(n)
		}
	}
	check := namedCheck(fmt.Sprintf("a system call (%s), printed as its name on this architecture (such as openat) or the number of one without a name", syscallTag),
		func(s string) (int64, bool) {
			n, ok := numbers[s]
			return n, ok
		}, func(n int64) string { return Syscall(n).String() })
	return fieldDecoder{tag: syscallTag, size: size, width: width, check: check, decode: func(b []byte) any {
		v := readUint(b, size)
		if signed {
			return Syscall(int64(v<<shift) >> shift)
		}
		return Syscall(v)
	}}, nil
}
