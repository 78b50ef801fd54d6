package testbed

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace the testbed created: only its loopback, brought up. Everything
// the scenario needs on the network (broker, fleet server, QEMU's user-mode network) runs in
// it, so nothing can reach beyond it.
type Netns struct{ Name string }

// NewNetns creates a fresh namespace. Delete it when done.
func NewNetns(name string) (*Netns, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testbed: ip netns add %s: %v: %s", name, err, out)
	}
	n := &Netns{Name: name}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.Delete()
		return nil, fmt.Errorf("testbed: lo up in %s: %v: %s", name, err, out)
	}
	return n, nil
}

// Delete removes the namespace; processes still in it keep it alive, so stop them first.
func (n *Netns) Delete() error {
	if out, err := exec.Command("ip", "netns", "delete", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: ip netns delete %s: %v: %s", n.Name, err, out)
	}
	return nil
}

// Command is a command to run in the namespace (ip netns exec execs it: its PID is the command's).
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Dial connects to addr from inside the namespace: the socket is created on a thread that has
// joined it, and the thread is returned to the host namespace before it serves anyone else.
func (n *Netns) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join("/run/netns", n.Name))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		c, err := net.DialTimeout("tcp", addr, timeout)
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // back home; otherwise the locked thread dies with us
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// Mosquitto is a broker running in a namespace on its 127.0.0.1.
type Mosquitto struct {
	Port int
	dir  string
	cmd  *exec.Cmd
}

// StartMosquitto starts a broker in n with its config and persistence in dir.
func StartMosquitto(n *Netns, dir string, port int) (*Mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmessage_size_limit 1048576\npersistence true\npersistence_location %s/\nuser root\nlog_dest file %s\n",
		port, dir, filepath.Join(dir, "mosquitto.log"))
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	m := &Mosquitto{Port: port, dir: dir, cmd: n.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))}
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := n.Dial(m.Addr(), time.Second)
		if err == nil {
			c.Close()
			return m, nil
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("testbed: mosquitto did not listen in %s: %v\n%s", n.Name, err, m.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is the broker's address inside the namespace.
func (m *Mosquitto) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.Port) }

// URL is its tcp:// URL inside the namespace.
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr() }

// Log is what it logged.
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
	return string(b)
}

// Stop stops it (SIGTERM) and waits; calling it again does nothing.
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.cmd.Wait()
	m.cmd = nil
}
