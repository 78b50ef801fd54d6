package agent

// Acceptance tests of the trust-sync protocol against a real Mosquitto: devices that were away
// past the broker's queue, new devices, broker crashes, root rotations while offline, agent
// crashes in the middle of an apply, shared catch-up servers and garbage floods. Every test
// ends with each device's state digest equal to the operator's and every version applied
// exactly (or, across process kills, at most) once.
//
// Counts are small by default so that `make test` stays fast; raise them for a soak run:
//
//	BPFLEET_SOAK=1 go test -count=1 -timeout 1h -run 'TestSync' ./agent/
//
// or one by one: BPFLEET_SYNC_OFFLINE_DELTAS, BPFLEET_SYNC_NEW_DELTAS, BPFLEET_SYNC_STREAM,
// BPFLEET_SYNC_BROKER_KILLS, BPFLEET_SYNC_AGENT_KILLS, BPFLEET_SYNC_DEVICES,
// BPFLEET_SYNC_GARBAGE. BPFLEET_SEED repeats a run's random choices (each test logs its seed).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
	"github.com/bpfleet/bpfleet/sync"
)

// knob is a count from the environment: $name if set, else soak under BPFLEET_SOAK=1, else def.
func knob(t *testing.T, name string, def, soak int) int {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			t.Fatalf("%s=%q: want a count", name, v)
		}
		return n
	}
	if os.Getenv("BPFLEET_SOAK") == "1" {
		return soak
	}
	return def
}

// testRand returns a random source whose seed is logged, or taken from BPFLEET_SEED.
func testRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("BPFLEET_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("BPFLEET_SEED=%q: %v", v, err)
		}
	}
	t.Logf("random seed %d (BPFLEET_SEED=%d repeats it)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

var clientSeq atomic.Int64

// clientID returns a client id no other client of the test binary uses: the broker
// disconnects the older of two clients with the same id.
func clientID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), clientSeq.Add(1))
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// tail returns the last n lines of a log, for failure messages.
func tail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// testFleet is the operator's side: the fixture's broker and history, plus the state digest of
// every issued version and the current root and delta keys, which rotations replace. Its
// issue method is safe to call from a publisher goroutine.
type testFleet struct {
	*fixture

	mu       gosync.Mutex
	deltaKey *ecdsa.PrivateKey
	states   map[uint64]string // version → Delta.State; 0 → the empty store's digest
}

// newTestFleet starts a broker (with extra mosquitto.conf lines, if any) and a fleet history
// at root 1.
func newTestFleet(t *testing.T, brokerConf ...string) *testFleet {
	f := newFixture(t)
	if len(brokerConf) > 0 {
		f.broker.Stop()
		f.broker = mosquitto.Start(t, brokerConf...)
		f.cfg.Broker = f.broker.URL()
	}
	empty, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	snap, err := empty.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return &testFleet{fixture: f, deltaKey: f.update, states: map[uint64]string{0: snap.StateDigest()}}
}

func (tf *testFleet) brokerURL() string { return tf.broker.URL() }

// issue issues the next delta with keys new gadget keys and sigs signature records (of about
// 300 bytes each: many of them make a delta slow to apply).
func (tf *testFleet) issue(keys, sigs int) ([]byte, *sync.Delta, error) {
	spec := sync.DeltaSpec{Expires: time.Hour}
	for range keys {
		k, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			return nil, nil, err
		}
		spec.Keys = append(spec.Keys, trust.Key{DER: der})
	}
	for range sigs {
		digest, payload, sig := make([]byte, 32), make([]byte, 220), make([]byte, 72)
		crand.Read(digest)
		crand.Read(payload)
		crand.Read(sig)
		spec.Signatures = append(spec.Signatures, trust.Signature{Digest: "sha256:" + hex.EncodeToString(digest), Payload: payload, Signature: sig})
	}
	tf.mu.Lock()
	defer tf.mu.Unlock()
	raw, d, err := tf.issuer.IssueDelta(spec, tf.deltaKey)
	if err == nil {
		tf.states[d.Version] = d.State
	}
	return raw, d, err
}

// mustIssue issues n deltas of one gadget key each (and sigs signature records).
func (tf *testFleet) mustIssue(n, sigs int) [][]byte {
	tf.t.Helper()
	var out [][]byte
	for range n {
		raw, _, err := tf.issue(1, sigs)
		if err != nil {
			tf.t.Fatal(err)
		}
		out = append(out, raw)
	}
	return out
}

// rotate issues the next root with a new root key, signed by the current and the new one,
// and a new delta key that later deltas are signed with.
func (tf *testFleet) rotate() []byte {
	tf.t.Helper()
	tf.mu.Lock()
	defer tf.mu.Unlock()
	nextRoot, nextDelta := testkey.New(tf.t).Private, testkey.New(tf.t).Private
	raw, err := tf.issuer.IssueRoot(sync.RootSpec{RootKeys: []crypto.PublicKey{nextRoot.Public()}, RootThreshold: 1,
		DeltaKeys: []crypto.PublicKey{nextDelta.Public()}, DeltaThreshold: 1, Expires: time.Hour}, tf.rootKey, nextRoot)
	if err != nil {
		tf.t.Fatal(err)
	}
	tf.rootKey, tf.deltaKey = nextRoot, nextDelta
	return raw
}

// state is the digest the publisher issued for version v.
func (tf *testFleet) state(v uint64) (string, bool) {
	tf.mu.Lock()
	defer tf.mu.Unlock()
	s, ok := tf.states[v]
	return s, ok
}

// latest is the publisher's current version and digest (History.Latest).
func (tf *testFleet) latest() (uint64, string) {
	tf.t.Helper()
	v, d, err := tf.history.Latest()
	if err != nil {
		tf.t.Fatal(err)
	}
	return v, d
}

// publishAll publishes msgs on the updates topic, in order, on one connection.
func (tf *testFleet) publishAll(msgs [][]byte) {
	tf.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sync.Publish(ctx, sync.Broker{URL: tf.brokerURL()}, clientID("pub"), sync.UpdatesTopic("f1"), false, msgs...); err != nil {
		tf.t.Fatal(err)
	}
}

// publishRetry publishes one message, retrying while the broker is away, until ctx ends. A
// retried message may reach the devices twice; they must ignore the copy.
func publishRetry(ctx context.Context, url, topic string, msg []byte) (retries int, err error) {
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = sync.Publish(pctx, sync.Broker{URL: url}, clientID("pub"), topic, false, msg)
		cancel()
		if err == nil || ctx.Err() != nil {
			return retries, err
		}
		retries++
		time.Sleep(100 * time.Millisecond)
	}
}

// serve runs a catch-up server (sync.Serve) on the fleet's history until stop is called or the
// test ends.
func (tf *testFleet) serve(id, group string) (log *logBuffer, stop func()) {
	tf.t.Helper()
	log = &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sync.Serve(ctx, sync.Broker{URL: tf.brokerURL()}, id, group, tf.history, slog.New(slog.NewTextHandler(log, nil)))
	}()
	var once gosync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tf.t.Errorf("serve %s: %v", id, err)
			}
		})
	}
	tf.t.Cleanup(stop)
	return log, stop
}

// waitServing waits until a catch-up server answers: a request sent while no server is
// subscribed is dropped by the broker (a shared subscription without subscribers), and a
// device only repeats its on-connect request when it knows it is behind.
func (tf *testFleet) waitServing() {
	tf.t.Helper()
	probe := clientID("probe")
	replies := make(chan struct{}, 1)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(tf.brokerURL()).SetClientID(probe).SetCleanSession(true))
	if t := c.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		tf.t.Fatalf("probe connect: %v", t.Error())
	}
	defer c.Disconnect(100)
	if t := c.Subscribe(sync.ReplyTopic("f1", probe), 1, func(mqtt.Client, mqtt.Message) {
		select {
		case replies <- struct{}{}:
		default:
		}
	}); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		tf.t.Fatalf("probe subscribe: %v", t.Error())
	}
	// Ask for nothing: the reply is an empty batch.
	req, err := sync.EncodeRequest(sync.Request{Device: probe, Root: 1 << 40, Version: 1 << 40})
	if err != nil {
		tf.t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c.Publish(sync.CatchUpTopic("f1"), 1, false, req).WaitTimeout(time.Second)
		select {
		case <-replies:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	tf.t.Fatal("no catch-up server answered within 15s")
}

// device is one agent run in-process, with its own data directory and log.
type device struct {
	t       *testing.T
	cfg     Config
	dataDir string
	log     *logBuffer
	stopFn  func()
	// now, when set, is the agent's clock.
	now func() time.Time
}

// device provisions a new device of the fleet with root 1 and an empty data directory.
func (tf *testFleet) device(id string) *device {
	cfg := tf.cfg
	cfg.DeviceID = id
	return &device{t: tf.t, cfg: cfg, dataDir: tf.t.TempDir(), log: &logBuffer{}}
}

// start runs the agent until stop (or the end of the test) and waits until it is online.
func (d *device) start() {
	d.t.Helper()
	a, err := New(d.cfg, d.dataDir, slog.New(slog.NewTextHandler(d.log, nil)))
	if err != nil {
		d.t.Fatal(err)
	}
	if d.now != nil {
		a.now = d.now
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once gosync.Once
	d.stopFn = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				d.t.Errorf("agent %s: %v", d.cfg.DeviceID, err)
			}
		})
	}
	d.t.Cleanup(d.stopFn)
	d.waitStatus(20*time.Second, "online", func(s sync.Status) bool { return s.Online })
}

func (d *device) stop() {
	if d.stopFn != nil {
		d.stopFn()
	}
}

func (d *device) waitStatus(timeout time.Duration, what string, done func(sync.Status) bool) sync.Status {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := sync.WaitStatus(ctx, sync.Broker{URL: d.cfg.Broker}, clientID("wait"), d.cfg.Fleet, d.cfg.DeviceID, done)
	if err != nil {
		d.t.Fatalf("device %s never reported %s: %v\nits log ends:\n%s", d.cfg.DeviceID, what, err, tail(d.log.String(), 15))
	}
	return s
}

// waitConverged waits until the device reports the publisher's latest version and digest,
// then checks its store says the same.
func (d *device) waitConverged(tf *testFleet, timeout time.Duration) sync.Status {
	d.t.Helper()
	v, digest := tf.latest()
	s := d.waitStatus(timeout, fmt.Sprintf("version %d, %s", v, digest), func(s sync.Status) bool {
		return s.Online && s.Version == v && s.StateDigest == digest
	})
	st, err := TrustStatus(d.dataDir, time.Now())
	if err != nil {
		d.t.Fatal(err)
	}
	if st.Version != v || st.StateDigest != digest {
		d.t.Fatalf("device %s reports version %d %s, its store holds %d %s", d.cfg.DeviceID, v, digest, st.Version, st.StateDigest)
	}
	return s
}

var appliedRE = regexp.MustCompile(`msg="delta applied" version=(\d+) `)

// appliedCounts counts the "delta applied" log lines of each version.
func appliedCounts(log string) map[uint64]int {
	out := map[uint64]int{}
	for _, m := range appliedRE.FindAllStringSubmatch(log, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		out[v]++
	}
	return out
}

// checkAppliedOnce fails unless the log applied every version 1..n exactly once and no other.
func checkAppliedOnce(t *testing.T, who, log string, n uint64) {
	t.Helper()
	counts := appliedCounts(log)
	var missing, twice []uint64
	for v := uint64(1); v <= n; v++ {
		switch c := counts[v]; {
		case c == 0:
			missing = append(missing, v)
		case c > 1:
			twice = append(twice, v)
		}
		delete(counts, v)
	}
	if len(missing) > 0 || len(twice) > 0 || len(counts) > 0 {
		t.Errorf("%s: versions never applied %v, applied more than once %v, unexpected %v", who, short(missing), short(twice), counts)
	}
}

func short(vs []uint64) string {
	if len(vs) > 20 {
		return fmt.Sprintf("%v … (%d in all)", vs[:20], len(vs))
	}
	return fmt.Sprint(vs)
}

// a. A device away while the fleet moved by more than the broker queues for it converges
// through catch-up, applying each version once.
//
// The full-size case runs by default: 2000 deltas against Mosquitto's default queue of 1000
// (about 15 s, most of it issuing); the knobs scale it.
func TestSyncOfflinePastBrokerQueue(t *testing.T) {
	n := knob(t, "BPFLEET_SYNC_OFFLINE_DELTAS", 2000, 5000)
	queue := knob(t, "BPFLEET_SYNC_BROKER_QUEUE", 1000, 1000)
	tf := newTestFleet(t, fmt.Sprintf("max_queued_messages %d", queue))
	dev := tf.device("dev1")
	dev.start() // creates the persistent session
	dev.stop()

	start := time.Now()
	msgs := tf.mustIssue(n, 0)
	t.Logf("issued %d deltas in %v", n, time.Since(start).Round(time.Millisecond))
	tf.publishAll(msgs)
	if n > queue && !strings.Contains(tf.broker.Log(), "Outgoing messages are being dropped for client bpfleet-f1-dev1") {
		t.Fatalf("the broker dropped nothing: the test no longer exceeds its queue\n%s", tail(tf.broker.Log(), 20))
	}

	srvLog, _ := tf.serve(clientID("serve"), "g1")
	tf.waitServing()
	start = time.Now()
	dev.start()
	s := dev.waitConverged(tf, 3*time.Minute)
	t.Logf("converged to version %d in %v", s.Version, time.Since(start).Round(time.Millisecond))
	if s.Version != uint64(n) {
		t.Fatalf("version %d, want %d", s.Version, n)
	}
	checkAppliedOnce(t, "dev1", dev.log.String(), uint64(n))
	if c := dev.log.count(`msg="catch-up batch handled"`); c == 0 {
		t.Error("the device converged without a catch-up batch: nothing was dropped?")
	}
	if c := srvLog.count("catch-up request not answered"); c > 0 {
		t.Errorf("server failed %d requests:\n%s", c, srvLog.String())
	}
}

// b. A brand-new device provisioned with root 1 joins a fleet that has rotated its root twice
// and moved on by many deltas; nothing is published live, so catch-up alone (in several
// batches) must bring it there.
func TestSyncNewDevice(t *testing.T) {
	n := knob(t, "BPFLEET_SYNC_NEW_DELTAS", 60, 600)
	tf := newTestFleet(t)
	start := time.Now()
	tf.mustIssue(n/3, 100)
	tf.rotate()
	tf.mustIssue(n/3, 100)
	tf.rotate()
	tf.mustIssue(n-2*(n/3), 100)
	t.Logf("issued %d deltas and 2 roots in %v", n, time.Since(start).Round(time.Millisecond))
	tf.serve(clientID("serve"), "g1")
	tf.waitServing()

	start = time.Now()
	dev := tf.device("new")
	dev.start()
	s := dev.waitConverged(tf, time.Minute)
	took := time.Since(start)
	t.Logf("converged in %v", took.Round(time.Millisecond))
	if s.Root != 3 || s.Version != uint64(n) {
		t.Fatalf("status %+v, want root 3, version %d", s, n)
	}
	checkAppliedOnce(t, "new", dev.log.String(), uint64(n))
	for _, r := range []string{`msg="root rotated" root=2 `, `msg="root rotated" root=3 `} {
		if c := dev.log.count(r); c != 1 {
			t.Errorf("%q logged %d times, want once", r, c)
		}
	}
	// About 30 KiB per delta: more than one 1 MiB batch, so the device had to ask again, and
	// at once: a batch that moved it forward is a reply, not something to rate-limit until
	// the next catch-up tick (5 s per MiB for a device far behind).
	if batches := dev.log.count(`msg="catch-up batch handled"`); n >= 60 && batches < 2 {
		t.Errorf("%d catch-up batch(es) for %d deltas of ~30 KiB, want several", batches, n)
	} else if took > catchUpInterval {
		t.Errorf("%d catch-up batches took %v: the device waited for its catch-up ticker between them", batches, took)
	}
	dev.stop()
	checkStoreRoot(t, dev.dataDir, tf)
}

// checkStoreRoot checks that a device store holds the fleet's current root.
func checkStoreRoot(t *testing.T, dataDir string, tf *testFleet) {
	t.Helper()
	want, err := tf.history.CurrentRoot()
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(trustDir(dataDir), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw, err := s.Root()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, want.Raw) {
		t.Fatalf("the store's root is not the fleet's root %d", want.Version)
	}
	if err := s.Verify(); err != nil {
		t.Fatal(err)
	}
}

// c. The broker is SIGKILLed and restarted three times while the operator publishes a stream
// of deltas (retrying while it is down) and a catch-up server runs: the broker loses its
// sessions and queues each time, and every device must still converge.
func TestSyncBrokerKilled(t *testing.T) {
	n := knob(t, "BPFLEET_SYNC_STREAM", 300, 2000)
	kills := knob(t, "BPFLEET_SYNC_BROKER_KILLS", 3, 10)
	rng := testRand(t)
	tf := newTestFleet(t)
	// A SIGKILLed broker can lose deltas it had accepted but not yet delivered; if the last
	// ones go, only the periodic catch-up poll brings them.
	tf.cfg.PollSeconds = 5
	tf.serve(clientID("serve"), "g1")
	tf.waitServing()
	var devs []*device
	for i := range 3 {
		d := tf.device(fmt.Sprintf("dev%d", i+1))
		d.start()
		devs = append(devs, d)
	}

	var published atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pubErr := make(chan error, 1)
	var retries atomic.Int64
	go func() {
		pubErr <- func() error {
			for range n {
				raw, _, err := tf.issue(1, 0)
				if err != nil {
					return err
				}
				r, err := publishRetry(ctx, tf.brokerURL(), sync.UpdatesTopic("f1"), raw)
				retries.Add(int64(r))
				if err != nil {
					return err
				}
				published.Add(1)
			}
			return nil
		}()
	}()
	for k := range kills {
		at := int64(n) * int64(k+1) / int64(kills+1)
		for published.Load() < at {
			select {
			case err := <-pubErr:
				t.Fatalf("publisher stopped after %d: %v", published.Load(), err)
			case <-time.After(5 * time.Millisecond):
			}
		}
		tf.broker.Kill()
		down := time.Duration(100+rng.IntN(900)) * time.Millisecond
		t.Logf("broker killed after %d published, down for %v", published.Load(), down)
		time.Sleep(down)
		tf.broker.Restart()
	}
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("publisher retried %d times", retries.Load())
	start := time.Now()
	for _, d := range devs {
		s := d.waitConverged(tf, time.Minute)
		if s.Version != uint64(n) {
			t.Fatalf("%s: version %d, want %d", d.cfg.DeviceID, s.Version, n)
		}
	}
	t.Logf("all converged %v after the last delta was published", time.Since(start).Round(time.Millisecond))
	for _, d := range devs {
		checkAppliedOnce(t, d.cfg.DeviceID, d.log.String(), uint64(n))
		t.Logf("%s: %d catch-up batches, %d replays ignored", d.cfg.DeviceID, d.log.count(`msg="catch-up batch handled"`), d.log.count(`msg="delta ignored"`))
	}
}

// d. While a device is away the operator rotates the root three times, each rotation bringing
// a new delta key that signs the deltas after it; the device walks the rotations in order. A
// rotation not signed by the current root's keys is then rejected with its reason and leaves
// the store untouched, and the device keeps applying valid deltas.
func TestSyncRootRotationWhileOffline(t *testing.T) {
	tf := newTestFleet(t)
	dev := tf.device("dev1")
	dev.start()
	first := tf.mustIssue(2, 0)
	tf.publishAll(first)
	dev.waitStatus(20*time.Second, "version 2", func(s sync.Status) bool { return s.Version == 2 })
	dev.stop()

	var offline [][]byte
	for range 3 {
		offline = append(offline, tf.rotate())
		offline = append(offline, tf.mustIssue(3, 0)...)
	}
	tf.publishAll(offline) // queued in the device's session
	tf.serve(clientID("serve"), "g1")
	tf.waitServing()
	dev.start()
	s := dev.waitConverged(tf, 30*time.Second)
	if s.Root != 4 || s.Version != 11 {
		t.Fatalf("status %+v, want root 4, version 11", s)
	}
	checkAppliedOnce(t, "dev1", dev.log.String(), 11)
	for r := 2; r <= 4; r++ {
		if c := dev.log.count(fmt.Sprintf(`msg="root rotated" root=%d `, r)); c != 1 {
			t.Errorf("root %d rotated %d times, want once", r, c)
		}
	}

	// Bad rotations, published live.
	cur, err := tf.history.CurrentRoot()
	if err != nil {
		t.Fatal(err)
	}
	newRoot := testkey.New(t).Private
	bad := func(signers ...crypto.Signer) []byte {
		r := sync.Root{Fleet: "f1", Version: cur.Version + 1, Expires: time.Now().Add(time.Hour).Unix()}
		for _, k := range []*ecdsa.PrivateKey{newRoot, tf.deltaKey} {
			der, err := x509.MarshalPKIXPublicKey(k.Public())
			if err != nil {
				t.Fatal(err)
			}
			r.Keys = append(r.Keys, der)
		}
		rootID, _ := sync.KeyID(newRoot.Public())
		deltaID, _ := sync.KeyID(tf.deltaKey.Public())
		r.Root = sync.Role{KeyIDs: [][]byte{rootID}, Threshold: 1}
		r.Deltas = sync.Role{KeyIDs: [][]byte{deltaID}, Threshold: 1}
		raw, err := sync.SealRoot(&r, signers...)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	before := storeDump(t, dev.dataDir)
	for _, tt := range []struct {
		name, reason string
		msg          []byte
	}{
		{"new keys only", "not enough valid signatures from the role's keys: root 5 by the keys of root 4: 0 of 1 required (1 signature(s) present)", bad(newRoot)},
		{"old keys only", "not enough valid signatures from the role's keys: root 5 by its own keys: 0 of 1 required (1 signature(s) present)", bad(tf.rootKey)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := dev.log.count(tt.reason)
			tf.publishAll([][]byte{tt.msg})
			s := dev.waitStatus(20*time.Second, "the rejection", func(s sync.Status) bool { return s.LastRejection == tt.reason })
			if s.Root != 4 || s.Version != 11 {
				t.Fatalf("status after rejection: %+v", s)
			}
			if c := dev.log.count(tt.reason); c != n+1 {
				t.Fatalf("reason logged %d times, want %d:\n%s", c, n+1, tail(dev.log.String(), 5))
			}
			if after := storeDump(t, dev.dataDir); !maps.EqualFunc(before, after, bytes.Equal) {
				t.Fatal("the store changed")
			}
		})
	}
	// The device goes on with root 4's delta key.
	tf.publishAll(tf.mustIssue(1, 0))
	if s := dev.waitConverged(tf, 20*time.Second); s.Root != 4 || s.Version != 12 {
		t.Fatalf("status %+v", s)
	}
	dev.stop()
	checkStoreRoot(t, dev.dataDir, tf)
}

func storeDump(t *testing.T, dataDir string) map[string][]byte {
	t.Helper()
	s, err := store.Open(trustDir(dataDir), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Dump()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Environment of TestAgentProcess, the agent run as a separate process (so that it can be
// SIGKILLed) by TestSyncAgentKilledDuringApply.
const (
	envAgentConfig = "BPFLEET_TEST_AGENT_CONFIG"
	envAgentData   = "BPFLEET_TEST_AGENT_DATA"
	envAgentLog    = "BPFLEET_TEST_AGENT_LOG"
)

// TestAgentProcess is not a test: it is the agent process of TestSyncAgentKilledDuringApply,
// run from the test binary itself. It runs the agent until SIGTERM, logging to a file.
func TestAgentProcess(t *testing.T) {
	cfgPath := os.Getenv(envAgentConfig)
	if cfgPath == "" {
		t.Skip("the agent process of TestSyncAgentKilledDuringApply")
	}
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(os.Getenv(envAgentLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	a, err := New(*cfg, os.Getenv(envAgentData), slog.New(slog.NewTextHandler(logf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// agentProcess is one run of TestAgentProcess.
type agentProcess struct {
	cmd    *exec.Cmd
	done   chan struct{}
	output bytes.Buffer
}

func startAgentProcess(t *testing.T, cfgPath, dataDir, logPath string) *agentProcess {
	t.Helper()
	p := &agentProcess{done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestAgentProcess$", "-test.count=1")
	p.cmd.Env = append(os.Environ(), envAgentConfig+"="+cfgPath, envAgentData+"="+dataDir, envAgentLog+"="+logPath)
	p.cmd.Stdout, p.cmd.Stderr = &p.output, &p.output
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *agentProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *agentProcess) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// e. The agent process is SIGKILLed at random moments while a stream of large deltas (slow to
// apply) arrives, and restarted, many times. After every kill the store must open, verify,
// and hold exactly a version the publisher issued with that version's digest; versions never
// go back; no version is applied twice; and in the end the device converges.
func TestSyncAgentKilledDuringApply(t *testing.T) {
	kills := knob(t, "BPFLEET_SYNC_AGENT_KILLS", 50, 500)
	rng := testRand(t)
	tf := newTestFleet(t)
	tf.serve(clientID("serve"), "g1")
	tf.waitServing()
	dir := t.TempDir()
	dataDir, logPath, cfgPath := filepath.Join(dir, "data"), filepath.Join(dir, "agent.log"), filepath.Join(dir, "agent.json")
	cfg, _ := json.Marshal(map[string]string{"device_id": "dev1", "fleet": "f1", "broker": tf.brokerURL(), "root": tf.cfg.Root})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	// The publisher issues and publishes a delta of 150 signature records (~45 KiB) every
	// ~100 ms until the kills are done, at most maxDeltas.
	maxDeltas := min(3*kills, 600)
	ctx, cancel := context.WithCancel(context.Background())
	var published atomic.Int64
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- func() error {
			for i := 0; i < maxDeltas && ctx.Err() == nil; i++ {
				raw, _, err := tf.issue(0, 150)
				if err != nil {
					return err
				}
				if _, err := publishRetry(ctx, tf.brokerURL(), sync.UpdatesTopic("f1"), raw); err != nil && ctx.Err() == nil {
					return err
				}
				published.Add(1)
				time.Sleep(100 * time.Millisecond)
			}
			return nil
		}()
	}()
	defer cancel()

	var last uint64
	var versions []uint64
	for i := range kills {
		p := startAgentProcess(t, cfgPath, dataDir, logPath)
		time.Sleep(time.Duration(30+rng.IntN(500)) * time.Millisecond)
		if p.exited() {
			// Reported, and the loop goes on as a supervisor would restart the agent.
			t.Errorf("kill %d: the agent exited on its own: %v\n%s", i, p.cmd.ProcessState, p.output.String())
		}
		p.kill()
		s, err := store.Open(trustDir(dataDir), store.Options{LockWait: 5 * time.Second})
		if err != nil {
			// See store.TestOpenAfterCrashLeftEmptyFile: the failed open repairs the empty
			// file Badger left, so the other properties can still be checked.
			t.Errorf("kill %d: the store does not open: %v", i, err)
			if s, err = store.Open(trustDir(dataDir), store.Options{LockWait: 5 * time.Second}); err != nil {
				t.Fatalf("kill %d: the store does not open a second time either: %v", i, err)
			}
		}
		err = s.Verify()
		var snap *store.Snapshot
		if err == nil {
			snap, err = s.Snapshot()
		}
		s.Close()
		if err != nil {
			t.Fatalf("kill %d: store damaged: %v", i, err)
		}
		v, digest := snap.Version(), snap.StateDigest()
		want, issued := tf.state(v)
		switch {
		case !issued:
			t.Fatalf("kill %d: store at version %d, which the publisher never issued", i, v)
		case digest != want:
			t.Fatalf("kill %d: store at version %d has digest %s, the publisher issued %s", i, v, digest, want)
		case v < last:
			t.Fatalf("kill %d: store went back from version %d to %d", i, last, v)
		}
		last = v
		versions = append(versions, v)
	}
	cancel()
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("store versions after each kill: %v; %d deltas published", versions, published.Load())

	p := startAgentProcess(t, cfgPath, dataDir, logPath)
	dev := &device{t: t, cfg: Config{DeviceID: "dev1", Fleet: "f1", Broker: tf.brokerURL()}, dataDir: dataDir, log: &logBuffer{}}
	v, _ := tf.latest()
	dev.waitStatus(time.Minute, fmt.Sprintf("version %d", v), func(s sync.Status) bool { return s.Version == v })
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop on SIGTERM")
	}
	if !p.cmd.ProcessState.Success() {
		t.Fatalf("agent: %v\n%s", p.cmd.ProcessState, p.output.String())
	}
	st, err := TrustStatus(dataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, digest := tf.latest(); st.Version != v || st.StateDigest != digest {
		t.Fatalf("store %+v, publisher at %d %s", st, v, digest)
	}
	// A kill between the commit and the log line loses the line, never the delta: across
	// processes a version is applied at most once, and the last one is in the log.
	logData, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	counts := appliedCounts(string(logData))
	var twice []uint64
	unlogged := 0
	for ver := uint64(1); ver <= v; ver++ {
		switch counts[ver] {
		case 0:
			unlogged++
		case 1:
		default:
			twice = append(twice, ver)
		}
	}
	if len(twice) > 0 {
		t.Fatalf("versions applied more than once: %v", twice)
	}
	if counts[v] != 1 {
		t.Fatalf("the last version %d was never logged as applied", v)
	}
	t.Logf("%d versions; %d committed by a process killed before it logged them; %d agent starts",
		v, unlogged, strings.Count(string(logData), `msg="agent started"`))
}

// f. Two catch-up servers share the requests (one shared-subscription group); every request
// is answered by exactly one of them, each of them answers some, and all devices converge.
// The broker's own log (log_type all) tells who sent what.
func TestSyncSharedSubscription(t *testing.T) {
	ndev := knob(t, "BPFLEET_SYNC_DEVICES", 6, 30)
	tf := newTestFleet(t, "log_type all")
	tf.mustIssue(20, 0)
	for _, id := range []string{"srv-a", "srv-b"} {
		tf.serve(id, "g")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !(strings.Contains(tf.broker.Log(), "srv-a 1 $share/g/bpfleet/f1/catchup") &&
		strings.Contains(tf.broker.Log(), "srv-b 1 $share/g/bpfleet/f1/catchup")) {
		if time.Now().After(deadline) {
			t.Fatalf("servers never subscribed:\n%s", tail(tf.broker.Log(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var devs []*device
	for i := range ndev {
		d := tf.device(fmt.Sprintf("dev%d", i+1))
		d.start()
		devs = append(devs, d)
	}
	for _, d := range devs {
		d.waitConverged(tf, 30*time.Second)
		checkAppliedOnce(t, d.cfg.DeviceID, d.log.String(), 20)
	}
	for _, d := range devs {
		d.stop()
	}

	log := tf.broker.Log()
	answered := map[string]int{}
	for _, d := range devs {
		id := d.cfg.DeviceID
		requests := strings.Count(grepLines(log, "Received PUBLISH from bpfleet-f1-"+id+" ", "'bpfleet/f1/catchup'"), "\n")
		replies := 0
		for _, srv := range []string{"srv-a", "srv-b"} {
			n := strings.Count(grepLines(log, "Received PUBLISH from "+srv+" ", "'bpfleet/f1/reply/"+id+"'"), "\n")
			answered[srv] += n
			replies += n
		}
		if requests == 0 || replies != requests {
			t.Errorf("%s: %d catch-up request(s), %d answer(s)", id, requests, replies)
		}
		if b := d.log.count(`msg="catch-up batch handled"`); b != replies {
			t.Errorf("%s handled %d batches, the servers sent %d", id, b, replies)
		}
	}
	delivered := map[string]int{}
	for _, srv := range []string{"srv-a", "srv-b"} {
		delivered[srv] = strings.Count(grepLines(log, "Sending PUBLISH to "+srv+" ", "'bpfleet/f1/catchup'"), "\n")
		if delivered[srv] != answered[srv] {
			t.Errorf("%s was given %d requests and answered %d", srv, delivered[srv], answered[srv])
		}
		if answered[srv] == 0 {
			t.Errorf("%s answered no request: the load was not shared (%v)", srv, answered)
		}
	}
	t.Logf("requests answered per server: %v", answered)
}

// grepLines returns the lines of log that contain all of subs, each ended by a newline.
func grepLines(log string, subs ...string) string {
	var b strings.Builder
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// g. Thousands of garbage messages on the updates topic (and some on the device's reply
// topic), interleaved with valid deltas and replays: every piece of garbage is rejected
// exactly once, the agent stays up, and it converges with each version applied once.
func TestSyncGarbageFlood(t *testing.T) {
	ngarbage := knob(t, "BPFLEET_SYNC_GARBAGE", 3000, 30000)
	const nvalid = 60
	rng := testRand(t)
	// No broker-side size limit, so that oversized messages reach the device and its own
	// limit is what refuses them.
	tf := newTestFleet(t, "message_size_limit 0")
	tf.serve(clientID("serve"), "g1")
	tf.waitServing()
	dev := tf.device("dev1")
	dev.start()
	valid := tf.mustIssue(nvalid, 0)
	stranger := testkey.New(t).Private

	// garbage returns a message and the reason the device must give for rejecting it ("" for
	// one of several possible reasons).
	garbage := func(i int) ([]byte, string) {
		v := valid[rng.IntN(len(valid))]
		switch i % 8 {
		case 0: // random bytes
			b := make([]byte, 8+rng.IntN(2000))
			fillRand(rng, b)
			return b, "malformed message"
		case 1: // a COSE_Sign tag, then noise
			b := make([]byte, 8+rng.IntN(500))
			fillRand(rng, b)
			return append([]byte{0xd8, 0x62}, b...), "malformed message"
		case 2: // truncated delta
			return v[:1+rng.IntN(len(v)-1)], "malformed message"
		case 3: // one flipped byte in a delta: envelope, headers, payload or signature
			b := bytes.Clone(v)
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			return b, ""
		case 4: // a well-formed delta signed by a stranger
			d := &sync.Delta{Fleet: "f1", Version: uint64(1 + rng.IntN(nvalid)), Base: "sha256:" + strings.Repeat("0", 64),
				State: "sha256:" + strings.Repeat("1", 64), Expires: time.Now().Add(time.Hour).Unix()}
			return tf.seal(d, stranger), "not enough valid signatures from the role's keys"
		case 5: // deeply nested
			return append([]byte{0xd8, 0x62}, bytes.Repeat([]byte{0x81}, 100+rng.IntN(5000))...), "malformed message"
		case 6: // indefinite lengths
			return []byte{0xd8, 0x62, 0x9f, 0x9f, 0xff, 0xbf, 0xff, 0x9f, 0xff, 0x9f, 0xff, 0xff}, "malformed message"
		default:
			if i%80 == 7 { // too large
				return bytes.Repeat([]byte{0xd8}, sync.MaxMessageSize+1), "message too large"
			}
			return []byte{}, "malformed message"
		}
	}

	// Sent in rounds of at most 400 messages, each round once the device has handled the one
	// before, so that the broker never has more than its queue limit for the device: every
	// message reaches it and can be accounted for.
	var expectRejected, expectIgnored int
	reasons := map[string]int{}
	handled := func() int {
		l := dev.log.String()
		return strings.Count(l, `msg="message rejected"`) + strings.Count(l, `msg="delta ignored"`) + strings.Count(l, `msg="delta applied"`) +
			strings.Count(l, `msg="delta ahead of the store; catching up"`)
	}
	next, sent := 0, 0
	for round := 0; sent < ngarbage || next < nvalid; round++ {
		base := handled()
		var msgs [][]byte
		expect := 0
		for len(msgs) < 400 && (sent < ngarbage || next < nvalid) {
			if next < nvalid && (sent >= ngarbage || rng.IntN(ngarbage/nvalid+1) == 0) {
				msgs = append(msgs, valid[next])
				next++
				expect++
				continue
			}
			if sent%50 == 49 && next > 0 { // a replay
				msgs = append(msgs, valid[rng.IntN(next)])
				expectIgnored++
			} else {
				m, reason := garbage(sent)
				msgs = append(msgs, m)
				expectRejected++
				if reason != "" {
					reasons[reason]++
				}
			}
			sent++
			expect++
		}
		tf.publishAll(msgs)
		deadline := time.Now().Add(60 * time.Second)
		for handled() < base+expect {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the device handled %d of %d messages\n%s", round, handled()-base, expect, tail(dev.log.String(), 10))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Garbage on the reply topic: undecodable batches, and a batch of garbage messages.
	var junkBatches [][]byte
	for range 100 {
		b := make([]byte, 8+rng.IntN(300))
		fillRand(rng, b)
		junkBatches = append(junkBatches, b)
	}
	m1, _ := garbage(0)
	m2, _ := garbage(2)
	inner, err := sync.EncodeBatch(sync.Batch{Fleet: "f1", Latest: 1 << 40, Messages: [][]byte{m1, m2, {0xa0}}})
	if err != nil {
		t.Fatal(err)
	}
	junkBatches = append(junkBatches, inner)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sync.Publish(ctx, sync.Broker{URL: tf.brokerURL()}, clientID("pub"), sync.ReplyTopic("f1", "dev1"), false, junkBatches...); err != nil {
		t.Fatal(err)
	}
	expectRejected += 100 + 3
	deadline := time.Now().Add(30 * time.Second)
	for dev.log.count(`msg="message rejected"`) < expectRejected {
		if time.Now().After(deadline) {
			t.Fatalf("%d rejections, want %d\n%s", dev.log.count(`msg="message rejected"`), expectRejected, tail(dev.log.String(), 10))
		}
		time.Sleep(10 * time.Millisecond)
	}

	s := dev.waitConverged(tf, 30*time.Second)
	if s.Version != nvalid || s.LastRejection == "" || !s.Online {
		t.Fatalf("status %+v", s)
	}
	checkAppliedOnce(t, "dev1", dev.log.String(), nvalid)
	log := dev.log.String()
	if got := strings.Count(log, `msg="message rejected"`); got != expectRejected {
		t.Errorf("%d messages rejected, %d garbage sent", got, expectRejected)
	}
	if got := strings.Count(log, `msg="delta ignored"`); got < expectIgnored {
		t.Errorf("%d replays ignored, %d sent", got, expectIgnored)
	}
	for reason, n := range reasons {
		if got := strings.Count(log, `reason="`+reason) + strings.Count(log, `reason="catch-up batch: `+reason); got < n {
			t.Errorf("%q given %d times, want at least %d", reason, got, n)
		}
	}
	dev.stop()
	checkStoreRoot(t, dev.dataDir, tf)
	keys := map[string]int{}
	for _, m := range regexp.MustCompile(`reason="([^:"]*)`).FindAllStringSubmatch(log, -1) {
		keys[m[1]]++
	}
	t.Logf("%d garbage messages, %d replays, %d valid deltas; rejections by reason: %v", expectRejected, expectIgnored, nvalid, sortedCounts(keys))
}

func fillRand(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%q: %d; ", k, m[k])
	}
	return b.String()
}
