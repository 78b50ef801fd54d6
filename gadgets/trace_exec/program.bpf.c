// SPDX-License-Identifier: GPL-2.0
/* trace_exec: one event per successful execve(), from sched_process_exec. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>
#include <gadget/exec.h>

GADGET_TRACER(exec, events, event);

SEC("tracepoint/sched/sched_process_exec")
int trace_sched_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	/* __data_loc: low 16 bits are the offset from ctx, high 16 the length.
	 * comm is already the new program's: exec sets it before this tracepoint. */
	return emit_exec_event(ctx, (void *)ctx + (ctx->__data_loc_filename & 0xFFFF));
}

char LICENSE[] SEC("license") = "GPL";
