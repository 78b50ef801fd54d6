package testbed

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	stdsync "sync"
	"time"
)

// VM is a QEMU guest (TCG, user-mode network) running in a namespace, its serial console
// captured line by line.
type VM struct {
	Start time.Time
	cmd   *exec.Cmd
	mu    stdsync.Mutex
	lines []Line
	done  chan struct{}
	err   error
}

// Line is one console line and when it arrived, counted from QEMU's start.
type Line struct {
	At   time.Duration
	Text string
}

// BootArgs is QEMU's command line for k with initrd, 512 MiB, 2 CPUs, no display, no reboot
// (the guest's power-off or panic ends QEMU), virtio-net on a user-mode network.
func BootArgs(k *Kernel, initrd string) []string {
	a := k.Arch
	args := append([]string{}, a.QEMUArgs...)
	return append(args, "-m", "512", "-smp", "2", "-nographic", "-no-reboot",
		"-kernel", k.Vmlinuz, "-initrd", initrd,
		"-append", "console="+a.Console+" panic=-1 quiet",
		"-netdev", "user,id=n0", "-device", a.NetDevice+",netdev=n0")
}

// Boot starts QEMU for k in n. log, if not nil, receives the console as it comes.
func Boot(n *Netns, k *Kernel, initrd string, log io.Writer) (*VM, error) {
	vm := &VM{cmd: n.Command(k.Arch.QEMU, BootArgs(k, initrd)...), done: make(chan struct{})}
	out, err := vm.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	vm.cmd.Stderr = vm.cmd.Stdout
	vm.Start = time.Now()
	if err := vm.cmd.Start(); err != nil {
		return nil, fmt.Errorf("testbed: %s: %w", k.Arch.QEMU, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			text := strings.TrimRight(sc.Text(), "\r")
			vm.mu.Lock()
			vm.lines = append(vm.lines, Line{time.Since(vm.Start), text})
			vm.mu.Unlock()
			if log != nil {
				fmt.Fprintln(log, text)
			}
		}
		vm.err = vm.cmd.Wait()
		close(vm.done)
	}()
	return vm, nil
}

// Wait waits for QEMU to exit, killing it after timeout.
func (vm *VM) Wait(timeout time.Duration) error {
	select {
	case <-vm.done:
		return vm.err
	case <-time.After(timeout):
		vm.Kill()
		return fmt.Errorf("testbed: guest still running after %s; killed", timeout)
	}
}

// Kill stops QEMU at once and waits for it; harmless after it exited.
func (vm *VM) Kill() {
	select {
	case <-vm.done:
		return
	default:
	}
	vm.cmd.Process.Kill()
	<-vm.done
}

// Lines returns the console so far.
func (vm *VM) Lines() []Line {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return append([]Line(nil), vm.lines...)
}

// ResultPrefix starts the lines by which the guest reports results.
const ResultPrefix = "BPFLEET-RESULT "

// Results parses the guest's BPFLEET-RESULT key=value lines (values may be Go-quoted); a
// later value for a key replaces an earlier one. at says when each key arrived.
func Results(lines []Line) (values map[string]string, at map[string]time.Duration) {
	values, at = map[string]string{}, map[string]time.Duration{}
	for _, l := range lines {
		i := strings.Index(l.Text, ResultPrefix)
		if i < 0 {
			continue
		}
		k, v, ok := strings.Cut(l.Text[i+len(ResultPrefix):], "=")
		if !ok {
			continue
		}
		if strings.HasPrefix(v, `"`) {
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
		}
		values[k], at[k] = v, l.At
	}
	return values, at
}
