package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/bpfleet/bpfleet/internal/trust/store"
	"github.com/bpfleet/bpfleet/sync"
)

// Agent is the device daemon. Create it with New and start it with Run.
type Agent struct {
	cfg     Config
	dataDir string
	keys    []crypto.PublicKey
	log     *slog.Logger
	status  sync.Status
}

// New checks the configuration and the trust store and returns an agent ready to run.
func New(cfg Config, dataDir string, log *slog.Logger) (*Agent, error) {
	keys, err := cfg.updateKeys()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, dataDir: dataDir, keys: keys, log: log}
	// Refuse to start on a store whose records do not match its digest: it was changed behind
	// our back or damaged, and its trust cannot be relied on.
	err = a.withStore(func(s *store.Store) error {
		if err := s.Verify(); err != nil {
			return err
		}
		snap, err := s.Snapshot()
		if err != nil {
			return err
		}
		a.status.Version, a.status.StateDigest = snap.Version(), snap.StateDigest()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return a, nil
}

func (a *Agent) withStore(f func(*store.Store) error) error {
	s, err := store.Open(trustDir(a.dataDir), store.Options{})
	if err != nil {
		return err
	}
	err = f(s)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

func trustDir(dataDir string) string { return filepath.Join(dataDir, "trust") }
func imageDir(dataDir string) string { return filepath.Join(dataDir, "images") }

// Run keeps the device's fleet session until ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	dev, err := sync.Connect(sync.Broker{URL: a.cfg.Broker}, a.cfg.Fleet, a.cfg.DeviceID)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer dev.Close()
	dev.ReportStatus(a.status)
	a.log.Info("agent started", "device", a.cfg.DeviceID, "fleet", a.cfg.Fleet, "broker", a.cfg.Broker,
		"version", a.status.Version, "state_digest", a.status.StateDigest)
	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping")
			return nil
		case m := <-dev.Deltas():
			if err := a.applyPending(dev, m); err != nil {
				// The store could not be opened: leave the message unacknowledged so the
				// broker redelivers it after a reconnect, and keep running.
				a.log.Error("trust store unavailable", "err", err)
				continue
			}
			dev.ReportStatus(a.status)
		}
	}
}

// applyPending handles m and every delta already queued behind it with one opening of the store.
func (a *Agent) applyPending(dev *sync.Device, m sync.Message) error {
	return a.withStore(func(s *store.Store) error {
		for {
			a.handle(s, m)
			m.Ack()
			select {
			case m = <-dev.Deltas():
			default:
				return nil
			}
		}
	})
}

// handle applies one delta message or logs precisely why it was rejected. Either way the
// message is done with: a rejected delta will never become valid by redelivery.
func (a *Agent) handle(s *store.Store, m sync.Message) {
	d, err := sync.Open(m.Payload, a.keys)
	if err == nil {
		var digest string
		digest, err = sync.Apply(s, a.cfg.Fleet, d)
		if err == nil {
			a.status.Version, a.status.StateDigest, a.status.LastSync = d.Version, digest, time.Now().UTC()
			a.log.Info("delta applied", "version", d.Version, "keys", len(d.Keys), "signatures", len(d.Signatures), "state_digest", digest)
			return
		}
	}
	if errors.Is(err, sync.ErrStale) {
		// QoS 1 redelivers, and a replay is harmless once refused: not worth an alarm.
		a.log.Info("delta ignored", "reason", err.Error())
		return
	}
	a.status.LastRejection = err.Error()
	a.log.Warn("delta rejected", "reason", err.Error(), "bytes", len(m.Payload))
}
