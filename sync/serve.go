package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	gosync "sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Serve answers catch-up requests for the fleet from the history until ctx is done. Several
// servers with the same group split the requests between them (an MQTT shared subscription,
// $share/GROUP/TOPIC), on one broker or a cluster; each needs read access to the history.
func Serve(ctx context.Context, b Broker, clientID, group string, h *History, log *slog.Logger) error {
	root, err := h.CurrentRoot()
	if err != nil {
		return err
	}
	if root == nil {
		return fmt.Errorf("serve: history %s has no root yet", h.dir)
	}
	fleet := root.Fleet
	requests := make(chan []byte, 1024)
	topic := "$share/" + group + "/" + CatchUpTopic(fleet)
	c := mqtt.NewClient(b.options(clientID).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetOnConnectHandler(func(c mqtt.Client) {
			c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
				select {
				case requests <- m.Payload():
				default: // overloaded: the device asks again
				}
			})
		}))
	c.Connect()
	defer c.Disconnect(250)
	log.Info("serving catch-up", "fleet", fleet, "topic", topic, "broker", b.URL)
	for {
		select {
		case <-ctx.Done():
			return nil
		case raw := <-requests:
			if err := answer(c, h, fleet, raw); err != nil {
				log.Warn("catch-up request not answered", "err", err)
			}
		}
	}
}

func answer(c mqtt.Client, h *History, fleet string, raw []byte) error {
	req, err := DecodeRequest(raw)
	if err != nil {
		return err
	}
	if req.Device == "" {
		return fmt.Errorf("%w: request names no device", ErrMalformed)
	}
	msgs, latest, err := h.After(req.Root, req.Version, MaxBatchBytes)
	if err != nil {
		return err
	}
	b, err := EncodeBatch(Batch{Fleet: fleet, Latest: latest, Messages: msgs})
	if err != nil {
		return err
	}
	t := c.Publish(ReplyTopic(fleet, req.Device), 1, false, b)
	if !t.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("reply to %s: no PUBACK", req.Device)
	}
	return t.Error()
}

// DeviceState classifies a device against the fleet's latest state.
type DeviceState string

// Device states reported by FleetStatus.
const (
	StateCurrent  DeviceState = "current"
	StateBehind   DeviceState = "behind"
	StateDiverged DeviceState = "diverged"
	StateOffline  DeviceState = "offline"
)

// DeviceReport is one device in a fleet report.
type DeviceReport struct {
	Status
	State DeviceState `json:"state"`
}

// FleetStatus collects the retained statuses of the fleet's devices for wait and classifies
// them against the fleet's latest trust version and digest.
func FleetStatus(ctx context.Context, b Broker, clientID, fleet string, version uint64, digest string, wait time.Duration) ([]DeviceReport, error) {
	var mu gosync.Mutex
	seen := map[string]Status{}
	c := mqtt.NewClient(b.options(clientID).SetCleanSession(true))
	if err := waitToken(ctx, c.Connect()); err != nil {
		return nil, fmt.Errorf("fleet status: connect: %w", err)
	}
	defer c.Disconnect(250)
	err := waitToken(ctx, c.Subscribe(StatusTopic(fleet, "+"), 1, func(_ mqtt.Client, m mqtt.Message) {
		var s Status
		if json.Unmarshal(m.Payload(), &s) == nil && s.Device != "" {
			mu.Lock()
			seen[s.Device] = s
			mu.Unlock()
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("fleet status: subscribe: %w", err)
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	out := make([]DeviceReport, 0, len(seen))
	for _, s := range seen {
		r := DeviceReport{Status: s}
		switch {
		case !s.Online:
			r.State = StateOffline
		case s.Version > version, s.Version == version && s.StateDigest != digest:
			r.State = StateDiverged
		case s.Version < version:
			r.State = StateBehind
		default:
			r.State = StateCurrent
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}
