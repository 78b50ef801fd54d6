package sync

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/mosquitto"
)

// brokerACL is the Mosquitto ACL of docs/protocol.md, for fleet f1.
const brokerACL = `user operator
topic readwrite bpfleet/#
pattern read bpfleet/f1/updates
pattern write bpfleet/f1/catchup
pattern read bpfleet/f1/reply/%u
pattern write bpfleet/f1/status/%u
pattern write bpfleet/f1/presence/%u
`

// TestBrokerACL runs the documented ACL on a TLS broker that names clients by their
// certificate's CN: a device still gets updates and its replies and reports its own status and
// presence, but what its certificate publishes on another device's status or presence, or on
// the updates topic, is dropped by the broker.
func TestBrokerACL(t *testing.T) {
	pki := t.TempDir()
	ca := mosquitto.NewCA(t, pki, "fleet-ca")
	serverCert, serverKey := ca.Issue("broker", true)
	acl := filepath.Join(pki, "acl")
	if err := os.WriteFile(acl, []byte(brokerACL), 0o600); err != nil {
		t.Fatal(err)
	}
	broker := mosquitto.StartTLS(t, mosquitto.TLS{CAFile: ca.CertFile(), CertFile: serverCert, KeyFile: serverKey, RequireCertificate: true},
		"acl_file "+acl)
	client := func(cn string) Broker {
		cert, key := ca.Issue(cn, false)
		c, err := TLSConfig(ca.CertFile(), cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return Broker{URL: broker.URL(), TLS: c}
	}
	operator, dev1 := client("operator"), client("dev1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	dev, err := Connect(dev1, "f1", "dev1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	dev.ReportStatus(Status{Root: 1, Version: 1})
	if _, err := WaitStatus(ctx, operator, "test-wait", "f1", "dev1", func(s Status) bool { return s.Online && s.Version == 1 }); err != nil {
		t.Fatalf("dev1's own status never arrived: %v\nbroker log:\n%s", err, broker.Log())
	}

	// dev1's certificate forges dev2's status and presence, and an update for the fleet.
	forged, _ := json.Marshal(Status{Device: "dev2", Online: true, Root: 1, Version: 1})
	if err := Publish(ctx, dev1, "forger", StatusTopic("f1", "dev2"), true, forged); err != nil {
		t.Fatal(err)
	}
	presence, _ := json.Marshal(Presence{Device: "dev2", Online: true})
	if err := Publish(ctx, dev1, "forger", PresenceTopic("f1", "dev2"), true, presence); err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, dev1, "forger", UpdatesTopic("f1"), false, []byte("forged update")); err != nil {
		t.Fatal(err)
	}
	// The operator's update and reply reach the device; the forged update does not.
	if err := Publish(ctx, operator, "test-pub", UpdatesTopic("f1"), false, []byte("update")); err != nil {
		t.Fatal(err)
	}
	if err := Publish(ctx, operator, "test-pub", ReplyTopic("f1", "dev1"), false, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"update", "reply"} {
		select {
		case m := <-dev.Inbox():
			if string(m.Payload) != want {
				t.Fatalf("device received %q, want %q", m.Payload, want)
			}
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("device never received the operator's %s\nbroker log:\n%s", want, broker.Log())
		}
	}

	reports, err := FleetStatus(ctx, operator, "test-status", "f1", FleetHead{Root: 1, Version: 1}, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || reports[0].Device != "dev1" || reports[0].State != StateCurrent {
		t.Fatalf("fleet status %+v, want only dev1, current: the forged dev2 must be dropped by the broker", reports)
	}
}
