package cosign

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/testkey"
)

func TestKeyPairSignVerify(t *testing.T) {
	password := func(bool) ([]byte, error) { return []byte("s3cret"), nil }
	privPEM, pubPEM, err := GenerateKeyPair(password)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(privPEM), "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n") || !strings.HasPrefix(string(pubPEM), "-----BEGIN PUBLIC KEY-----\n") {
		t.Fatalf("PEM types:\n%s\n%s", privPEM, pubPEM)
	}
	wrong := func(bool) ([]byte, error) { return []byte("guess"), nil }
	if _, err := LoadPrivateKey(privPEM, wrong); err == nil {
		t.Fatal("encrypted key opened with the wrong password")
	}
	priv, err := LoadPrivateKey(privPEM, password)
	if err != nil {
		t.Fatal(err)
	}
	if priv.Curve != elliptic.P256() {
		t.Errorf("curve = %s, want P-256", priv.Curve.Params().Name)
	}
	pub, err := LoadPublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := NewPayload(fixtureSignedDigest, "example.com/gadget")
	sig, err := Sign(priv, payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(pub, payload, sig); err != nil {
		t.Errorf("own signature: %v", err)
	}
	tampered := append([]byte{}, payload...)
	tampered[10] ^= 1
	if err := VerifySignature(pub, tampered, sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("modified payload: %v, want ErrBadSignature", err)
	}
	if err := VerifySignature(&testkey.New(t).Private.PublicKey, payload, sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other key: %v, want ErrBadSignature", err)
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	if err := VerifySignature(&rsaKey.PublicKey, payload, sig); err == nil || errors.Is(err, ErrBadSignature) {
		t.Errorf("RSA key: %v, want unsupported key type", err)
	}
}

func TestLoadKeys(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsaPKCS8, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaPub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	priv := []struct {
		name    string
		pem     []byte
		wantErr error // nil with ok=false means any error
		ok      bool
	}{
		{name: "EC PRIVATE KEY", pem: block("EC PRIVATE KEY", sec1), ok: true},
		{name: "damaged cosign.key", pem: block("ENCRYPTED SIGSTORE PRIVATE KEY", []byte("{}"))},
		{name: "RSA", pem: block("PRIVATE KEY", rsaPKCS8)},
		{name: "public key", pem: block("PUBLIC KEY", rsaPub)},
		{name: "not PEM", pem: []byte("hello")},
	}
	for _, tt := range priv {
		t.Run("private/"+tt.name, func(t *testing.T) {
			key, err := LoadPrivateKey(tt.pem, PasswordFromEnv)
			switch {
			case tt.ok:
				if err != nil || !key.Equal(ec) {
					t.Fatalf("LoadPrivateKey = %v", err)
				}
			case err == nil:
				t.Fatal("LoadPrivateKey accepted it")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("LoadPrivateKey = %v, want %v", err, tt.wantErr)
			}
		})
	}
	for name, p := range map[string][]byte{"RSA": block("PUBLIC KEY", rsaPub), "private": block("EC PRIVATE KEY", sec1), "not PEM": []byte("x")} {
		if _, err := LoadPublicKey(p); err == nil {
			t.Errorf("LoadPublicKey accepted %s", name)
		}
	}
}

// TestVerifyCosignSignature checks the fixture's cosign-made signature against its keys.
func TestVerifyCosignSignature(t *testing.T) {
	sig, err := base64.StdEncoding.DecodeString(fixtureSignature)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(fixtureKey(t, "good.pub"), []byte(fixturePayload), sig); err != nil {
		t.Errorf("good.pub: %v", err)
	}
	if err := VerifySignature(fixtureKey(t, "wrong.pub"), []byte(fixturePayload), sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong.pub: %v, want ErrBadSignature", err)
	}
}
