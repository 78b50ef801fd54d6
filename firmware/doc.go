// Package firmware builds a device's boot image: a gzip-compressed newc cpio archive that the
// Linux kernel unpacks as its initramfs and runs /init from. The image carries everything a
// device needs to join its fleet with no other storage:
//
//   - /init, a static Go init (firmware/cmd/bpfleet-init, or a test scenario built on
//     package [github.com/bpfleet/bpfleet/firmware/boot]) and /bin/bpfleet, the static agent;
//   - /etc/bpfleet/agent.json and root.cbor: the agent config and the fleet's signed root, the
//     pre-provisioned trust the device starts from (it receives everything else as deltas);
//   - /etc/bpfleet/provision/NN-<name>: sealed roots and deltas ([Spec.Provision], bpfleetctl
//     firmware build --provision) that the agent config lists in its provision field: the agent
//     applies them offline at its first start, so the device trusts what they trust (e.g. its
//     first gadgets) before it ever reaches the broker;
//   - /usr/share/bpfleet/images/<name>/: OCI image layouts of signed gadgets, imported into the
//     data directory at boot and run only once trust for them arrives;
//   - the kernel modules the device must load itself (virtio networking on Debian kernels),
//     with their dependencies resolved from modules.dep, and /etc/bpfleet/modules listing them
//     in load order; /etc/bpfleet/network.json for the static address.
//
// Output is reproducible: entries are sorted, owned by root, stamped with one fixed time
// ([Spec.Epoch], default 0), numbered in order, and gzip carries no name or time; the same
// inputs give the same bytes.
//
// Traps: a Go program cannot start as PID 1 without file descriptors 0-2 (its runtime opens
// /dev/null for missing ones and aborts if it cannot), and the kernel gives init the console
// only if /dev/console exists in the initramfs; so the image holds the /dev/console and
// /dev/null device nodes, written by hand because the cpio library writes no device numbers.
// Do not make the cilium/ebpf-importing agent itself /init: its rlimit package probes BPF in
// an init function, before anything could mount /proc, and caches the failure; /init mounts
// first and starts the agent as a child.
package firmware
