// Package runner runs a verified eBPF gadget in Inspektor Gadget's ELF
// format and prints the events it produces.
//
// A gadget describes itself through the BTF of its ELF object: a global
// variable named gadget_tracer_<name>___<map>___<struct> says that events of
// type struct <struct> arrive through the BPF ring buffer <map>, and an
// optional 64-bit global <map>_lost_samples counts events the gadget dropped
// because the ring buffer was full. Programs are attached according to their
// ELF section: tracepoint/<category>/<name>, raw_tracepoint/<name> (or
// raw_tp/<name>) and tp_btf/<name>. Events are decoded from the BTF of the
// event struct; members declared with a gadget_* typedef keep that name in
// [Field.Tag], and a gadget_timestamp (nanoseconds since boot) becomes a
// wall-clock [time.Time].
//
// # Lifecycle
//
// [Run] owns every kernel object it creates and nothing outlives the call:
//
//   - Before anything is loaded, the whole gadget is checked: tracer marker,
//     ring buffer map, event struct, attach sections and output format. A
//     gadget that fails any check never reaches the kernel.
//   - Run then loads the programs and maps, attaches every program and opens
//     a ring buffer reader. If any step fails, what was created so far is
//     released and the error returned.
//   - The run ends when ctx is done (for example on Ctrl-C, with a context
//     from [os/signal.NotifyContext]), when Options.Timeout passes, when
//     Options.MaxEvents events were read, or on the first error reading,
//     decoding or printing an event. The first three are not errors.
//   - On every end, Run closes the reader, detaches and closes every link,
//     then closes every program and map, all before it returns. Nothing is
//     pinned, so the kernel frees the objects once their last reference is
//     gone; it drops a program's references to its maps after an RCU grace
//     period, so their IDs can remain visible for a moment after Run returns.
//
// Run does not create accessors for the gadget's global variables
// ([ebpf.Collection.Variables]): cilium/ebpf maps their memory into the
// process and unmaps it only from a garbage-collector cleanup, which would
// keep those maps in the kernel after Run returned.
//
// Tracepoints are looked up in tracefs, which must be mounted (usually at
// /sys/kernel/tracing). Run does not change the memlock rlimit: kernels
// since 5.11 account BPF memory to the memory cgroup instead.
package runner
