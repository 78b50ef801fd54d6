package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// broker is a Mosquitto on 127.0.0.1, on a free port, configured like the tests'
// (internal/mosquitto, which needs a testing.TB): persistence on, 1 MiB message limit.
type broker struct {
	dir  string
	port int
	cmd  *exec.Cmd
}

func startBroker(dir string, extra ...string) (*broker, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("mosquitto not installed (make deps)")
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &broker{dir: dir, port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmessage_size_limit 1048576\npersistence true\npersistence_location %s/\nuser root\nlog_dest file %s\n",
		b.port, dir, filepath.Join(dir, "mosquitto.log"))
	for _, line := range extra {
		conf += line + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	b.cmd = exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", b.addr())
		if err == nil {
			c.Close()
			return b, nil
		}
		if time.Now().After(deadline) {
			b.stop()
			log, _ := os.ReadFile(filepath.Join(dir, "mosquitto.log"))
			return nil, fmt.Errorf("mosquitto did not listen: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *broker) addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }
func (b *broker) url() string  { return "tcp://" + b.addr() }

func (b *broker) stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	b.cmd.Wait()
	b.cmd = nil
}
