package runner

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/verify"
)

// btfgenTar packs entries (name -> contents) as a btfgen layer: a tar,
// gzip-compressed unless plain is set.
func btfgenTar(t *testing.T, plain bool, entries ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if !plain {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e[0], Mode: 0o644, Size: int64(len(e[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestBTFGenEntry(t *testing.T) {
	debian := host{release: "6.1.0-13-amd64", machine: "x86_64", osID: "debian", osVersion: "12"}
	arm := host{release: "5.15.0-91-generic", machine: "aarch64", osID: "ubuntu", osVersion: "22.04"}
	for _, tc := range []struct {
		name    string
		layer   []byte
		host    host
		want    string // entry picked, "" for none
		wantErr string
	}{
		{"exact", btfgenTar(t, false,
			[2]string{"debian/12/x86_64/6.1.0-12-amd64.btf", "a"},
			[2]string{"debian/12/x86_64/6.1.0-13-amd64.btf", "b"},
			[2]string{"debian/12/arm64/6.1.0-13-arm64.btf", "c"}), debian, "debian/12/x86_64/6.1.0-13-amd64.btf", ""},
		{"leading ./ and a plain tar", btfgenTar(t, true,
			[2]string{"./debian/12/x86_64/6.1.0-13-amd64.btf", "b"}), debian, "debian/12/x86_64/6.1.0-13-amd64.btf", ""},
		{"other distribution, same release", btfgenTar(t, false,
			[2]string{"mydistro/1/x86_64/6.1.0-13-amd64.btf", "b"}), debian, "mydistro/1/x86_64/6.1.0-13-amd64.btf", ""},
		{"btfhub's arm64 for aarch64", btfgenTar(t, false,
			[2]string{"ubuntu/22.04/arm64/5.15.0-91-generic.btf", "b"}), arm, "ubuntu/22.04/arm64/5.15.0-91-generic.btf", ""},
		{"os-release decides", btfgenTar(t, false,
			[2]string{"centos/8/x86_64/6.1.0-13-amd64.btf", "a"},
			[2]string{"debian/12/x86_64/6.1.0-13-amd64.btf", "b"}), debian, "debian/12/x86_64/6.1.0-13-amd64.btf", ""},
		{"ambiguous", btfgenTar(t, false,
			[2]string{"centos/8/x86_64/6.1.0-13-amd64.btf", "a"},
			[2]string{"fedora/38/x86_64/6.1.0-13-amd64.btf", "b"}), debian, "",
			`2 entries for 6.1.0-13-amd64 on x86_64 (centos/8/x86_64/6.1.0-13-amd64.btf, fedora/38/x86_64/6.1.0-13-amd64.btf) and none for this system's os-release (ID "debian", VERSION_ID "12")`},
		{"wrong architecture", btfgenTar(t, false,
			[2]string{"debian/12/arm64/6.1.0-13-amd64.btf", "a"}), debian, "", ""},
		{"not a tar", []byte{0x1f, 0x8b, 1, 2, 3}, debian, "", "gunzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, data, names, err := btfgenEntry(tc.layer, tc.host)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if name != tc.want {
				t.Fatalf("picked %q, want %q (entries %v)", name, tc.want, names)
			}
			if name != "" && string(data) != "b" {
				t.Errorf("contents %q, want the entry's", data)
			}
			if name == "" && len(names) == 0 {
				t.Error("no entry names returned to explain the miss")
			}
		})
	}
}

// minimizedBTF runs the real btfgen, bpftool gen min_core_btf, on a gadget:
// the kernel types its CO-RE relocations use, as an image's btfgen layer
// carries them.
func minimizedBTF(t *testing.T, elf []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	obj, out := filepath.Join(dir, "prog.o"), filepath.Join(dir, "out.btf")
	if err := os.WriteFile(obj, elf, 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command("bpftool", "gen", "min_core_btf", "/sys/kernel/btf/vmlinux", out, obj).CombinedOutput(); err != nil {
		t.Fatalf("bpftool gen min_core_btf: %v\n%s", err, msg)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// withoutRingbuf removes the ring buffer helpers from enum bpf_func_id in
// raw BTF, so that it describes a kernel older than 5.8.
func withoutRingbuf(t *testing.T, raw []byte) []byte {
	t.Helper()
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var types []btf.Type
	removed := 0
	for typ, err := range spec.All() {
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := typ.(*btf.Enum); ok && e.Name == funcIDEnum {
			var kept []btf.EnumValue
			for _, v := range e.Values {
				if strings.Contains(v.Name, "ringbuf") {
					removed++
				} else {
					kept = append(kept, v)
				}
			}
			e.Values = kept
		}
		types = append(types, typ)
	}
	if removed == 0 {
		t.Fatalf("the minimized BTF has no ring buffer helpers in enum %s to remove", funcIDEnum)
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hostEntry is the name of this machine's entry in a btfgen layer, as
// Inspektor Gadget looks it up.
func hostEntry(t *testing.T) (string, host) {
	t.Helper()
	h, err := thisHost()
	if err != nil {
		t.Fatal(err)
	}
	if h.osID == "" || h.osVersion == "" {
		t.Skip("no ID and VERSION_ID in os-release to name a btfgen entry")
	}
	return fmt.Sprintf("%s/%s/%s/%s.btf", h.osID, h.osVersion, h.machine, h.release), h
}

// noKernelBTF pretends the kernel has no BTF.
func noKernelBTF() (*btf.Spec, error) {
	return nil, errors.New("pretending: no /sys/kernel/btf/vmlinux")
}

// TestRunBTFGen runs trace_exec, really loaded and attached, with its CO-RE
// types from an image's btfgen layer as on a kernel without BTF: on a kernel
// with ring buffers, and on one without, where events come through a perf
// event array filled from gadget_heap.
func TestRunBTFGen(t *testing.T) {
	requireRoot(t)
	elf := traceExecELF(t)
	entry, h := hostEntry(t)
	minimized := minimizedBTF(t, elf)
	noRingbuf := withoutRingbuf(t, minimized)

	for _, tc := range []struct {
		name      string
		kernelBTF func() (*btf.Spec, error)
		btf       []byte
		want      ebpf.MapType // the type of map events in the kernel
	}{
		{"kernel without BTF, with ring buffers", noKernelBTF, minimized, ebpf.RingBuf},
		{"kernel without BTF or ring buffers", noKernelBTF, noRingbuf, ebpf.PerfEventArray},
		// The kernel's own BTF wins over the layer's.
		{"kernel with BTF", nil, noRingbuf, ebpf.RingBuf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{btfgen: btfgenTar(t, false, [2]string{entry, string(tc.btf)}), kernelBTF: tc.kernelBTF}
			runTraceExecProbe(t, tc.want, opts, func(ctx context.Context, opts Options) (*Stats, error) {
				return run(ctx, "trace_exec", elf, opts)
			})
		})
	}

	// Without an entry for this kernel, the CO-RE gadget cannot load, and
	// the error says why.
	for _, tc := range []struct {
		name  string
		layer []byte
		want  string
	}{
		{"no entry for this release", btfgenTar(t, false, [2]string{"debian/12/" + h.machine + "/1.2.3-other.btf", string(minimized)}),
			"this kernel has no BTF (CONFIG_DEBUG_INFO_BTF: pretending: no /sys/kernel/btf/vmlinux) and the image has no btfgen entry for " +
				h.release + " on " + h.machine + " (its btfgen layer has one entry: debian/12/" + h.machine + "/1.2.3-other.btf), " +
				"and the gadget is compiled for CO-RE against it"},
		{"no btfgen layer", nil, "the image has no btfgen entry for " + h.release + " (it has no btfgen layer)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stats, err := run(context.Background(), "trace_exec", elf, Options{Output: io.Discard, btfgen: tc.layer, kernelBTF: noKernelBTF})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
			if stats != nil {
				t.Errorf("stats %+v after a failed load, want nil: nothing ran", *stats)
			}
			if held := ownBPFObjects(t); len(held) != 0 {
				t.Errorf("process still holds %v after the failed run", held)
			}
		})
	}
}

// runTraceExecProbe runs trace_exec through start while a probe binary
// execs, checks the first event of the probe (pid, comm, filename, ppid) and
// that the gadget's map events had type want in the kernel, with
// gadget_heap beside it, and that everything was released after the run.
func runTraceExecProbe(t *testing.T, want ebpf.MapType, opts Options, start func(context.Context, Options) (*Stats, error)) {
	t.Helper()
	requireNothingHeld(t)
	probe := probeBinary(t)
	comm := filepath.Base(probe)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts.Output = io.Discard
	opts.Timeout = time.Minute
	var found <-chan firstEvent
	opts.OnEvent, found = atFirstEvent(comm, cancel, "events", "gadget_heap")
	done := make(chan result, 1)
	go func() {
		stats, err := start(ctx, opts)
		done <- result{stats, err}
	}()
	stop := execLoop(t, probe)
	r := waitWhileRunning(t, found, done, "an event for "+comm)
	res := wait(t, done, "the run to end")
	pids := stop()
	if res.err != nil || r.err != nil {
		t.Fatal(res.err, r.err)
	}

	if typ := r.maps["events"].Type; typ != want {
		t.Errorf("map events is a %s in the kernel, want a %s", typ, want)
	}
	if typ := r.maps["gadget_heap"].Type; typ != ebpf.PerCPUArray {
		t.Errorf("map gadget_heap is a %s, want a PerCPUArray", typ)
	}
	pid, _ := r.ev.Value("pid")
	if p, ok := pid.(uint32); !ok || !containsPID(pids, int(p)) {
		t.Errorf("pid %v is not one of the probes started: %v", pid, pids)
	}
	checkFields(t, r.ev, map[string]any{"filename": probe, "ppid": uint32(os.Getpid())})
	if res.stats.Lost != 0 {
		t.Errorf("stats %+v, want no losses", *res.stats)
	}
	// Its program, events, gadget_heap and .bss, whichever the map types.
	checkReleased(t, r.held, 1, 3)
}

// TestGadgetsLoadWithoutRingbuf loads every built-in CO-RE gadget that uses
// gadget/buffer.h as on a kernel without ring buffers: the verifier accepts
// each program with its tracer map turned into a perf event array. Gadgets
// this host cannot load at all (fentry) are skipped.
func TestGadgetsLoadWithoutRingbuf(t *testing.T) {
	requireRoot(t)
	entry, _ := hostEntry(t)
	sources, err := filepath.Glob(filepath.Join("..", "gadgets", "*", "program.bpf.c"))
	if err != nil {
		t.Fatal(err)
	}
	tested := 0
	for _, src := range sources {
		code, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(code, []byte("<gadget/buffer.h>")) || bytes.Contains(code, []byte("<gadget/nocore.h>")) {
			continue
		}
		name := filepath.Base(filepath.Dir(src))
		t.Run(name, func(t *testing.T) {
			elf := gadgetELF(t, name)
			load := func(opts Options) (ebpf.MapType, error) {
				spec := loadSpec(t, elf)
				g, err := parseGadget(spec)
				if err != nil {
					t.Fatal(err)
				}
				spec.Variables = nil
				loadOpts, _, err := prepareLoad(spec, g.events, opts)
				if err != nil {
					t.Fatal(err)
				}
				coll, err := ebpf.NewCollectionWithOptions(spec, loadOpts)
				if err != nil {
					return 0, err
				}
				defer coll.Close()
				return coll.Maps[g.events].Type(), nil
			}
			if _, err := load(Options{}); err != nil {
				t.Skipf("this host cannot load %s even with its own BTF: %v", name, err)
			}
			layer := btfgenTar(t, false, [2]string{entry, string(withoutRingbuf(t, minimizedBTF(t, elf)))})
			typ, err := load(Options{btfgen: layer, kernelBTF: noKernelBTF})
			if err != nil {
				t.Fatalf("load without ring buffers: %v", err)
			}
			if typ != ebpf.PerfEventArray {
				t.Errorf("tracer map is a %s, want a PerfEventArray", typ)
			}
			tested++
		})
	}
	if tested < 4 {
		t.Errorf("only %d gadgets loaded without ring buffers, want trace_exec, trace_open, trace_signal, trace_tcpconnect at least", tested)
	}
}

// TestRunApprovedBTFGen: the btfgen layer of a signed image reaches the
// runner through verify.Approved. trace_exec is packaged with a layer for
// this kernel minus ring buffers, signed, verified and run through Run on a
// kernel pretending to have no BTF: its events come through a perf event
// array.
func TestRunApprovedBTFGen(t *testing.T) {
	requireRoot(t)
	elf := traceExecELF(t)
	entry, _ := hostEntry(t)
	layer := btfgenTar(t, false, [2]string{entry, string(withoutRingbuf(t, minimizedBTF(t, elf)))})

	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const ref = "example.com/gadgets/trace_exec:btfgen"
	// The layer after the program, as ig image build --btfgen adds it.
	id, err := l.PackageGadget(oci.Gadget{Ref: ref, Arch: runtime.GOARCH, Program: elf, Metadata: []byte("name: trace_exec\n"),
		Layers: []oci.Layer{{MediaType: oci.MediaTypeBTFGen, Data: layer}}})
	if err != nil {
		t.Fatal(err)
	}

	key := testkey.New(t)
	payload, err := cosign.NewPayload(id.Digest, ref)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cosign.Sign(key.Private, payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cosign.WriteSignature(l, id.Digest, payload, sig); err != nil {
		t.Fatal(err)
	}
	approved, err := verify.GadgetWithKeys([]trust.Key{key.Public}, l, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(approved.BTFGen(), layer) {
		t.Fatal("the approved gadget does not carry the btfgen layer")
	}

	runTraceExecProbe(t, ebpf.PerfEventArray, Options{kernelBTF: noKernelBTF}, func(ctx context.Context, opts Options) (*Stats, error) {
		return Run(ctx, approved, opts)
	})
}

func TestCheckBTFGen(t *testing.T) {
	var b btf.Builder
	valid, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const entry = "debian/12/x86_64/6.1.0-57-amd64.btf"
	for _, tt := range []struct {
		name    string
		layer   []byte
		want    []string
		wantErr string
	}{
		{"gzip tar", btfgenTar(t, false, [2]string{entry, string(valid)}, [2]string{"debian/12/aarch64/6.1.0-57-arm64.btf", string(valid)}),
			[]string{entry, "debian/12/aarch64/6.1.0-57-arm64.btf"}, ""},
		{"plain tar, leading slash", btfgenTar(t, true, [2]string{"/" + entry, string(valid)}), []string{entry}, ""},
		{"entry not in btfhub's layout", btfgenTar(t, false, [2]string{"6.1.0-57-amd64.btf", string(valid)}), nil, "want <os-release ID>/<VERSION_ID>/<machine>/<kernel release>.btf"},
		{"entry without .btf", btfgenTar(t, false, [2]string{"debian/12/x86_64/6.1.0-57-amd64", string(valid)}), nil, "want <os-release ID>"},
		{"entry is not BTF", btfgenTar(t, false, [2]string{entry, "not btf"}), nil, "entry " + entry + ": not BTF"},
		{"no entries", btfgenTar(t, false), nil, "no .btf entry"},
		{"not a tar", []byte("hello, world: certainly not a tar archive, which has 512-byte headers"), nil, "read tar"},
		{"broken gzip", []byte{0x1f, 0x8b, 0, 1}, nil, "gunzip"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckBTFGen(tt.layer)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("CheckBTFGen = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
