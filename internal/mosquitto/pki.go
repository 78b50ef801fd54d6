package mosquitto

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CA is a certificate authority made for one test, for brokers started with StartTLS and
// their clients. Its files are PEM in the directory given to NewCA.
type CA struct {
	t    testing.TB
	dir  string
	name string
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

var (
	serialMu sync.Mutex
	serial   int64
)

// NewCA creates a self-signed CA named name and writes its certificate to dir/<name>.crt.
func NewCA(t testing.TB, dir, name string) *CA {
	t.Helper()
	ca := &CA{t: t, dir: dir, name: name, key: newKey(t)}
	tmpl := ca.template(pkix.Name{CommonName: name})
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ca.key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	ca.writePEM(name+".crt", "CERTIFICATE", der)
	return ca
}

// CertFile is the CA's own certificate.
func (ca *CA) CertFile() string { return filepath.Join(ca.dir, ca.name+".crt") }

// Issue signs a leaf certificate: for a server (valid for IP 127.0.0.1) or for a client whose
// CN is cn. It returns the certificate and PKCS#8 key files.
func (ca *CA) Issue(cn string, server bool) (certFile, keyFile string) {
	ca.t.Helper()
	key := newKey(ca.t)
	tmpl := ca.template(pkix.Name{CommonName: cn})
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return ca.writePEM(ca.name+"-"+cn+".crt", "CERTIFICATE", der), ca.writePEM(ca.name+"-"+cn+".key", "PRIVATE KEY", pkcs8)
}

func (ca *CA) template(subject pkix.Name) *x509.Certificate {
	serialMu.Lock()
	serial++
	n := serial
	serialMu.Unlock()
	return &x509.Certificate{SerialNumber: big.NewInt(n), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
}

func (ca *CA) writePEM(name, typ string, der []byte) string {
	ca.t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
