package runner

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// TestMain removes the gadget objects the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildDir holds the gadget objects built for this test run.
var buildDir string

var buildTraceExec = sync.OnceValues(buildGadget)

// targetArch is clang's name for the host architecture, used by bpf_tracing.h.
var targetArch = map[string]string{"amd64": "x86", "arm64": "arm64"}[runtime.GOARCH]

// traceExecELF returns the trace_exec gadget, built with the same commands as
// the Makefile, or skips the test when the toolchain is missing.
func traceExecELF(t testing.TB) []byte {
	t.Helper()
	for _, tool := range []string{"clang", "bpftool", "llvm-strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("building gadgets needs %s: %v", tool, err)
		}
	}
	if targetArch == "" {
		t.Skipf("no BPF target architecture known for %s", runtime.GOARCH)
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skipf("building gadgets needs kernel BTF: %v", err)
	}
	elf, err := buildTraceExec()
	if err != nil {
		t.Fatal(err)
	}
	return elf
}

// buildGadget builds gadgets/trace_exec the way the Makefile does.
func buildGadget() ([]byte, error) {
	dir, err := os.MkdirTemp("", "bpfleet-runner-test-")
	if err != nil {
		return nil, err
	}
	buildDir = dir
	include := filepath.Join(buildDir, "include")
	if err := os.MkdirAll(include, 0o755); err != nil {
		return nil, err
	}
	vmlinux, err := exec.Command("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c").Output()
	if err != nil {
		return nil, fmt.Errorf("bpftool: %w", err)
	}
	if err := os.WriteFile(filepath.Join(include, "vmlinux.h"), vmlinux, 0o644); err != nil {
		return nil, err
	}
	obj := filepath.Join(buildDir, "trace_exec.bpf.o")
	for _, args := range [][]string{
		{"clang", "-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_" + targetArch, "-I" + include,
			"-I" + filepath.Join("..", "gadgets", "include"),
			"-c", filepath.Join("..", "gadgets", "trace_exec", "program.bpf.c"), "-o", obj},
		{"llvm-strip", "-g", obj},
	} {
		var stderr bytes.Buffer
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", args[0], err, stderr.Bytes())
		}
	}
	return os.ReadFile(obj)
}
