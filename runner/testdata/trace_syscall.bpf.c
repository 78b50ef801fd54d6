// SPDX-License-Identifier: GPL-2.0
/*
 * Test gadget for gadget_syscall fields (syscalls_test.go): one event per
 * system call that process target_pid enters, with the call's number and
 * its first argument, from the raw_syscalls/sys_enter tracepoint.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

struct event {
	gadget_pid pid;
	gadget_syscall syscall;
	__u64 arg0;
};

const volatile __u32 target_pid = 0;
GADGET_PARAM(target_pid);

GADGET_TRACER_MAP(events, 256 * 1024);
GADGET_TRACER(syscalls, events, event);

SEC("tracepoint/raw_syscalls/sys_enter")
int trace_sys_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct event *event;

	if (pid != target_pid)
		return 0;
	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;
	event->pid = pid;
	event->syscall = ctx->id;
	event->arg0 = ctx->args[0];
	gadget_submit(ctx, events, event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
