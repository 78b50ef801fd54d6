/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The event the exec gadgets share (trace_exec, trace_kprobe_exec,
 * trace_fentry_exec), its ring buffer, and how they fill it: they differ only
 * in the hook and in where the hook finds the file name. Include after
 * vmlinux.h, the libbpf headers and gadget/{buffer,macros,types}.h.
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
};

GADGET_TRACER_MAP(events, 256 * 1024);

/* emit_exec_event submits one event for the current task; ctx is the
 * program's context and filename a kernel pointer to the NUL-terminated
 * path being executed. */
static __always_inline int emit_exec_event(void *ctx, const void *filename)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct event *event;

	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;

	event->timestamp = bpf_ktime_get_boot_ns();
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->ppid = BPF_CORE_READ(task, real_parent, tgid);
	event->uid = (__u32)uid_gid;
	event->gid = uid_gid >> 32;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), filename);

	gadget_submit(ctx, events, event);
	return 0;
}

#endif
