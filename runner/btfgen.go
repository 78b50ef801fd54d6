package runner

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// An Inspektor Gadget image may carry a btfgen layer: a tar archive, usually
// gzip-compressed, of BTF files minimized for the gadget (bpftool gen
// min_core_btf), one per kernel, named as in btfhub-archive:
// <os-release ID>/<VERSION_ID>/<uname machine>/<uname release>.btf. A
// kernel without BTF of its own takes its CO-RE types from the entry for its
// release.

// maxBTFGenEntry bounds what one entry may decompress to. A minimized BTF is a
// few kilobytes; a whole kernel's is under 10 MiB.
const maxBTFGenEntry = 64 << 20

// coreTarget is the BTF a run relocates the gadget's CO-RE accesses against.
type coreTarget struct {
	// types are the target's types; nil when there are none (see missing).
	types *btf.Spec
	// kernel is true when types are the running kernel's own, which
	// cilium/ebpf then takes from the run's btf.Cache, with the BTF of
	// kernel modules.
	kernel bool
	// entry names the btfgen entry types come from, if they do.
	entry string
	// missing says why there are no types: the kernel has none and the
	// image no btfgen entry for it.
	missing string
}

// kernelTypes is what the loader takes CO-RE types from: nil for the
// kernel's own.
func (t *coreTarget) kernelTypes() (*btf.Spec, error) {
	if t.kernel {
		return nil, nil
	}
	if t.types != nil {
		return t.types, nil
	}
	// Explicitly none: left nil, cilium/ebpf would look for the kernel's BTF
	// again. Gadgets without CO-RE relocations still load.
	return emptyBTF()
}

// emptyBTF is a target without a single type.
var emptyBTF = sync.OnceValues(func() (*btf.Spec, error) {
	var b btf.Builder
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		return nil, err
	}
	return btf.LoadSpecFromReader(bytes.NewReader(raw))
})

// findCORETarget picks the CO-RE target of a run: the kernel's own BTF
// (/sys/kernel/btf/vmlinux, or a vmlinux with BTF where cilium/ebpf looks for
// one), read through cache, else the image's btfgen entry for this kernel,
// else none.
func findCORETarget(opts Options, cache *btf.Cache) (*coreTarget, error) {
	loadKernel := opts.kernelBTF
	if loadKernel == nil {
		loadKernel = cache.Kernel
	}
	kernel, kerr := loadKernel()
	if kerr == nil {
		// Types a test hook gives are passed on; the kernel's own are left
		// for cilium/ebpf to take from the cache, as it then adds the
		// modules' BTF.
		return &coreTarget{types: kernel, kernel: opts.kernelBTF == nil}, nil
	}
	h, err := thisHost()
	if err != nil {
		return nil, err
	}
	noBTF := fmt.Sprintf("this kernel has no BTF (CONFIG_DEBUG_INFO_BTF: %v)", kerr)
	if len(opts.btfgen) == 0 {
		return &coreTarget{missing: fmt.Sprintf("%s and the image has no btfgen entry for %s (it has no btfgen layer)",
			noBTF, h.release)}, nil
	}
	entry, raw, names, err := btfgenEntry(opts.btfgen, h)
	if err != nil {
		return nil, fmt.Errorf("btfgen layer: %w", err)
	}
	if entry == "" {
		return &coreTarget{missing: fmt.Sprintf("%s and the image has no btfgen entry for %s on %s (its btfgen layer has %s)",
			noBTF, h.release, h.machine, describeEntries(names))}, nil
	}
	types, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("btfgen layer: entry %s: %w", entry, err)
	}
	return &coreTarget{types: types, entry: entry}, nil
}

func describeEntries(names []string) string {
	switch len(names) {
	case 0:
		return "no entries"
	case 1:
		return "one entry: " + names[0]
	}
	const shown = 3
	if len(names) <= shown {
		return fmt.Sprintf("%d entries: %s", len(names), strings.Join(names, ", "))
	}
	return fmt.Sprintf("%d entries: %s, ...", len(names), strings.Join(names[:shown], ", "))
}

// host is what picks a btfgen entry.
type host struct {
	release string // uname -r
	machine string // uname -m
	// osID and osVersion are ID and VERSION_ID of os-release(5), empty when
	// the device has none.
	osID, osVersion string
}

func thisHost() (host, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return host{}, fmt.Errorf("uname: %w", err)
	}
	h := host{release: unix.ByteSliceToString(uts.Release[:]), machine: unix.ByteSliceToString(uts.Machine[:])}
	for _, name := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		data, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		s := bufio.NewScanner(bytes.NewReader(data))
		for s.Scan() {
			key, value, _ := strings.Cut(s.Text(), "=")
			value = strings.Trim(value, `"'`)
			switch key {
			case "ID":
				h.osID = value
			case "VERSION_ID":
				h.osVersion = value
			}
		}
		break
	}
	return h, nil
}

// btfhubArch is btfhub-archive's name for a uname machine, where it differs.
var btfhubArch = map[string]string{"aarch64": "arm64"}

// btfgenEntry returns the entry of a btfgen layer for host h, its name and
// contents, and the names of all entries. An entry matches when its
// architecture directory is the machine's (uname's or btfhub's name for it)
// and its file is <release>.btf. Among several, the one under the device's
// os-release ID and VERSION_ID wins, as Inspektor Gadget looks only there;
// without it, several are ambiguous. No match is not an error: name is "".
func btfgenEntry(layer []byte, h host) (name string, data []byte, names []string, err error) {
	arches := []string{h.machine}
	if a, ok := btfhubArch[h.machine]; ok {
		arches = append(arches, a)
	}
	var matches []string
	contents := make(map[string][]byte)
	err = eachBTFGenEntry(layer, func(entry string, size int64, r io.Reader) error {
		names = append(names, entry)
		parts := strings.Split(entry, "/")
		if len(parts) != 4 || parts[3] != h.release+".btf" || !slices.Contains(arches, parts[2]) {
			return nil
		}
		data, err := readBTFGenEntry(entry, size, r)
		if err != nil {
			return err
		}
		matches = append(matches, entry)
		contents[entry] = data
		return nil
	})
	if err != nil {
		return "", nil, nil, err
	}
	switch len(matches) {
	case 0:
		return "", nil, names, nil
	case 1:
		return matches[0], contents[matches[0]], names, nil
	}
	for _, m := range matches {
		if strings.HasPrefix(m, h.osID+"/"+h.osVersion+"/") {
			return m, contents[m], names, nil
		}
	}
	return "", nil, nil, fmt.Errorf("%d entries for %s on %s (%s) and none for this system's os-release (ID %q, VERSION_ID %q)",
		len(matches), h.release, h.machine, strings.Join(matches, ", "), h.osID, h.osVersion)
}

// eachBTFGenEntry calls fn with every regular file of a btfgen layer (a tar,
// gzip-compressed or not): its cleaned name, size and contents.
func eachBTFGenEntry(layer []byte, fn func(entry string, size int64, r io.Reader) error) error {
	var r io.Reader = bytes.NewReader(layer)
	if bytes.HasPrefix(layer, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("gunzip: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(path.Clean(strings.TrimPrefix(hdr.Name, "/")), hdr.Size, tr); err != nil {
			return err
		}
	}
}

func readBTFGenEntry(entry string, size int64, r io.Reader) ([]byte, error) {
	if size > maxBTFGenEntry {
		return nil, fmt.Errorf("entry %s: %d bytes, more than the %d allowed", entry, size, maxBTFGenEntry)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("entry %s: %w", entry, err)
	}
	return data, nil
}

// CheckBTFGen checks a btfgen layer before it is packaged into an image: a tar
// (gzip-compressed or not) whose every file is named
// <os-release ID>/<VERSION_ID>/<machine>/<kernel release>.btf and holds BTF.
// It returns the entries' names.
func CheckBTFGen(layer []byte) ([]string, error) {
	var names []string
	err := eachBTFGenEntry(layer, func(entry string, size int64, r io.Reader) error {
		parts := strings.Split(entry, "/")
		if len(parts) != 4 || slices.Contains(parts, "") || !strings.HasSuffix(parts[3], ".btf") || parts[3] == ".btf" {
			return fmt.Errorf("entry %s: want <os-release ID>/<VERSION_ID>/<machine>/<kernel release>.btf", entry)
		}
		data, err := readBTFGenEntry(entry, size, r)
		if err != nil {
			return err
		}
		if _, err := btf.LoadSpecFromReader(bytes.NewReader(data)); err != nil {
			return fmt.Errorf("entry %s: not BTF: %w", entry, err)
		}
		names = append(names, entry)
		return nil
	})
	if err == nil && len(names) == 0 {
		err = errors.New("no .btf entry")
	}
	if err != nil {
		return nil, fmt.Errorf("btfgen layer: %w", err)
	}
	return names, nil
}

// Names of the enum and value whose presence in the CO-RE target tells a
// gadget that the kernel has BPF ring buffers (gadget/buffer.h, Inspektor
// Gadget's include/gadget/buffer.h).
const (
	funcIDEnum       = "bpf_func_id"
	ringbufFuncValue = "BPF_FUNC_ringbuf_reserve"
)

// matchTracerMap makes the tracer's map what the gadget's programs expect
// on this target. A gadget that asks CO-RE whether enum bpf_func_id has
// BPF_FUNC_ringbuf_reserve (its BTF has the enum) sends events with
// bpf_perf_event_output when the target says no: its ring buffer must then
// become a perf event array, with one entry per CPU, or the program and its
// map would disagree. A perf event array declared as such is left alone.
func matchTracerMap(spec *ebpf.CollectionSpec, tracerMap string, target *coreTarget) error {
	m := spec.Maps[tracerMap]
	if m == nil || m.Type != ebpf.RingBuf {
		return nil
	}
	var local *btf.Enum
	if err := spec.Types.TypeByName(funcIDEnum, &local); errors.Is(err, btf.ErrNotFound) {
		return nil // the gadget does not ask: it always uses the ring buffer
	} else if err != nil {
		return fmt.Errorf("gadget BTF: enum %s: %w", funcIDEnum, err)
	}
	if target.types != nil {
		var enum *btf.Enum
		err := target.types.TypeByName(funcIDEnum, &enum)
		if err == nil && slices.ContainsFunc(enum.Values, func(v btf.EnumValue) bool { return v.Name == ringbufFuncValue }) {
			return nil
		}
		if err != nil && !errors.Is(err, btf.ErrNotFound) {
			return fmt.Errorf("CO-RE target: enum %s: %w", funcIDEnum, err)
		}
	}
	m.Type = ebpf.PerfEventArray
	m.KeySize, m.ValueSize = 4, 4
	m.MaxEntries = 0 // cilium/ebpf makes it the number of possible CPUs
	return nil
}

// prepareLoad finds the CO-RE target, makes the tracer map (if any) match
// it, and returns the options to load spec with. The kernel's BTF, when
// there is one, is decoded once for both.
func prepareLoad(spec *ebpf.CollectionSpec, tracerMap string, opts Options) (ebpf.CollectionOptions, *coreTarget, error) {
	cache := btf.NewCache()
	target, err := findCORETarget(opts, cache)
	if err != nil {
		return ebpf.CollectionOptions{}, nil, err
	}
	if err := matchTracerMap(spec, tracerMap, target); err != nil {
		return ebpf.CollectionOptions{}, nil, err
	}
	types, err := target.kernelTypes()
	if err != nil {
		return ebpf.CollectionOptions{}, nil, err
	}
	return ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: types}, Cache: cache}, target, nil
}
