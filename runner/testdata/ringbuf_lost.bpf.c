// SPDX-License-Identifier: GPL-2.0
/*
 * Test gadget for the ring buffer's lost-sample counter (perf_test.go):
 * every getpgid(call) of process target_pid sends BURST events numbered
 * seq 0..BURST-1 with that call, except getpgid(0), which sends one (a
 * mark). The ring buffer is sized by events_max_entries, and
 * gadget_reserve counts each event it had no room for in
 * events_lost_samples.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

#define BURST 1000

struct event {
	gadget_pid pid;
	__u32 seq;
	__u64 call;
	gadget_comm comm[TASK_COMM_LEN];
};

const volatile __u32 target_pid = 0;
GADGET_PARAM(target_pid);

GADGET_TRACER_MAP(events, 256 * 1024);
GADGET_MAX_ENTRIES(events, 256 * 1024);
GADGET_PARAM(events_max_entries);
GADGET_TRACER(ringbuf_lost, events, event);

SEC("tracepoint/syscalls/sys_enter_getpgid")
int on_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 call = ctx->args[0];

	if (pid != target_pid)
		return 0;
	for (__u32 seq = 0; seq < (call ? BURST : 1); seq++) {
		struct event *event = gadget_reserve(events, struct event);

		if (!event)
			continue;
		event->pid = pid;
		event->seq = seq;
		event->call = call;
		bpf_get_current_comm(event->comm, sizeof(event->comm));
		gadget_submit(ctx, events, event);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
