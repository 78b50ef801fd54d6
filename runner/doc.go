// Package runner runs a verified eBPF gadget in Inspektor Gadget's ELF
// format and prints the events it produces.
//
// A gadget describes itself through the BTF of its ELF object: a global
// variable named gadget_tracer_<name>___<map>___<struct> says that events of
// type struct <struct> arrive through the BPF ring buffer <map>, and an
// optional 64-bit global <map>_lost_samples counts events the gadget dropped
// because the ring buffer was full. Programs are attached according to their
// ELF section: tracepoint/<category>/<name>, raw_tracepoint/<name> (or
// raw_tp/<name>), tp_btf/<name>, kprobe/<fn> and kretprobe/<fn>, fentry/<fn> and
// fexit/<fn>, uprobe//<path>:<symbol> and uretprobe//<path>:<symbol>; a kernel
// without the facility is named in the error (CONFIG_KPROBES, lockdown). Events are decoded from the BTF of the
// event struct; members declared with a gadget_* typedef keep that name in
// [Field.Tag], and a gadget_timestamp (nanoseconds since boot) becomes a
// wall-clock [time.Time], a gadget_errno an [Errno] and a gadget_signal a
// [Signal] (both print by name: ENOENT, SIGUSR1). A member of type struct
// gadget_l3endpoint or gadget_l4endpoint (gadgets/include/gadget/types.h)
// becomes a netip.Addr or netip.AddrPort.
//
// # Parameters and map sizes
//
// A global gadget_param_<var> marks the const volatile global <var> (in
// .rodata) as a parameter: an integer, a _Bool or a char array (a string).
// Its default is its initial value; [Params] lists them, and
// Options.Params sets them by name, parsed by type, with errors naming the
// parameter and the type expected. Values are written into the initial
// contents of .rodata before the programs are loaded, so the verifier sees
// them as constants and can prune code they disable. An integer global
// <map>_max_entries that is not 0 then becomes the max_entries of map <map>
// (a ring buffer's must be a power-of-two number of pages); make it a
// parameter to let users size the map.
//
// # Selecting output
//
// Options.Fields prints only the named fields, in that order; Options.Filters
// keeps only events whose fields print exactly as given (ENOENT,
// 127.0.0.1:80, a comm). Unknown field names are errors before anything is
// loaded. Filtered events are counted in Stats.Filtered, and MaxEvents
// counts only the events that passed.
//
// # Lifecycle
//
// [Run] owns every kernel object it creates and nothing outlives the call:
//
//   - Before anything is loaded, the whole gadget is checked: tracer marker,
//     ring buffer map, event struct, attach sections, parameters and their
//     values, map sizes, fields, filters and output format. A gadget that
//     fails any check never reaches the kernel. [Params] never loads
//     anything either.
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
// keep those maps in the kernel after Run returned. That is also why
// parameters are written into the data sections' contents rather than set
// through [ebpf.VariableSpec]: with spec.Variables dropped, the loader only
// uses those contents.
//
// Tracepoints are looked up in tracefs, which must be mounted (usually at
// /sys/kernel/tracing). Run does not change the memlock rlimit: kernels
// since 5.11 account BPF memory to the memory cgroup instead.
package runner
