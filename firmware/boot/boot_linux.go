package boot

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfleet/bpfleet/firmware"
)

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// mounts: proc first, so everything started later finds /proc/self.
var mounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"bpf", "/sys/fs/bpf", "bpf", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0700"},
	{"tracefs", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"debugfs", "/sys/kernel/debug", "debugfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

// Mount mounts the kernel filesystems and points fds 0-2 at the console. Filesystems the
// kernel lacks are skipped; an already mounted one is fine.
func Mount() error {
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil && !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("boot: mkdir %s: %w", m.target, err)
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		switch {
		case err == nil, errors.Is(err, unix.EBUSY):
		case errors.Is(err, unix.ENODEV) && m.fstype != "proc" && m.fstype != "sysfs":
			// the kernel has no such filesystem: not fatal
		default:
			return fmt.Errorf("boot: mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	console, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("boot: open console: %w", err)
	}
	for fd := range 3 {
		if err := unix.Dup3(console, fd, 0); err != nil {
			return fmt.Errorf("boot: console: %w", err)
		}
	}
	if console > 2 {
		unix.Close(console)
	}
	return nil
}

// LoadModules loads the modules listed (one path a line) in the file the firmware wrote, in
// order. A module already loaded (or built in) is fine. It returns how many it loaded.
func LoadModules(list string) (int, error) {
	f, err := os.Open(list)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" {
			continue
		}
		if err := loadModule(p); err != nil {
			return n, err
		}
		n++
	}
	return n, sc.Err()
}

func loadModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("boot: module %s: %w", path, err)
	}
	defer unix.Close(fd)
	flags := 0
	if !strings.HasSuffix(path, ".ko") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE // .ko.xz, .ko.zst: the kernel decompresses
	}
	if err := unix.FinitModule(fd, "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("boot: load module %s: %w", path, err)
	}
	return nil
}

// LoadNetwork reads the network configuration the firmware wrote; nil when there is none.
func LoadNetwork(path string) (*firmware.Network, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var n firmware.Network
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("boot: %s: %w", path, err)
	}
	return &n, nil
}

// ConfigureNetwork brings lo and n.Interface up with n.Address, and adds the default route via
// n.Gateway. It waits up to wait for the interface to appear (its driver probes asynchronously).
func ConfigureNetwork(n firmware.Network, wait time.Duration) error {
	prefix, err := netip.ParsePrefix(n.Address)
	if err != nil || !prefix.Addr().Is4() {
		return fmt.Errorf("boot: address %q: want IPv4 CIDR", n.Address)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := setUp(fd, "lo"); err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		if _, err := os.Stat("/sys/class/net/" + n.Interface); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("boot: no interface %s after %s", n.Interface, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	addr := prefix.Addr().As4()
	var maskBytes [4]byte
	binary.BigEndian.PutUint32(maskBytes[:], ^uint32(0)<<(32-prefix.Bits()))
	for _, s := range []struct {
		req uint
		ip  []byte
	}{{unix.SIOCSIFADDR, addr[:]}, {unix.SIOCSIFNETMASK, maskBytes[:]}} {
		ifr, err := unix.NewIfreq(n.Interface)
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(s.ip); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, s.req, ifr); err != nil {
			return fmt.Errorf("boot: %s address: %w", n.Interface, err)
		}
	}
	if err := setUp(fd, n.Interface); err != nil {
		return err
	}
	if n.Gateway == "" {
		return nil
	}
	gw, err := netip.ParseAddr(n.Gateway)
	if err != nil || !gw.Is4() {
		return fmt.Errorf("boot: gateway %q: want IPv4", n.Gateway)
	}
	ifr, err := unix.NewIfreq(n.Interface)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fmt.Errorf("boot: %s index: %w", n.Interface, err)
	}
	return addDefaultRoute(gw.As4(), ifr.Uint32())
}

func setUp(fd int, name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("boot: %s flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("boot: %s up: %w", name, err)
	}
	return nil
}

// addDefaultRoute sends one RTM_NEWROUTE request (0.0.0.0/0 via gw dev ifindex) and reads its
// acknowledgement.
func addDefaultRoute(gw [4]byte, ifindex uint32) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	attr := func(typ uint16, val []byte) []byte {
		b := make([]byte, unix.SizeofRtAttr+len(val))
		binary.NativeEndian.PutUint16(b[0:], uint16(len(b)))
		binary.NativeEndian.PutUint16(b[2:], typ)
		copy(b[unix.SizeofRtAttr:], val)
		return b
	}
	var oif [4]byte
	binary.NativeEndian.PutUint32(oif[:], ifindex)
	body := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	body = append(body, attr(unix.RTA_GATEWAY, gw[:])...)
	body = append(body, attr(unix.RTA_OIF, oif[:])...)
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], unix.RTM_NEWROUTE)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("boot: add route: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("boot: add route: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return fmt.Errorf("boot: add route: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return fmt.Errorf("boot: add route: %w", unix.Errno(-code))
			}
			return nil
		}
	}
	return errors.New("boot: add route: no acknowledgement")
}

// Uptime is the time since the kernel started (CLOCK_BOOTTIME).
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// PowerOff flushes filesystems and powers the machine off. It returns only if that failed.
func PowerOff() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
