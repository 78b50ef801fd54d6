package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/agent"
	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/sync"
)

// TestOperatorOverTLS: against a Mosquitto whose only listener is TLS with client
// certificates required, the built bpfleetctl publishes a delta with --ca-file, --cert-file
// and --key-file and waits for the device to apply it, and `status` reads the fleet over the
// same TLS settings. Without a client certificate, or with half of one, it fails and says why.
func TestOperatorOverTLS(t *testing.T) {
	build := os.Getenv("BPFLEET_BUILD")
	if build == "" {
		t.Skip("BPFLEET_BUILD is not set: run `make test`, which builds the binaries first")
	}
	ctl := filepath.Join(build, "bin", "bpfleetctl")
	pki := t.TempDir()
	ca := mosquitto.NewCA(t, pki, "fleet-ca")
	serverCert, serverKey := ca.Issue("broker", true)
	broker := mosquitto.StartTLS(t, mosquitto.TLS{CAFile: ca.CertFile(), CertFile: serverCert, KeyFile: serverKey, RequireCertificate: true})
	opCert, opKey := ca.Issue("operator", false)
	devCert, devKey := ca.Issue("dev1", false)

	stateDir, rootFile, deltas, states := newHistory(t, 1)
	deltaFile := filepath.Join(t.TempDir(), "delta1.cbor")
	if err := os.WriteFile(deltaFile, deltas[0], 0o644); err != nil {
		t.Fatal(err)
	}

	a, err := agent.New(agent.Config{DeviceID: "dev1", Fleet: "f1", Broker: broker.URL(), Root: rootFile,
		CAFile: ca.CertFile(), CertFile: devCert, KeyFile: devKey}, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()

	tlsFlags := []string{"--ca-file", ca.CertFile(), "--cert-file", opCert, "--key-file", opKey}
	ctlRun := func(args ...string) (string, error) {
		out, err := exec.Command(ctl, args...).CombinedOutput()
		return string(out), err
	}
	for _, tt := range []struct {
		name    string
		flags   []string
		wantErr string
	}{
		{"no client certificate", []string{"--ca-file", ca.CertFile()}, ""},
		{"certificate without its key", []string{"--ca-file", ca.CertFile(), "--cert-file", opCert}, "needs both its certificate and key files"},
		{"CA file that is not PEM", []string{"--ca-file", deltaFile, "--cert-file", opCert, "--key-file", opKey}, "holds no PEM certificate"},
	} {
		out, err := ctlRun(append([]string{"publish", "--broker", broker.URL(), "--fleet", "f1", "--timeout", "5s", deltaFile}, tt.flags...)...)
		if err == nil || !strings.Contains(out, tt.wantErr) {
			t.Errorf("publish with %s: err %v, output %q; want a failure saying %q", tt.name, err, out, tt.wantErr)
		}
	}

	out, err := ctlRun(append([]string{"publish", "--broker", broker.URL(), "--fleet", "f1", "--wait-device", "dev1", "--timeout", "20s", deltaFile}, tlsFlags...)...)
	if err != nil {
		t.Fatalf("publish over TLS: %v\n%s\nbroker log:\n%s", err, out, broker.Log())
	}
	if !strings.Contains(out, "device dev1 is at version 1, state "+states[0]) {
		t.Fatalf("publish output:\n%s", out)
	}

	out, err = ctlRun(append([]string{"status", "--state-dir", stateDir, "--broker", broker.URL(), "--wait", "1s", "-o", "json"}, tlsFlags...)...)
	if err != nil {
		t.Fatalf("status over TLS: %v\n%s", err, out)
	}
	var report struct {
		Devices []sync.DeviceReport `json:"devices"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(report.Devices) != 1 || report.Devices[0].Device != "dev1" || report.Devices[0].State != sync.StateCurrent || report.Devices[0].Version != 1 {
		t.Fatalf("status over TLS: %+v, want dev1 current at version 1", report.Devices)
	}
}
