package testbed

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	stdsync "sync"
)

// Arch is one architecture the testbed boots: Debian's kernel for it and QEMU's way to run it.
type Arch struct {
	Name      string   // GOARCH
	GOARM     string   // for arm
	DebArch   string   // Debian architecture
	Flavour   string   // Debian kernel flavour: linux-image-<abi>-<flavour>
	Unsigned  bool     // the image package is linux-image-<abi>-<flavour>-unsigned
	BPFArch   string   // clang -D__TARGET_ARCH_<BPFArch>
	QEMU      string   // qemu-system-* binary
	QEMUArgs  []string // machine, CPU and accelerator
	Console   string   // the serial console device for the kernel command line
	NetDevice string   // QEMU virtio-net device model
	Modules   []string // modules /init loads for networking (their dependencies come along)
	HasBTF    bool     // the kernel carries BTF, so CO-RE gadgets can run
	HasFentry bool     // the kernel attaches fentry/fexit to kernel functions (BPF trampolines with ftrace direct calls)
}

// FentryUnsupported is what the runner says when the kernel cannot attach fentry programs to
// kernel functions (runner/attach.go): Debian 6.1 on arm64, which has BPF trampolines but
// not ftrace direct calls (arm64 has them from Linux 6.4).
const FentryUnsupported = "fentry/fexit are not supported by this kernel"

// NoBTF and NoBTFCORE are what the runner says when a CO-RE gadget meets a kernel without BTF
// and an image without a btfgen entry for it (runner/btfgen.go, then runner.go's loadError):
// Debian's armmp kernel.
const (
	NoBTF     = "this kernel has no BTF (CONFIG_DEBUG_INFO_BTF"
	NoBTFCORE = "and the gadget is compiled for CO-RE against it"
)

// Arches are the testbed's architectures, by GOARCH. The module lists are the ones measured
// on Debian's kernels (see the package doc): virtio_ring and virtio are built in on arm.
var Arches = map[string]Arch{
	"amd64": {Name: "amd64", DebArch: "amd64", Flavour: "amd64", Unsigned: true, BPFArch: "x86",
		QEMU: "qemu-system-x86_64", QEMUArgs: []string{"-accel", "tcg", "-cpu", "max"}, Console: "ttyS0",
		NetDevice: "virtio-net-pci", Modules: []string{"virtio_pci", "virtio_net"}, HasBTF: true, HasFentry: true},
	"arm64": {Name: "arm64", DebArch: "arm64", Flavour: "arm64", Unsigned: true, BPFArch: "arm64",
		QEMU: "qemu-system-aarch64", QEMUArgs: []string{"-M", "virt", "-cpu", "max,pauth-impdef=on", "-accel", "tcg,thread=multi"},
		Console: "ttyAMA0", NetDevice: "virtio-net-pci", Modules: []string{"virtio_pci", "virtio_net"}, HasBTF: true},
	"arm": {Name: "arm", GOARM: "7", DebArch: "armhf", Flavour: "armmp", BPFArch: "arm",
		QEMU: "qemu-system-arm", QEMUArgs: []string{"-M", "virt,highmem=off", "-cpu", "cortex-a15", "-accel", "tcg,thread=multi"},
		Console: "ttyAMA0", NetDevice: "virtio-net-pci", Modules: []string{"virtio_pci", "virtio_net"}},
}

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	Arch    Arch
	Release string // uname -r, e.g. 6.1.0-57-arm64
	Root    string // where the package is unpacked
	Vmlinuz string // the kernel image QEMU boots
	Modules string // Root/lib/modules/<Release>, with modules.dep
}

// CacheDir is where downloaded packages and unpacked kernels are kept between runs:
// $BPFLEET_CACHE, default /var/cache/bpfleet.
func CacheDir() string {
	if d := os.Getenv("BPFLEET_CACHE"); d != "" {
		return d
	}
	return "/var/cache/bpfleet"
}

var aptMu stdsync.Mutex

// FetchKernel downloads (once; cached) Debian's current kernel for arch, the version that
// linux-image-amd64 depends on, unpacks it and runs depmod. It installs nothing on the host;
// it may add the foreign architecture to dpkg and update apt's lists to see its packages.
func FetchKernel(arch Arch, cache string) (*Kernel, error) {
	aptMu.Lock()
	defer aptMu.Unlock()
	abi, err := currentABI()
	if err != nil {
		return nil, err
	}
	pkg := fmt.Sprintf("linux-image-%s-%s", abi, arch.Flavour)
	if arch.Unsigned {
		pkg += "-unsigned"
	}
	k := &Kernel{Arch: arch, Release: abi + "-" + arch.Flavour, Root: filepath.Join(cache, "kernels", pkg+"_"+arch.DebArch)}
	k.Vmlinuz = filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release)
	k.Modules = filepath.Join(k.Root, "lib", "modules", k.Release)
	if _, err := os.Stat(filepath.Join(k.Root, ".complete")); err == nil {
		return k, nil
	}
	debs := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	deb, err := download(debs, pkg, arch.DebArch)
	if err != nil {
		return nil, err
	}
	os.RemoveAll(k.Root)
	if err := os.MkdirAll(k.Root, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command("dpkg-deb", "-x", deb, k.Root).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testbed: dpkg-deb -x %s: %v: %s", deb, err, out)
	}
	if _, err := os.Stat(filepath.Join(k.Modules, "modules.dep")); err != nil {
		if out, err := exec.Command("depmod", "-b", k.Root, k.Release).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("testbed: depmod: %v: %s", err, out)
		}
	}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return nil, fmt.Errorf("testbed: %s has no kernel image: %w", pkg, err)
	}
	return k, os.WriteFile(filepath.Join(k.Root, ".complete"), nil, 0o644)
}

// Cached tells whether a kernel for arch is already unpacked in cache (by FetchKernel), so that
// booting it needs no download. (FetchKernel still resolves the current ABI with apt-cache;
// a newer one than the cached kernel is downloaded.)
func Cached(arch Arch, cache string) bool {
	pkg := "linux-image-*-" + arch.Flavour
	if arch.Unsigned {
		pkg += "-unsigned"
	}
	m, _ := filepath.Glob(filepath.Join(cache, "kernels", pkg+"_"+arch.DebArch, ".complete"))
	return len(m) > 0
}

var abiRE = regexp.MustCompile(`Depends: linux-image-(\d+\.\d+\.\d+-\d+)-amd64`)

// currentABI resolves the kernel ABI (e.g. 6.1.0-57) from linux-image-amd64's dependency.
func currentABI() (string, error) {
	for try := 0; ; try++ {
		out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").CombinedOutput()
		if m := abiRE.FindSubmatch(out); err == nil && m != nil {
			return string(m[1]), nil
		}
		if try > 0 {
			return "", fmt.Errorf("testbed: cannot resolve the kernel version from linux-image-amd64: %v: %s", err, out)
		}
		if err := aptUpdate(); err != nil {
			return "", err
		}
	}
}

func aptUpdate() error {
	if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: apt-get update: %v: %s", err, out)
	}
	return nil
}

// download fetches pkg:debArch into dir unless a .deb of it is there already.
func download(dir, pkg, debArch string) (string, error) {
	pattern := filepath.Join(dir, pkg+"_*_"+debArch+".deb")
	if m, _ := filepath.Glob(pattern); len(m) > 0 {
		return m[len(m)-1], nil
	}
	native, _ := exec.Command("dpkg", "--print-architecture").Output()
	if strings.TrimSpace(string(native)) != debArch {
		foreign, _ := exec.Command("dpkg", "--print-foreign-architectures").Output()
		if !strings.Contains(" "+strings.Join(strings.Fields(string(foreign)), " ")+" ", " "+debArch+" ") {
			if out, err := exec.Command("dpkg", "--add-architecture", debArch).CombinedOutput(); err != nil {
				return "", fmt.Errorf("testbed: dpkg --add-architecture %s: %v: %s", debArch, err, out)
			}
			if err := aptUpdate(); err != nil {
				return "", err
			}
		}
	}
	for try := 0; ; try++ {
		cmd := exec.Command("apt-get", "download", "-qq", pkg+":"+debArch)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		if try > 0 {
			return "", fmt.Errorf("testbed: apt-get download %s:%s: %v: %s", pkg, debArch, err, out)
		}
		if err := aptUpdate(); err != nil {
			return "", err
		}
	}
	m, _ := filepath.Glob(pattern)
	if len(m) == 0 {
		return "", fmt.Errorf("testbed: apt-get download left no %s", pattern)
	}
	return m[len(m)-1], nil
}

// BTF returns the kernel's BTF (what it exposes as /sys/kernel/btf/vmlinux), found in its
// image: arm64's Image is uncompressed; x86's bzImage holds an xz-compressed vmlinux, which is
// decompressed with xz(1). Kernels without BTF (armmp) return an error.
func (k *Kernel) BTF() ([]byte, error) {
	img, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return nil, err
	}
	if b, err := findBTF(img); err == nil {
		return b, nil
	}
	if i := bytes.Index(img, []byte("\xfd7zXZ\x00")); i >= 0 {
		cmd := exec.Command("xz", "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(img[i:])
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("testbed: decompress %s: %w", k.Vmlinuz, err)
		}
		return findBTF(out.Bytes())
	}
	return nil, fmt.Errorf("testbed: no BTF in %s", k.Vmlinuz)
}

// findBTF finds the kernel's BTF blob: little-endian magic 0xeB9F, version 1, a 24-byte
// header, and the type and string sections right after it.
func findBTF(img []byte) ([]byte, error) {
	magic := []byte{0x9f, 0xeb, 0x01, 0x00, 24, 0, 0, 0}
	var best []byte
	for off := 0; ; {
		i := bytes.Index(img[off:], magic)
		if i < 0 {
			break
		}
		i += off
		off = i + 1
		if len(img) < i+24 {
			break
		}
		h := img[i+8 : i+24]
		typeOff, typeLen := binary.LittleEndian.Uint32(h[0:]), binary.LittleEndian.Uint32(h[4:])
		strOff, strLen := binary.LittleEndian.Uint32(h[8:]), binary.LittleEndian.Uint32(h[12:])
		end := uint64(24) + uint64(strOff) + uint64(strLen)
		if typeOff != 0 || uint64(typeLen) != uint64(strOff) || end > uint64(len(img)-i) || strLen == 0 {
			continue
		}
		// The string section starts with an empty string; keep the largest candidate.
		if img[i+24+int(strOff)] == 0 && int(end) > len(best) {
			best = img[i : i+int(end)]
		}
	}
	if best == nil {
		return nil, errors.New("testbed: no BTF blob found")
	}
	return best, nil
}
