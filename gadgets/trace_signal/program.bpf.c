// SPDX-License-Identifier: GPL-2.0
/*
 * trace_signal: one event per signal sent, from the signal/signal_generate
 * tracepoint, which runs in the sending task.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

struct event {
	gadget_timestamp timestamp;
	gadget_pid pid; /* the sender */
	gadget_tid tid;
	gadget_uid uid;
	gadget_comm comm[TASK_COMM_LEN];
	gadget_pid tpid; /* the target */
	gadget_comm tcomm[TASK_COMM_LEN];
	gadget_signal sig;
	__s32 result; /* 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 info lost */
};

/* Only report this signal (0 for all). */
const volatile gadget_signal target_signal = 0;
GADGET_PARAM(target_signal);

GADGET_TRACER_MAP(events, 256 * 1024);
GADGET_TRACER(signal, events, event);

SEC("tracepoint/signal/signal_generate")
int trace_signal_generate(struct trace_event_raw_signal_generate *ctx)
{
	__u64 pid_tgid;
	struct event *event;
	__u32 sig = (__u32)ctx->sig;

	if (target_signal && sig != target_signal)
		return 0;

	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;

	pid_tgid = bpf_get_current_pid_tgid();
	event->timestamp = bpf_ktime_get_boot_ns();
	event->pid = pid_tgid >> 32;
	event->tid = (__u32)pid_tgid;
	event->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	event->tpid = ctx->pid;
	/* Not a plain copy: the verifier wants constant offsets into ctx. */
	bpf_probe_read_kernel(event->tcomm, sizeof(event->tcomm), ctx->comm);
	event->sig = sig;
	event->result = ctx->result;

	gadget_submit(ctx, events, event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
