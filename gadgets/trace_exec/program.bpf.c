// SPDX-License-Identifier: GPL-2.0
/* trace_exec: one event per successful execve(), from sched_process_exec. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

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
GADGET_TRACER(exec, events, event);

SEC("tracepoint/sched/sched_process_exec")
int trace_sched_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 uid_gid = bpf_get_current_uid_gid();
	/* __data_loc: low 16 bits are the offset from ctx, high 16 the length. */
	__u32 filename_off = ctx->__data_loc_filename & 0xFFFF;
	struct event *event;

	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;

	event->timestamp = bpf_ktime_get_boot_ns();
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->ppid = BPF_CORE_READ(task, real_parent, tgid);
	event->uid = (__u32)uid_gid;
	event->gid = uid_gid >> 32;
	/* Already the new program's name: exec sets comm before this tracepoint. */
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	bpf_probe_read_kernel_str(event->filename, sizeof(event->filename),
				  (void *)ctx + filename_off);

	gadget_submit(event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
