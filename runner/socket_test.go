package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Socket filter gadgets run in a network namespace of their own here: the
// filter sees only the test's packets, and the test's packet socket never
// sees the host's traffic.

// inNetns runs f on a goroutine locked to an OS thread that has a fresh
// network namespace with its loopback up. Sockets f creates belong to that
// namespace, whichever thread uses them later. The thread is never
// unlocked, so Go ends it with the goroutine and nothing else ever runs in
// the namespace. The returned channel receives f's error, or the setup's.
func inNetns(f func() error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("new network namespace: %w", err)
			return
		}
		if err := loopbackUp(); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return errc
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// heldPacketSockets lists this process's descriptors that are AF_PACKET
// sockets, in any namespace.
func heldPacketSockets() ([]int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(target, "socket:") {
			continue // closed since the directory was read, or not a socket
		}
		if domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && domain == unix.AF_PACKET {
			fds = append(fds, fd)
		}
	}
	return fds, nil
}

// namespacePacketSockets counts the packet sockets of the calling thread's
// network namespace, as the kernel lists them.
func namespacePacketSockets() (int, error) {
	list, err := os.ReadFile("/proc/thread-self/net/packet")
	if err != nil {
		return 0, err
	}
	return strings.Count(string(list), "\n") - 1, nil // less the header
}

// udpPeers are the test's sockets in the namespace: client sends to server,
// other sends to elsewhere, a port the gadget is told to ignore.
type udpPeers struct {
	client, other         *net.UDPConn
	server, elsewhere     *net.UDPConn
	src, dst, otherTarget netip.AddrPort
	loIndex               uint32
}

func newUDPPeers(network string) (*udpPeers, error) {
	host := map[string]string{"udp4": "127.0.0.1", "udp6": "::1"}[network]
	p := &udpPeers{}
	listen := func() (*net.UDPConn, netip.AddrPort, error) {
		c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(host), 0)))
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		return c, c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
	}
	dial := func(to netip.AddrPort) (*net.UDPConn, netip.AddrPort, error) {
		c, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		return c, c.LocalAddr().(*net.UDPAddr).AddrPort(), nil
	}
	var err error
	if p.server, p.dst, err = listen(); err != nil {
		return nil, err
	}
	if p.elsewhere, p.otherTarget, err = listen(); err != nil {
		p.close()
		return nil, err
	}
	if p.client, p.src, err = dial(p.dst); err != nil {
		p.close()
		return nil, err
	}
	if p.other, _, err = dial(p.otherTarget); err != nil {
		p.close()
		return nil, err
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		p.close()
		return nil, err
	}
	p.loIndex = uint32(lo.Index)
	return p, nil
}

func (p *udpPeers) close() {
	for _, c := range []*net.UDPConn{p.client, p.other, p.server, p.elsewhere} {
		if c != nil {
			c.Close()
		}
	}
}

func TestTraceUDP(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_udp")
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) { testTraceUDP(t, elf, network) })
	}
}

func testTraceUDP(t *testing.T, elf []byte, network string) {
	requireNothingHeld(t)
	const payloadLen = 123
	payload := bytes.Repeat([]byte("u"), payloadLen)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onEvent, events := collect()
	peersc := make(chan *udpPeers, 1)
	done := make(chan result, 1)
	// Observed on the namespace's thread, which runs the gadget: at the
	// first event, and after the run.
	var (
		heldDuring          map[kernelObject]bool
		socketsDuring       []int
		nsDuring, nsAfter   int
		duringErr, afterErr error
		out                 bytes.Buffer
		skipped             error
	)
	nsErr := inNetns(func() error {
		peers, err := newUDPPeers(network)
		if err != nil {
			if network == "udp6" {
				skipped = err
				close(peersc)
				return nil
			}
			return err
		}
		peersc <- peers // the test closes them, once it stopped sending
		stats, err := run(ctx, "trace_udp", elf, Options{
			Output:  &out,
			Format:  FormatJSON,
			Timeout: time.Minute,
			Params:  map[string]string{"port": strconv.Itoa(int(peers.dst.Port()))},
			OnEvent: func(ev Event) {
				if heldDuring == nil && duringErr == nil {
					heldDuring, duringErr = heldBPFObjects()
					if duringErr == nil {
						socketsDuring, duringErr = heldPacketSockets()
					}
					if duringErr == nil {
						nsDuring, duringErr = namespacePacketSockets()
					}
				}
				onEvent(ev)
			},
		})
		done <- result{stats, err}
		nsAfter, afterErr = namespacePacketSockets()
		return nil
	})

	var peers *udpPeers
	select {
	case peers = <-peersc:
	case err := <-nsErr:
		t.Fatal(err)
	}
	if peers == nil {
		t.Skipf("no IPv6 loopback in a new namespace: %v", skipped)
	}
	defer peers.close()
	stop := triggerLoop(t, func() error {
		if _, err := peers.other.Write(payload[:7]); err != nil {
			return fmt.Errorf("send to %v: %w", peers.otherTarget, err)
		}
		if _, err := peers.client.Write(payload); err != nil {
			return fmt.Errorf("send to %v: %w", peers.dst, err)
		}
		return nil
	})
	defer stop()

	// On loopback a datagram is seen leaving, then arriving.
	seen := map[string]Event{}
	var all []Event
	for seen["outgoing"] == nil || seen["host"] == nil {
		ev, before := waitEvent(t, events, done, "the datagram leaving and arriving", func(ev Event) bool {
			src, _ := ev.Value("src")
			return src == peers.src
		})
		all = append(append(all, before...), ev)
		pktType, _ := ev.Value("pkt_type")
		seen[fmt.Sprint(pktType)] = ev
	}
	cancel()
	res := wait(t, done, "the run to end")
	stop()
	if err := wait(t, nsErr, "the namespace's goroutine"); err != nil {
		t.Fatal(err)
	}
	if res.err != nil {
		t.Fatal(res.err)
	}

	for pktType, ev := range seen {
		t.Run(pktType, func(t *testing.T) {
			checkFields(t, ev, map[string]any{"src": peers.src, "dst": peers.dst, "len": uint32(payloadLen),
				"ifindex": peers.loIndex})
		})
	}
	// The port parameter keeps the other datagrams out.
	for _, ev := range all {
		src, _ := ev.Value("src")
		dst, _ := ev.Value("dst")
		if src.(netip.AddrPort).Port() != peers.dst.Port() && dst.(netip.AddrPort).Port() != peers.dst.Port() {
			t.Errorf("event for %v -> %v despite port %d", src, dst, peers.dst.Port())
		}
	}
	if want := fmt.Sprintf(`"src":%q,"dst":%q,"len":%d`, peers.src, peers.dst, payloadLen); !strings.Contains(out.String(), want) {
		t.Errorf("output does not contain %s:\n%s", want, out.String())
	}

	// One packet socket while running, none after; no BPF object left.
	if duringErr != nil || afterErr != nil {
		t.Fatal(duringErr, afterErr)
	}
	if len(socketsDuring) != 1 || nsDuring != 1 {
		t.Errorf("while running: process holds packet sockets %v, namespace has %d; want one", socketsDuring, nsDuring)
	}
	if nsAfter != 0 {
		t.Errorf("namespace has %d packet sockets after the run, want 0", nsAfter)
	}
	if fds, err := heldPacketSockets(); err != nil || len(fds) != 0 {
		t.Errorf("process holds packet sockets %v (%v) after the run", fds, err)
	}
	// Its program; events, gadget_heap, .rodata (port) and .bss (markers).
	checkReleased(t, heldDuring, 1, 4)
}

// A run that ends by its timeout, without a single event, closes the
// socket running its filter too.
func TestSocketFilterClosed(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_udp")
	requireNothingHeld(t)
	var nsAfter int
	var afterErr error
	nsErr := inNetns(func() error {
		_, err := run(context.Background(), "trace_udp", elf, Options{Output: &bytes.Buffer{}, Timeout: time.Second})
		nsAfter, afterErr = namespacePacketSockets()
		return err
	})

	// Watch from outside the namespace, until the run ends: the socket is
	// the process's.
	var during []int
	var held map[kernelObject]bool
	timeout := time.After(15 * time.Second)
	for running := true; running; {
		select {
		case err := <-nsErr:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		case <-timeout:
			t.Fatal("timed out waiting for the run to end")
		case <-time.After(10 * time.Millisecond):
			if len(during) != 0 {
				continue
			}
			var err error
			if during, err = heldPacketSockets(); err != nil {
				t.Fatal(err)
			}
			if held, err = heldBPFObjects(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(during) != 1 {
		t.Fatalf("process held packet sockets %v while running, want one", during)
	}
	if fds, err := heldPacketSockets(); err != nil || len(fds) != 0 {
		t.Errorf("process holds packet sockets %v (%v) after the run", fds, err)
	}
	if afterErr != nil || nsAfter != 0 {
		t.Errorf("namespace has %d packet sockets (%v) after the run, want 0", nsAfter, afterErr)
	}
	checkReleased(t, held, 1, 4)
}

// Without CAP_NET_RAW the packet socket cannot be opened: the error says
// so, and what was loaded is released.
func TestSocketFilterNeedsNetRaw(t *testing.T) {
	requireRoot(t)
	elf := gadgetELF(t, "trace_udp")
	errc := make(chan error, 1)
	go func() {
		// Capabilities are per thread; this one is never unlocked, so it
		// ends with the goroutine and its reduced set with it.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_RAW
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		_, err := run(context.Background(), "trace_udp", elf, Options{Output: &bytes.Buffer{}, Timeout: time.Second})
		if err == nil {
			err = errors.New("run succeeded")
		}
		errc <- err
	}()
	err := wait(t, errc, "the run")
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "attach trace_udp (section socket): open AF_PACKET socket (needs CAP_NET_RAW)") {
		t.Fatalf("got error %v, want EPERM naming the program, the socket and CAP_NET_RAW", err)
	}
	if held := ownBPFObjects(t); len(held) != 0 {
		t.Errorf("process still holds %v after the failed run", held)
	}
	if fds, err := heldPacketSockets(); err != nil || len(fds) != 0 {
		t.Errorf("process holds packet sockets %v (%v) after the failed run", fds, err)
	}
}
