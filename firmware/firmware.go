package firmware

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
)

// Paths inside the image; the init reads them.
const (
	AgentPath    = "/bin/bpfleet"
	ConfigPath   = "/etc/bpfleet/agent.json"
	RootPath     = "/etc/bpfleet/root.cbor"
	ModulesPath  = "/etc/bpfleet/modules"
	NetworkPath  = "/etc/bpfleet/network.json"
	ProvisionDir = "/etc/bpfleet/provision"
	ImagesDir    = "/usr/share/bpfleet/images"
	DataDir      = "/var/lib/bpfleet"
	modulesRoot  = "/lib/modules"
	maxInputSize = 256 << 20
)

// Agent is what the image's agent config says; the root is always the image's root.cbor.
type Agent struct {
	DeviceID string `json:"device_id"`
	Fleet    string `json:"fleet"`
	Broker   string `json:"broker"`
}

// Network is the static IPv4 configuration /init gives Interface.
type Network struct {
	Interface string `json:"interface"` // e.g. eth0
	Address   string `json:"address"`   // CIDR, e.g. 10.0.2.15/24
	Gateway   string `json:"gateway"`   // default route, e.g. 10.0.2.2; empty for none
}

// File is an extra file, directory or symlink to put in the image.
type File struct {
	Path string      // absolute path in the image
	Data []byte      // contents of a regular file
	Mode fs.FileMode // fs.ModeDir, fs.ModeSymlink or a regular file's permissions
	Link string      // a symlink's target
}

// Spec says what goes into an image. Init, Agent, Root and Agent config are required.
type Spec struct {
	Arch     string // GOARCH of the device; when set, Init and AgentBin must be static ELF for it
	Init     string // the /init binary (static, for the image's architecture)
	AgentBin string // the bpfleet binary, installed as /bin/bpfleet
	Agent    Agent
	Root     string // the fleet's signed root (bpfleetctl root writes root.cbor)
	// Provision are sealed roots and deltas (bpfleetctl root/delta -o FILE) the agent applies
	// at start, offline and in this order, before it ever reaches the broker (the agent
	// config's provision field): trust the device has from its first boot. They are installed
	// in ProvisionDir as NN-<base name>.
	Provision []string
	Layouts   []string // OCI image layout directories, installed under ImagesDir by base name
	Network   *Network // nil: no network configuration
	// KernelModules is an unpacked kernel's /lib/modules/<release> directory with modules.dep;
	// Modules names the modules /init loads from it (their dependencies come along).
	KernelModules string
	Modules       []string
	Files         []File
	Epoch         time.Time // the time every entry carries; zero means 1970-01-01
}

// Build writes the image: a newc cpio archive, gzip-compressed. It returns the paths of the
// modules it included, in load order.
func Build(s Spec, w io.Writer) ([]string, error) {
	a, modules, err := s.archive()
	if err != nil {
		return nil, err
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if err := a.writeTo(zw); err != nil {
		return nil, err
	}
	return modules, zw.Close()
}

// BuildFile writes the image to path (atomically: a temporary file renamed into place).
func BuildFile(s Spec, out string) ([]string, error) {
	f, err := os.CreateTemp(filepath.Dir(out), ".initrd-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	modules, err := Build(s, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return nil, err
	}
	return modules, os.Rename(f.Name(), out)
}

func (s Spec) archive() (*archive, []string, error) {
	var missing []string
	for _, f := range []struct{ name, value string }{{"init", s.Init}, {"agent binary", s.AgentBin}, {"root", s.Root},
		{"device id", s.Agent.DeviceID}, {"fleet", s.Agent.Fleet}, {"broker", s.Agent.Broker}} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("firmware: missing %s", strings.Join(missing, ", "))
	}
	if s.Arch != "" {
		for _, bin := range []string{s.Init, s.AgentBin} {
			if err := CheckBinary(bin, s.Arch); err != nil {
				return nil, nil, err
			}
		}
	}
	if len(s.Modules) > 0 && s.KernelModules == "" {
		return nil, nil, errors.New("firmware: modules named but no kernel modules directory")
	}
	epoch := s.Epoch
	if epoch.IsZero() {
		epoch = time.Unix(0, 0)
	}
	a := newArchive(epoch)
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", DataDir} {
		if err := a.dir(d); err != nil {
			return nil, nil, err
		}
	}
	if err := a.charDev("/dev/console", 0o600, 5, 1); err != nil {
		return nil, nil, err
	}
	if err := a.charDev("/dev/null", 0o666, 1, 3); err != nil {
		return nil, nil, err
	}
	for _, f := range []struct {
		dst, src string
		perm     cpio.FileMode
	}{{"/init", s.Init, 0o755}, {AgentPath, s.AgentBin, 0o755}, {RootPath, s.Root, 0o644}} {
		data, err := readFile(f.src)
		if err != nil {
			return nil, nil, err
		}
		if err := a.file(f.dst, data, f.perm); err != nil {
			return nil, nil, err
		}
	}
	cfg := struct {
		Agent
		Root      string   `json:"root"`
		Provision []string `json:"provision,omitempty"`
	}{Agent: s.Agent, Root: path.Base(RootPath)}
	for i, src := range s.Provision {
		data, err := readFile(src)
		if err != nil {
			return nil, nil, err
		}
		dst := path.Join(ProvisionDir, fmt.Sprintf("%02d-%s", i+1, filepath.Base(src)))
		if err := a.file(dst, data, 0o644); err != nil {
			return nil, nil, err
		}
		// Relative to the config file, as the agent resolves them.
		rel := strings.TrimPrefix(dst, path.Dir(ConfigPath)+"/")
		cfg.Provision = append(cfg.Provision, rel)
	}
	if err := a.file(ConfigPath, mustJSON(cfg), 0o644); err != nil {
		return nil, nil, err
	}
	if s.Network != nil {
		if err := a.file(NetworkPath, mustJSON(s.Network), 0o644); err != nil {
			return nil, nil, err
		}
	}
	for _, dir := range s.Layouts {
		if err := a.addTree(path.Join(ImagesDir, filepath.Base(filepath.Clean(dir))), dir); err != nil {
			return nil, nil, err
		}
	}
	var loaded []string
	if s.KernelModules != "" {
		files, err := ResolveModules(s.KernelModules, s.Modules)
		if err != nil {
			return nil, nil, err
		}
		release := filepath.Base(filepath.Clean(s.KernelModules))
		for _, f := range files {
			data, err := readFile(filepath.Join(s.KernelModules, f))
			if err != nil {
				return nil, nil, err
			}
			dst := path.Join(modulesRoot, release, filepath.ToSlash(f))
			if err := a.file(dst, data, 0o644); err != nil {
				return nil, nil, err
			}
			loaded = append(loaded, dst)
		}
		if err := a.file(ModulesPath, []byte(strings.Join(loaded, "\n")+"\n"), 0o644); err != nil {
			return nil, nil, err
		}
	}
	for _, f := range s.Files {
		var err error
		switch {
		case f.Mode&fs.ModeSymlink != 0:
			err = a.symlink(f.Path, f.Link)
		case f.Mode.IsDir():
			err = a.dir(f.Path)
		default:
			err = a.file(f.Path, f.Data, cpio.FileMode(f.Mode.Perm()))
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return a, loaded, nil
}

// addTree copies a directory tree: directories, regular files (permissions kept, but never
// writable by others) and symlinks.
func (a *archive) addTree(dst, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return a.dir(target)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return a.symlink(target, link)
		case info.Mode().IsRegular():
			data, err := readFile(p)
			if err != nil {
				return err
			}
			return a.file(target, data, cpio.FileMode(info.Mode().Perm()&0o755))
		default:
			return fmt.Errorf("firmware: %s: not a file, directory or symlink", p)
		}
	})
}

func readFile(p string) ([]byte, error) {
	info, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("firmware: %w", err)
	}
	if info.Size() > maxInputSize {
		return nil, fmt.Errorf("firmware: %s: %d bytes is too large for an initramfs", p, info.Size())
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("firmware: %w", err)
	}
	return data, nil
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}
