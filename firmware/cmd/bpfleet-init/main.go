// Command bpfleet-init is /init of a bpfleet firmware image (package firmware builds it). As
// PID 1 it mounts the kernel filesystems, loads the image's kernel modules, configures the
// network, imports the image's gadget layouts into the data directory, then runs the agent and
// restarts it when it exits (backing off up to a minute). It never exits: when the agent cannot
// be started at all it powers the device off rather than let the kernel panic.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/bpfleet/bpfleet/firmware"
	"github.com/bpfleet/bpfleet/firmware/boot"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "bpfleet-init: not PID 1; this is a firmware image's /init")
		os.Exit(2)
	}
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "bpfleet-init:", err)
	}
	backoff := time.Second
	for {
		start := time.Now()
		cmd := exec.Command(firmware.AgentPath, "--data-dir", firmware.DataDir, "agent", "--config", firmware.ConfigPath)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		fmt.Fprintf(os.Stderr, "bpfleet-init: agent exited: %v\n", err)
		if _, ok := err.(*exec.ExitError); !ok && err != nil {
			fmt.Fprintln(os.Stderr, "bpfleet-init: cannot start the agent; powering off")
			boot.PowerOff()
			select {}
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Minute)
	}
}

func setup() error {
	if err := boot.Mount(); err != nil {
		return err
	}
	n, err := boot.LoadModules(firmware.ModulesPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bpfleet-init: %d kernel module(s) loaded at %s\n", n, boot.Uptime())
	if netcfg, err := boot.LoadNetwork(firmware.NetworkPath); err != nil {
		return err
	} else if netcfg != nil {
		if err := boot.ConfigureNetwork(*netcfg, 10*time.Second); err != nil {
			return err
		}
	}
	layouts, _ := filepath.Glob(filepath.Join(firmware.ImagesDir, "*"))
	for _, l := range layouts {
		out, err := exec.Command(firmware.AgentPath, "--data-dir", firmware.DataDir, "image", "import", l).CombinedOutput()
		if err != nil {
			return fmt.Errorf("import %s: %v: %s", l, err, out)
		}
	}
	return nil
}
