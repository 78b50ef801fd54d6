package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/bpfleet/bpfleet/internal/trust/store"
	"github.com/bpfleet/bpfleet/sync"
)

// catchUpInterval is how often a device that knows it is behind asks again when no reply
// comes (the server may be down or the request lost).
const catchUpInterval = 5 * time.Second

// Agent is the device daemon. Create it with New and start it with Run.
type Agent struct {
	cfg     Config
	dataDir string
	log     *slog.Logger
	root    *sync.TrustedRoot
	status  sync.Status
	now     func() time.Time

	// behind is set when the device knows it lacks messages (a gap, or a batch that said
	// more exist); lastAsk rate-limits catch-up requests.
	behind  bool
	lastAsk time.Time
}

// New checks the configuration and the trust store and returns an agent ready to run. The
// store's root wins over the provisioned one once the device has one: it may have rotated.
func New(cfg Config, dataDir string, log *slog.Logger) (*Agent, error) {
	provisioned, err := os.ReadFile(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("agent: provisioned root: %w", err)
	}
	a := &Agent{cfg: cfg, dataDir: dataDir, log: log, now: time.Now}
	err = a.withStore(func(s *store.Store) error {
		// Refuse to start on a store whose records do not match its digest: it was changed
		// behind our back or damaged, and its trust cannot be relied on.
		if err := s.Verify(); err != nil {
			return err
		}
		raw, err := s.Root()
		if err != nil {
			return err
		}
		fresh := raw == nil
		if fresh {
			raw = provisioned
		}
		if a.root, err = sync.OpenRoot(raw); err != nil {
			return fmt.Errorf("root: %w", err)
		}
		if a.root.Fleet != cfg.Fleet {
			return fmt.Errorf("root is for fleet %q, config says %q", a.root.Fleet, cfg.Fleet)
		}
		if fresh {
			if err := s.SetRoot(a.root.Version, raw); err != nil {
				return err
			}
		}
		return a.readState(s)
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return a, nil
}

func (a *Agent) readState(s *store.Store) error {
	snap, err := s.Snapshot()
	if err != nil {
		return err
	}
	a.status.Root, a.status.Version, a.status.StateDigest = a.root.Version, snap.Version(), snap.StateDigest()
	if snap.Expires() > 0 {
		a.status.Expires = time.Unix(snap.Expires(), 0).UTC()
	}
	return nil
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
	broker, err := a.cfg.broker()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	dev, err := sync.Connect(broker, a.cfg.Fleet, a.cfg.DeviceID)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer dev.Close()
	dev.ReportStatus(a.status)
	a.log.Info("agent started", "device", a.cfg.DeviceID, "fleet", a.cfg.Fleet, "broker", a.cfg.Broker,
		"root", a.root.Version, "version", a.status.Version, "state_digest", a.status.StateDigest)
	tick := time.NewTicker(catchUpInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping")
			return nil
		case <-dev.Connected():
			// Whatever was published while the device was away may be more than the
			// broker queued for it: always ask.
			a.askCatchUp(dev, true)
		case <-tick.C:
			if a.behind {
				a.askCatchUp(dev, false)
			}
		case m := <-dev.Inbox():
			if err := a.handlePending(dev, m); err != nil {
				// The store could not be opened: leave the message unacknowledged so the
				// broker redelivers it after a reconnect, and keep running.
				a.log.Error("trust store unavailable", "err", err)
				continue
			}
			dev.ReportStatus(a.status)
			if a.behind {
				a.askCatchUp(dev, false)
			}
		}
	}
}

func (a *Agent) askCatchUp(dev *sync.Device, always bool) {
	if !always && time.Since(a.lastAsk) < time.Second {
		return
	}
	a.lastAsk = time.Now()
	if err := dev.RequestCatchUp(sync.Request{Root: a.root.Version, Version: a.status.Version}); err != nil {
		a.log.Debug("catch-up request not sent", "err", err)
	}
}

// handlePending handles m and every message already queued behind it with one opening of the
// store.
func (a *Agent) handlePending(dev *sync.Device, m sync.Message) error {
	return a.withStore(func(s *store.Store) error {
		for {
			if m.Batch {
				a.handleBatch(s, m.Payload)
			} else {
				a.handle(s, m.Payload)
			}
			m.Ack()
			select {
			case m = <-dev.Inbox():
			default:
				return nil
			}
		}
	})
}

func (a *Agent) handleBatch(s *store.Store, raw []byte) {
	b, err := sync.DecodeBatch(raw)
	if err != nil {
		a.reject(fmt.Errorf("catch-up batch: %w", err), len(raw))
		return
	}
	before := a.status.Version
	a.behind = false
	for _, msg := range b.Messages {
		a.handle(s, msg)
	}
	// Ask for more only if this batch moved us: a server that keeps promising versions it
	// never sends must not make the device spin.
	if b.Latest > a.status.Version && a.status.Version > before {
		a.behind = true
	}
	a.log.Info("catch-up batch handled", "messages", len(b.Messages), "version", a.status.Version, "server_latest", b.Latest)
}

// handle applies one sealed message or logs precisely why it was rejected. Either way the
// message is done with: a rejected message will never become valid by redelivery.
func (a *Agent) handle(s *store.Store, raw []byte) {
	u, err := a.root.Open(raw)
	if err != nil {
		a.reject(err, len(raw))
		return
	}
	if u.Root != nil {
		if err := s.SetRoot(u.Root.Version, raw); err != nil {
			a.reject(err, len(raw))
			return
		}
		a.root = u.Root
		a.status.Root = u.Root.Version
		a.log.Info("root rotated", "root", u.Root.Version, "expires", time.Unix(u.Root.Expires, 0).UTC())
		return
	}
	d := u.Delta
	now := sync.ClockKnown(a.now())
	if a.root.Expired(now) {
		a.reject(fmt.Errorf("%w: root %d expired at %s; waiting for a new root", sync.ErrExpired, a.root.Version,
			time.Unix(a.root.Expires, 0).UTC().Format(time.RFC3339)), len(raw))
		return
	}
	digest, err := sync.Apply(s, d, now)
	switch {
	case err == nil:
		a.status.Version, a.status.StateDigest, a.status.LastSync = d.Version, digest, a.now().UTC()
		a.status.Expires = time.Unix(d.Expires, 0).UTC()
		a.log.Info("delta applied", "version", d.Version, "keys", len(d.Keys), "signatures", len(d.Signatures), "state_digest", digest)
	case errors.Is(err, sync.ErrStale):
		// QoS 1 redelivers, and catch-up overlaps live updates: a replay is harmless once
		// refused, and not worth an alarm.
		a.log.Info("delta ignored", "reason", err.Error())
	case errors.Is(err, sync.ErrGap):
		a.behind = true
		a.log.Info("delta ahead of the store; catching up", "delta", d.Version, "version", a.status.Version)
	default:
		a.reject(err, len(raw))
	}
}

func (a *Agent) reject(err error, size int) {
	a.status.LastRejection = err.Error()
	a.log.Warn("message rejected", "reason", err.Error(), "bytes", size)
}
