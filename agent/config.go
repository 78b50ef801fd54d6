package agent

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bpfleet/bpfleet/internal/cosign"
)

// Config is the agent's provisioned configuration, a JSON file.
type Config struct {
	// DeviceID names this device in its fleet; it fixes the MQTT client id.
	DeviceID string `json:"device_id"`
	// Fleet is the fleet the device belongs to; deltas for other fleets are rejected.
	Fleet string `json:"fleet"`
	// Broker is the MQTT broker URL, tcp://host:port or ssl://host:port.
	Broker string `json:"broker"`
	// UpdateKeys are PEM public key files (relative to the config file) of the keys allowed to
	// sign trust deltas: the fleet's root of trust on this device.
	UpdateKeys []string `json:"update_keys"`
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
	for name, v := range map[string]string{"device_id": c.DeviceID, "fleet": c.Fleet, "broker": c.Broker} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(c.UpdateKeys) == 0 {
		missing = append(missing, "update_keys")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("load config %s: missing %s", path, strings.Join(missing, ", "))
	}
	for i, k := range c.UpdateKeys {
		if !filepath.IsAbs(k) {
			c.UpdateKeys[i] = filepath.Join(filepath.Dir(path), k)
		}
	}
	return &c, nil
}

// updateKeys loads the configured delta-signing keys.
func (c *Config) updateKeys() ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for _, path := range c.UpdateKeys {
		k, err := cosign.LoadPublicKeyFile(path)
		if err != nil {
			return nil, fmt.Errorf("update key: %w", err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no update keys configured")
	}
	return keys, nil
}
