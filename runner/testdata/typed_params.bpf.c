// SPDX-License-Identifier: GPL-2.0
/*
 * Test gadget for parameters typed gadget_signal and gadget_errno
 * (params_test.go): one event per signal sent with target_signal, from the
 * signal/signal_generate tracepoint, with the errno the event carries set
 * from target_errno.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

struct event {
	gadget_pid tpid;
	gadget_signal sig;
	gadget_errno error;
};

const volatile gadget_signal target_signal = 10; /* SIGUSR1 */
GADGET_PARAM(target_signal);

const volatile gadget_errno target_errno = 0;
GADGET_PARAM(target_errno);

GADGET_TRACER_MAP(events, 256 * 1024);
GADGET_TRACER(typed, events, event);

SEC("tracepoint/signal/signal_generate")
int trace_signal_generate(struct trace_event_raw_signal_generate *ctx)
{
	struct event *event;

	if ((__u32)ctx->sig != target_signal)
		return 0;
	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;
	event->tpid = ctx->pid;
	event->sig = ctx->sig;
	event->error = target_errno;
	gadget_submit(ctx, events, event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
