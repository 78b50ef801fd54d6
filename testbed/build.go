package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// GoBuild builds pkg (a path under the module in dir) for arch as the firmware ships it:
// static, stripped, no build paths.
func GoBuild(dir, pkg, out string, arch Arch) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch.Name)
	if arch.GOARM != "" {
		cmd.Env = append(cmd.Env, "GOARM="+arch.GOARM)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: go build %s for %s: %v: %s", pkg, arch.Name, err, out)
	}
	return nil
}

// VmlinuxH writes (once; kept beside the unpacked kernel) the C header of the kernel's BTF
// types that CO-RE gadgets for it are compiled against, and returns its directory.
func (k *Kernel) VmlinuxH() (string, error) {
	dir := filepath.Join(k.Root, "btf")
	h := filepath.Join(dir, "vmlinux.h")
	if _, err := os.Stat(h); err == nil {
		return dir, nil
	}
	btf, err := k.BTF()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	raw := filepath.Join(dir, "vmlinux.btf")
	if err := os.WriteFile(raw, btf, 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command("bpftool", "btf", "dump", "file", raw, "format", "c").Output()
	if err != nil {
		return "", fmt.Errorf("testbed: bpftool btf dump %s: %w", raw, err)
	}
	if err := os.WriteFile(h+".tmp", out, 0o644); err != nil {
		return "", err
	}
	return dir, os.Rename(h+".tmp", h)
}

// CompileGadget compiles a gadget's program.bpf.c for k's architecture against k's types, or,
// for a kernel without BTF (where it cannot run, but can be verified), against the host's types
// and architecture: the guest only checks its signature and digests.
func CompileGadget(k *Kernel, src, include, out string) error {
	vmlinux, err := k.VmlinuxH()
	bpfArch := k.Arch.BPFArch
	if err != nil && !k.Arch.HasBTF {
		vmlinux, err = hostVmlinuxH(filepath.Dir(out))
		bpfArch = map[string]string{"amd64": "x86", "arm64": "arm64"}[runtime.GOARCH]
	}
	if err != nil {
		return err
	}
	return compileBPF(k.Arch.Name, bpfArch, src, out, vmlinux, include)
}

// CompileGadgetNoCORE compiles a gadget that includes no vmlinux.h (gadget/nocore.h instead)
// for arch: it has no CO-RE relocations, so it runs on kernels without BTF too.
func CompileGadgetNoCORE(arch Arch, src, include, out string) error {
	return compileBPF(arch.Name, arch.BPFArch, src, out, include)
}

// compileBPF compiles src as the Makefile compiles gadgets, then strips its DWARF (BTF stays).
func compileBPF(arch, bpfArch, src, out string, includes ...string) error {
	args := []string{"-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_" + bpfArch}
	for _, dir := range includes {
		args = append(args, "-I"+dir)
	}
	if b, err := exec.Command("clang", append(args, "-c", src, "-o", out)...).CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: clang %s for %s: %v: %s", src, arch, err, b)
	}
	if b, err := exec.Command("llvm-strip", "-g", out).CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: llvm-strip %s: %v: %s", out, err, b)
	}
	return nil
}

func hostVmlinuxH(dir string) (string, error) {
	out, err := exec.Command("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c").Output()
	if err != nil {
		return "", fmt.Errorf("testbed: host BTF: %w", err)
	}
	return dir, os.WriteFile(filepath.Join(dir, "vmlinux.h"), out, 0o644)
}
