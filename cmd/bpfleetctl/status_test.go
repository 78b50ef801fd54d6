package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/agent"
	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/internal/testkey"
	"github.com/bpfleet/bpfleet/sync"
)

// TestStatus drives the built `bpfleetctl status` against a broker holding the retained
// statuses of a fleet at version 3: a device that is current, one that is online but behind,
// one whose agent was SIGKILLed (its Last Will says offline), one stopped cleanly (offline),
// both still showing what they last applied, two made-up reports that disagree with the
// history (diverged), and one whose topic holds a status naming another device (invalid).
func TestStatus(t *testing.T) {
	build := os.Getenv("BPFLEET_BUILD")
	if build == "" {
		t.Skip("BPFLEET_BUILD is not set: run `make test`, which builds the binaries first")
	}
	ctl, bin := filepath.Join(build, "bin", "bpfleetctl"), filepath.Join(build, "bin", "bpfleet")
	for _, f := range []string{ctl, bin} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v (run `make build`)", err)
		}
	}
	broker := mosquitto.Start(t)
	b := sync.Broker{URL: broker.URL()}

	// The operator's history: root 1 and three deltas.
	stateDir, rootFile, deltas, states := newHistory(t, 3)

	waitStatus := func(device, what string, done func(sync.Status) bool) sync.Status {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := sync.WaitStatus(ctx, b, "wait-"+device, "f1", device, done)
		if err != nil {
			t.Fatalf("%s never reported %s: %v", device, what, err)
		}
		return s
	}
	publish := func(topic string, retained bool, msgs ...[]byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sync.Publish(ctx, b, "test-pub", topic, retained, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	cfg := agent.Config{Fleet: "f1", Broker: broker.URL(), Root: rootFile}

	// Devices A, B and D run in-process; C is the built agent, so that it can die abruptly.
	stops := map[string]func(){}
	for _, id := range []string{"devA", "devB", "devD"} {
		c := cfg
		c.DeviceID = id
		a, err := agent.New(c, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		stop := func() {
			if cancel != nil {
				cancel()
				cancel = nil
				if err := <-done; err != nil {
					t.Errorf("agent %s: %v", id, err)
				}
			}
		}
		stops[id] = stop
		defer stop()
	}
	dir := t.TempDir()
	c := cfg
	c.DeviceID = "devC"
	cfgJSON, _ := json.Marshal(c)
	if err := os.WriteFile(filepath.Join(dir, "agent.json"), cfgJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	var agentOut bytes.Buffer
	proc := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "agent", "--config", filepath.Join(dir, "agent.json"))
	proc.Stdout, proc.Stderr = &agentOut, &agentOut
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	procDone := make(chan struct{})
	go func() { proc.Wait(); close(procDone) }()
	defer func() {
		proc.Process.Kill()
		<-procDone
	}()

	// All four apply deltas 1 and 2.
	for _, id := range []string{"devA", "devB", "devC", "devD"} {
		waitStatus(id, "online", func(s sync.Status) bool { return s.Online })
	}
	publish(sync.UpdatesTopic("f1"), false, deltas[0], deltas[1])
	for _, id := range []string{"devA", "devB", "devC", "devD"} {
		waitStatus(id, "version 2", func(s sync.Status) bool { return s.Version == 2 && s.StateDigest == states[1] })
	}
	// C dies: the broker publishes its Last Will. D stops: it says goodbye itself.
	proc.Process.Signal(syscall.SIGKILL)
	<-procDone
	waitStatus("devC", "its Last Will", func(s sync.Status) bool { return !s.Online })
	stops["devD"]()
	waitStatus("devD", "offline", func(s sync.Status) bool { return !s.Online })
	// Only A gets delta 3, as a catch-up reply addressed to it: B stays behind, online.
	batch, err := sync.EncodeBatch(sync.Batch{Fleet: "f1", Latest: 3, Messages: [][]byte{deltas[2]}})
	if err != nil {
		t.Fatal(err)
	}
	publish(sync.ReplyTopic("f1", "devA"), false, batch)
	waitStatus("devA", "version 3", func(s sync.Status) bool { return s.Version == 3 })
	// Reports that no honest device of this history could make.
	for _, s := range []sync.Status{
		{Device: "devE", Online: true, Root: 1, Version: 3, StateDigest: "sha256:" + strings.Repeat("0", 64)},
		{Device: "devF", Online: true, Root: 1, Version: 4, StateDigest: states[2]},
	} {
		raw, _ := json.Marshal(s)
		publish(sync.StatusTopic("f1", s.Device), true, raw)
	}
	forged, _ := json.Marshal(sync.Status{Device: "devPhantom", Online: true, Root: 1, Version: 3, StateDigest: states[2]})
	publish(sync.StatusTopic("f1", "devG"), true, forged)

	out, err := exec.Command(ctl, "status", "--state-dir", stateDir, "--broker", broker.URL(), "--wait", "1s", "-o", "json").Output()
	if err != nil {
		t.Fatalf("bpfleetctl status: %v\n%s", err, out)
	}
	var report struct {
		Fleet       string              `json:"fleet"`
		Root        uint64              `json:"root_version"`
		Version     uint64              `json:"version"`
		StateDigest string              `json:"state_digest"`
		Devices     []sync.DeviceReport `json:"devices"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if report.Fleet != "f1" || report.Root != 1 || report.Version != 3 || report.StateDigest != states[2] {
		t.Fatalf("fleet %q root %d version %d state %s, want f1 1 3 %s", report.Fleet, report.Root, report.Version, report.StateDigest, states[2])
	}
	want := []struct {
		device  string
		state   sync.DeviceState
		version uint64
		digest  string
	}{
		{"devA", sync.StateCurrent, 3, states[2]},
		{"devB", sync.StateBehind, 2, states[1]},
		{"devC", sync.StateOffline, 2, states[1]},
		{"devD", sync.StateOffline, 2, states[1]},
		{"devE", sync.StateDiverged, 3, "sha256:" + strings.Repeat("0", 64)},
		{"devF", sync.StateDiverged, 4, states[2]},
		{"devG", sync.StateInvalid, 0, ""},
	}
	if len(report.Devices) != len(want) {
		t.Fatalf("%d devices reported, want %d:\n%s", len(report.Devices), len(want), out)
	}
	for i, w := range want {
		got := report.Devices[i]
		if got.Device != w.device || got.State != w.state || got.Version != w.version || got.StateDigest != w.digest {
			t.Errorf("device %d: %s %s version %d %s, want %s %s version %d %s", i,
				got.Device, got.State, got.Version, got.StateDigest, w.device, w.state, w.version, w.digest)
		}
	}

	if p := report.Devices[6].Problem; !strings.Contains(p, `naming device "devPhantom"`) {
		t.Errorf("devG's problem is %q, want one naming devPhantom", p)
	}

	// The table says the same, and warns about devG.
	var stderr bytes.Buffer
	cmd := exec.Command(ctl, "status", "--state-dir", stateDir, "--broker", broker.URL(), "--wait", "1s")
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("bpfleetctl status: %v\n%s%s", err, out, stderr.String())
	}
	if !strings.HasPrefix(string(out), "fleet f1: root 1, version 3, state "+states[2]+"\n") {
		t.Errorf("first line of the table is not the fleet's root, version and state:\n%s", out)
	}
	if !strings.Contains(stderr.String(), `warning: devG: bpfleet/f1/status/devG holds a payload naming device "devPhantom"`) {
		t.Errorf("no warning about devG's forged status on stderr:\n%s", stderr.String())
	}
	for _, w := range want {
		if !regexpLine(string(out), fmt.Sprintf("%s  +%s  +%d ", w.device, w.state, w.version)) {
			t.Errorf("no row for %s %s %d in:\n%s", w.device, w.state, w.version, out)
		}
	}
}

// regexpLine reports whether a line of out starts with a match of pattern.
func regexpLine(out, pattern string) bool {
	re := regexp.MustCompile("^" + pattern)
	for _, line := range strings.Split(out, "\n") {
		if re.MatchString(line) {
			return true
		}
	}
	return false
}

// newHistory starts a fleet history "f1" in a new state directory with root 1 and n deltas. It
// returns the directory, the sealed root in a file, and the sealed deltas with their states.
func newHistory(t *testing.T, n int) (stateDir, rootFile string, deltas [][]byte, states []string) {
	t.Helper()
	stateDir = t.TempDir()
	h, err := sync.OpenHistory(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	is, err := h.Issue()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	rootKey, deltaKey := testkey.New(t).Private, testkey.New(t).Private
	root, err := is.IssueRoot(sync.RootSpec{Fleet: "f1", RootKeys: []crypto.PublicKey{rootKey.Public()}, RootThreshold: 1,
		DeltaKeys: []crypto.PublicKey{deltaKey.Public()}, DeltaThreshold: 1, Expires: time.Hour}, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootFile = filepath.Join(t.TempDir(), "root.cbor")
	if err := os.WriteFile(rootFile, root, 0o644); err != nil {
		t.Fatal(err)
	}
	for range n {
		raw, d, err := is.IssueDelta(sync.DeltaSpec{Expires: time.Hour}, deltaKey)
		if err != nil {
			t.Fatal(err)
		}
		deltas, states = append(deltas, raw), append(states, d.State)
	}
	return stateDir, rootFile, deltas, states
}
