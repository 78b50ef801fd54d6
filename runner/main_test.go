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
	requireToolchain(t)
	builtMu.Lock()
	build, ok := built[name]
	if !ok {
		build = sync.OnceValues(func() ([]byte, error) {
			return buildGadget(filepath.Join("..", "gadgets", name, "program.bpf.c"), name+".bpf.o")
		})
		built[name] = build
	}
	builtMu.Unlock()
	elf, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return elf
}

// testdataELF builds testdata/<name>.bpf.c, a gadget only the tests use,
// as gadgetELF builds the built-in ones.
func testdataELF(t testing.TB, name string) []byte {
	t.Helper()
	requireToolchain(t)
	elf, err := buildGadget(filepath.Join("testdata", name+".bpf.c"), "testdata-"+name+".bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	return elf
}

// requireToolchain skips the test unless this host can build gadgets as
// the Makefile does: clang, bpftool and llvm-strip, a known BPF target
// architecture, and kernel BTF for vmlinux.h.
func requireToolchain(t testing.TB) {
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

// buildGadget builds the gadget C file src into buildDir/obj the way the
// Makefile does: clang against this kernel's vmlinux.h, then llvm-strip.
func buildGadget(src, obj string) ([]byte, error) {
	if err := prepareBuild(); err != nil {
		return nil, err
	}
	obj = filepath.Join(buildDir, obj)
	if err := clangBPF(src, obj, filepath.Join(buildDir, "include")); err != nil {
		return nil, err
	}
	if err := runTool("llvm-strip", "-g", obj); err != nil {
		return nil, fmt.Errorf("build %s: %w", src, err)
	}
	return os.ReadFile(obj)
}

// clangBPF compiles the BPF C file src into obj with the Makefile's clang
// flags, looking for headers in include, then in the gadgets' own.
func clangBPF(src, obj string, include ...string) error {
	args := []string{"-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_" + targetArch}
	for _, dir := range append(include, filepath.Join("..", "gadgets", "include")) {
		args = append(args, "-I"+dir)
	}
	if err := runTool("clang", append(args, "-c", src, "-o", obj)...); err != nil {
		return fmt.Errorf("build %s: %w", src, err)
	}
	return nil
}

// runTool runs a build tool, with its error output in the error.
func runTool(name string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, stderr.Bytes())
	}
	return nil
}
