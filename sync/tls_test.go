package sync

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/mosquitto"
)

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca := mosquitto.NewCA(t, dir, "ca")
	cert, key := ca.Issue("dev1", false)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name              string
		caFile, cert, key string
		wantErr           string // "" means success
		wantCA, wantCert  bool
	}{
		{name: "no files: plain tcp"},
		{name: "CA only", caFile: ca.CertFile(), wantCA: true},
		{name: "client certificate with system roots", cert: cert, key: key, wantCert: true},
		{name: "CA and client certificate", caFile: ca.CertFile(), cert: cert, key: key, wantCA: true, wantCert: true},
		{name: "certificate without key", caFile: ca.CertFile(), cert: cert, wantErr: "needs both its certificate and key files"},
		{name: "key without certificate", key: key, wantErr: "needs both its certificate and key files"},
		{name: "CA file is not PEM", caFile: notPEM, wantErr: "holds no PEM certificate"},
		{name: "missing CA file", caFile: filepath.Join(dir, "absent.crt"), wantErr: "no such file"},
		{name: "key of another certificate", caFile: ca.CertFile(), cert: cert, key: notPEM, wantErr: "client certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := TLSConfig(tt.caFile, tt.cert, tt.key)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c == nil {
				if tt.wantCA || tt.wantCert {
					t.Fatal("nil config")
				}
				return
			}
			if !tt.wantCA && !tt.wantCert {
				t.Fatalf("config %+v for no files", c)
			}
			if (c.RootCAs != nil) != tt.wantCA || (len(c.Certificates) == 1) != tt.wantCert {
				t.Fatalf("RootCAs set %v, %d certificates; want CA %v, certificate %v", c.RootCAs != nil, len(c.Certificates), tt.wantCA, tt.wantCert)
			}
		})
	}
}
