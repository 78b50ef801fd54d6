// SPDX-License-Identifier: GPL-2.0
/*
 * trace_fentry_exec: one event per execve() that reaches bprm_execve(), from
 * fentry and fexit programs (BPF trampolines, no kprobe): the same hook and
 * event as trace_kprobe_exec. bprm_execve() is in the BTF of Debian 6.1
 * (amd64, arm64) and is not inlined. fentry/fexit need the kernel's BTF and
 * ftrace direct calls (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS: x86_64; arm64
 * only from Linux 6.4), and a kernel whose ftrace may hook kernel functions (not in
 * confidentiality lockdown; some hardened kernels refuse it). fentry takes the event
 * before the new program is loaded (comm is still the caller's); fexit adds
 * the return value and sends it.
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

GADGET_TRACER(fentry_exec, events, event);

SEC("fentry/bprm_execve")
int BPF_PROG(trace_fentry_exec, struct linux_binprm *bprm)
{
	return exec_enter(BPF_CORE_READ(bprm, filename));
}

/* fexit's return value follows the arguments, whose number differs between
 * kernels (four in Debian's 6.1): bpf_get_func_ret (5.17+) finds it anyway. */
SEC("fexit/bprm_execve")
int BPF_PROG(trace_fexit_exec)
{
	__u64 ret = 0;

	bpf_get_func_ret(ctx, &ret);
	return exec_return(ctx, (int)ret);
}

char LICENSE[] SEC("license") = "GPL";
