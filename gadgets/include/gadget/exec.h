/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The event the exec gadgets share (trace_exec, trace_kprobe_exec,
 * trace_fentry_exec), its ring buffer, and how they fill it: they differ only
 * in the hook and in where the hook finds the file name. Include after
 * vmlinux.h, the libbpf headers and gadget/{buffer,macros,types}.h.
 *
 * A gadget that hooks both the entry and the return of an exec function
 * defines GADGET_EXEC_RET first: its event then ends with the function's
 * return value, and it uses exec_enter and exec_return instead of
 * emit_exec_event.
 */
#ifndef BPFLEET_GADGET_EXEC_H
#define BPFLEET_GADGET_EXEC_H

#define FILENAME_LEN 256

struct event {
	gadget_timestamp timestamp;
	gadget_pid pid;
	gadget_ppid ppid;
	gadget_uid uid;
	gadget_gid gid;
	gadget_comm comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN];
#ifdef GADGET_EXEC_RET
	gadget_errno ret;
#endif
};

GADGET_TRACER_MAP(events, 256 * 1024);

/* fill_exec_event fills event for the current task; filename is a kernel
 * pointer to the NUL-terminated path being executed. */
static __always_inline void fill_exec_event(struct event *event, const void *filename)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 uid_gid = bpf_get_current_uid_gid();

	event->timestamp = bpf_ktime_get_boot_ns();
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->ppid = BPF_CORE_READ(task, real_parent, tgid);
	event->uid = (__u32)uid_gid;
	event->gid = uid_gid >> 32;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), filename);
}

#ifndef GADGET_EXEC_RET

/* emit_exec_event submits one event for the current task; ctx is the
 * program's context. */
static __always_inline int emit_exec_event(void *ctx, const void *filename)
{
	struct event *event;

	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;
	fill_exec_event(event, filename);
	gadget_submit(ctx, events, event);
	return 0;
}

#else

/*
 * The events the entry programs started, by pid_tgid, until the return
 * program sends them. LRU: a thread other than the leader that execs
 * returns as the leader (de_thread), under another pid_tgid, and its entry
 * is never taken.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);
	__type(value, struct event);
} exec_start SEC(".maps");

/* exec_enter starts the event on entry, while comm is still the caller's. */
static __always_inline int exec_enter(const void *filename)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct event event = {};

	fill_exec_event(&event, filename);
	bpf_map_update_elem(&exec_start, &id, &event, BPF_ANY);
	return 0;
}

/* exec_return submits the event exec_enter started, with the function's
 * return value: there is none unless both programs ran. */
static __always_inline int exec_return(void *ctx, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct event *start, *event;

	start = bpf_map_lookup_elem(&exec_start, &id);
	if (!start)
		return 0;
	event = gadget_reserve(events, struct event);
	if (event) {
		*event = *start;
		event->ret = ret;
		gadget_submit(ctx, events, event);
	}
	bpf_map_delete_elem(&exec_start, &id);
	return 0;
}

#endif /* GADGET_EXEC_RET */

#endif
