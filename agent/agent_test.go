package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
	"github.com/bpfleet/bpfleet/sync"
)

// logBuffer collects the agent's log for assertions on logged reasons.
type logBuffer struct {
	mu  gosync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePub(t *testing.T, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

type fixture struct {
	t       *testing.T
	broker  *mosquitto.Broker
	cfg     Config
	dataDir string
	update  *ecdsa.PrivateKey
	log     *logBuffer
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, broker: mosquitto.Start(t), dataDir: t.TempDir(), update: newKey(t), log: &logBuffer{}}
	dir := t.TempDir()
	writePub(t, filepath.Join(dir, "fleet.pub"), f.update)
	f.cfg = Config{DeviceID: "dev1", Fleet: "f1", Broker: f.broker.URL(), UpdateKeys: []string{filepath.Join(dir, "fleet.pub")}}
	return f
}

// start runs an agent until the returned stop function is called.
func (f *fixture) start() (stop func()) {
	f.t.Helper()
	a, err := New(f.cfg, f.dataDir, slog.New(slog.NewTextHandler(f.log, nil)))
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	f.waitStatus(func(s sync.Status) bool { return s.Online })
	return func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("agent: %v", err)
		}
	}
}

func (f *fixture) waitStatus(done func(sync.Status) bool) sync.Status {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := sync.WaitStatus(ctx, sync.Broker{URL: f.broker.URL()}, "test-wait", f.cfg.Fleet, f.cfg.DeviceID, done)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) publish(msgs ...[]byte) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sync.Publish(ctx, sync.Broker{URL: f.broker.URL()}, "test-pub", sync.DeltaTopic(f.cfg.Fleet), false, msgs...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) seal(d *sync.Delta, key *ecdsa.PrivateKey) []byte {
	f.t.Helper()
	msg, err := sync.Seal(d, key)
	if err != nil {
		f.t.Fatal(err)
	}
	return msg
}

// dump reads the whole store; it waits while the agent holds it.
func (f *fixture) dump() map[string][]byte {
	f.t.Helper()
	s, err := store.Open(trustDir(f.dataDir), store.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Dump()
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *fixture) waitLog(s string, n int) {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for f.log.count(s) < n {
		if time.Now().After(deadline) {
			f.t.Fatalf("log never had %d× %q:\n%s", n, s, f.log.buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func gadgetKeyDER(t *testing.T) []byte {
	der, err := x509.MarshalPKIXPublicKey(newKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestAgentAppliesAndRejects(t *testing.T) {
	f := newFixture(t)
	stop := f.start()
	defer func() { stop() }()

	good := f.seal(&sync.Delta{Fleet: "f1", Version: 1, Keys: []trust.Key{{DER: gadgetKeyDER(t)}}}, f.update)
	f.publish(good)
	st := f.waitStatus(func(s sync.Status) bool { return s.Version == 1 })
	before := f.dump()
	state, err := TrustStatus(f.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if state.Version != 1 || state.StateDigest != st.StateDigest || state.Keys != 1 {
		t.Fatalf("store %+v, status %+v", state, st)
	}

	forged := bytes.Clone(f.seal(&sync.Delta{Fleet: "f1", Version: 2}, f.update))
	forged[len(forged)-3] ^= 0x40
	bad := []struct {
		name, reason string
		msg          []byte
	}{
		{"forged signature", "signature does not verify", forged},
		{"unknown key", "not a trusted update key", f.seal(&sync.Delta{Fleet: "f1", Version: 2}, newKey(t))},
		{"not CBOR", "malformed message", []byte("{\"version\": 99}")},
		{"other fleet", "another fleet", f.seal(&sync.Delta{Fleet: "f2", Version: 2}, f.update)},
		{"replay", "delta ignored", good},
		{"rollback", "delta ignored", f.seal(&sync.Delta{Fleet: "f1", Version: 1, Keys: []trust.Key{{DER: gadgetKeyDER(t)}}}, f.update)},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			n := f.log.count(tt.reason)
			f.publish(tt.msg)
			f.waitLog(tt.reason, n+1)
			if after := f.dump(); !maps.EqualFunc(before, after, bytes.Equal) {
				t.Fatal("store changed")
			}
		})
	}
	s := f.waitStatus(func(s sync.Status) bool { return s.LastRejection != "" })
	if s.Version != 1 || !strings.Contains(s.LastRejection, "another fleet") {
		t.Fatalf("status after rejections: %+v", s)
	}

	// Deltas published while the agent is down arrive when it is back (persistent session),
	// and the store kept everything across the restart.
	stop()
	f.publish(f.seal(&sync.Delta{Fleet: "f1", Version: 2, Keys: []trust.Key{{DER: gadgetKeyDER(t)}}}, f.update))
	stop = f.start()
	f.waitStatus(func(s sync.Status) bool { return s.Version == 2 })
	state, err = TrustStatus(f.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if state.Version != 2 || state.Keys != 2 {
		t.Fatalf("after restart: %+v", state)
	}
}

func TestAgentKeepsRunningWithoutBroker(t *testing.T) {
	f := newFixture(t)
	stop := f.start()
	defer stop()
	f.broker.Stop()
	time.Sleep(500 * time.Millisecond)
	f.broker.Restart()
	// The agent reconnects on its own and resumes its session.
	f.publish(f.seal(&sync.Delta{Fleet: "f1", Version: 1, Keys: []trust.Key{{DER: gadgetKeyDER(t)}}}, f.update))
	f.waitStatus(func(s sync.Status) bool { return s.Version == 1 && s.Online })
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "agent.json")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig(write(`{"device_id":"d","fleet":"f","broker":"tcp://127.0.0.1:1","update_keys":["k.pub"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.UpdateKeys[0] != filepath.Join(dir, "k.pub") {
		t.Fatalf("relative key path not resolved: %q", c.UpdateKeys[0])
	}
	for _, tt := range []struct{ json, want string }{
		{`{"device_id":"d","fleet":"f","broker":"b"}`, "missing update_keys"},
		{`{"fleet":"f","broker":"b","update_keys":["k"]}`, "missing device_id"},
		{`{"device_id":"d","fleet":"f","broker":"b","update_keys":["k"],"extra":1}`, "unknown field"},
	} {
		if _, err := LoadConfig(write(tt.json)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.json, err, tt.want)
		}
	}
}
