// Command testbed-guest is /init of the testbed's firmware images: it boots like
// bpfleet-init (package firmware/boot), then plays the device's side of the testbed scenario
// with the real /bin/bpfleet and reports each step on the console as a line
//
//	BPFLEET-RESULT key=value
//
// (values with spaces are Go-quoted), which the host test parses: images imported; gadget
// refused before any trust; agent started before the network is up, applying the firmware's
// provisioned delta offline (pretrust_*: the gadget verifies, the kprobe gadget is still
// refused); network up; agent receives the next trust delta over MQTT; broker gone; gadget
// verified and run offline while this program execs a probe, with its events echoed as
// BPFLEET-EVENT lines (on a kernel without BTF, gadget=refused with the runner's reason as
// gadget_reason, then a gadget without CO-RE relocations verified and run instead: nocore_*
// results, with the decoded event); a second signed gadget, whose kprobe and kretprobe on
// bprm_execve together make each event, verified and run the same way (kprobe_* results, with
// the decoded event and its ret), and a third, made by fentry and fexit, likewise (fentry_*);
// either is reported as <prefix>gadget=refused with the runner's reason where the kernel
// cannot run it (no BTF, no fentry). Then an unsigned gadget refused, and the first gadget,
// signed and trusted, refused once one byte of its eBPF layer is changed in the image store
// (tampered_*). Its last line is BPFLEET-RESULT done=ok or error=...; then it powers the
// machine off. Run as /bin/bpfleet-probe (a symlink to it), it exits at once: that exec is what
// the gadget must see.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bpfleet/bpfleet/firmware"
	"github.com/bpfleet/bpfleet/firmware/boot"
	"github.com/bpfleet/bpfleet/internal/oci"
)

// ScenarioPath is where the testbed puts the scenario in the image.
const ScenarioPath = "/etc/bpfleet/testbed.json"

// scenario is the testbed's instructions (testbed writes the same JSON).
type scenario struct {
	Broker   string `json:"broker"`   // host:port of the broker, as the guest reaches it
	Gadget   string `json:"gadget"`   // the signed gadget the delta trusts
	Unsigned string `json:"unsigned"` // a gadget nobody signed, which must be refused
	Kprobe   string `json:"kprobe"`   // a signed kprobe+kretprobe gadget the delta trusts; "" skips it
	Fentry   string `json:"fentry"`   // a signed fentry+fexit gadget the delta trusts; "" skips it
	NoCORE   string `json:"nocore"`   // a signed gadget without CO-RE relocations the delta trusts; "" skips it
	// ProvisionedVersion is the trust version the firmware's provisioned updates reach (0:
	// none); DeltaVersion the one the delta over MQTT brings.
	ProvisionedVersion uint64 `json:"provisioned_version"`
	DeltaVersion       uint64 `json:"delta_version"`
	Probe              string `json:"probe"`   // path of the probe to exec while the gadget runs
	Timeout            int    `json:"timeout"` // seconds for each wait
}

func main() {
	if filepath.Base(os.Args[0]) == "bpfleet-probe" {
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "testbed-guest: not PID 1; this is a testbed image's /init")
		os.Exit(2)
	}
	err := run()
	if err != nil {
		result("error", err.Error())
	} else {
		result("done", "ok")
	}
	boot.PowerOff()
	select {}
}

func result(key, value string) {
	if value == "" || strings.ContainsAny(value, " \t\n\"=") {
		value = strconv.Quote(value)
	}
	fmt.Printf("BPFLEET-RESULT %s=%s\n", key, value)
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

func run() error {
	initAt := boot.Uptime()
	if err := boot.Mount(); err != nil {
		return err
	}
	result("arch", runtime.GOARCH)
	var uts syscall.Utsname
	syscall.Uname(&uts)
	result("kernel", utsString(uts.Release[:]))
	result("init_ms", ms(initAt))
	_, btfErr := os.Stat("/sys/kernel/btf/vmlinux")
	result("btf", strconv.FormatBool(btfErr == nil))

	n, err := boot.LoadModules(firmware.ModulesPath)
	if err != nil {
		return err
	}
	result("modules", strconv.Itoa(n))
	netcfg, err := boot.LoadNetwork(firmware.NetworkPath)
	if err != nil || netcfg == nil {
		return fmt.Errorf("network config: %v", err)
	}

	b, err := os.ReadFile(ScenarioPath)
	if err != nil {
		return err
	}
	var sc scenario
	if err := json.Unmarshal(b, &sc); err != nil {
		return fmt.Errorf("%s: %w", ScenarioPath, err)
	}
	wait := time.Duration(sc.Timeout) * time.Second

	layouts, _ := filepath.Glob(filepath.Join(firmware.ImagesDir, "*"))
	for _, l := range layouts {
		if _, err := bpfleet("image", "import", l); err != nil {
			return err
		}
	}
	result("images", strconv.Itoa(len(layouts)))

	// Before any trust: refused, before anything reaches the kernel. (Checked before the
	// agent starts: the agent gives up if the CLI holds the store while it opens it.)
	if out, err := bpfleet("verify", sc.Gadget); err == nil {
		return fmt.Errorf("verified before any trust arrived: %s", out)
	} else {
		result("pre_trust", "refused")
		result("pre_trust_reason", lastLine(out))
	}

	// The agent, provisioned with the fleet's root and the firmware's sealed updates. It starts
	// before the network is up: it applies those updates offline, then keeps trying the broker.
	agentCtx, stopAgent := context.WithCancel(context.Background())
	defer stopAgent()
	agent := exec.CommandContext(agentCtx, firmware.AgentPath, "--data-dir", firmware.DataDir, "agent", "--config", firmware.ConfigPath)
	agent.Cancel = func() error { return agent.Process.Signal(syscall.SIGTERM) }
	agent.Stdout, agent.Stderr = prefixed("agent: "), prefixed("agent: ")
	if err := agent.Start(); err != nil {
		return err
	}
	agentDone := make(chan struct{})
	go func() { agent.Wait(); close(agentDone) }()
	defer func() { stopAgent(); <-agentDone }()
	agentExited := func() error {
		select {
		case <-agentDone:
			return fmt.Errorf("agent exited: %s", agent.ProcessState)
		default:
			return nil
		}
	}

	type status struct {
		Version uint64 `json:"version"`
		Keys    int    `json:"keys"`
		Digest  string `json:"state_digest"`
	}
	waitTrust := func(version uint64, what string) (status, error) {
		deadline := time.Now().Add(wait)
		for {
			var st status
			out, err := bpfleet("trust", "status", "-o", "json")
			if err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Version >= version {
				return st, nil
			}
			if err := agentExited(); err != nil {
				return st, err
			}
			if time.Now().After(deadline) {
				return st, fmt.Errorf("no %s within %s (last status: %v %s)", what, wait, err, out)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	// Provisioned trust, before the network is up: trace_exec verifies, the kprobe gadget
	// (whose signature only the next delta brings) does not.
	if sc.ProvisionedVersion > 0 {
		st, err := waitTrust(sc.ProvisionedVersion, "provisioned trust")
		if err != nil {
			return err
		}
		result("pretrust_version", strconv.FormatUint(st.Version, 10))
		result("pretrust_keys", strconv.Itoa(st.Keys))
		if _, err := net.InterfaceByName(netcfg.Interface); err != nil {
			result("pretrust_net", "absent")
		} else if addrs, _ := interfaceAddrs(netcfg.Interface); len(addrs) == 0 {
			result("pretrust_net", "down")
		} else {
			result("pretrust_net", "up")
		}
		if _, err := bpfleet("verify", sc.Gadget); err != nil {
			return fmt.Errorf("verify %s with the provisioned trust: %w", sc.Gadget, err)
		}
		result("pretrust_verify", "ok")
		if sc.Kprobe != "" {
			if out, err := bpfleet("verify", sc.Kprobe); err == nil {
				return fmt.Errorf("%s verified before the delta that trusts it: %s", sc.Kprobe, out)
			} else {
				result("pre_delta_kprobe", "refused")
				result("pre_delta_kprobe_reason", lastLine(out))
			}
		}
	}

	if err := boot.ConfigureNetwork(*netcfg, 10*time.Second); err != nil {
		return err
	}
	result("net_ms", ms(boot.Uptime()))

	// Trust arrives over MQTT.
	st, err := waitTrust(max(sc.DeltaVersion, 1), "trust delta")
	if err != nil {
		return err
	}
	result("trust_version", strconv.FormatUint(st.Version, 10))
	result("trust_keys", strconv.Itoa(st.Keys))
	result("trust_digest", st.Digest)
	result("trust_ms", ms(boot.Uptime()))

	// The host stops the broker: wait until it refuses connections.
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", sc.Broker, time.Second)
		if err != nil {
			result("broker", "gone")
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("broker %s still up after %s", sc.Broker, wait)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err := agentExited(); err != nil {
		return err
	}

	// Offline: verify and run.
	out, err := bpfleet("verify", sc.Gadget, "-o", "json")
	if err != nil {
		return fmt.Errorf("verify %s offline: %w", sc.Gadget, err)
	}
	var d struct {
		KeyID        string `json:"key_id"`
		TrustVersion uint64 `json:"trust_version"`
	}
	json.Unmarshal([]byte(out), &d)
	result("verify", "ok")
	result("verify_key", d.KeyID)
	if btfErr != nil {
		// CO-RE needs the kernel's BTF: the runner must refuse and say so.
		out, err := bpfleet("run", sc.Gadget, "--timeout", "2s")
		if err == nil {
			return fmt.Errorf("gadget %s ran on a kernel without BTF: %s", sc.Gadget, out)
		}
		result("gadget", "refused")
		result("gadget_reason", lastLine(out))
	} else if err := runGadget(sc, wait); err != nil {
		return err
	}
	if sc.NoCORE != "" {
		if err := runNoCOREGadget(sc, wait, btfErr != nil); err != nil {
			return err
		}
	}
	if sc.Kprobe != "" {
		if err := runPairGadget(sc.Kprobe, sc, wait, "kprobe_"); err != nil {
			return err
		}
	}
	if sc.Fentry != "" {
		if err := runPairGadget(sc.Fentry, sc, wait, "fentry_"); err != nil {
			return err
		}
	}

	out, err = bpfleet("run", sc.Unsigned, "--timeout", "2s")
	if err == nil {
		return fmt.Errorf("unsigned gadget %s ran: %s", sc.Unsigned, out)
	}
	result("unsigned", "refused")
	result("unsigned_reason", lastLine(out))
	// Last, as it breaks the gadget for good: one byte of its signed eBPF layer changed on disk.
	layer, err := tamper(sc.Gadget)
	if err != nil {
		return err
	}
	result("tampered_layer", layer)
	out, err = bpfleet("run", sc.Gadget, "--timeout", "2s")
	if err == nil {
		return fmt.Errorf("gadget %s ran with its eBPF layer changed: %s", sc.Gadget, out)
	}
	result("tampered", "refused")
	result("tampered_reason", lastLine(out))
	return nil
}

// tamper inverts the middle byte of the blob of ref's eBPF program layer for this
// architecture in the device's image store, as an attacker with the disk would, and returns the
// layer's digest.
func tamper(ref string) (string, error) {
	out, err := bpfleet("image", "inspect", ref, "-o", "json")
	if err != nil {
		return "", err
	}
	var info struct {
		Platforms []struct {
			Platform string `json:"platform"`
			Layers   []struct {
				MediaType string `json:"media_type"`
				Digest    string `json:"digest"`
			} `json:"layers"`
		} `json:"platforms"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return "", fmt.Errorf("image inspect %s: %w", ref, err)
	}
	for _, p := range info.Platforms {
		if p.Platform != "linux/"+runtime.GOARCH {
			continue
		}
		for _, l := range p.Layers {
			if l.MediaType != oci.MediaTypeEBPFProgram {
				continue
			}
			blob := filepath.Join(firmware.DataDir, "images/blobs/sha256", strings.TrimPrefix(l.Digest, "sha256:"))
			b, err := os.ReadFile(blob)
			if err != nil {
				return "", fmt.Errorf("tamper with %s: %w", ref, err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(blob, b, 0o644); err != nil {
				return "", fmt.Errorf("tamper with %s: %w", ref, err)
			}
			return l.Digest, nil
		}
	}
	return "", fmt.Errorf("tamper with %s: no eBPF layer for linux/%s in %s", ref, runtime.GOARCH, out)
}

// runGadget runs the gadget and execs the probe until the gadget reports that exec.
func runGadget(sc scenario, wait time.Duration) error {
	comm := filepath.Base(sc.Probe)
	return watchGadget(sc.Gadget, sc.Probe, wait, func(ev map[string]any) bool { return ev["comm"] == comm },
		func(ev map[string]any, probes map[string]bool, start time.Duration) {
			result("first_event_ms", ms(boot.Uptime()))
			result("attach_to_event_ms", ms(boot.Uptime()-start))
			result("event_comm", fmt.Sprint(ev["comm"]))
			result("event_pid_match", strconv.FormatBool(probes[fmt.Sprint(ev["pid"])]))
		}, "")
}

// runNoCOREGadget verifies and runs the gadget without CO-RE relocations, which needs no kernel
// BTF, offline like the first, and execs the probe until the gadget reports it. first says its
// event is the scenario's first (the first gadget could not run), reported as first_event_ms.
func runNoCOREGadget(sc scenario, wait time.Duration, first bool) error {
	if _, err := bpfleet("verify", sc.NoCORE); err != nil {
		return fmt.Errorf("verify %s offline: %w", sc.NoCORE, err)
	}
	result("nocore_verify", "ok")
	return watchGadget(sc.NoCORE, sc.Probe, wait, func(ev map[string]any) bool { return ev["filename"] == sc.Probe },
		func(ev map[string]any, probes map[string]bool, start time.Duration) {
			if first {
				result("first_event_ms", ms(boot.Uptime()))
			}
			result("nocore_attach_to_event_ms", ms(boot.Uptime()-start))
			b, _ := json.Marshal(ev)
			result("nocore_event", string(b))
			result("nocore_event_filename", fmt.Sprint(ev["filename"]))
			result("nocore_event_comm", fmt.Sprint(ev["comm"]))
			result("nocore_event_pid", fmt.Sprint(ev["pid"]))
			result("nocore_event_pid_match", strconv.FormatBool(probes[fmt.Sprint(ev["pid"])]))
		}, "nocore_")
}

// runPairGadget verifies and runs a gadget whose entry program (kprobe or fentry on
// bprm_execve) starts the event and whose return program (kretprobe or fexit) adds the return
// value and sends it, offline like the first, and execs the probe until the gadget reports it:
// its event is taken before the new program is loaded, so it is recognised by filename rather
// than comm. Results are keyed by prefix (kprobe_, fentry_). Where the runner refuses the
// gadget (no BTF, no fentry), that is <prefix>gadget=refused with the runner's error as
// <prefix>reason: the host says which refusals it expects.
func runPairGadget(gadget string, sc scenario, wait time.Duration, prefix string) error {
	if _, err := bpfleet("verify", gadget); err != nil {
		return fmt.Errorf("verify %s offline: %w", gadget, err)
	}
	result(prefix+"verify", "ok")
	err := watchGadget(gadget, sc.Probe, wait, func(ev map[string]any) bool { return ev["filename"] == sc.Probe },
		func(ev map[string]any, probes map[string]bool, start time.Duration) {
			result(prefix+"attach_to_event_ms", ms(boot.Uptime()-start))
			b, _ := json.Marshal(ev)
			result(prefix+"event", string(b))
			result(prefix+"event_filename", fmt.Sprint(ev["filename"]))
			result(prefix+"event_comm", fmt.Sprint(ev["comm"]))
			result(prefix+"event_ret", fmt.Sprint(ev["ret"]))
			result(prefix+"event_pid_match", strconv.FormatBool(probes[fmt.Sprint(ev["pid"])]))
		}, prefix)
	var refused *gadgetExited
	if errors.As(err, &refused) {
		result(prefix+"gadget", "refused")
		result(prefix+"reason", lastLine(refused.stderr))
		return nil
	}
	if err == nil {
		result(prefix+"gadget", "ok")
	}
	return err
}

// gadgetExited is returned by watchGadget when the gadget's run ends before the awaited event.
type gadgetExited struct {
	gadget string
	err    error
	stderr string
}

func (e *gadgetExited) Error() string {
	return fmt.Sprintf("run %s ended before the awaited event: %v: %s", e.gadget, e.err, e.stderr)
}

// watchGadget runs gadget and execs probe every 200 ms until an event matches; found reports
// it with the PIDs of the probes started and when the gadget was started. The summary lines
// are reported with keys prefixed by prefix.
func watchGadget(gadget, probe string, wait time.Duration, match func(map[string]any) bool,
	found func(ev map[string]any, probes map[string]bool, start time.Duration), prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, firmware.AgentPath, "--data-dir", firmware.DataDir, "run", gadget, "-o", "json")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := boot.Uptime()
	if err := cmd.Start(); err != nil {
		return err
	}
	seen := make(chan map[string]any, 1)
	events := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			events++
			fmt.Printf("BPFLEET-EVENT %s\n", s.Bytes())
			var ev map[string]any
			if json.Unmarshal(s.Bytes(), &ev) == nil && match(ev) {
				select {
				case seen <- ev:
				default:
				}
			}
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	probes := map[string]bool{} // PIDs of the probes started
	for seenIt := false; !seenIt; {
		select {
		case ev := <-seen:
			seenIt = true
			found(ev, probes, start)
		case <-tick.C:
			p := exec.Command(probe)
			if err := p.Run(); err != nil {
				return fmt.Errorf("probe: %w", err)
			}
			probes[strconv.Itoa(p.ProcessState.Pid())] = true
		case <-done:
			// The run ended (its output closed) before the event: refused or failed.
			select {
			case ev := <-seen:
				seenIt = true
				found(ev, probes, start)
				continue
			default:
			}
			err := cmd.Wait()
			return &gadgetExited{gadget: gadget, err: err, stderr: stderr.String()}
		case <-ctx.Done():
			<-done
			cmd.Wait()
			return fmt.Errorf("gadget %s reported no exec of %s within %s: %s", gadget, probe, wait, stderr.String())
		}
	}
	cmd.Cancel()
	<-done
	err = cmd.Wait()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("run %s: %w: %s", gadget, err, stderr.String())
	}
	result(prefix+"events", strconv.Itoa(events))
	result(prefix+"run_summary", lastLine(stderr.String()))
	return nil
}

// interfaceAddrs returns the addresses of the named interface.
func interfaceAddrs(name string) ([]net.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	return ifi.Addrs()
}

func bpfleet(args ...string) (string, error) {
	out, err := exec.Command(firmware.AgentPath, append([]string{"--data-dir", firmware.DataDir}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("bpfleet %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func utsString[T int8 | uint8](b []T) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// prefixed writes each line to the console with a prefix.
func prefixed(prefix string) *os.File {
	r, w, err := os.Pipe()
	if err != nil {
		return os.Stderr
	}
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			fmt.Printf("%s%s\n", prefix, s.Text())
		}
	}()
	return w
}
