package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfleet/bpfleet/internal/trust"
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
	// more exist); lastAsk rate-limits catch-up requests. unanswered counts requests no
	// batch has answered yet: the broker drops a request when no server is subscribed, so
	// the device asks again, backing off, until one answers.
	behind     bool
	lastAsk    time.Time
	unanswered int
	// pending holds received messages not yet handled, in arrival order; they stay
	// unacknowledged until handled, and are retried when the store was unavailable.
	pending []sync.Message
	// inSight are the messages being handled (a catch-up batch, or the pending queue): an
	// expired root that one of them replaces does not stop the deltas it signed.
	inSight [][]byte
	// staleWarned is the trust version last warned about as expired, so the warning is
	// logged once per version.
	staleWarned uint64
}

// New checks the configuration and the trust store and returns an agent ready to run. The
// store's root wins over the provisioned one once the device has one: it may have rotated.
func New(cfg Config, dataDir string, log *slog.Logger) (*Agent, error) {
	provisioned, err := os.ReadFile(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("agent: provisioned root: %w", err)
	}
	a := &Agent{cfg: cfg, dataDir: dataDir, log: log, now: time.Now}
	err = a.withStore(0, func(s *store.Store) error {
		// Refuse to start on a store that fails its self-check or whose records do not match
		// its digest: the platform corrupts it, or it was changed behind our back or damaged,
		// and its trust cannot be relied on.
		if err := s.SelfCheck(); err != nil {
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
		if err := a.readState(s); err != nil {
			return err
		}
		for _, path := range cfg.Provision {
			if err := a.provision(s, path); err != nil {
				return fmt.Errorf("provisioned update %s: %w", path, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return a, nil
}

// provision applies a sealed root or delta shipped with the device (in its firmware), offline,
// with exactly the checks of one received over MQTT. One the store already has is skipped; one
// that is rejected stops the agent: the firmware does not match the fleet.
func (a *Agent) provision(s *store.Store, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	u, err := sync.Inspect(raw)
	if err != nil {
		return err
	}
	if (u.Root != nil && u.Root.Version <= a.root.Version) || (u.Delta != nil && u.Delta.Version <= a.status.Version) {
		return nil
	}
	before := a.status.LastRejectionAt
	if err := a.handle(s, raw); err != nil {
		return err
	}
	if a.status.LastRejectionAt != before {
		return errors.New(a.status.LastRejection)
	}
	if u.Delta != nil && a.status.Version != u.Delta.Version {
		return fmt.Errorf("delta %d not applied (the store is at %d)", u.Delta.Version, a.status.Version)
	}
	return nil
}

func (a *Agent) readState(s *store.Store) error {
	head, err := s.Head()
	if err != nil {
		return err
	}
	a.status.Root, a.status.Version, a.status.StateDigest = a.root.Version, head.Version, head.StateDigest
	a.status.Overrides = nil
	for _, o := range head.Overrides {
		if o.Check(a.cfg.DeviceID, trust.ClockKnown(a.now())) == nil {
			a.status.Overrides = append(a.status.Overrides, o.Digest)
		}
	}
	if head.Expires > 0 {
		a.status.Expires = time.Unix(head.Expires, 0).UTC()
	}
	return nil
}

// withStore opens the store for f, waiting up to wait for a CLI that holds it (zero: the
// store's default). The agent loop waits only briefly: its messages stay pending and are
// retried, and the loop stays responsive meanwhile.
func (a *Agent) withStore(wait time.Duration, f func(*store.Store) error) error {
	s, err := store.Open(trustDir(a.dataDir), store.Options{LockWait: wait})
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

// Run keeps the device's fleet session until ctx is done. Only one agent may run on a data
// directory at a time.
func (a *Agent) Run(ctx context.Context) error {
	lock, err := lockDataDir(a.dataDir)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer lock.Close()
	broker, err := a.cfg.broker()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	dev, err := sync.Connect(broker, a.cfg.Fleet, a.cfg.DeviceID, a.log)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer dev.Close()
	dev.ReportStatus(a.status)
	// Start-up read the whole store (to verify its digest): hand that memory back before
	// idling, rather than at the runtime's next forced collection minutes later.
	debug.FreeOSMemory()
	a.log.Info("agent started", "device", a.cfg.DeviceID, "fleet", a.cfg.Fleet, "broker", a.cfg.Broker,
		"root", a.root.Version, "version", a.status.Version, "state_digest", a.status.StateDigest)
	a.warnStale()
	catchUp := time.NewTicker(catchUpInterval)
	defer catchUp.Stop()
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping")
			return nil
		case <-dev.Connected():
			// Whatever was published while the device was away may be more than the
			// broker queued for it: always ask.
			a.askCatchUp(dev, true)
		case <-catchUp.C:
			a.warnStale() // trust can go stale while nothing arrives
			if a.behind || (a.unanswered > 0 && time.Since(a.lastAsk) >= retryAfter(a.unanswered)) ||
				(a.unanswered == 0 && time.Since(a.lastAsk) >= a.pollInterval()) {
				a.askCatchUp(dev, false)
			}
		case <-retry.C:
			if len(a.pending) > 0 {
				a.drain(dev)
			}
		case m := <-dev.Inbox():
			a.pending = append(a.pending, m)
			a.drain(dev)
		}
	}
}

// lockDataDir takes an exclusive lock for the agent's lifetime: two agents on one store would
// share one MQTT identity and take its session from each other.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another agent is running on %s: %w", dir, err)
	}
	return f, nil
}

// drain handles the pending messages, and any that arrive meanwhile, with one opening of the
// store. A message is acknowledged once handled; if the store fails, it and those behind it
// stay pending, in order, for the next try.
func (a *Agent) drain(dev *sync.Device) {
	defer func() { a.inSight = nil }()
	err := a.withStore(500*time.Millisecond, func(s *store.Store) error {
		for len(a.pending) > 0 {
			a.inSight = a.inSight[:0]
			for _, m := range a.pending {
				if !m.Batch {
					a.inSight = append(a.inSight, m.Payload)
				}
			}
			m := a.pending[0]
			var err error
			if m.Batch {
				err = a.handleBatch(s, m.Payload)
			} else {
				err = a.handle(s, m.Payload)
			}
			if err != nil {
				return err
			}
			m.Ack()
			a.pending = a.pending[1:]
			select {
			case next := <-dev.Inbox():
				a.pending = append(a.pending, next)
			default:
			}
		}
		return nil
	})
	if err != nil {
		a.log.Error("trust store unavailable; will retry", "err", err, "pending", len(a.pending))
		return
	}
	dev.ReportStatus(a.status)
	a.warnStale()
	if a.behind {
		a.askCatchUp(dev, false)
	}
}

// warnStale warns, once per trust version, when the newest trust the device holds is past its
// expiry: deltas are applied whatever their expiry (a device catching up must pass through
// old ones), and staleness is judged by verify's freshness rules, so the operator must hear of
// it here.
func (a *Agent) warnStale() {
	if a.status.Expires.IsZero() || !trust.Expired(a.status.Expires.Unix(), trust.ClockKnown(a.now())) || a.staleWarned == a.status.Version {
		return
	}
	a.staleWarned = a.status.Version
	a.log.Warn(fmt.Sprintf("trust version %d expired at %s: gadgets under strict policy are refused until a fresh delta arrives",
		a.status.Version, a.status.Expires.Format(time.RFC3339)), "version", a.status.Version, "expires", a.status.Expires)
}

// rootExpired reports whether the device's root has expired at now and nothing in sight
// replaces it. A root that a verified successor in the same batch replaces does not stop the
// deltas issued under it: a device catching up through old rotations must pass through them.
func (a *Agent) rootExpired(now time.Time) bool {
	if !a.root.Expired(now) {
		return false
	}
	for _, m := range a.inSight {
		if u, err := sync.Inspect(m); err == nil && u.Root != nil && u.Root.Version == a.root.Version+1 {
			if _, err := a.root.Next(m); err == nil {
				return false
			}
		}
	}
	return true
}

// retryAfter backs off unanswered catch-up requests: 5 s, 10 s, 20 s, ... up to 5 minutes.
func retryAfter(unanswered int) time.Duration {
	return min(catchUpInterval<<min(unanswered-1, 6), 5*time.Minute)
}

// pollInterval is how often a device that believes it is current asks anyway.
func (a *Agent) pollInterval() time.Duration {
	if a.cfg.PollSeconds > 0 {
		return time.Duration(a.cfg.PollSeconds) * time.Second
	}
	return time.Minute
}

func (a *Agent) askCatchUp(dev *sync.Device, always bool) {
	if !always && time.Since(a.lastAsk) < time.Second {
		return
	}
	a.lastAsk = time.Now()
	a.unanswered++
	if err := dev.RequestCatchUp(sync.Request{Root: a.root.Version, Version: a.status.Version}); err != nil {
		a.log.Debug("catch-up request not sent", "err", err)
	}
}

// handleBatch handles a catch-up batch; like handle, it returns only store failures.
func (a *Agent) handleBatch(s *store.Store, raw []byte) error {
	b, err := sync.DecodeBatch(raw)
	if err != nil {
		a.reject(fmt.Errorf("catch-up batch: %w", err), len(raw))
		return nil
	}
	before := a.status.Version
	a.behind, a.unanswered = false, 0
	saved := a.inSight
	a.inSight = b.Messages
	defer func() { a.inSight = saved }()
	// Consecutive deltas that follow the store are applied as one chain (one transaction, one
	// digest); anything else, or a chain that fails for any reason, goes one message at a time,
	// which gives the precise reason.
	var run []*sync.Delta
	var runRaw [][]byte
	flush := func() error {
		now := trust.ClockKnown(a.now())
		if len(run) > 1 && !a.rootExpired(now) {
			if _, err := sync.ApplyChain(s, run); err == nil {
				for _, d := range run {
					a.applied(d, d.State)
				}
				run, runRaw = nil, nil
				return nil
			}
		}
		for _, m := range runRaw {
			if err := a.handle(s, m); err != nil {
				return err
			}
		}
		run, runRaw = nil, nil
		return nil
	}
	for _, msg := range b.Messages {
		if u, err := a.root.Open(msg); err == nil && u.Delta != nil && u.Delta.Version == a.status.Version+1+uint64(len(run)) {
			run, runRaw = append(run, u.Delta), append(runRaw, msg)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		if err := a.handle(s, msg); err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	// Ask for more only if this batch moved us: a server that keeps promising versions it
	// never sends must not make the device spin.
	if b.Latest > a.status.Version && a.status.Version > before {
		a.behind, a.lastAsk = true, time.Time{} // a reply came: ask for the rest now, not at the next tick
	}
	a.log.Info("catch-up batch handled", "messages", len(b.Messages), "version", a.status.Version, "server_latest", b.Latest)
	return nil
}

// handle applies one sealed message or logs precisely why it was rejected: a rejected message
// will never become valid by redelivery, so it is done with. It returns an error only when the
// store failed, and then the message must be tried again.
func (a *Agent) handle(s *store.Store, raw []byte) error {
	u, err := a.root.Open(raw)
	switch {
	case errors.Is(err, sync.ErrRootOld):
		a.log.Info("root ignored", "reason", err.Error())
		return nil
	case errors.Is(err, sync.ErrConflict):
		a.conflict(err, len(raw))
		return nil
	case err != nil:
		a.reject(err, len(raw))
		return nil
	}
	if u.Root != nil {
		if err := s.SetRoot(u.Root.Version, raw); err != nil {
			return err
		}
		a.root = u.Root
		a.status.Root = u.Root.Version
		a.log.Info("root rotated", "root", u.Root.Version, "expires", time.Unix(u.Root.Expires, 0).UTC())
		return nil
	}
	if o := u.Override; o != nil {
		if err := o.Check(a.cfg.DeviceID, trust.ClockKnown(a.now())); err != nil {
			if o.Device != a.cfg.DeviceID {
				return nil // another device's: not ours to judge or to report
			}
			a.reject(fmt.Errorf("break-glass override for %s refused: %w", o.Digest, err), len(raw))
			return nil
		}
		if err := s.SetOverride(*o); err != nil {
			return err
		}
		if err := s.Audit(store.AuditEntry{Time: a.now().UTC(), Event: "override-received", Digest: o.Digest,
			Detail: fmt.Sprintf("until %s: %s", time.Unix(o.Expires, 0).UTC().Format(time.RFC3339), o.Reason)}); err != nil {
			return err
		}
		if !slices.Contains(a.status.Overrides, o.Digest) {
			a.status.Overrides = append(a.status.Overrides, o.Digest)
		}
		a.log.Warn("break-glass override received", "digest", o.Digest, "expires", time.Unix(o.Expires, 0).UTC(), "reason", o.Reason)
		return nil
	}
	d := u.Delta
	now := trust.ClockKnown(a.now())
	if a.rootExpired(now) {
		a.reject(fmt.Errorf("%w: root %d expired at %s; waiting for a new root", sync.ErrExpired, a.root.Version,
			time.Unix(a.root.Expires, 0).UTC().Format(time.RFC3339)), len(raw))
		return nil
	}
	digest, err := sync.Apply(s, d)
	switch {
	case err == nil:
		a.applied(d, digest)
	case errors.Is(err, sync.ErrConflict):
		a.conflict(err, len(raw))
	case errors.Is(err, sync.ErrStale):
		// QoS 1 redelivers, and catch-up overlaps live updates: a replay is harmless once
		// refused, and not worth an alarm.
		a.log.Info("delta ignored", "reason", err.Error())
	case errors.Is(err, sync.ErrGap):
		a.behind = true
		a.log.Info("delta ahead of the store; catching up", "delta", d.Version, "version", a.status.Version)
	case sync.Rejected(err):
		a.reject(err, len(raw))
	default:
		return err
	}
	return nil
}

// applied records a delta the store now holds.
func (a *Agent) applied(d *sync.Delta, digest string) {
	a.status.Version, a.status.StateDigest, a.status.LastSync = d.Version, digest, a.now().UTC()
	a.status.Expires = time.Unix(d.Expires, 0).UTC()
	a.log.Info("delta applied", "version", d.Version, "keys", len(d.Keys), "signatures", len(d.Signatures),
		"revocations", len(d.Revocations), "policy", d.Policy != nil, "trusted_root", d.TrustedRoot != nil, "state_digest", digest)
}

// conflict records a validly signed message that contradicts what the device holds: unlike a
// replay it means the fleet's history forked or a signing key is in other hands, so it is
// logged as an error and reported as the status's last rejection.
func (a *Agent) conflict(err error, size int) {
	a.status.LastRejection, a.status.LastRejectionAt = err.Error(), a.now().UTC()
	a.log.Error("conflicting signed message", "reason", err.Error(), "bytes", size)
}

func (a *Agent) reject(err error, size int) {
	a.status.LastRejection, a.status.LastRejectionAt = err.Error(), a.now().UTC()
	a.log.Warn("message rejected", "reason", err.Error(), "bytes", size)
}
