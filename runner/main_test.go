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

var (
	// buildDir holds vmlinux.h and the gadget objects built for this test run.
	buildDir string
	// prepareBuild creates buildDir and vmlinux.h once.
	prepareBuild = sync.OnceValue(prepareBuildDir)

	builtMu sync.Mutex
	built   = map[string]func() ([]byte, error){}
)

// targetArch is clang's name for the host architecture, used by bpf_tracing.h.
var targetArch = map[string]string{"amd64": "x86", "arm64": "arm64"}[runtime.GOARCH]

// traceExecELF returns the trace_exec gadget; see gadgetELF.
func traceExecELF(t testing.TB) []byte {
	t.Helper()
	return gadgetELF(t, "trace_exec")
}

// gadgetELF returns the built-in gadget gadgets/<name>, built once per test
// run with the same commands as the Makefile, or skips the test when the
// toolchain is missing.
func gadgetELF(t testing.TB, name string) []byte {
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
	builtMu.Lock()
	build, ok := built[name]
	if !ok {
		build = sync.OnceValues(func() ([]byte, error) { return buildGadget(name) })
		built[name] = build
	}
	builtMu.Unlock()
	elf, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return elf
}

func prepareBuildDir() error {
	dir, err := os.MkdirTemp("", "bpfleet-runner-test-")
	if err != nil {
		return err
	}
	buildDir = dir
	include := filepath.Join(buildDir, "include")
	if err := os.MkdirAll(include, 0o755); err != nil {
		return err
	}
	vmlinux, err := exec.Command("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c").Output()
	if err != nil {
		return fmt.Errorf("bpftool: %w", err)
	}
	return os.WriteFile(filepath.Join(include, "vmlinux.h"), vmlinux, 0o644)
}

// buildGadget builds gadgets/<name> the way the Makefile does.
func buildGadget(name string) ([]byte, error) {
	if err := prepareBuild(); err != nil {
		return nil, err
	}
	obj := filepath.Join(buildDir, name+".bpf.o")
	for _, args := range [][]string{
		{"clang", "-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_" + targetArch, "-I" + filepath.Join(buildDir, "include"),
			"-I" + filepath.Join("..", "gadgets", "include"),
			"-c", filepath.Join("..", "gadgets", name, "program.bpf.c"), "-o", obj},
		{"llvm-strip", "-g", obj},
	} {
		var stderr bytes.Buffer
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("build %s: %s: %w\n%s", name, args[0], err, stderr.Bytes())
		}
	}
	return os.ReadFile(obj)
}
