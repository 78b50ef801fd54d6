// Package boot is what a static Go /init does on a bpfleet device before anything else: it
// mounts the kernel's filesystems (proc first, then sys, devtmpfs, bpffs, tracefs, debugfs and
// tmpfs), gives itself the console, loads the kernel modules the firmware image lists with
// finit_module, configures the static IPv4 address and default route (ioctls and one netlink
// request, no external tools), and finally powers the machine off.
//
// Lifecycle traps: call [Mount] before starting any process that imports cilium/ebpf (its
// rlimit package probes BPF from an init function that reads /proc and caches a failure). PID 1
// must never return or exit: the kernel panics; end with [PowerOff]. Orphaned processes are
// reparented to PID 1; an init that starts only children it waits for has none to reap.
package boot
