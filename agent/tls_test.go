package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/sync"
)

// The agent's MQTT session over TLS with client certificates, against a real Mosquitto whose
// only listener is TLS with require_certificate: a delta published over TLS is applied, and a
// device without a client certificate, with one the broker's CA did not sign, or that trusts
// another CA than the broker's, never gets a session.

// tlsBroker is sync.Broker settings for the test's own clients (publisher, status watcher).
func tlsBroker(t *testing.T, url, caFile, certFile, keyFile string) sync.Broker {
	t.Helper()
	cfg, err := sync.TLSConfig(caFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return sync.Broker{URL: url, TLS: cfg}
}

// handshake completes a TLS handshake with addr and reads, which is when a TLS 1.3 client
// learns that the server refused its certificate. The broker never sends data first, so a
// read that times out means the session was accepted.
func handshake(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

type tlsFixture struct {
	*fixture
	ca       *mosquitto.CA
	operator sync.Broker // the test's own TLS clients, with a client certificate of ca
}

// newTLSFixture is newFixture with a TLS-only broker that requires client certificates, and a
// device config with ca_file, cert_file and key_file for an ssl:// URL.
func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	pki := t.TempDir()
	ca := mosquitto.NewCA(t, pki, "fleet-ca")
	serverCert, serverKey := ca.Issue("broker", true)
	broker := mosquitto.StartTLS(t, mosquitto.TLS{CAFile: ca.CertFile(), CertFile: serverCert, KeyFile: serverKey, RequireCertificate: true},
		"log_type all")
	// newFixture starts a plain broker too; the fixture's history, keys and root are what we
	// reuse, with the TLS broker in its place.
	f := newFixture(t)
	f.broker.Stop()
	f.broker = broker
	devCert, devKey := ca.Issue("dev1", false)
	f.cfg.Broker, f.cfg.CAFile, f.cfg.CertFile, f.cfg.KeyFile = broker.URL(), ca.CertFile(), devCert, devKey
	opCert, opKey := ca.Issue("operator", false)
	return &tlsFixture{fixture: f, ca: ca, operator: tlsBroker(t, broker.URL(), ca.CertFile(), opCert, opKey)}
}

func (f *tlsFixture) publishTLS(msgs ...[]byte) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sync.Publish(ctx, f.operator, "test-pub", sync.UpdatesTopic(f.cfg.Fleet), false, msgs...); err != nil {
		f.t.Fatal(err)
	}
}

// statusTLS waits up to timeout for a status of the device for which done is true.
func (f *tlsFixture) statusTLS(timeout time.Duration, done func(sync.Status) bool) (sync.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return sync.WaitStatus(ctx, f.operator, "test-wait", f.cfg.Fleet, f.cfg.DeviceID, done)
}

// runAgent runs an agent with cfg on a fresh data directory until the returned stop is called.
func (f *tlsFixture) runAgent(cfg Config, dataDir string) (stop func()) {
	f.t.Helper()
	a, err := New(cfg, dataDir, slog.New(slog.NewTextHandler(f.log, nil)))
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				f.t.Errorf("agent: %v", err)
			}
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			f.t.Errorf("agent did not stop within 10 s of its context being cancelled:\n%s", buf[:runtime.Stack(buf, true)])
		}
	}
}

func TestAgentOverTLSWithClientCertificate(t *testing.T) {
	f := newTLSFixture(t)
	if !strings.HasPrefix(f.cfg.Broker, "ssl://127.0.0.1:") {
		t.Fatalf("broker URL %q", f.cfg.Broker)
	}
	stop := f.runAgent(f.cfg, f.dataDir)
	defer stop()
	if _, err := f.statusTLS(20*time.Second, func(s sync.Status) bool { return s.Online }); err != nil {
		t.Fatalf("the agent never came online over TLS: %v\nbroker log:\n%s", err, f.broker.Log())
	}

	raw, d := f.delta()
	f.publishTLS(raw)
	s, err := f.statusTLS(20*time.Second, func(s sync.Status) bool { return s.Version == 1 })
	if err != nil {
		t.Fatalf("delta not applied: %v\nagent log:\n%s", err, f.log.buf.String())
	}
	if s.StateDigest != d.State || s.LastRejection != "" || !s.Online {
		t.Fatalf("status %+v, want version 1 at %s", s, d.State)
	}
	stop()
	state, err := TrustStatus(f.dataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if state.Version != 1 || state.StateDigest != d.State || state.Keys != 1 {
		t.Fatalf("store after the TLS delta: %+v", state)
	}
	// The broker saw the device by its certificate's identity (use_identity_as_username).
	if log := f.broker.Log(); !strings.Contains(log, "bpfleet-f1-dev1") || !strings.Contains(log, "u'dev1'") {
		t.Errorf("broker log has no connection of bpfleet-f1-dev1 as user dev1:\n%s", log)
	}
}

// TestAgentOverTLSRefused: each misconfigured device gets no session at all, so no status
// (not even the Last Will) is ever published for it and its store stays at version 0, though
// the operator publishes a delta meanwhile. The test's own clients show why, with the same
// settings.
func TestAgentOverTLSRefused(t *testing.T) {
	f := newTLSFixture(t)
	pki := t.TempDir()
	rogue := mosquitto.NewCA(t, pki, "rogue-ca")
	rogueCert, rogueKey := rogue.Issue("dev1", false)
	// Control: the device's own settings pass the same handshake probe.
	if err := handshake(f.broker.Addr(), tlsBroker(t, f.cfg.Broker, f.cfg.CAFile, f.cfg.CertFile, f.cfg.KeyFile).TLS); err != nil {
		t.Fatalf("handshake with the device's correct settings: %v", err)
	}
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
		// clientErr is what a client configured the same way gets from the handshake;
		// brokerLog what Mosquitto (OpenSSL) logs about the device's attempts.
		clientErr, brokerLog string
	}{
		{"no client certificate", func(c *Config) { c.CertFile, c.KeyFile = "", "" },
			"certificate required", "peer did not return a certificate"},
		{"client certificate of another CA", func(c *Config) { c.CertFile, c.KeyFile = rogueCert, rogueKey },
			"unknown certificate authority", "certificate verify failed"},
		{"wrong CA for the broker", func(c *Config) { c.CAFile = rogue.CertFile() },
			"x509: certificate signed by unknown authority", "alert bad certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.cfg
			tt.mutate(&cfg)
			logStart := len(f.broker.Log())

			// A client with the device's TLS settings is refused, and says why. An MQTT client
			// (sync.Publish) is refused too, but with TLS 1.3 the server's alert may arrive
			// after its CONNECT and be lost to a connection reset; a bare handshake followed
			// by a read always gets the alert.
			probe := tlsBroker(t, cfg.Broker, cfg.CAFile, cfg.CertFile, cfg.KeyFile)
			if err := handshake(f.broker.Addr(), probe.TLS); err == nil || !strings.Contains(err.Error(), tt.clientErr) {
				t.Errorf("TLS handshake with the device's settings: err = %v, want %q", err, tt.clientErr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := sync.Publish(ctx, probe, "probe", sync.UpdatesTopic(cfg.Fleet), false, []byte("x"))
			cancel()
			if err == nil {
				t.Error("an MQTT client with the device's TLS settings could publish")
			}

			dataDir := t.TempDir()
			stop := f.runAgent(cfg, dataDir)
			raw, _ := f.delta()
			f.publishTLS(raw)
			s, err := f.statusTLS(4*time.Second, func(sync.Status) bool { return true })
			stop()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a status arrived for a device that should have no session: %+v (err %v)", s, err)
			}
			if log := f.broker.Log()[logStart:]; !strings.Contains(log, tt.brokerLog) || strings.Contains(log, "as bpfleet-f1-dev1") {
				t.Errorf("broker log: want %q and no session of bpfleet-f1-dev1:\n%s", tt.brokerLog, log)
			}
			state, err := TrustStatus(dataDir, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if state.Version != 0 {
				t.Fatalf("store of the refused device: %+v", state)
			}
		})
	}

	// The same broker and fixture serve the correctly configured device.
	stop := f.runAgent(f.cfg, f.dataDir)
	defer stop()
	if _, err := f.statusTLS(20*time.Second, func(s sync.Status) bool { return s.Online }); err != nil {
		t.Fatalf("the correctly configured device did not come online: %v\n%s", err, f.log.buf.String())
	}
}
