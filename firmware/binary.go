package firmware

import (
	"debug/elf"
	"fmt"
)

var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM, "386": elf.EM_386, "riscv64": elf.EM_RISCV}

// CheckBinary checks that path is a statically linked Linux executable for goarch: the image
// has no dynamic loader or libraries, and a binary for another machine would not start.
func CheckBinary(path, goarch string) error {
	want, ok := machines[goarch]
	if !ok {
		return fmt.Errorf("firmware: unknown architecture %q", goarch)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("firmware: %s: %w", path, err)
	}
	defer f.Close()
	if f.Machine != want {
		return fmt.Errorf("firmware: %s is for %s, not %s", path, f.Machine, goarch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("firmware: %s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	return nil
}
