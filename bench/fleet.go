package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
	"github.com/bpfleet/bpfleet/sync"
)

// longLived is the expiry of bench roots and deltas: cached histories must stay applicable.
const longLived = 10 * 365 * 24 * time.Hour

// fleet is the operator's side of one bench fleet: a history with root 1 and its delta key.
type fleet struct {
	name     string
	dir      string
	hist     *sync.History
	is       *sync.Issuer
	deltaKey *ecdsa.PrivateKey
	rootRaw  []byte
	rootFile string
	root     *sync.TrustedRoot
}

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func newFleet(dir, name string) (*fleet, error) {
	f := &fleet{name: name, dir: dir, deltaKey: newKey()}
	var err error
	if f.hist, err = sync.OpenHistory(dir); err != nil {
		return nil, err
	}
	if f.is, err = f.hist.Issue(); err != nil {
		return nil, err
	}
	rootKey := newKey()
	f.rootRaw, err = f.is.IssueRoot(sync.RootSpec{Fleet: name, RootKeys: []crypto.PublicKey{rootKey.Public()}, RootThreshold: 1,
		DeltaKeys: []crypto.PublicKey{f.deltaKey.Public()}, DeltaThreshold: 1, Expires: longLived}, rootKey)
	if err != nil {
		return nil, err
	}
	if f.root, err = sync.OpenRoot(f.rootRaw); err != nil {
		return nil, err
	}
	f.rootFile = filepath.Join(dir, "root.cbor")
	return f, os.WriteFile(f.rootFile, f.rootRaw, 0o644)
}

func (f *fleet) close() {
	if f.is != nil {
		f.is.Close()
	}
}

// issue issues the next delta: keys, then sigs.
func (f *fleet) issue(keys []trust.Key, sigs []trust.Signature) ([]byte, *sync.Delta, error) {
	return f.is.IssueDelta(sync.DeltaSpec{Keys: keys, Signatures: sigs, Expires: longLived}, f.deltaKey)
}

// gadgetSigner is a cosign key that signs gadget images.
type gadgetSigner struct {
	priv *ecdsa.PrivateKey
	key  trust.Key
}

func newGadgetSigner() gadgetSigner {
	priv := newKey()
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		panic(err)
	}
	return gadgetSigner{priv: priv, key: trust.Key{DER: der}}
}

// sign returns a real cosign simple-signing signature of digest.
func (g gadgetSigner) sign(digest, ref string) trust.Signature {
	payload, err := cosign.NewPayload(digest, ref)
	if err != nil {
		panic(err)
	}
	sig, err := cosign.Sign(g.priv, payload)
	if err != nil {
		panic(err)
	}
	return trust.Signature{Digest: digest, Payload: payload, Signature: sig}
}

// randomSigs returns n real signatures over random image digests (about 400 bytes each as
// stored: a 71-byte digest, a ~250-byte payload, a ~71-byte ECDSA signature).
func (g gadgetSigner) randomSigs(n int) []trust.Signature {
	out := make([]trust.Signature, n)
	for i := range out {
		d := make([]byte, 32)
		rand.Read(d)
		out[i] = g.sign("sha256:"+hex.EncodeToString(d), fmt.Sprintf("registry.example/gadgets/g%d:v1", i))
	}
	return out
}

// preload applies sealed deltas straight into the device store in dir, checking them as the
// agent does (TrustedRoot.Open, sync.Apply), without MQTT.
func preload(dir string, root *sync.TrustedRoot, raws [][]byte) error {
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	for i, raw := range raws {
		u, err := root.Open(raw)
		if err != nil {
			return fmt.Errorf("delta %d: %w", i+1, err)
		}
		if _, err := sync.Apply(s, u.Delta); err != nil {
			return fmt.Errorf("delta %d: %w", i+1, err)
		}
	}
	return nil
}

// mqttClient connects a plain paho client shaped like sync's (ordered, ordered store).
func mqttClient(url, id string, clean bool) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
		SetOrderMatters(true).SetStore(mqtt.NewOrderedMemoryStore()).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(o)
	t := c.Connect()
	if !t.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: timeout", id)
	}
	return c, t.Error()
}

// publishAll publishes msgs with QoS 1 without waiting between them, then waits for every
// PUBACK.
func publishAll(c mqtt.Client, topic string, msgs [][]byte) error {
	toks := make([]mqtt.Token, len(msgs))
	for i, m := range msgs {
		toks[i] = c.Publish(topic, 1, false, m)
	}
	for i, t := range toks {
		if !t.WaitTimeout(60 * time.Second) {
			return fmt.Errorf("message %d: no PUBACK", i)
		}
		if t.Error() != nil {
			return t.Error()
		}
	}
	return nil
}

// watchStatus calls fn with every status a device of fleet publishes, with its arrival time.
func watchStatus(url, id, fleet string, fn func(sync.Status, time.Time)) (mqtt.Client, error) {
	c, err := mqttClient(url, id, true)
	if err != nil {
		return nil, err
	}
	t := c.Subscribe(sync.StatusTopic(fleet, "+"), 1, func(_ mqtt.Client, m mqtt.Message) {
		at := time.Now()
		var s sync.Status
		if json.Unmarshal(m.Payload(), &s) == nil {
			fn(s, at)
		}
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("subscribe status: %v", t.Error())
	}
	return c, nil
}

// writeAgentConfig writes an agent config file for device id in dir.
func writeAgentConfig(dir, id string, f *fleet, url string) (string, error) {
	b, _ := json.Marshal(map[string]string{"device_id": id, "fleet": f.name, "broker": url, "root": f.rootFile})
	path := filepath.Join(dir, id+".json")
	return path, os.WriteFile(path, b, 0o644)
}
