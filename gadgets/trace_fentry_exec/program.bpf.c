// SPDX-License-Identifier: GPL-2.0
/*
 * trace_fentry_exec: one event per execve() that reaches bprm_execve(), from an
 * fentry program (a BPF trampoline, no kprobe): the same hook and event as
 * trace_kprobe_exec. bprm_execve() is in the BTF of Debian 6.1 (amd64, arm64)
 * and is not inlined. fentry needs the kernel's BTF and ftrace direct calls
 * (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS: x86_64; arm64 only from Linux 6.4)
 * and is refused in lockdown. The event is taken before the new program is
 * loaded: comm is still the caller's, and failed execs are reported too.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>
#include <gadget/exec.h>

GADGET_TRACER(fentry_exec, events, event);

SEC("fentry/bprm_execve")
int BPF_PROG(trace_fentry_exec, struct linux_binprm *bprm)
{
	return emit_exec_event(ctx, BPF_CORE_READ(bprm, filename));
}

char LICENSE[] SEC("license") = "GPL";
