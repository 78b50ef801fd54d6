package firmware

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/bpfleet/bpfleet/agent"
)

// fixture makes a spec from small files: stand-in binaries, a root, one layout and a kernel
// modules directory whose modules.dep chains virtio_net to two dependencies.
func fixture(t *testing.T) Spec {
	t.Helper()
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("layout/oci-layout", `{"imageLayoutVersion":"1.0.0"}`)
	write("layout/index.json", `{}`)
	write("layout/blobs/sha256/abc", "blob")
	mods := filepath.Join(dir, "modules/6.1.0-57-arm64")
	write("modules/6.1.0-57-arm64/modules.dep", "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"+
		"kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\nkernel/net/core/failover.ko:\n"+
		"kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko\n"+
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko:\nkernel/unused.ko:\n")
	for _, m := range []string{"drivers/net/virtio_net", "drivers/net/net_failover", "net/core/failover", "drivers/virtio/virtio_pci",
		"drivers/virtio/virtio_pci_modern_dev", "unused"} {
		write("modules/6.1.0-57-arm64/kernel/"+m+".ko", "module "+m)
	}
	return Spec{
		Init: write("init", "init binary"), AgentBin: write("bpfleet", "agent binary"), Root: write("root.cbor", "root"),
		Agent:         Agent{DeviceID: "dev-1", Fleet: "plant-a", Broker: "tcp://10.0.2.2:1883"},
		Layouts:       []string{filepath.Join(dir, "layout")},
		Network:       &Network{Interface: "eth0", Address: "10.0.2.15/24", Gateway: "10.0.2.2"},
		KernelModules: mods, Modules: []string{"virtio-pci", "virtio_net"},
		Files: []File{{Path: "/bin/probe", Mode: fs.ModeSymlink, Link: "/init"}},
		Epoch: time.Unix(1700000000, 0),
	}
}

func build(t *testing.T, s Spec) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := Build(s, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// newcHeader is one raw newc header, parsed independently of the cpio library.
type newcHeader struct {
	name                          string
	ino, mode, nlink, mtime, size int64
	rdevMajor, rdevMinor          int64
}

func parseNewc(t *testing.T, raw []byte) []newcHeader {
	t.Helper()
	var hs []newcHeader
	for off := 0; ; {
		if off%4 != 0 || len(raw) < off+110 || string(raw[off:off+6]) != "070701" {
			t.Fatalf("bad newc header at %d", off)
		}
		field := func(i int) int64 {
			v, err := strconv.ParseInt(string(raw[off+6+8*i:off+14+8*i]), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		nameSize := field(11)
		h := newcHeader{name: string(raw[off+110 : off+110+int(nameSize)-1]), ino: field(0), mode: field(1), nlink: field(4),
			mtime: field(5), size: field(6), rdevMajor: field(9), rdevMinor: field(10)}
		if h.name == "TRAILER!!!" {
			return hs
		}
		hs = append(hs, h)
		off += (110 + int(nameSize) + 3) &^ 3
		off += (int(h.size) + 3) &^ 3
	}
}

func TestBuildIsReproducible(t *testing.T) {
	s := fixture(t)
	a, b := build(t, s), build(t, s)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same spec differ")
	}
	// Input file times do not matter; the epoch does.
	os.Chtimes(s.Root, time.Now(), time.Now().Add(-time.Hour))
	if !bytes.Equal(a, build(t, s)) {
		t.Fatal("an input's mtime changed the image")
	}
	s.Epoch = s.Epoch.Add(time.Second)
	if bytes.Equal(a, build(t, s)) {
		t.Fatal("the epoch did not change the image")
	}
}

func TestBuildContents(t *testing.T) {
	s := fixture(t)
	raw := gunzip(t, build(t, s))
	hs := parseNewc(t, raw)
	var names []string
	for i, h := range hs {
		names = append(names, h.name)
		if h.mtime != s.Epoch.Unix() || h.ino != int64(i+1) {
			t.Errorf("%s: mtime %d ino %d", h.name, h.mtime, h.ino)
		}
		if strings.HasPrefix(h.name, "/") {
			t.Errorf("%s: absolute name", h.name)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}
	devs := map[string][2]int64{}
	for _, h := range hs {
		if h.mode&0o170000 == 0o020000 {
			devs[h.name] = [2]int64{h.rdevMajor, h.rdevMinor}
		}
	}
	if devs["dev/console"] != [2]int64{5, 1} || devs["dev/null"] != [2]int64{1, 3} {
		t.Errorf("device nodes: %v", devs)
	}

	// The same archive through the library's reader: contents and types.
	files := map[string]string{}
	modes := map[string]cpio.FileMode{}
	r := cpio.NewReader(bytes.NewReader(raw))
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(r)
		if h.Mode&cpio.ModeType == cpio.TypeSymlink {
			data = []byte(h.Linkname) // the reader moves a symlink's target there
		}
		files[h.Name], modes[h.Name] = string(data), h.Mode
	}
	for name, want := range map[string]string{
		"init": "init binary", "bin/bpfleet": "agent binary", "etc/bpfleet/root.cbor": "root",
		"usr/share/bpfleet/images/layout/blobs/sha256/abc": "blob", "bin/probe": "/init",
		"etc/bpfleet/modules": "/lib/modules/6.1.0-57-arm64/kernel/drivers/virtio/virtio_pci_modern_dev.ko\n" +
			"/lib/modules/6.1.0-57-arm64/kernel/drivers/virtio/virtio_pci.ko\n" +
			"/lib/modules/6.1.0-57-arm64/kernel/net/core/failover.ko\n" +
			"/lib/modules/6.1.0-57-arm64/kernel/drivers/net/net_failover.ko\n" +
			"/lib/modules/6.1.0-57-arm64/kernel/drivers/net/virtio_net.ko\n",
		"lib/modules/6.1.0-57-arm64/kernel/net/core/failover.ko": "module net/core/failover",
	} {
		if files[name] != want {
			t.Errorf("%s = %q, want %q", name, files[name], want)
		}
	}
	if _, ok := files["lib/modules/6.1.0-57-arm64/kernel/unused.ko"]; ok {
		t.Error("a module nobody needs was included")
	}
	if modes["init"].Perm() != 0o755 || !modes["var/lib/bpfleet"].IsDir() || modes["bin/probe"]&cpio.ModeType != cpio.TypeSymlink {
		t.Errorf("modes: init %v, var/lib/bpfleet %v, bin/probe %v", modes["init"], modes["var/lib/bpfleet"], modes["bin/probe"])
	}

	// The agent accepts the config the image carries, and finds the root beside it.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "agent.json"), []byte(files["etc/bpfleet/agent.json"]), 0o644)
	cfg, err := agent.LoadConfig(filepath.Join(dir, "agent.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DeviceID != "dev-1" || cfg.Root != filepath.Join(dir, "root.cbor") {
		t.Errorf("config: %+v", cfg)
	}
}

// TestBuildProvision: provisioned updates go into the image in order, and the agent config
// lists them where the agent finds them (relative to the config).
func TestBuildProvision(t *testing.T) {
	s := fixture(t)
	dir := t.TempDir()
	for _, f := range []string{"delta-1.cbor", "delta-2.cbor"} {
		os.WriteFile(filepath.Join(dir, f), []byte("sealed "+f), 0o644)
	}
	s.Provision = []string{filepath.Join(dir, "delta-1.cbor"), filepath.Join(dir, "delta-2.cbor")}
	files := map[string]string{}
	r := cpio.NewReader(bytes.NewReader(gunzip(t, build(t, s))))
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(r)
		files[h.Name] = string(data)
	}
	if files["etc/bpfleet/provision/01-delta-1.cbor"] != "sealed delta-1.cbor" || files["etc/bpfleet/provision/02-delta-2.cbor"] != "sealed delta-2.cbor" {
		t.Errorf("provisioned files missing or wrong: %q %q", files["etc/bpfleet/provision/01-delta-1.cbor"], files["etc/bpfleet/provision/02-delta-2.cbor"])
	}
	cdir := t.TempDir()
	os.WriteFile(filepath.Join(cdir, "agent.json"), []byte(files["etc/bpfleet/agent.json"]), 0o644)
	cfg, err := agent.LoadConfig(filepath.Join(cdir, "agent.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(cdir, "provision/01-delta-1.cbor"), filepath.Join(cdir, "provision/02-delta-2.cbor")}
	if !slices.Equal(cfg.Provision, want) {
		t.Errorf("config provision = %v, want %v", cfg.Provision, want)
	}
	s.Provision = append(s.Provision, filepath.Join(dir, "missing.cbor"))
	if _, err := Build(s, io.Discard); err == nil {
		t.Error("a missing provisioned file was accepted")
	}
}

func TestBuildRefuses(t *testing.T) {
	for name, change := range map[string]func(*Spec){
		"no root":        func(s *Spec) { s.Root = "" },
		"missing layout": func(s *Spec) { s.Layouts = append(s.Layouts, "/nonexistent") },
		"unknown module": func(s *Spec) { s.Modules = append(s.Modules, "e1000") },
		"duplicate path": func(s *Spec) { s.Files = append(s.Files, File{Path: "/init", Data: []byte("x"), Mode: 0o755}) },
		"wrong machine":  func(s *Spec) { s.Arch = "arm" },
	} {
		t.Run(name, func(t *testing.T) {
			s := fixture(t)
			change(&s)
			if _, err := Build(s, io.Discard); err == nil {
				t.Fatal("built")
			}
		})
	}
}

func TestResolveModules(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("a.ko: b.ko\nb.ko: a.ko\nc.ko.xz:\n"), 0o644)
	if _, err := ResolveModules(dir, []string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}
	if got, err := ResolveModules(dir, []string{"c"}); err != nil || !slices.Equal(got, []string{"c.ko.xz"}) {
		t.Errorf("compressed module: %v %v", got, err)
	}
	if _, err := ResolveModules(t.TempDir(), []string{"c"}); err == nil || !strings.Contains(err.Error(), "depmod") {
		t.Errorf("no modules.dep: %v", err)
	}
}

func TestCheckBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	if err := CheckBinary(self, other); err == nil || !strings.Contains(err.Error(), "not "+other) {
		t.Errorf("wrong machine: %v", err)
	}
	if err := CheckBinary(self, "vax"); err == nil {
		t.Error("unknown arch accepted")
	}
}
