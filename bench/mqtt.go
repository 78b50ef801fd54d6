package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/bpfleet/bpfleet/agent"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/internal/trust/store"
	"github.com/bpfleet/bpfleet/sync"
)

// runAgent runs the real agent (agent.New + Run, the code `bpfleet agent` runs) in-process on
// dataDir until the returned stop is called.
func runAgent(e *env, id string, f *fleet, url, dataDir string) (stop func(), err error) {
	a, err := agent.New(agent.Config{DeviceID: id, Fleet: f.name, Broker: url, Root: f.rootFile}, dataDir, e.log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	return func() { cancel(); <-done }, nil
}

// waitFor waits for a status of device id that satisfies ok, watching from before start runs.
func waitFor(url, watcher string, f *fleet, id string, timeout time.Duration, start func() error, ok func(sync.Status) bool,
	progress func(sync.Status, time.Time)) (time.Time, error) {
	hit := make(chan time.Time, 1)
	w, err := watchStatus(url, watcher, f.name, func(s sync.Status, at time.Time) {
		if s.Device != id {
			return
		}
		if progress != nil {
			progress(s, at)
		}
		if ok(s) {
			select {
			case hit <- at:
			default:
			}
		}
	})
	if err != nil {
		return time.Time{}, err
	}
	defer w.Disconnect(0)
	if err := start(); err != nil {
		return time.Time{}, err
	}
	select {
	case at := <-hit:
		return at, nil
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("timeout after %s", timeout)
	}
}

func benchApply(e *env) {
	row := Row{Group: "apply", Figure: "delta apply over MQTT QoS1, durable (agent, records/s)", Unit: "rec/s",
		RefWhat: "raw paho QoS1, same bytes, same broker", Goal: "≥ 0.8× raw; ≥ 20,000 rec/s"}
	fail := func(err error) { row.Result, row.Note = "NOT MEASURED", err.Error(); e.add(row) }
	bf, err := e.sigFleet()
	if err != nil {
		fail(err)
		return
	}
	b, err := startBroker(filepath.Join(e.work, "apply-broker"))
	if err != nil {
		fail(err)
		return
	}
	defer b.stop()
	runs := knobInt("BPFLEET_BENCH_APPLY_RUNS", 3)
	final := bf.states[len(bf.states)-1]
	bytes := 0
	for _, d := range bf.deltas {
		bytes += len(d)
	}
	pub, err := mqttClient(b.url(), "apply-pub", true)
	if err != nil {
		fail(err)
		return
	}
	defer pub.Disconnect(0)
	var agentRates, rawRates, rawSyncRates []float64
	for i := range runs {
		// The agent: fresh store, connected and idle (no catch-up server), then every delta.
		id := fmt.Sprintf("apply-%d", i)
		var stop func()
		_, err := waitFor(b.url(), "apply-watch-online", bf.fleet, id, 30*time.Second, func() (err error) {
			stop, err = runAgent(e, id, bf.fleet, b.url(), filepath.Join(e.work, id))
			return err
		}, func(s sync.Status) bool { return s.Online }, nil)
		if err != nil {
			fail(fmt.Errorf("agent online: %w", err))
			return
		}
		var t0 time.Time
		end, err := waitFor(b.url(), "apply-watch", bf.fleet, id, 5*time.Minute, func() error {
			t0 = time.Now()
			return publishAll(pub, sync.UpdatesTopic(bf.name), bf.deltas)
		}, func(s sync.Status) bool { return s.StateDigest == final }, nil)
		stop()
		if err != nil {
			fail(fmt.Errorf("agent run %d: %w", i, err))
			return
		}
		agentRates = append(agentRates, float64(bf.sigs)/end.Sub(t0).Seconds())

		// Raw paho: a QoS1 subscriber with a persistent session that only counts.
		rate, err := rawRun(b.url(), pub, fmt.Sprintf("bench/raw/%d", i), bf.deltas, float64(bf.sigs), "")
		if err != nil {
			fail(fmt.Errorf("raw run %d: %w", i, err))
			return
		}
		rawRates = append(rawRates, rate)
		rate, err = rawRun(b.url(), pub, fmt.Sprintf("bench/rawsync/%d", i), bf.deltas, float64(bf.sigs), e.work)
		if err != nil {
			fail(fmt.Errorf("raw durable run %d: %w", i, err))
			return
		}
		rawSyncRates = append(rawSyncRates, rate)
	}
	as, rs := newStats(agentRates), newStats(rawRates)
	row.Value, row.Ref = f64(as.p(0.5)), f64(rs.p(0.5))
	row.Ratio = f64(*row.Value / *row.Ref)
	row.Detail = map[string]any{"runs": runs, "deltas": len(bf.deltas), "signatures": bf.sigs, "bytes": bytes,
		"agent_rec_s_min": fmt.Sprintf("%.0f", as.s[0]), "agent_rec_s_max": fmt.Sprintf("%.0f", as.s[len(as.s)-1]),
		"raw_rec_s_min": fmt.Sprintf("%.0f", rs.s[0]), "raw_rec_s_max": fmt.Sprintf("%.0f", rs.s[len(rs.s)-1]),
		"raw_MB_s_p50":                fmt.Sprintf("%.1f", rs.p(0.5)*float64(bytes)/float64(bf.sigs)/1e6),
		"raw_fsync_per_msg_rec_s_p50": fmt.Sprintf("%.0f", newStats(rawSyncRates).p(0.5)),
		"ratio_vs_raw_fsync_per_msg":  fmt.Sprintf("%.2f", as.p(0.5)/newStats(rawSyncRates).p(0.5))}
	for k, v := range applyBreakdown(e, bf) {
		row.Detail[k] = v
	}
	switch {
	case *row.Ratio >= 0.8 && *row.Value >= 20000:
		row.Result = "PASS"
	default:
		row.Result = "FAIL"
	}
	row.Note = "time from the first PUBLISH to the agent's status with the final digest (Badger synced writes); median of runs"
	e.add(row)
}

func rawRun(url string, pub mqtt.Client, topic string, msgs [][]byte, records float64, syncDir string) (float64, error) {
	var n atomic.Int64
	// With syncDir, the subscriber appends each payload to a file and fsyncs it before the
	// handler returns (and paho acknowledges): the least any durable consumer must do.
	var file *os.File
	if syncDir != "" {
		var err error
		if file, err = os.CreateTemp(syncDir, "raw-"); err != nil {
			return 0, err
		}
		defer file.Close()
	}
	done := make(chan time.Time, 1)
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID("raw-" + strings.ReplaceAll(topic, "/", "-")).SetCleanSession(false).
		SetOrderMatters(true).SetStore(mqtt.NewOrderedMemoryStore())
	sub := mqtt.NewClient(o)
	if t := sub.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return 0, fmt.Errorf("connect: %v", t.Error())
	}
	defer sub.Disconnect(0)
	t := sub.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		if file != nil {
			file.Write(m.Payload())
			file.Sync()
		}
		if n.Add(1) == int64(len(msgs)) {
			done <- time.Now()
		}
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return 0, fmt.Errorf("subscribe: %v", t.Error())
	}
	t0 := time.Now()
	if err := publishAll(pub, topic, msgs); err != nil {
		return 0, err
	}
	select {
	case end := <-done:
		return records / end.Sub(t0).Seconds(), nil
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("received %d of %d", n.Load(), len(msgs))
	}
}

// applyBreakdown applies the same deltas without MQTT, timing each part of the agent's work.
func applyBreakdown(e *env, bf *benchFleet) map[string]any {
	dir := filepath.Join(e.work, "apply-direct")
	out := map[string]any{}
	t := time.Now()
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		return map[string]any{"breakdown_error": err.Error()}
	}
	openEmpty := time.Since(t)
	var openT, applyT time.Duration
	for i, raw := range bf.deltas {
		t = time.Now()
		u, err := bf.root.Open(raw)
		openT += time.Since(t)
		if err != nil {
			out["breakdown_error"] = fmt.Sprintf("delta %d: %v", i+1, err)
			break
		}
		t = time.Now()
		if _, err := sync.Apply(s, u.Delta); err != nil {
			out["breakdown_error"] = fmt.Sprintf("delta %d: %v", i+1, err)
			break
		}
		applyT += time.Since(t)
	}
	// The digest over every record alone (what each apply recomputes), at the final size.
	snap, _ := s.Snapshot()
	var digest []float64
	if snap != nil {
		digest, _ = timeN(5, 1, func() error {
			_, err := s.Digest(store.Change{Version: snap.Version() + 1, Base: snap.StateDigest()})
			return err
		})
	}
	t = time.Now()
	s.Close()
	closeT := time.Since(t)
	// The agent opens and closes the store around each batch of messages it drains.
	reopen, _ := timeN(5, 0, func() error {
		s, err := store.Open(dir, store.Options{})
		if err != nil {
			return err
		}
		return s.Close()
	})
	n := float64(bf.sigs)
	out["direct_cose_open_ms_total"] = fmt.Sprintf("%.0f", ms(openT))
	out["direct_store_apply_ms_total"] = fmt.Sprintf("%.0f", ms(applyT))
	out["direct_rec_s"] = fmt.Sprintf("%.0f", n/(openT+applyT).Seconds())
	out["store_open_empty_ms"] = fmt.Sprintf("%.1f", ms(openEmpty))
	out["store_close_ms"] = fmt.Sprintf("%.1f", ms(closeT))
	out["store_open_close_full_p50_ms"] = fmt.Sprintf("%.1f", newStats(reopen).p(0.5))
	if len(digest) > 0 {
		out["digest_full_store_p50_ms"] = fmt.Sprintf("%.1f", newStats(digest).p(0.5))
	}
	return out
}

// catchUpHistory returns a history with n deltas of sigs signature records each, built once
// and cached under build/bench-cache (issuing is the operator's cost, not measured here).
func catchUpHistory(e *env, n, sigs int) (*sync.History, string, time.Duration, error) {
	dir := filepath.Join(e.cache, fmt.Sprintf("catchup-%d-%d", n, sigs))
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		h, err := sync.OpenHistory(dir)
		return h, filepath.Join(dir, "root.cbor"), 0, err
	}
	os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "bench: issuing %d deltas for catch-up (once; cached in %s)\n", n, dir)
	t := time.Now()
	build := filepath.Join(e.shm, "catchup-build")
	f, err := newFleet(build, "catchup")
	if err != nil {
		return nil, "", 0, err
	}
	signer := newGadgetSigner()
	for i := range n {
		var keys []trust.Key
		if i == 0 {
			keys = []trust.Key{signer.key}
		}
		if _, _, err := f.issue(keys, signer.randomSigs(sigs)); err != nil {
			f.close()
			return nil, "", 0, err
		}
		if (i+1)%1000 == 0 {
			fmt.Fprintf(os.Stderr, "bench:   %d deltas (%s)\n", i+1, time.Since(t).Round(time.Second))
		}
	}
	f.close()
	if err := os.MkdirAll(filepath.Join(dir, "log"), 0o755); err != nil {
		return nil, "", 0, err
	}
	logs, _ := os.ReadDir(filepath.Join(build, "log"))
	for _, l := range logs {
		b, err := os.ReadFile(filepath.Join(build, "log", l.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "log", l.Name()), b, 0o644)
		}
		if err != nil {
			return nil, "", 0, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "root.cbor"), f.rootRaw, 0o644); err != nil {
		return nil, "", 0, err
	}
	os.RemoveAll(build)
	os.WriteFile(filepath.Join(dir, "complete"), nil, 0o644)
	h, err := sync.OpenHistory(dir)
	return h, filepath.Join(dir, "root.cbor"), time.Since(t), err
}

func benchCatchUp(e *env) {
	n, sigs := knobInt("BPFLEET_BENCH_CATCHUP_DELTAS", 10000), knobInt("BPFLEET_BENCH_CATCHUP_SIGS", 1)
	timeout := knobDur("BPFLEET_BENCH_CATCHUP_TIMEOUT", 120*time.Second)
	row := Row{Group: "catchup", Figure: fmt.Sprintf("catch-up after %d missed deltas (agent start → digest match)", n), Unit: "s", Goal: "≤ 3 s"}
	fail := func(err error) { row.Result, row.Note = "NOT MEASURED", err.Error(); e.add(row) }
	h, rootFile, setup, err := catchUpHistory(e, n, sigs)
	if err != nil {
		fail(err)
		return
	}
	latest, digest, err := h.Latest()
	if err != nil {
		fail(err)
		return
	}
	root, err := h.CurrentRoot()
	if err != nil {
		fail(err)
		return
	}
	f := &fleet{name: root.Fleet, rootFile: rootFile, root: root}
	b, err := startBroker(filepath.Join(e.work, "catchup-broker"))
	if err != nil {
		fail(err)
		return
	}
	defer b.stop()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { sync.Serve(ctx, sync.Broker{URL: b.url()}, "catchup-server", "bench", h, e.log); close(served) }()
	defer func() { cancel(); <-served }()
	if err := waitServing(b.url(), f.name); err != nil {
		fail(err)
		return
	}
	var mu gosync.Mutex
	var points []string
	var last sync.Status
	var lastAt time.Time
	var stop func()
	var t0 time.Time
	end, err := waitFor(b.url(), "catchup-watch", f, "catchup-dev", timeout, func() (err error) {
		t0 = time.Now()
		stop, err = runAgent(e, "catchup-dev", f, b.url(), filepath.Join(e.work, "catchup-dev"))
		return err
	}, func(s sync.Status) bool { return s.Version == latest && s.StateDigest == digest }, func(s sync.Status, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if s.Version != last.Version {
			points = append(points, fmt.Sprintf("v%d@%.2fs", s.Version, at.Sub(t0).Seconds()))
		}
		last, lastAt = s, at
	})
	if stop != nil {
		stop()
	}
	mu.Lock()
	defer mu.Unlock()
	row.Detail = map[string]any{"deltas": n, "signatures_per_delta": sigs, "progress": thin(points, 8)}
	if setup > 0 {
		row.Detail["history_setup"] = setup.Round(time.Second).String()
	}
	if err != nil {
		row.Result = "FAIL"
		row.Note = fmt.Sprintf("did not converge within %s: reached version %d of %d (%.0f deltas/s); raise BPFLEET_BENCH_CATCHUP_TIMEOUT to time it to the end",
			timeout, last.Version, latest, float64(last.Version)/lastAt.Sub(t0).Seconds())
		row.Value = nil
		e.add(row)
		return
	}
	for k, v := range catchUpCosts(filepath.Join(e.work, "catchup-dev", "trust"), n) {
		row.Detail[k] = v
	}
	row.Value = f64(end.Sub(t0).Seconds())
	row.Detail["deltas_s"] = fmt.Sprintf("%.0f", float64(n) / *row.Value)
	row.Note = "fresh device, sync.Serve answering from the history; batches of ≤ 1 MiB; each delta a synced Badger transaction"
	row.check(3, false)
	e.add(row)
}

// thin keeps at most n evenly spread entries of s, always the last.
func thin(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, " ")
	}
	var out []string
	for i := range n {
		out = append(out, s[i*(len(s)-1)/(n-1)])
	}
	return strings.Join(out, " ")
}

// waitServing returns once a catch-up server answers a request.
func waitServing(url, fleet string) error {
	c, err := mqttClient(url, "catchup-probe", true)
	if err != nil {
		return err
	}
	defer c.Disconnect(0)
	got := make(chan struct{}, 1)
	t := c.Subscribe(sync.ReplyTopic(fleet, "probe"), 1, func(mqtt.Client, mqtt.Message) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe: %v", t.Error())
	}
	req, _ := sync.EncodeRequest(sync.Request{Device: "probe", Root: 1, Version: 1 << 40})
	for range 100 {
		c.Publish(sync.CatchUpTopic(fleet), 1, false, req).Wait()
		select {
		case <-got:
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("catch-up server not answering")
}

func benchFanOut(e *env) {
	n := knobInt("BPFLEET_BENCH_FANOUT", 1000)
	row := Row{Group: "fanout", Figure: fmt.Sprintf("fleet fan-out, %d agents: delta → status with new digest, p99", n), Unit: "s", Goal: "≤ 5 s p99"}
	fail := func(err error) { row.Result, row.Note = "NOT MEASURED", err.Error(); e.add(row) }
	b, err := startBroker(filepath.Join(e.work, "fanout-broker"))
	if err != nil {
		fail(err)
		return
	}
	defer b.stop()
	f, err := newFleet(filepath.Join(e.shm, "fanout"), "fan")
	if err != nil {
		fail(err)
		return
	}
	defer f.close()
	signer := newGadgetSigner()
	raw, d, err := f.issue([]trust.Key{signer.key}, signer.randomSigs(1))
	if err != nil {
		fail(err)
		return
	}
	// Lightweight agents: the real MQTT session (sync.Device: persistent session, QoS 1
	// subscription, manual ack after handling, retained status) and the real message check
	// (TrustedRoot.Open: COSE signature, strict decoding); the chain check on an in-memory
	// state instead of a Badger store each (1,000 stores would not fit on a device-sized box,
	// and the store's cost is the apply row's).
	devs := make([]*sync.Device, n)
	t := time.Now()
	for i := range n {
		dev, err := sync.Connect(sync.Broker{URL: b.url()}, f.name, fmt.Sprintf("d%05d", i), e.log)
		if err != nil {
			fail(err)
			return
		}
		devs[i] = dev
		go func() {
			st := sync.Status{Root: f.root.Version, StateDigest: d.Base}
			dev.ReportStatus(st)
			for m := range dev.Inbox() {
				u, err := f.root.Open(m.Payload)
				if err == nil && u.Delta != nil && u.Delta.Version == st.Version+1 && u.Delta.Base == st.StateDigest {
					st.Version, st.StateDigest, st.LastSync = u.Delta.Version, u.Delta.State, time.Now().UTC()
					dev.ReportStatus(st)
				}
				m.Ack()
			}
		}()
	}
	defer func() {
		var cw gosync.WaitGroup
		for _, dev := range devs {
			cw.Add(1)
			go func() { defer cw.Done(); dev.Close() }()
		}
		cw.Wait()
	}()
	for i, dev := range devs {
		select {
		case <-dev.Connected():
		case <-time.After(time.Until(t.Add(2 * time.Minute))):
			fail(fmt.Errorf("device %d of %d not connected after 2 minutes", i, n))
			return
		}
	}
	connectT := time.Since(t)
	var mu gosync.Mutex
	seen := map[string]time.Time{}
	all := make(chan struct{})
	w, err := watchStatus(b.url(), "fanout-watch", f.name, func(s sync.Status, at time.Time) {
		if s.StateDigest != d.State {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, ok := seen[s.Device]; !ok {
			seen[s.Device] = at
			if len(seen) == n {
				close(all)
			}
		}
	})
	if err != nil {
		fail(err)
		return
	}
	defer w.Disconnect(0)
	time.Sleep(time.Second) // retained statuses from connecting settle
	pub, err := mqttClient(b.url(), "fanout-pub", true)
	if err != nil {
		fail(err)
		return
	}
	defer pub.Disconnect(0)
	t0 := time.Now()
	if err := publishAll(pub, sync.UpdatesTopic(f.name), [][]byte{raw}); err != nil {
		fail(err)
		return
	}
	timedOut := false
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		timedOut = true
	}
	mu.Lock()
	lat := make([]float64, 0, len(seen))
	for _, at := range seen {
		lat = append(lat, at.Sub(t0).Seconds())
	}
	mu.Unlock()
	if len(lat) == 0 {
		fail(fmt.Errorf("no device reported the new digest within 60 s"))
		return
	}
	s := newStats(lat)
	row.Detail = s.detail("s")
	row.Detail["connect_all"] = connectT.Round(time.Millisecond).String()
	row.Detail["reported"] = fmt.Sprintf("%d/%d", len(lat), n)
	row.Note = "in-process devices share sync.Device and TrustedRoot.Open with the agent; no Badger write (see the apply row)"
	if timedOut {
		row.Result = "FAIL"
		row.Note = fmt.Sprintf("only %d of %d devices reported within 60 s; ", len(lat), n) + row.Note
		e.add(row)
		return
	}
	row.Value = f64(s.p(0.99))
	row.Detail["all_reported"] = fmt.Sprintf("%.3fs", s.s[len(s.s)-1])
	row.check(5, false)
	e.add(row)
}

// catchUpCosts times, on the caught-up device store, the two per-delta costs of applying: the
// state digest over every record (at the final size; on average a delta hashes half as many)
// and one synced Badger commit, and estimates their share of the catch-up.
func catchUpCosts(dir string, n int) map[string]any {
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		return map[string]any{"cost_error": err.Error()}
	}
	defer s.Close()
	snap, err := s.Snapshot()
	if err != nil {
		return map[string]any{"cost_error": err.Error()}
	}
	digest, _ := timeN(5, 1, func() error {
		_, err := s.Digest(store.Change{Version: snap.Version() + 1, Base: snap.StateDigest()})
		return err
	})
	// A one-record synced transaction (an audit entry in this throwaway store).
	commit, _ := timeN(20, 2, func() error {
		return s.Audit(store.AuditEntry{Time: time.Now(), Event: "bench"})
	})
	d, c := newStats(digest).p(0.5), newStats(commit).p(0.5)
	return map[string]any{
		"digest_at_final_size_ms": fmt.Sprintf("%.1f", d), "synced_commit_ms": fmt.Sprintf("%.2f", c),
		"est_digest_total_s": fmt.Sprintf("%.1f", float64(n)*d/2/1000), "est_commit_total_s": fmt.Sprintf("%.1f", float64(n)*c/1000),
	}
}
