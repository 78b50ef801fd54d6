package agent

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bpfleet/bpfleet/sync"
)

// Config is the agent's provisioned configuration, a JSON file. Relative paths in it are
// relative to the file.
type Config struct {
	// DeviceID names this device in its fleet; it fixes the MQTT client id.
	DeviceID string `json:"device_id"`
	// Fleet is the fleet the device belongs to; it must match the root's.
	Fleet string `json:"fleet"`
	// Broker is the MQTT broker URL, tcp://host:port or ssl://host:port.
	Broker string `json:"broker"`
	// Root is the signed root message the device is provisioned with (bpfleetctl init writes
	// it): the device's root of trust until a rotation replaces it.
	Root string `json:"root"`
	// Provision lists sealed roots and deltas (bpfleetctl root/delta -o FILE) the device applies
	// at start, offline, in order, before it ever reaches the broker: trust shipped in firmware.
	// Those the store already has are skipped.
	Provision []string `json:"provision,omitempty"`
	// PollSeconds is how often a device that believes it is current still asks the catch-up
	// servers what it lacks (default 60): a delta the broker accepted and then lost (a crash
	// before delivery) is otherwise noticed only when a later one arrives.
	PollSeconds int `json:"poll_seconds,omitempty"`
	// TLS, for ssl:// brokers: the CA that signed the broker's certificate, and the device's
	// client certificate and key when the broker requires them.
	CAFile   string `json:"ca_file,omitempty"`
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
}

// LoadConfig reads and checks a config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	var missing []string
	for _, f := range []struct{ name, value string }{{"device_id", c.DeviceID}, {"fleet", c.Fleet}, {"broker", c.Broker}, {"root", c.Root}} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("load config %s: missing %s", path, strings.Join(missing, ", "))
	}
	if err := sync.ValidName(c.Fleet); err != nil {
		return nil, fmt.Errorf("load config %s: fleet: %w", path, err)
	}
	if err := sync.ValidName(c.DeviceID); err != nil {
		return nil, fmt.Errorf("load config %s: device_id: %w", path, err)
	}
	if u, err := url.Parse(c.Broker); err != nil || !slices.Contains([]string{"tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"}, u.Scheme) {
		return nil, fmt.Errorf("load config %s: broker %q: want tcp://host:port or ssl://host:port", path, c.Broker)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, fmt.Errorf("load config %s: cert_file and key_file go together", path)
	}
	paths := []*string{&c.Root, &c.CAFile, &c.CertFile, &c.KeyFile}
	for i := range c.Provision {
		paths = append(paths, &c.Provision[i])
	}
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	return &c, nil
}

// broker builds the MQTT connection settings, with TLS when the config names certificates.
func (c *Config) broker() (sync.Broker, error) {
	t, err := sync.TLSConfig(c.CAFile, c.CertFile, c.KeyFile)
	return sync.Broker{URL: c.Broker, TLS: t}, err
}
