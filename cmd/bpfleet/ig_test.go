package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfleet/bpfleet/internal/mosquitto"
	"github.com/bpfleet/bpfleet/internal/oci"
)

// A gadget built and exported by a third party: Inspektor Gadget's own trace_open, as
// `ig image export` wrote it into the inspektor-gadget repository (docs/api/_golang/from_file/
// trace_open.tar, module version v0.55.0; scripts/ig-image.sh fetches it). These are facts of
// that file, so the test fails if it is not the image we mean.
const (
	igRef         = "ghcr.io/inspektor-gadget/gadget/trace_open:latest"
	igIndexDigest = "sha256:87c3ecca8d843f2e08382836cb0eff718fa5c56d786c73e2674d7e9db13a1ac7"
)

// igManifests are the image's per-architecture manifest and eBPF layer digests.
var igManifests = map[string]struct{ manifest, layer string }{
	"amd64": {"sha256:20a6646251ab1273da15f6f3588a8fef4c6934f3dd88937db93a61dd652c66df", "sha256:d4797e15f105a82e08912fe7168650ff5d425d8505742e4cbaa6e8a3b0b7a636"},
	"arm64": {"sha256:cd2462744cabf334e6b4eb3a0079063a276e067db50ebbf423bcd9af22194989", "sha256:367661ade36159f4c59ec79dfe27c07f23271af91aab8298c1614e13a78dc6ac"},
}

// igProgramNames are the functions of IG's trace_open object, as the kernel names its programs.
// Counting only these (rather than every BPF object) keeps the checks exact while other
// packages' tests load programs in parallel.
var igProgramNames = []string{"ig_open_e", "ig_openat_e", "ig_open_x", "ig_openat_x"}

// TestIGTraceOpenImage is issue 5's acceptance: IG's exported trace_open imports as is, is
// refused while unsigned, runs once the fleet allow-lists exactly its index digest (a policy
// delivered over MQTT), reports a real open() with decoded fields, and is still refused when a
// byte of its eBPF layer changes on disk.
func TestIGTraceOpenImage(t *testing.T) {
	tarball := os.Getenv("BPFLEET_IG_TRACE_OPEN")
	if tarball == "" {
		t.Skip("BPFLEET_IG_TRACE_OPEN is not set: `make test` sets it to Inspektor Gadget's exported trace_open.tar (BPFLEET_IG_TRACE_OPEN=$(scripts/ig-image.sh))")
	}
	want, ok := igManifests[runtime.GOARCH]
	if !ok {
		t.Skipf("IG's trace_open image has no linux/%s manifest", runtime.GOARCH)
	}
	e := newE2E(t)
	broker := mosquitto.Start(t)
	agent, agentLog, _ := e.provision(broker)
	defer e.stopAgent(agent, agentLog)

	// Import IG's tar as it is.
	if out := e.device("image", "import", tarball); !strings.Contains(out, "imported "+igRef+" "+igIndexDigest) {
		t.Fatalf("image import %s:\n%s", tarball, out)
	}
	var images []struct{ Ref, Digest string }
	if err := json.Unmarshal([]byte(e.device("image", "list", "-o", "json")), &images); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(images, struct{ Ref, Digest string }{igRef, igIndexDigest}) {
		t.Fatalf("image list has no %s %s: %+v", igRef, igIndexDigest, images)
	}
	var info struct {
		Digest           string
		LegacySignatures int `json:"legacy_signatures"`
		Referrers        int
		Platforms        []struct {
			Platform, Manifest string
			Layers             []struct {
				MediaType string `json:"media_type"`
				Digest    string
			}
		}
	}
	if err := json.Unmarshal([]byte(e.device("image", "inspect", igRef, "-o", "json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.Digest != igIndexDigest || info.LegacySignatures != 0 || info.Referrers != 0 || len(info.Platforms) != 2 {
		t.Fatalf("inspect %s: %+v", igRef, info)
	}
	hostPlatform := false
	for _, p := range info.Platforms {
		if p.Platform == "linux/"+runtime.GOARCH {
			hostPlatform = p.Manifest == want.manifest && len(p.Layers) == 1 &&
				p.Layers[0].MediaType == oci.MediaTypeEBPFProgram && p.Layers[0].Digest == want.layer
		}
	}
	if !hostPlatform {
		t.Fatalf("inspect: no linux/%s manifest %s with eBPF layer %s: %+v", runtime.GOARCH, want.manifest, want.layer, info.Platforms)
	}

	// Unsigned, and the fleet's default is strict: refused, and nothing reaches the kernel.
	if n := len(igPrograms(t)); n != 0 {
		t.Fatalf("%d of IG's trace_open programs are loaded before any run", n)
	}
	if out, err := e.tryDevice("verify", igRef); err == nil || !strings.Contains(out, "unsigned") {
		t.Fatalf("verify of the unsigned image: err %v\n%s", err, out)
	}
	if out, err := e.tryDevice("run", igRef, "--timeout", "2s"); err == nil || !strings.Contains(out, "refusing to run") || !strings.Contains(out, "unsigned") {
		t.Fatalf("run of the unsigned image: err %v\n%s", err, out)
	}
	if n := len(igPrograms(t)); n != 0 {
		t.Fatalf("%d of IG's trace_open programs are loaded after a refused run", n)
	}

	// The fleet allow-lists exactly that index digest, in a signed delta over MQTT.
	if err := os.WriteFile(e.path("policy.json"), []byte(fmt.Sprintf(`{"allow": [%q]}`, igIndexDigest)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.run(e.ctl, "delta", "--state-dir", e.path("fleet"), "--sign", e.path("keys/fleet.key"),
		"--policy", e.path("policy.json"), "-o", e.path("delta-2.cbor"))
	e.run(e.ctl, "publish", "--broker", broker.URL(), "--fleet", "fleet-a", "--wait-device", "e2e",
		"--timeout", "30s", e.path("delta-2.cbor"))
	if version, _ := e.trustStatus(); version != 2 {
		t.Fatalf("trust version %d after the policy delta, want 2", version)
	}
	var d struct {
		Ref, Digest, Level string
		Verified           bool
		Warnings           []string
	}
	if err := json.Unmarshal([]byte(e.device("verify", igRef, "-o", "json")), &d); err != nil {
		t.Fatal(err)
	}
	allowed := "not verified: " + igIndexDigest + " is on the policy's allow-list"
	if d.Ref != igRef || d.Digest != igIndexDigest || d.Verified || d.Level != "strict" || !slices.Contains(d.Warnings, allowed) {
		t.Fatalf("verify under the allow-list: %+v, want unverified, level strict, warning %q", d, allowed)
	}

	ev, progIDs, mapIDs := runIGTraceOpen(t, e)
	t.Logf("IG trace_open event: %v", ev)

	// Everything the run loaded is gone once it has exited (a program drops its maps after an
	// RCU grace period, hence the wait).
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := leftovers(progIDs, mapIDs)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still in the kernel after the run exited: %s", strings.Join(left, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A byte of the allow-listed image's eBPF layer changed on disk: the allow-list names the
	// index digest, whose chain down to the layer no longer holds.
	l, err := oci.Open(filepath.Join(e.dataDir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	layer := ebpfLayer(t, l, igRef)
	if layer != want.layer {
		t.Fatalf("eBPF layer %s, want %s", layer, want.layer)
	}
	blob := filepath.Join(e.dataDir, "images", "blobs", "sha256", strings.TrimPrefix(layer, "sha256:"))
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := e.tryDevice("run", igRef, "--timeout", "2s"); err == nil || !strings.Contains(out, "refusing to run") || !strings.Contains(out, layer) {
		t.Fatalf("run with a changed eBPF layer under the allow-list: err %v\n%s", err, out)
	}
	if n := len(igPrograms(t)); n != 0 {
		t.Fatalf("%d of IG's trace_open programs are loaded after the refused run of a changed layer", n)
	}
}

// runIGTraceOpen runs IG's trace_open through bpfleet, filtered on the command name of a copy
// of touch(1) that the test keeps starting on new files until the run has printed its
// --max-events. It checks those events and returns the one for a file the probe opened, with
// the IDs of the programs and maps that were loaded while it ran.
func runIGTraceOpen(t *testing.T, e *e2e) (ev map[string]any, progIDs []ebpf.ProgramID, mapIDs []ebpf.MapID) {
	t.Helper()
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Fatal(err)
	}
	probe := e.path(fmt.Sprintf("igprobe-%d", os.Getpid()%100000)) // within the kernel's 15-byte comm
	if out, err := exec.Command("cp", touch, probe).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v\n%s", touch, probe, err, out)
	}
	comm := filepath.Base(probe)
	mntns, err := os.Readlink("/proc/self/ns/mnt") // mnt:[<inode>]
	if err != nil {
		t.Fatal(err)
	}

	const maxEvents = 12
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	run := exec.CommandContext(ctx, e.bin, "--data-dir", e.dataDir, "run", igRef, "-o", "json",
		"--filter", "comm="+comm, "--max-events", fmt.Sprint(maxEvents), "--timeout", "20s")
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var runErr strings.Builder
	run.Stderr = &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	// Each probe opens a file of its own, so an event's fname says which process opened it.
	pids := map[string]int{}
	var events []map[string]any
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case line, ok := <-lines:
			if !ok {
				done = true
				break
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatalf("run printed a line that is not a JSON event: %v\n%s", err, line)
			}
			events = append(events, got)
			if pid, ok := pids[fmt.Sprint(got["fname"])]; ok && progIDs == nil {
				// The gadget is surely loaded now: note what it holds in the kernel.
				progIDs, mapIDs = igPrograms(t), nil
				for _, id := range progIDs {
					mapIDs = append(mapIDs, programMaps(t, id)...)
				}
				mapIDs = slices.Compact(slices.Sorted(slices.Values(mapIDs)))
				t.Logf("event from probe pid %d; IG programs %v, maps %v", pid, progIDs, mapIDs)
			}
		case <-tick.C:
			file := e.path(fmt.Sprintf("ig-opened-%d", len(pids)))
			child := exec.Command(probe, file)
			child.Env = []string{"LC_ALL=C"} // no locale files: fewer opens to wade through
			if out, err := child.CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v\n%s", probe, file, err, out)
			}
			pids[file] = child.Process.Pid
		case <-ctx.Done():
			t.Fatalf("run did not end; %d event(s) so far; stderr:\n%s", len(events), runErr.String())
		}
	}
	if err := run.Wait(); err != nil {
		t.Fatalf("run: %v\n%s", err, runErr.String())
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("run took %s: it should have stopped at --max-events %d, not the timeout", time.Since(start), maxEvents)
	}
	stderr := runErr.String()
	for _, w := range []string{"NOT VERIFIED, running " + igRef + " " + igIndexDigest,
		"warning: not verified: " + igIndexDigest + " is on the policy's allow-list"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("run stderr lacks %q:\n%s", w, stderr)
		}
	}
	// The last line counts the events printed, those the filter dropped and those lost.
	var printed, filtered, lost int
	lastLine := stderr[strings.LastIndex(strings.TrimSuffix(stderr, "\n"), "\n")+1:]
	if _, err := fmt.Sscanf(lastLine, "%d event(s) printed, %d filtered out, %d lost", &printed, &filtered, &lost); err != nil ||
		printed != maxEvents || lost != 0 {
		t.Errorf("run's summary %q: want %d events passing the filter, none lost (%v)", lastLine, maxEvents, err)
	}
	if len(events) != maxEvents {
		t.Errorf("%d events printed, want --max-events %d", len(events), maxEvents)
	}
	if len(progIDs) != len(igProgramNames) || len(mapIDs) == 0 {
		t.Errorf("while running: %d IG programs (want %d: %v) using %d maps", len(progIDs), len(igProgramNames), igProgramNames, len(mapIDs))
	}

	for _, got := range events {
		if got["comm"] != comm {
			t.Errorf("event passed --filter comm=%s: %v", comm, got)
		}
		file := fmt.Sprint(got["fname"])
		pid, ok := pids[file]
		if !ok {
			continue // the loader and libc opening theirs
		}
		if ev == nil {
			ev = got
		}
		checks := []struct {
			field string
			want  any
		}{
			{"pid", float64(pid)},
			{"uid", float64(0)},
			{"gid", float64(0)},
			{"err", float64(0)},
			// What touch(1) asks for; IG's gadget records openat's arguments as they are.
			{"flags", float64(syscall.O_WRONLY | syscall.O_CREAT | syscall.O_NOCTTY | syscall.O_NONBLOCK)},
			{"mode", float64(0o666)},
			{"mntns_id", mntnsID(t, mntns)},
		}
		for _, c := range checks {
			if got[c.field] != c.want {
				t.Errorf("%s: %s = %v (%T), want %v", file, c.field, got[c.field], got[c.field], c.want)
			}
		}
		// The probe's stdin, stdout and stderr are open, so the file gets a descriptor above.
		if fd, ok := got["fd"].(float64); !ok || fd < 3 {
			t.Errorf("%s: fd = %v", file, got["fd"])
		}
		if ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(got["timestamp"])); err != nil || ts.Before(start.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("%s: timestamp %v is not during the run (%s..now): %v", file, got["timestamp"], start.Format(time.RFC3339Nano), err)
		}
	}
	if ev == nil {
		t.Fatalf("none of the %d events is for a file the probe opened (%d probes): %v; stderr:\n%s", len(events), len(pids), events, stderr)
	}
	return ev, progIDs, mapIDs
}

// mntnsID is the inode number in a /proc/<pid>/ns/mnt link (mnt:[<inode>]), as a JSON number.
func mntnsID(t *testing.T, link string) float64 {
	t.Helper()
	var id uint64
	if _, err := fmt.Sscanf(link, "mnt:[%d]", &id); err != nil {
		t.Fatalf("mount namespace link %q: %v", link, err)
	}
	return float64(id)
}

// igPrograms returns the IDs of the loaded programs that are IG trace_open's.
func igPrograms(t *testing.T) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			continue // unloaded meanwhile
		} else if err != nil {
			t.Fatalf("program %d: %v", id, err)
		}
		pi, err := p.Info()
		p.Close()
		if err != nil {
			t.Fatalf("program %d: %v", id, err)
		}
		if slices.Contains(igProgramNames, pi.Name) {
			ids = append(ids, id)
		}
	}
	return ids
}

// programMaps returns the IDs of the maps a loaded program uses.
func programMaps(t *testing.T, id ebpf.ProgramID) []ebpf.MapID {
	t.Helper()
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		t.Fatalf("program %d: %v", id, err)
	}
	defer p.Close()
	pi, err := p.Info()
	if err != nil {
		t.Fatalf("program %d: %v", id, err)
	}
	ids, ok := pi.MapIDs()
	if !ok {
		t.Fatalf("program %d: the kernel does not report its maps", id)
	}
	return ids
}

// leftovers names the programs and maps among ids that still exist.
func leftovers(progs []ebpf.ProgramID, maps []ebpf.MapID) []string {
	var left []string
	for _, id := range progs {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			left = append(left, fmt.Sprintf("program %d", id))
		}
	}
	for _, id := range maps {
		if m, err := ebpf.NewMapFromID(id); err == nil {
			m.Close()
			left = append(left, fmt.Sprintf("map %d", id))
		}
	}
	return left
}
