package sync

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/mosquitto"
)

// TestFleetStatus fills a real broker with the retained statuses and presences of a fleet whose
// history is at root 2, version 3, and checks how FleetStatus classifies each device: an old
// root is behind even at the newest version, a Last Will marks a device offline without hiding
// what it applied, and payloads a device cannot have published make it invalid.
func TestFleetStatus(t *testing.T) {
	broker := mosquitto.Start(t)
	b := Broker{URL: broker.URL()}
	head := FleetHead{Root: 2, Version: 3, StateDigest: "sha256:" + strings.Repeat("3", 64)}
	d2 := "sha256:" + strings.Repeat("2", 64)
	other := "sha256:" + strings.Repeat("f", 64)

	retain := func(topic string, v any) {
		t.Helper()
		raw, ok := v.([]byte)
		if !ok {
			raw, _ = json.Marshal(v)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := Publish(ctx, b, "test-pub", topic, true, raw); err != nil {
			t.Fatal(err)
		}
	}
	status := func(id string, root, version uint64, digest string) {
		t.Helper()
		retain(StatusTopic("f1", id), Status{Device: id, Online: true, Root: root, Version: version, StateDigest: digest})
	}
	status("current", 2, 3, head.StateDigest)
	status("old-root", 1, 3, head.StateDigest)
	status("old-version", 2, 2, d2)
	status("other-digest", 2, 3, other)
	status("root-ahead", 3, 3, head.StateDigest)
	status("version-ahead", 2, 4, other)
	// The agent was killed after applying version 2: its status still says online, the Last
	// Will on its presence says it is not.
	status("crashed", 2, 2, d2)
	retain(PresenceTopic("f1", "crashed"), Presence{Device: "crashed", Online: false})
	// Back after a crash: the presence says online again.
	status("restarted", 2, 3, head.StateDigest)
	retain(PresenceTopic("f1", "restarted"), Presence{Device: "restarted", Online: true})
	// Another client writes a status naming a device other than its topic's, and garbage.
	retain(StatusTopic("f1", "forged"), Status{Device: "phantom", Online: true, Root: 2, Version: 3, StateDigest: head.StateDigest})
	retain(StatusTopic("f1", "garbage"), []byte("not json"))
	// A real status, with a forged presence next to it.
	status("bad-presence", 2, 3, head.StateDigest)
	retain(PresenceTopic("f1", "bad-presence"), Presence{Device: "phantom", Online: true})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reports, err := FleetStatus(ctx, b, "test-status", "f1", head, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		state   DeviceState
		version uint64
		problem string
	}{
		"current":       {StateCurrent, 3, ""},
		"old-root":      {StateBehind, 3, ""},
		"old-version":   {StateBehind, 2, ""},
		"other-digest":  {StateDiverged, 3, ""},
		"root-ahead":    {StateDiverged, 3, ""},
		"version-ahead": {StateDiverged, 4, ""},
		"crashed":       {StateOffline, 2, ""},
		"restarted":     {StateCurrent, 3, ""},
		"forged":        {StateInvalid, 0, `naming device "phantom"`},
		"garbage":       {StateInvalid, 0, "holds no valid JSON"},
		"bad-presence":  {StateInvalid, 3, `presence/bad-presence holds a payload naming device "phantom"`},
	}
	if len(reports) != len(want) {
		t.Errorf("%d devices reported, want %d: %+v", len(reports), len(want), reports)
	}
	for _, r := range reports {
		w, ok := want[r.Device]
		if !ok {
			t.Errorf("unexpected device %q reported: %+v", r.Device, r)
			continue
		}
		if r.State != w.state || r.Version != w.version || (w.problem == "") != (r.Problem == "") || !strings.Contains(r.Problem, w.problem) {
			t.Errorf("%s: state %s version %d problem %q; want %s version %d problem containing %q",
				r.Device, r.State, r.Version, r.Problem, w.state, w.version, w.problem)
		}
	}
	for _, r := range reports {
		if r.Device == "crashed" && (r.Online || r.StateDigest != d2 || r.Root != 2) {
			t.Errorf("crashed device: %+v, want offline with root 2 and its last digest %s", r, d2)
		}
	}

	// WaitStatus sees the same merged view and never believes the forged payload.
	s, err := WaitStatus(ctx, b, "test-wait", "f1", "crashed", func(Status) bool { return true })
	if err != nil || s.Online || s.Version != 2 {
		t.Errorf("WaitStatus(crashed) = %+v, %v; want offline at version 2", s, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	if s, err := WaitStatus(short, b, "test-wait", "f1", "forged", func(Status) bool { return true }); err == nil {
		t.Errorf("WaitStatus(forged) believed %+v", s)
	}
}

// TestDeviceGoodbye: a device that stops cleanly keeps, in its retained status, the versions
// it last reported, marked offline, and its presence says offline too.
func TestDeviceGoodbye(t *testing.T) {
	broker := mosquitto.Start(t)
	b := Broker{URL: broker.URL()}
	dev, err := Connect(b, "f1", "dev1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	digest := "sha256:" + strings.Repeat("7", 64)
	dev.ReportStatus(Status{Root: 1, Version: 7, StateDigest: digest})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := WaitStatus(ctx, b, "test-wait", "f1", "dev1", func(s Status) bool { return s.Online && s.Version == 7 }); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	reports, err := FleetStatus(ctx, b, "test-status", "f1", FleetHead{Root: 1, Version: 7, StateDigest: digest}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || reports[0].State != StateOffline || reports[0].Version != 7 || reports[0].StateDigest != digest || reports[0].Root != 1 {
		t.Fatalf("after a clean stop: %+v, want dev1 offline at root 1 version 7 %s", reports, digest)
	}
}
