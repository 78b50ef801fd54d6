package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpfleet/bpfleet/firmware"
)

func firmwareCmd() *cobra.Command {
	c := &cobra.Command{Use: "firmware", Short: "Build device firmware images"}
	var (
		s       firmware.Spec
		arch    string
		out     string
		address string
		gateway string
		iface   string
		epoch   int64
	)
	build := &cobra.Command{
		Use:   "build",
		Short: "Build a bootable initramfs (newc cpio, gzip) with the agent, its config and the fleet's root",
		Long: "Build a device's initramfs: --init as /init (bpfleet-init, built for the device's\n" +
			"architecture), --agent as /bin/bpfleet, the agent config, the fleet's signed root as the\n" +
			"pre-provisioned trust with any --provision deltas the agent applies offline at start\n" +
			"(listed in the config's provision field), the gadget layouts to import at boot, and the named kernel modules\n" +
			"(with their dependencies, from modules.dep) to load at boot. The output is reproducible.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s.Arch = arch
			if address != "" {
				s.Network = &firmware.Network{Interface: iface, Address: address, Gateway: gateway}
			}
			s.Epoch = time.Unix(epoch, 0)
			modules, err := firmware.BuildFile(s, out)
			if err != nil {
				return err
			}
			info, err := os.Stat(out)
			if err != nil {
				return err
			}
			fmt.Printf("wrote %s (%s, %d bytes, %d kernel module(s), %d provisioned update(s))\n", out, arch, info.Size(), len(modules), len(s.Provision))
			return nil
		},
	}
	f := build.Flags()
	f.StringVar(&arch, "arch", "", "GOARCH of the device (amd64, arm64, arm): --init and --agent must be static binaries for it")
	f.StringVar(&s.Init, "init", "", "the /init binary for the device (bpfleet-init)")
	f.StringVar(&s.AgentBin, "agent", "", "the bpfleet binary for the device")
	f.StringVar(&s.Root, "root", "", "the fleet's signed root (root.cbor)")
	f.StringVar(&s.Agent.DeviceID, "device-id", "", "the device's id in its fleet")
	f.StringVar(&s.Agent.Fleet, "fleet", "", "the fleet")
	f.StringVar(&s.Agent.Broker, "broker", "", "MQTT broker URL as the device reaches it")
	f.StringArrayVar(&s.Provision, "provision", nil, "sealed root or delta (bpfleetctl root/delta -o FILE) the agent applies offline at its first start, before reaching the broker (repeatable, applied in order)")
	f.StringArrayVar(&s.Layouts, "layout", nil, "OCI image layout directory to import at boot (repeatable)")
	f.StringVar(&s.KernelModules, "kernel-modules", "", "an unpacked kernel's lib/modules/<release> directory (with modules.dep)")
	f.StringSliceVar(&s.Modules, "module", []string{"virtio_pci", "virtio_net"}, "kernel module to load at boot (repeatable; used with --kernel-modules)")
	f.StringVar(&address, "address", "", "static IPv4 address in CIDR form, e.g. 10.0.2.15/24 (none: no network setup)")
	f.StringVar(&gateway, "gateway", "", "default gateway, e.g. 10.0.2.2")
	f.StringVar(&iface, "interface", "eth0", "network interface to configure")
	f.Int64Var(&epoch, "epoch", envEpoch(), "modification time of every entry, Unix seconds (default $SOURCE_DATE_EPOCH or 0)")
	f.StringVarP(&out, "output", "o", "initrd.gz", "output file")
	for _, r := range []string{"arch", "init", "agent", "root", "device-id", "fleet", "broker"} {
		build.MarkFlagRequired(r)
	}
	c.AddCommand(build)
	return c
}

func envEpoch() int64 {
	var e int64
	fmt.Sscan(os.Getenv("SOURCE_DATE_EPOCH"), &e)
	return e
}
