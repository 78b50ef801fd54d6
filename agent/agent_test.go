package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/internal/testkey"
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

type fixture struct {
	t       *testing.T
	broker  *mosquitto.Broker
	cfg     Config
	dataDir string
	history *sync.History
	issuer  *sync.Issuer
	rootKey *ecdsa.PrivateKey
	update  *ecdsa.PrivateKey
	log     *logBuffer
}

// newFixture starts a broker and a fleet history with root 1, and writes a device config
// provisioned with that root.
func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, broker: mosquitto.Start(t), dataDir: t.TempDir(), rootKey: testkey.New(t).Private, update: testkey.New(t).Private, log: &logBuffer{}}
	stateDir := t.TempDir()
	var err error
	if f.history, err = sync.OpenHistory(stateDir); err != nil {
		t.Fatal(err)
	}
	if f.issuer, err = f.history.Issue(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.issuer.Close() })
	root, err := f.issuer.IssueRoot(sync.RootSpec{Fleet: "f1", RootKeys: []crypto.PublicKey{f.rootKey.Public()}, RootThreshold: 1,
		DeltaKeys: []crypto.PublicKey{f.update.Public()}, DeltaThreshold: 1, Expires: time.Hour}, f.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(t.TempDir(), "root.cbor")
	if err := os.WriteFile(rootFile, root, 0o644); err != nil {
		t.Fatal(err)
	}
	f.cfg = Config{DeviceID: "dev1", Fleet: "f1", Broker: f.broker.URL(), Root: rootFile}
	return f
}

// delta issues the next delta of the fleet, trusting one new gadget key.
func (f *fixture) delta() ([]byte, *sync.Delta) {
	f.t.Helper()
	raw, d, err := f.issuer.IssueDelta(sync.DeltaSpec{Keys: []trust.Key{testkey.New(f.t).Public}, Expires: time.Hour}, f.update)
	if err != nil {
		f.t.Fatal(err)
	}
	return raw, d
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
	if err := sync.Publish(ctx, sync.Broker{URL: f.broker.URL()}, "test-pub", sync.UpdatesTopic(f.cfg.Fleet), false, msgs...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) seal(d *sync.Delta, key *ecdsa.PrivateKey) []byte {
	f.t.Helper()
	msg, err := sync.SealDelta(d, key)
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

func TestAgentAppliesAndRejects(t *testing.T) {
	f := newFixture(t)
	stop := f.start()
	defer func() { stop() }()

	good, d1 := f.delta()
	f.publish(good)
	st := f.waitStatus(func(s sync.Status) bool { return s.Version == 1 })
	before := f.dump()
	state, err := TrustStatus(f.dataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if state.Version != 1 || state.StateDigest != st.StateDigest || state.StateDigest != d1.State || state.Keys != 1 {
		t.Fatalf("store %+v, status %+v", state, st)
	}

	next := func(mutate func(*sync.Delta)) *sync.Delta {
		d := &sync.Delta{Fleet: "f1", Version: 2, Base: d1.State, State: "sha256:" + strings.Repeat("1", 64), Expires: time.Now().Add(time.Hour).Unix()}
		mutate(d)
		return d
	}
	forged := bytes.Clone(f.seal(next(func(*sync.Delta) {}), f.update))
	forged[len(forged)-3] ^= 0x40
	bad := []struct {
		name, reason string
		msg          []byte
	}{
		{"forged signature", "signature does not verify", forged},
		{"unknown key", "not enough valid signatures", f.seal(next(func(*sync.Delta) {}), testkey.New(t).Private)},
		{"root key signing a delta", "not enough valid signatures", f.seal(next(func(*sync.Delta) {}), f.rootKey)},
		{"not CBOR", "malformed message", []byte("{\"version\": 99}")},
		{"garbage flood", "malformed message", bytes.Repeat([]byte{0xd8, 0x62, 0x84}, 1000)},
		{"other fleet", "another fleet", f.seal(next(func(d *sync.Delta) { d.Fleet = "f2" }), f.update)},
		{"mix-and-match", "mix-and-match", f.seal(next(func(d *sync.Delta) { d.Base = "sha256:" + strings.Repeat("0", 64) }), f.update)},
		{"no resulting state", "must name its base and resulting state digests", f.seal(next(func(d *sync.Delta) { d.State = "" }), f.update)},
		// Another delta 1, validly signed: a forked history or a stolen delta key.
		{"conflict", "conflicting signed delta 1", f.seal(next(func(d *sync.Delta) { d.Version, d.Base = 1, d1.Base }), f.update)},
		{"divergence", "differs from the state", f.seal(next(func(d *sync.Delta) { d.State = d1.State }), f.update)},
		{"replay", "delta ignored", good},
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
	s := f.waitStatus(func(s sync.Status) bool { return strings.Contains(s.LastRejection, "differs") })
	if s.Version != 1 || !s.Online {
		t.Fatalf("status after rejections: %+v", s)
	}
	// The conflict is an error; the replay a harmless redelivery.
	if c := f.log.count(`level=ERROR msg="conflicting signed message" reason="conflicting signed delta 1: `); c != 1 {
		t.Errorf("conflict logged %d times at ERROR, want once:\n%s", c, f.log.String())
	}
	if c := f.log.count(`level=INFO msg="delta ignored"`); c != 1 {
		t.Errorf("replay logged %d times at INFO, want once", c)
	}

	// Deltas published while the agent is down arrive when it is back (persistent session),
	// and the store kept everything across the restart.
	stop()
	raw2, _ := f.delta()
	f.publish(raw2)
	stop = f.start()
	f.waitStatus(func(s sync.Status) bool { return s.Version == 2 })
	state, err = TrustStatus(f.dataDir, time.Now())
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
	raw, _ := f.delta()
	f.publish(raw)
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
	c, err := LoadConfig(write(`{"device_id":"d","fleet":"f","broker":"tcp://127.0.0.1:1","root":"root.cbor"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != filepath.Join(dir, "root.cbor") {
		t.Fatalf("relative root path not resolved: %q", c.Root)
	}
	for _, tt := range []struct{ json, want string }{
		{`{"device_id":"d","fleet":"f","broker":"b"}`, "missing root"},
		{`{"fleet":"f","broker":"b","root":"r"}`, "missing device_id"},
		{`{"device_id":"d","fleet":"f","broker":"b","root":"r","extra":1}`, "unknown field"},
		{`{"device_id":"d","fleet":"f","broker":"tcp://h:1","root":"r","cert_file":"c"}`, "go together"},
		{`{"device_id":"d","fleet":"f","broker":"http://h:1","root":"r"}`, "want tcp://"},
		{`{"device_id":"d+3","fleet":"f","broker":"tcp://h:1","root":"r"}`, "MQTT topics reserve"},
		{`{"device_id":"d","fleet":"plant#a","broker":"tcp://h:1","root":"r"}`, "MQTT topics reserve"},
	} {
		if _, err := LoadConfig(write(tt.json)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.json, err, tt.want)
		}
	}
}

// TestAgentRetriesWhileStoreBusy: a delta that arrives while another process holds the store
// is kept, unacknowledged, and applied in order once the store is free, never skipped.
func TestAgentRetriesWhileStoreBusy(t *testing.T) {
	f := newFixture(t)
	stop := f.start()
	defer stop()
	held, err := store.Open(trustDir(f.dataDir), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw1, _ := f.delta()
	raw2, d2 := f.delta()
	f.publish(raw1, raw2)
	f.waitLog("trust store unavailable; will retry", 1)
	held.Close()
	s := f.waitStatus(func(s sync.Status) bool { return s.Version == 2 })
	if s.StateDigest != d2.State || s.LastRejection != "" {
		t.Fatalf("after the store was freed: %+v", s)
	}
}

func TestSecondAgentOnDataDirRefused(t *testing.T) {
	f := newFixture(t)
	stop := f.start()
	defer stop()
	a, err := New(f.cfg, f.dataDir, slog.New(slog.NewTextHandler(f.log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "another agent is running") {
		t.Fatalf("second agent: %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 3: 20 * time.Second, 7: 5 * time.Minute, 50: 5 * time.Minute} {
		if got := retryAfter(n); got != want {
			t.Errorf("retryAfter(%d) = %s, want %s", n, got, want)
		}
	}
}

// TestProvisionedUpdates: sealed deltas shipped with the device are applied at start with no
// broker at all, skipped once the store has them, and a bad one stops the agent.
func TestProvisionedUpdates(t *testing.T) {
	f := newFixture(t)
	f.broker.Stop()
	dir := t.TempDir()
	var files []string
	for i := range 2 {
		raw, _ := f.delta()
		p := filepath.Join(dir, fmt.Sprintf("delta-%d.cbor", i+1))
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	f.cfg.Provision = files
	for range 2 { // the second start finds both applied and skips them
		if _, err := New(f.cfg, f.dataDir, slog.New(slog.NewTextHandler(f.log, nil))); err != nil {
			t.Fatal(err)
		}
		st, err := TrustStatus(f.dataDir, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if v, d, _ := f.history.Latest(); st.Version != 2 || st.StateDigest != d || v != 2 {
			t.Fatalf("after provisioning: %+v, history at %d %s", st, v, d)
		}
	}
	forged, _ := f.delta()
	forged[len(forged)-2] ^= 1
	bad := filepath.Join(dir, "forged.cbor")
	if err := os.WriteFile(bad, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	f.cfg.Provision = append(files, bad)
	if _, err := New(f.cfg, f.dataDir, slog.New(slog.NewTextHandler(f.log, nil))); err == nil || !strings.Contains(err.Error(), "forged.cbor") {
		t.Fatalf("forged provisioned delta: %v", err)
	}
}
