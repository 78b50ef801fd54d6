package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfleet/bpfleet/runner"
	"github.com/bpfleet/bpfleet/verify"
	"github.com/bpfleet/bpfleet/verify/sigstore"
)

// execUntil runs /bin/true again and again, one at a time, until done is closed: the exec
// that a just-attached trace_exec sees first. Each exec takes about a millisecond, which
// bounds how late the first event can be after attaching.
func execUntil(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		default:
		}
		exec.Command("/bin/true").Run()
	}
}

func benchColdStart(e *env) {
	n := knobInt("BPFLEET_BENCH_COLD_N", 20)
	row := Row{Group: "coldstart", Figure: "gadget cold start, trace_exec: verify+load+attach → first event (in-process, p50)", Unit: "ms", Goal: "≤ 150 ms p50"}
	d, err := e.device()
	if err != nil {
		row.Result, row.Note = "NOT MEASURED", err.Error()
		e.add(row)
		return
	}
	var total, verifyT []float64
	for i := range n {
		first := make(chan time.Time, 1)
		t0 := time.Now()
		g, err := verify.Gadget(d.snap, d.images, gadgetRef, verify.WithKeyless(sigstore.Keyless))
		if err != nil {
			row.Result, row.Note = "NOT MEASURED", err.Error()
			e.add(row)
			return
		}
		tv := time.Since(t0)
		done := make(chan struct{})
		go execUntil(done)
		_, err = runner.Run(context.Background(), g, runner.Options{Output: io.Discard, Format: runner.FormatJSON, MaxEvents: 1,
			Timeout: 10 * time.Second, OnEvent: func(runner.Event) {
				select {
				case first <- time.Now():
				default:
				}
			}})
		close(done)
		if err != nil {
			row.Result, row.Note = "NOT MEASURED", fmt.Sprintf("run %d: %v", i, err)
			e.add(row)
			return
		}
		select {
		case t1 := <-first:
			total, verifyT = append(total, ms(t1.Sub(t0))), append(verifyT, ms(tv))
		default:
			row.Result, row.Note = "NOT MEASURED", fmt.Sprintf("run %d saw no event in 10 s", i)
			e.add(row)
			return
		}
	}
	s := newStats(total)
	row.Value, row.Detail = f64(s.p(0.5)), s.detail("ms")
	row.Detail["verify_p50"] = fmt.Sprintf("%.3fms", newStats(verifyT).p(0.5))
	row.Note = "timed from verify.Gadget to the first event's OnEvent; an exec loop runs from Run's start, so ≤ ~1 ms of it is waiting for an exec"
	row.check(150, false)
	e.add(row)

	// The same through the CLI, process start to exit with --max-events 1.
	cli := Row{Group: "coldstart", Figure: "`bpfleet run trace_exec --max-events 1` as a process (p50)", Unit: "ms", Goal: "≤ 150 ms p50"}
	bin := filepath.Join(e.build, "bin", "bpfleet")
	var cs []float64
	for i := range n {
		cmd := exec.Command(bin, "--data-dir", d.dir, "run", gadgetRef, "--max-events", "1", "-o", "json", "--timeout", "10s")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			cli.Result, cli.Note = "NOT MEASURED", err.Error()
			e.add(cli)
			return
		}
		done := make(chan struct{})
		go execUntil(done)
		err := cmd.Wait()
		el := time.Since(t0)
		close(done)
		if err != nil || !bytes.Contains(out.Bytes(), []byte(`"pid"`)) {
			cli.Result, cli.Note = "NOT MEASURED", fmt.Sprintf("run %d: %v: %s", i, err, out.String())
			e.add(cli)
			return
		}
		cs = append(cs, ms(el))
	}
	st := newStats(cs)
	cli.Value, cli.Detail = f64(st.p(0.5)), st.detail("ms")
	cli.Note = "adds process start, Badger open, Store.Verify (hash of every record) and a full Snapshot of the store to the in-process figure"
	cli.check(150, false)
	e.add(cli)
}

// openLoad starts workers shell loops that open /dev/null as fast as they can (the shell's
// own redirection: an openat each time, no fork); stop ends them. Separate processes, so this
// process's CPU time is the reader's alone.
func openLoad(workers int) (stop func()) {
	var cmds []*exec.Cmd
	for range workers {
		c := exec.Command("/bin/sh", "-c", "while :; do : </dev/null; done")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if c.Start() == nil {
			cmds = append(cmds, c)
		}
	}
	return func() {
		for _, c := range cmds {
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			c.Wait()
		}
	}
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// window measures the rate of count over the window after warm-up, and this process's CPU
// time per counted event.
type window struct {
	rate     float64
	cpuPerEv time.Duration
	events   int64
}

func measure(count *atomic.Int64, warm, dur time.Duration) window {
	time.Sleep(warm)
	c0, cpu0, t0 := count.Load(), cpuSelf(), time.Now()
	time.Sleep(dur)
	c1, cpu1, el := count.Load(), cpuSelf(), time.Since(t0)
	w := window{events: c1 - c0, rate: float64(c1-c0) / el.Seconds()}
	if w.events > 0 {
		w.cpuPerEv = (cpu1 - cpu0) / time.Duration(w.events)
	}
	return w
}

func benchEvents(e *env) {
	dur := knobDur("BPFLEET_BENCH_EVENTS_TIME", 10*time.Second)
	row := Row{Group: "events", Figure: "event throughput, trace_open decoded + JSON to /dev/null", Unit: "ev/s",
		RefWhat: "cilium/ebpf ringbuf reader that only counts, same load", Goal: "≥ 0.8×"}
	fail := func(err error) { row.Result, row.Note = "NOT MEASURED", err.Error(); e.add(row) }
	d, err := e.device()
	if err != nil {
		fail(err)
		return
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		fail(err)
		return
	}
	defer devNull.Close()
	workers := 2
	var runs, refs []window
	var lost, refLost uint64
	for range 3 {
		// bpfleet's runner, printing every event as `bpfleet run -o json > /dev/null` does.
		g, err := verify.Gadget(d.snap, d.images, throughputRef)
		if err != nil {
			fail(err)
			return
		}
		var count atomic.Int64
		ctx, cancel := context.WithCancel(context.Background())
		type result struct {
			st  *runner.Stats
			err error
		}
		res := make(chan result, 1)
		go func() {
			st, err := runner.Run(ctx, g, runner.Options{Output: devNull, Format: runner.FormatJSON,
				OnEvent: func(runner.Event) { count.Add(1) }})
			res <- result{st, err}
		}()
		stop := openLoad(workers)
		w := measure(&count, time.Second, dur)
		stop()
		cancel()
		r := <-res
		if r.err != nil {
			fail(r.err)
			return
		}
		lost += r.st.Lost
		runs = append(runs, w)

		// The minimal reader of the same ring buffer.
		w, n, err := minimalReader(d.elf[throughputRef], workers, dur)
		if err != nil {
			fail(fmt.Errorf("minimal reader: %w", err))
			return
		}
		refs, refLost = append(refs, w), refLost+n
	}
	med := func(ws []window, f func(window) float64) float64 {
		var v []float64
		for _, w := range ws {
			v = append(v, f(w))
		}
		return newStats(v).p(0.5)
	}
	rate := func(w window) float64 { return w.rate }
	cpu := func(w window) float64 { return float64(w.cpuPerEv) / 1e3 }
	row.Value, row.Ref = f64(med(runs, rate)), f64(med(refs, rate))
	row.Ratio = f64(*row.Value / *row.Ref)
	row.Detail = map[string]any{"runs": len(runs), "window": dur.String(), "open_workers": workers,
		"lost_events_bpfleet": lost, "lost_events_minimal": refLost,
		"cpu_us_per_event_bpfleet": fmt.Sprintf("%.2f", med(runs, cpu)), "cpu_us_per_event_minimal": fmt.Sprintf("%.2f", med(refs, cpu))}
	row.Note = "events delivered to the reader per second while two shells open /dev/null as fast as they can; " +
		"the ring buffer drops (lost_events) what a reader cannot keep up with, so a slower reader delivers fewer"
	row.check(0.8**row.Ref, true)
	e.add(row)
	benchDrain(e, d, devNull)
}

// drainEvents is how many events the drain rows queue up before a reader starts on them;
// drainRingBuffer holds them several times over (trace_open's records are about 330 bytes),
// since every other process's opens during the burst take room too until read: trace_open
// reserves a record before its prefix filter discards it.
const (
	drainEvents     = 50000
	drainRingBuffer = 128 << 20
)

// benchDrain measures what each reader does per event with no producer competing for the CPU:
// drainEvents failed opens under a unique prefix (trace_open's own filter keeps only those) are
// queued in a ring buffer large enough for all of them while the reader is held, then timed
// from its release until it has taken the last. bpfleet decodes and prints each as JSON to
// /dev/null; the minimal reader only counts them.
func benchDrain(e *env, d *device, devNull *os.File) {
	row := Row{Group: "events", Figure: "event capacity, trace_open: a full ring buffer drained, decoded + JSON to /dev/null", Unit: "ev/s",
		RefWhat: "cilium/ebpf ringbuf reader that only counts, same buffer", Result: "INFO"}
	fail := func(err error) { row.Result, row.Note = "NOT MEASURED", err.Error(); e.add(row) }
	prefix := filepath.Join(e.work, "drain") + "/"
	burst := func() {
		for i := range drainEvents {
			if f, err := os.Open(prefix + strconv.Itoa(i)); err == nil { // never there: ENOENT
				f.Close()
			}
		}
	}

	// bpfleet's runner, held at its first event (a marker open) while the burst is queued.
	g, err := verify.Gadget(d.snap, d.images, throughputRef)
	if err != nil {
		fail(err)
		return
	}
	held, hold, last := make(chan struct{}, 1), make(chan struct{}), make(chan time.Time, 1)
	var drained atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() {
		st, err := runner.Run(ctx, g, runner.Options{Output: devNull, Format: runner.FormatJSON,
			Params: map[string]string{"prefix": prefix, "events_max_entries": strconv.Itoa(drainRingBuffer)},
			OnEvent: func(ev runner.Event) {
				if f, _ := ev.Value("fname"); f == prefix+"marker" {
					select {
					case held <- struct{}{}:
						<-hold
					default:
					}
					return
				}
				if drained.Add(1) == drainEvents {
					last <- time.Now()
				}
			}})
		if err == nil && st.Lost > 0 {
			err = fmt.Errorf("%d events lost: the ring buffer was too small", st.Lost)
		}
		res <- err
	}()
	for marked := false; !marked; {
		os.Open(prefix + "marker") // until the gadget is attached and sees one
		select {
		case <-held:
			marked = true
		case err := <-res:
			fail(fmt.Errorf("bpfleet run ended before its first event: %v", err))
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	burst()
	t0 := time.Now()
	close(hold)
	var t1 time.Time
	select {
	case t1 = <-last:
	case <-time.After(60 * time.Second):
		fail(fmt.Errorf("bpfleet drained %d of %d events in 60 s", drained.Load(), drainEvents))
		return
	}
	cancel()
	if err := <-res; err != nil {
		fail(err)
		return
	}
	row.Value = f64(drainEvents / t1.Sub(t0).Seconds())

	// The minimal reader, started on the same buffer once it is full.
	ref, err := minimalDrain(d.elf[throughputRef], prefix, burst)
	if err != nil {
		fail(fmt.Errorf("minimal reader: %w", err))
		return
	}
	row.Ref = f64(ref)
	row.Ratio = f64(*row.Value / ref)
	row.Detail = map[string]any{"events": drainEvents, "ring_buffer_bytes": drainRingBuffer,
		"us_per_event_bpfleet": fmt.Sprintf("%.2f", 1e6 / *row.Value), "us_per_event_minimal": fmt.Sprintf("%.2f", 1e6/ref)}
	row.Note = "what the reader itself costs, no producer competing: the ratio is the price of decoding and JSON, not a goal " +
		"(the goal row above is throughput under load)"
	e.add(row)
}

// minimalDrain loads trace_open with cilium/ebpf with the same prefix and ring buffer size,
// queues the burst, then times counting its records.
func minimalDrain(elf []byte, prefix string, burst func()) (float64, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(elf))
	if err != nil {
		return 0, err
	}
	p, counter := spec.Variables["prefix"], spec.Variables["events_lost_samples"]
	if p == nil || counter == nil {
		return 0, errors.New("trace_open has no prefix or events_lost_samples variable")
	}
	value := make([]byte, p.Size())
	copy(value, prefix)
	if err := p.Set(value); err != nil {
		return 0, err
	}
	spec.Maps["events"].MaxEntries = drainRingBuffer
	spec.Variables = nil
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return 0, err
	}
	defer coll.Close()
	for prog, event := range map[string]string{"trace_enter_openat": "sys_enter_openat", "trace_exit_openat": "sys_exit_openat"} {
		l, err := link.Tracepoint("syscalls", event, coll.Programs[prog], nil)
		if err != nil {
			return 0, err
		}
		defer l.Close()
	}
	rd, err := ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	burst()
	if lost, err := coll.Maps[counter.SectionName].LookupBytes(uint32(0)); err != nil {
		return 0, err
	} else if n := binary.NativeEndian.Uint64(lost[counter.Offset:]); n > 0 {
		return 0, fmt.Errorf("%d events lost during the burst: the ring buffer was too small", n)
	}
	rd.SetDeadline(time.Now().Add(60 * time.Second))
	var rec ringbuf.Record
	t0 := time.Now()
	for n := 0; n < drainEvents; n++ {
		if err := rd.ReadInto(&rec); err != nil {
			return 0, fmt.Errorf("after %d of %d records: %w", n, drainEvents, err)
		}
	}
	return drainEvents / time.Since(t0).Seconds(), nil
}

// minimalReader loads trace_open with cilium/ebpf directly, attaches it and counts ring buffer
// records without decoding them, under the same open load. It returns the window and the
// events the gadget's lost-sample counter saw dropped.
func minimalReader(elf []byte, workers int, dur time.Duration) (window, uint64, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(elf))
	if err != nil {
		return window{}, 0, err
	}
	counter := spec.Variables["events_lost_samples"] // gadget/buffer.h
	if counter == nil {
		return window{}, 0, errors.New("trace_open has no events_lost_samples counter")
	}
	spec.Variables = nil
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return window{}, 0, err
	}
	defer coll.Close()
	for prog, event := range map[string]string{"trace_enter_openat": "sys_enter_openat", "trace_exit_openat": "sys_exit_openat"} {
		l, err := link.Tracepoint("syscalls", event, coll.Programs[prog], nil)
		if err != nil {
			return window{}, 0, err
		}
		defer l.Close()
	}
	rd, err := ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		return window{}, 0, err
	}
	var count atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		var rec ringbuf.Record
		for {
			if err := rd.ReadInto(&rec); err != nil {
				if errors.Is(err, ringbuf.ErrClosed) {
					return
				}
				continue
			}
			count.Add(1)
		}
	}()
	stop := openLoad(workers)
	w := measure(&count, time.Second, dur)
	stop()
	rd.Close()
	<-done
	value, err := coll.Maps[counter.SectionName].LookupBytes(uint32(0))
	if err != nil {
		return window{}, 0, fmt.Errorf("read %s: %w", counter.Name, err)
	}
	return w, binary.NativeEndian.Uint64(value[counter.Offset:]), nil
}
