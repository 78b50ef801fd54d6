// SPDX-License-Identifier: GPL-2.0
/*
 * trace_exec_nocore: one event per successful execve(), from
 * sched_process_exec, without CO-RE. It reads only the tracepoint's record,
 * whose layout is declared below, and BPF helpers, so it has no CO-RE
 * relocations and runs on kernels without BTF. Without task_struct there is
 * no ppid.
 */
#include <gadget/nocore.h>
#include <bpf/bpf_helpers.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

#define FILENAME_LEN 256

/*
 * The tracepoint's record, as /sys/kernel/tracing/events/sched/
 * sched_process_exec/format describes it: the common header, then the
 * fields. Every field is 32 bits or less, so the layout is the same on 32-
 * and 64-bit kernels.
 */
struct sched_process_exec_record {
	__u16 common_type;
	__u8 common_flags;
	__u8 common_preempt_count;
	__s32 common_pid;
	/* __data_loc char[] filename: the string's offset from the record's
	 * start in the low 16 bits, its length (with the NUL) in the high 16. */
	__u32 filename_loc;
	__s32 pid; /* after exec, the thread group's ID */
	__s32 old_pid;
};

struct event {
	gadget_timestamp timestamp;
	gadget_pid pid;
	gadget_uid uid;
	gadget_gid gid;
	gadget_comm comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN];
};

GADGET_TRACER_MAP(events, 256 * 1024);
GADGET_TRACER(exec, events, event);

SEC("tracepoint/sched/sched_process_exec")
int trace_sched_process_exec(struct sched_process_exec_record *ctx)
{
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct event *event;

	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;

	event->timestamp = bpf_ktime_get_boot_ns();
	event->pid = ctx->pid;
	event->uid = (__u32)uid_gid;
	event->gid = uid_gid >> 32;
	/* comm is already the new program's: exec sets it before this tracepoint. */
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	bpf_probe_read_kernel_str(event->filename, sizeof(event->filename),
				  (void *)ctx + (ctx->filename_loc & 0xFFFF));

	gadget_submit(ctx, events, event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
