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
	tls  bool
}

// Start runs a broker for t, or skips t when mosquitto is not installed (`make deps` installs it).
// Each extra line is appended to the generated mosquitto.conf (e.g. "log_type all").
func Start(t testing.TB, extra ...string) *Broker {
	t.Helper()
	return start(t, nil, extra)
}

// TLS configures the only listener of a broker started with StartTLS. The files are PEM.
type TLS struct {
	CAFile   string // CA that signed the clients' certificates (and that clients trust)
	CertFile string // the broker's certificate, valid for 127.0.0.1
	KeyFile  string // its private key
	// RequireCertificate makes the broker refuse clients without a certificate signed by
	// CAFile; the certificate's CN becomes the client's username (use_identity_as_username)
	// and anonymous clients are refused (allow_anonymous false, overriding Start's default).
	RequireCertificate bool
}

// ConfigLines returns the mosquitto.conf lines that make the listener line before them a TLS
// listener (Mosquitto 2.0 then accepts TLS 1.2 and 1.3).
func (c TLS) ConfigLines() []string {
	lines := []string{"cafile " + c.CAFile, "certfile " + c.CertFile, "keyfile " + c.KeyFile}
	if c.RequireCertificate {
		// Every client is then authenticated by its certificate, so none is anonymous.
		lines = append(lines, "require_certificate true", "use_identity_as_username true", "allow_anonymous false")
	}
	return lines
}

// StartTLS is Start with TLS on the broker's only listener: URL is then ssl://127.0.0.1:port
// and no plain-text listener exists. Extra lines follow the listener's TLS settings.
func StartTLS(t testing.TB, c TLS, extra ...string) *Broker {
	t.Helper()
	return start(t, &c, extra)
}

func start(t testing.TB, tlsConf *TLS, extra []string) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/mosquitto"); statErr != nil {
			t.Skip("mosquitto not installed: run `make deps`")
		}
		bin = "/usr/sbin/mosquitto"
	}
	b := &Broker{t: t, bin: bin, dir: t.TempDir(), tls: tlsConf != nil}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmessage_size_limit 1048576\npersistence true\npersistence_location %s/\nuser root\nlog_dest file %s\n",
		b.Port, b.dir, filepath.Join(b.dir, "mosquitto.log"))
	if tlsConf != nil {
		// Listener settings follow the listener line (per_listener_settings is false, so
		// allow_anonymous stays global): the one listener above is the TLS one.
		extra = append(tlsConf.ConfigLines(), extra...)
	}
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

// URL is the broker's URL for MQTT clients: tcp://, or ssl:// for a StartTLS broker.
func (b *Broker) URL() string {
	if b.tls {
		return "ssl://" + b.Addr()
	}
	return "tcp://" + b.Addr()
}

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
