// Package runner runs a verified eBPF gadget in Inspektor Gadget's ELF
// format and prints the events it produces.
//
// A gadget describes itself through the BTF of its ELF object: a global
// variable named gadget_tracer_<name>___<map>___<struct> says that events of
// type struct <struct> arrive through the BPF ring buffer (or perf event
// array, see below) <map>, and an
// optional 64-bit global <map>_lost_samples counts events the gadget dropped
// because the ring buffer was full. Programs are attached according to their
// ELF section: tracepoint/<category>/<name>, raw_tracepoint/<name> (or
// raw_tp/<name>), tp_btf/<name>, kprobe/<fn> and kretprobe/<fn>, fentry/<fn> and
// fexit/<fn>, uprobe//<path>:<symbol> and uretprobe//<path>:<symbol>, socket
// (or socket/<anything>, see Socket filters below); a kernel
// without the facility is named in the error (CONFIG_KPROBES, CONFIG_UPROBES,
// BPF trampolines). The kernel refuses fentry/fexit with EPERM, before the
// verifier runs, where it will not let a BPF trampoline hook the function:
// the error names the program and what Run could find out (lockdown in
// confidentiality mode, an ftrace that refuses function hooks, which shows
// in available_filter_functions being refused even to root, or a function
// ftrace cannot hook). Events are decoded from the BTF of the
// event struct; members declared with a gadget_* typedef keep that name in
// [Field.Tag], and a gadget_timestamp (nanoseconds since boot) becomes a
// wall-clock [time.Time], a gadget_errno an [Errno], a gadget_signal a
// [Signal] and a gadget_syscall a [Syscall] (all print by name: ENOENT,
// SIGUSR1, execve; system call names are those of the architecture bpfleet
// was built for). A member of type struct
// gadget_l3endpoint or gadget_l4endpoint (gadgets/include/gadget/types.h)
// becomes a netip.Addr or netip.AddrPort.
//
// # Parameters and map sizes
//
// A global gadget_param_<var> marks the const volatile global <var> (in
// .rodata) as a parameter: an integer, a _Bool or a char array (a string).
// An integer declared gadget_signal or gadget_errno takes a name as well as
// a number (SIGTERM or TERM, ENOENT; not case-sensitive), as such fields
// print. Its default is its initial value; [Params] lists them, and
// Options.Params sets them by name, parsed by type, with errors naming the
// parameter and the type expected. Values are written into the initial
// contents of .rodata before the programs are loaded, so the verifier sees
// them as constants and can prune code they disable. An integer global
// <map>_max_entries that is not 0 then becomes the max_entries of map <map>
// (a ring buffer's must be a power-of-two number of pages); make it a
// parameter to let users size the map ([Param.SizesMap]). Such a
// parameter set to 0 is refused, as is a ring buffer size the kernel
// would refuse, before anything is loaded.
//
// # Selecting output
//
// Options.Fields prints only the named fields, in that order; Options.Filters
// keeps only events whose fields print exactly as given (ENOENT,
// 127.0.0.1:80, a comm). Unknown field names, and filter values the field's
// type never prints as (see [Filter]), are errors before anything is
// loaded. Filtered events are counted in Stats.Filtered, and MaxEvents
// counts only the events that passed.
//
// # Socket filters
//
// A program in section socket is a socket filter. Run opens an AF_PACKET
// socket bound to every protocol (ETH_P_ALL) in the network namespace of the
// thread calling Run, attaches the program with SO_ATTACH_BPF, and closes
// the socket when the run ends, which detaches it. The kernel then runs the
// program on every packet of that namespace, sent or received, on any
// interface; it reports through the ring buffer, and nothing reads the
// socket (a filter should return 0 so the socket queues nothing).
//
// # Kernels without BTF or ring buffers
//
// CO-RE relocations are resolved against the kernel's own BTF
// (/sys/kernel/btf/vmlinux) when it has one. Otherwise, as Inspektor Gadget
// does, against the image's btfgen layer ([verify.Approved.BTFGen]): a
// tar(.gz) of minimized BTF files named <ID>/<VERSION_ID>/<arch>/<release>.btf
// (os-release, uname -m or btfhub's arm64, uname -r), of which the entry for
// this release and architecture is used; among several, the one for this
// os-release. With neither, gadgets without CO-RE relocations still load,
// and a CO-RE gadget fails with an error saying the kernel has no BTF and
// the image no btfgen entry for the release. A corrupt btfgen layer is an
// error.
//
// The tracer map may be a perf event array, as older Inspektor Gadget
// gadgets declare it: each CPU gets a 256 KiB buffer, and the events the
// kernel drops when one is full are counted in Stats.Lost with the
// gadget's own <map>_lost_samples. A gadget whose BTF has enum bpf_func_id
// asks CO-RE whether BPF_FUNC_ringbuf_reserve exists (gadget/buffer.h
// does, like Inspektor Gadget's) and, on a kernel before 5.8, builds events
// in its per-CPU gadget_heap map and sends them with bpf_perf_event_output.
// Run makes the same check on the CO-RE target before loading and, when the
// answer is no, turns the tracer's ring buffer into a perf event array with
// one entry per CPU, so that program and map agree. Gadgets built with
// gadget/nocore.h have no CO-RE to ask with and always use a ring buffer.
//
// # Map iterators and snapshotters
//
// A gadget is exactly one of a tracer, a map iterator or a snapshotter;
// markers of two kinds are refused. A global gadget_mapiter_<name>___<map>
// makes it a map iterator: <map> is a hash map whose key and value are
// structs, and every Options.Interval (DefaultInterval, 1s, when 0) Run
// reads all its entries, deletes them, and prints one row per entry, the
// key's fields then the value's, sorted by the value struct's first plain
// integer member, descending (then by key bytes). A round therefore shows
// what happened since the one before; an update the gadget makes to an
// entry between its read and its delete is lost. The columns format heads
// each round with a "--- <time>: <n> rows" line and the header; JSON
// prints only the rows, each with a first member "round", the round's time
// in UTC (RFC 3339 with nanoseconds, the same for every row of a round),
// which tells rounds apart (a gadget field named round is refused there).
// Filters apply to rows, MaxEvents counts the rows printed, and the run
// ends like a tracer's (no last round is printed). Stats counts rows and
// Stats.Rounds the rounds printed; the rows of the last round left
// unprinted by MaxEvents are not counted.
//
// A global gadget_snapshotter_<name>___<struct>___<prog>[___<prog>...] (at
// most three programs) makes it a snapshotter: each program is an
// iter/<target> BPF iterator (iter/task, iter/tcp, ...; not iterators over
// one map's elements, which need the map when attached) writing whole
// struct <struct> records with bpf_seq_write. Run loads the gadget,
// attaches and reads each iterator in the order listed (closing its link
// once read), splits the output into records, prints them and returns. Iterators are BPF tracing
// programs, but unlike fentry they need no BPF trampolines: Linux 5.8 or
// later with BTF runs them, and an iterator the kernel does not have is
// named in the error. Every program of a snapshotter must be one of its
// iterators.
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
//   - Run then loads the programs and maps, opens a tracer's ring buffer or
//     perf reader and attaches every program. If any step fails, what was
//     created so far is released and the error returned.
//   - A gadget refused by these checks, by the kernel when loading, or
//     when attaching, never ran: Run returns nil Stats with the error.
//   - The run ends when ctx is done (for example on Ctrl-C, with a context
//     from [os/signal.NotifyContext]), when Options.Timeout passes, when
//     Options.MaxEvents events were read, or on the first error reading,
//     decoding or printing an event. The first three are not errors.
//   - Events printed to a file (stdout) go through a queue to a goroutine
//     of their own, so an output that stopped taking them (a full pipe, a
//     stalled terminal) cannot hold the run: it still ends on time and
//     releases the kernel objects. Run then waits for the output to take
//     what was printed as long as it takes lines, and gives up (with an
//     error saying how many lines were not printed) once it took nothing
//     for a second. Stats.Unprinted counts the events among those lines,
//     and the one the queue had no room for when the run ended.
//   - On every end, Run closes the reader, detaches and closes every link
//     (for a socket filter, its socket),
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
