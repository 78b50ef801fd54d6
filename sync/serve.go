package sync

import (
	"context"
	"fmt"
	"log/slog"
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
