// Package mosquitto starts a real Mosquitto broker for tests: on 127.0.0.1, on a free
// non-standard port, with its own configuration and persistence in a temporary directory.
// The broker is stopped when the test ends.
package mosquitto

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Broker is a running (or stopped) Mosquitto owned by one test.
type Broker struct {
	t    testing.TB
	Port int
	bin  string
	dir  string
	cmd  *exec.Cmd
}

// Start runs a broker for t, or skips t when mosquitto is not installed (`make deps` installs it).
// Each extra line is appended to the generated mosquitto.conf (e.g. "log_type all").
func Start(t testing.TB, extra ...string) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/mosquitto"); statErr != nil {
			t.Skip("mosquitto not installed: run `make deps`")
		}
		bin = "/usr/sbin/mosquitto"
	}
	b := &Broker{t: t, bin: bin, dir: t.TempDir()}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmessage_size_limit 1048576\npersistence true\npersistence_location %s/\nuser root\nlog_dest file %s\n",
		b.Port, b.dir, filepath.Join(b.dir, "mosquitto.log"))
	for _, line := range extra {
		conf += line + "\n"
	}
	if err := os.WriteFile(filepath.Join(b.dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(func() { b.Stop() })
	return b
}

func (b *Broker) start() {
	b.t.Helper()
	b.cmd = exec.Command(b.bin, "-c", filepath.Join(b.dir, "mosquitto.conf"))
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", b.Addr())
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
			b.t.Fatalf("mosquitto did not listen on %s: %v\n%s", b.Addr(), err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is host:port.
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.Port) }

// URL is the broker's tcp:// URL for MQTT clients.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Stop stops the broker cleanly (SIGTERM), keeping its persistence for a later Restart.
func (b *Broker) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	b.cmd.Wait()
	b.cmd = nil
}

// Kill stops the broker abruptly (SIGKILL), as a crash or power loss would: whatever it had not
// yet written to its persistence file (autosaved every 1800 s by default, and on a clean stop)
// is lost. Restart starts it again with the same configuration and persistence directory.
func (b *Broker) Kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Kill()
	b.cmd.Wait()
	b.cmd = nil
}

// Log returns what the broker has logged so far (its log file; kept across restarts).
func (b *Broker) Log() string {
	log, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
	return string(log)
}

// Restart starts the stopped broker again on the same port with the same persistence.
func (b *Broker) Restart() {
	b.t.Helper()
	b.start()
}
