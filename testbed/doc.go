// Package testbed boots bpfleet firmware images on Debian's own kernels under QEMU (TCG) and
// checks the whole device story on each architecture: pre-provisioned trust (the fleet's root
// and a sealed delta in the firmware, applied before the network is up, so that the first
// gadget verifies and a later one does not yet), the next delta over MQTT, the broker gone,
// signed gadgets verified and run offline (tracepoint; kprobe+kretprobe and fentry+fexit
// pairs, whose events need both programs and carry bprm_execve's return value; where the
// kernel cannot run a gadget, the runner's refusal must name why: no fentry on Debian 6.1
// arm64, no BTF on armv7), an unsigned gadget refused, and a signed, trusted one refused for
// its digest mismatch once a byte of its eBPF layer is changed in the device's image store.
// Then, on arm64 (its fastest boot), it boots the production firmware an operator builds with
// `bpfleetctl firmware build` (bpfleet-init as /init, both deltas provisioned) and checks from
// the host that bpfleet-init loads the kernel modules and the device reports itself current
// over MQTT. Its test, TestScenario, runs only when BPFLEET_TESTBED=1 (`make testbed` sets
// it); BPFLEET_TESTBED_ARCHES picks the architectures (default "amd64 arm64").
//
// Kernels: [FetchKernel] resolves the current ABI from linux-image-amd64's dependency, fetches
// the image package with `apt-get download` (adding the foreign dpkg architecture and updating
// apt's lists if needed; nothing is installed), unpacks it with dpkg-deb -x and runs depmod,
// all under [CacheDir] (default /var/cache/bpfleet), reused by later runs. Gadgets are CO-RE
// objects compiled per architecture against a vmlinux.h made from the guest kernel's own BTF,
// cut out of its image ([Kernel.BTF]); Debian's armmp (armv7) kernel has no BTF, so no CO-RE
// gadget can run there: the runner must refuse them saying so, and the guest runs
// trace_exec_nocore, compiled for arm without vmlinux.h ([CompileGadgetNoCORE]), instead.
//
// Network rule: every guest runs in a fresh network namespace ([NewNetns]) with only loopback,
// a Mosquitto on its 127.0.0.1 ([StartMosquitto]) and QEMU's user-mode network, which the
// guest reaches as 10.0.2.2. Nothing leaves the namespace.
//
// Lifecycle: whoever creates a namespace deletes it, after stopping what runs in it (a process
// left inside keeps it alive); [VM.Wait] kills QEMU when the guest overstays, and [VM.Kill] is
// safe to call again. The guest reports on its console as BPFLEET-RESULT key=value lines
// ([Results]) and powers itself off; QEMU runs with -no-reboot and the kernel with panic=-1,
// so a guest that crashes ends QEMU too.
package testbed
