// SPDX-License-Identifier: GPL-2.0
/*
 * trace_kprobe_exec: one event per execve() that reaches bprm_execve(), from a
 * kprobe and a kretprobe. bprm_execve() is not inlined on Debian 6.1 (amd64,
 * arm64) nor on later kernels, unlike do_execveat_common(); only its first
 * argument is read, whose type has not changed. The kprobe takes the event
 * before the new program is loaded (comm is still the caller's); a kretprobe
 * sees no arguments, so it only adds the return value (0, or the error of a
 * failed exec) and sends it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>
#define GADGET_EXEC_RET
#include <gadget/exec.h>

GADGET_TRACER(kprobe_exec, events, event);

SEC("kprobe/bprm_execve")
int BPF_KPROBE(trace_bprm_execve, struct linux_binprm *bprm)
{
	return exec_enter(BPF_CORE_READ(bprm, filename));
}

SEC("kretprobe/bprm_execve")
int BPF_KRETPROBE(trace_bprm_execve_ret, int ret)
{
	return exec_return(ctx, ret);
}

char LICENSE[] SEC("license") = "GPL";
