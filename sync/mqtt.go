package sync

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	gosync "sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// UpdatesTopic is where a fleet's roots and deltas are published, QoS 1, in the order they
// were issued.
func UpdatesTopic(fleet string) string { return "bpfleet/" + fleet + "/updates" }

// StatusTopic is where a device publishes its Status, retained. Only the device writes it, so
// it keeps what the device last reported applying after the device goes away.
func StatusTopic(fleet, device string) string { return "bpfleet/" + fleet + "/status/" + device }

// PresenceTopic is where a device's Presence is kept, retained: the device publishes it online
// on every connect and offline when it stops, and the broker publishes the device's Last Will
// (offline) there when the session dies without a goodbye. The Will is fixed when the session
// starts, so it is kept off StatusTopic, where it would replace the versions the device
// reported since.
func PresenceTopic(fleet, device string) string { return "bpfleet/" + fleet + "/presence/" + device }

// Presence is what PresenceTopic holds, as JSON.
type Presence struct {
	Device string `json:"device"`
	Online bool   `json:"online"`
}

// CatchUpTopic is where devices publish catch-up Requests. Servers subscribe to it as a shared
// subscription ($share/GROUP/...) so that several can split the load.
func CatchUpTopic(fleet string) string { return "bpfleet/" + fleet + "/catchup" }

// ReplyTopic is where a server sends a device its catch-up Batches.
func ReplyTopic(fleet, device string) string { return "bpfleet/" + fleet + "/reply/" + device }

// Status is what a device reports about its trust, as JSON on its StatusTopic. It is not
// signed: it is advisory, and only a broker ACL stops one client from writing another
// device's status (docs/protocol.md).
type Status struct {
	Device          string    `json:"device"`
	Online          bool      `json:"online"`
	Root            uint64    `json:"root_version,omitempty"`
	Version         uint64    `json:"version"`
	StateDigest     string    `json:"state_digest,omitempty"`
	Expires         time.Time `json:"expires,omitzero"`
	LastSync        time.Time `json:"last_sync,omitzero"`
	LastRejection   string    `json:"last_rejection,omitempty"`
	LastRejectionAt time.Time `json:"last_rejection_at,omitzero"`
	// Overrides are the digests a break-glass override lets run on this device now.
	Overrides []string `json:"overrides,omitempty"`
}

// Broker says how to reach the MQTT broker.
type Broker struct {
	URL string      // tcp://host:port, ssl://host:port
	TLS *tls.Config // client certificates and CA for ssl:// brokers; nil for tcp://
}

// TLSConfig builds the TLS settings of an ssl:// broker from PEM files: caFile is the CA that
// signed the broker's certificate (empty: the system's roots), certFile and keyFile the
// client's certificate and key when the broker requires one (both or neither). With no file
// at all it returns nil: a tcp:// broker.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and key files")
	}
	if caFile == "" && certFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("broker CA: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker CA: %s holds no PEM certificate", caFile)
		}
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func (b Broker) options(clientID string) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(b.URL).
		SetClientID(clientID).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		// Handlers run in arrival order; ours only hand off to a channel, so they never block long.
		SetOrderMatters(true).
		// Ordered store: in-flight messages are resent in order after a broker restart.
		SetStore(mqtt.NewOrderedMemoryStore())
	if b.TLS != nil {
		o.SetTLSConfig(b.TLS)
	}
	return o
}

// Message is a received update or catch-up batch. Ack tells the broker it was handled; call it
// only once the message is applied or definitely rejected, so that a crash in between gets it
// redelivered.
type Message struct {
	Payload []byte
	Batch   bool // a catch-up Batch rather than a single sealed message
	Ack     func()
}

// Device is a device's MQTT session with its fleet: a persistent session (fixed client id, no
// clean start) subscribed to the fleet's updates and to its own catch-up replies, with a Last
// Will on its PresenceTopic that marks the device offline. It reconnects on its own; while the broker is away the
// device keeps working.
type Device struct {
	client    mqtt.Client
	log       *slog.Logger
	fleet     string
	id        string
	inbox     chan Message
	connected chan struct{}

	mu     gosync.Mutex
	status Status
}

// receive hands a message to the worker. It is the default handler, set before connecting,
// because a persistent session delivers queued messages as soon as it connects, before any
// subscription made in OnConnect could register a handler of its own.
func (d *Device) receive(_ mqtt.Client, m mqtt.Message) {
	d.inbox <- Message{Payload: m.Payload(), Batch: m.Topic() != UpdatesTopic(d.fleet), Ack: m.Ack}
}

// Connect starts a device session. It returns at once; the session connects, and reconnects,
// in the background. Messages arrive on Inbox() in the order the broker delivers them, and
// every (re)connection is signalled on Connected().
func Connect(b Broker, fleet, device string, log *slog.Logger) (*Device, error) {
	if err := ValidName(fleet); err != nil {
		return nil, fmt.Errorf("connect: fleet: %w", err)
	}
	if err := ValidName(device); err != nil {
		return nil, fmt.Errorf("connect: device id: %w", err)
	}
	d := &Device{log: log, fleet: fleet, id: device, inbox: make(chan Message, 256), connected: make(chan struct{}, 1),
		status: Status{Device: device, Online: true}}
	offline, _ := json.Marshal(Presence{Device: device, Online: false})
	o := b.options("bpfleet-"+fleet+"-"+device).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetAutoAckDisabled(true).
		SetBinaryWill(PresenceTopic(fleet, device), offline, 1, true).
		SetDefaultPublishHandler(d.receive).
		SetOnConnectHandler(d.onConnect).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			log.Warn("broker connection lost; reconnecting", "broker", b.URL, "err", err)
		}).
		SetConnectionAttemptHandler(func(broker *url.URL, cfg *tls.Config) *tls.Config {
			log.Debug("connecting", "broker", broker.String())
			return cfg
		})
	d.client = mqtt.NewClient(o)
	d.client.Connect() // with ConnectRetry the token completes only once connected
	return d, nil
}

func (d *Device) onConnect(c mqtt.Client) {
	// Subscribing again on every connect is harmless with a persistent session and needed
	// when the broker lost it. Handlers only hand off to the worker: paho's router must not
	// block for long.
	d.log.Info("connected to broker")
	t := c.SubscribeMultiple(map[string]byte{UpdatesTopic(d.fleet): 1, ReplyTopic(d.fleet, d.id): 1}, nil)
	if t.Wait(); t.Error() != nil {
		d.log.Error("subscribe failed: no updates will arrive until the next connection", "err", t.Error())
	}
	online, _ := json.Marshal(Presence{Device: d.id, Online: true})
	c.Publish(PresenceTopic(d.fleet, d.id), 1, true, online)
	d.publishStatus()
	select {
	case d.connected <- struct{}{}:
	default:
	}
}

// Inbox returns the channel on which received messages arrive.
func (d *Device) Inbox() <-chan Message { return d.inbox }

// Connected signals each time the session is (re)established.
func (d *Device) Connected() <-chan struct{} { return d.connected }

// RequestCatchUp asks the fleet's servers for what the device lacks. It does not wait: a
// request lost while offline is repeated on the next connect.
func (d *Device) RequestCatchUp(r Request) error {
	r.Device = d.id
	b, err := EncodeRequest(r)
	if err != nil {
		return err
	}
	if !d.client.IsConnectionOpen() {
		return errors.New("request catch-up: not connected")
	}
	d.client.Publish(CatchUpTopic(d.fleet), 1, false, b)
	return nil
}

// ReportStatus records the device's status and publishes it (retained) when connected; a
// status recorded offline is published on the next connect.
func (d *Device) ReportStatus(s Status) {
	d.mu.Lock()
	s.Device, s.Online = d.id, true
	d.status = s
	d.mu.Unlock()
	if d.client.IsConnectionOpen() {
		d.publishStatus()
	}
}

func (d *Device) publishStatus() {
	d.mu.Lock()
	b, _ := json.Marshal(d.status)
	d.mu.Unlock()
	d.client.Publish(StatusTopic(d.fleet, d.id), 1, true, b)
}

// Close marks the device offline, in its status (which keeps the versions last reported) and
// its presence, and ends the session, keeping the broker-side subscription so that deltas
// published meanwhile are queued for the next connect.
func (d *Device) Close() {
	if d.client.IsConnectionOpen() {
		d.mu.Lock()
		d.status.Online = false
		status, _ := json.Marshal(d.status)
		d.mu.Unlock()
		offline, _ := json.Marshal(Presence{Device: d.id, Online: false})
		d.client.Publish(StatusTopic(d.fleet, d.id), 1, true, status).WaitTimeout(2 * time.Second)
		d.client.Publish(PresenceTopic(d.fleet, d.id), 1, true, offline).WaitTimeout(2 * time.Second)
	}
	d.client.Disconnect(500)
}

// ValidName checks a fleet name or device id: it becomes part of MQTT topics and the client id,
// where '/', '+', '#' and '$' would change their meaning.
func ValidName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > 128 {
		return fmt.Errorf("%q is longer than 128 bytes", name)
	}
	if i := strings.IndexAny(name, "/+#$\x00"); i >= 0 {
		return fmt.Errorf("%q contains %q, which MQTT topics reserve", name, name[i])
	}
	return nil
}

// Publish connects as clientID, publishes each message with QoS 1 on topic, waits for every
// PUBACK and disconnects.
func Publish(ctx context.Context, b Broker, clientID, topic string, retained bool, msgs ...[]byte) error {
	c := mqtt.NewClient(b.options(clientID).SetCleanSession(true))
	if err := waitToken(ctx, c.Connect()); err != nil {
		return fmt.Errorf("publish to %s: connect: %w", b.URL, err)
	}
	defer c.Disconnect(250)
	for i, m := range msgs {
		if err := waitToken(ctx, c.Publish(topic, 1, retained, m)); err != nil {
			return fmt.Errorf("publish to %s: message %d: %w", topic, i, err)
		}
	}
	return nil
}

// WaitStatus follows a device's status and presence and returns the first status, merged
// with the presence (see FleetStatus), for which done is true. Payloads that are not the
// device's own (invalid JSON, another device named) are ignored.
func WaitStatus(ctx context.Context, b Broker, clientID, fleet, device string, done func(Status) bool) (Status, error) {
	found := make(chan Status, 1)
	c := mqtt.NewClient(b.options(clientID).SetCleanSession(true))
	if err := waitToken(ctx, c.Connect()); err != nil {
		return Status{}, fmt.Errorf("wait for %s: connect: %w", device, err)
	}
	defer c.Disconnect(250)
	board := newStatusBoard(fleet)
	handler := func(_ mqtt.Client, m mqtt.Message) {
		v := board.add(m.Topic(), m.Payload())
		if v == nil || v.status == nil || v.problem() != "" {
			return
		}
		if s := v.merged(); done(s) {
			select {
			case found <- s:
			default:
			}
		}
	}
	// Presence first: its retained message then arrives before the status's, so that a
	// device whose session died is not seen online for a moment.
	for _, topic := range []string{PresenceTopic(fleet, device), StatusTopic(fleet, device)} {
		if err := waitToken(ctx, c.Subscribe(topic, 1, handler)); err != nil {
			return Status{}, fmt.Errorf("wait for %s: subscribe %s: %w", device, topic, err)
		}
	}
	select {
	case s := <-found:
		return s, nil
	case <-ctx.Done():
		return Status{}, fmt.Errorf("wait for %s: %w", device, ctx.Err())
	}
}

func waitToken(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
