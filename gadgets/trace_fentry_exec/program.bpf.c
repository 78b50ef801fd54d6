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
GADGET_TRACER(fentry_exec, events, event);

SEC("fentry/bprm_execve")
int BPF_PROG(trace_fentry_exec, struct linux_binprm *bprm)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 uid_gid = bpf_get_current_uid_gid();
	const char *filename = BPF_CORE_READ(bprm, filename);
	struct event *event;

	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;

	event->timestamp = bpf_ktime_get_boot_ns();
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->ppid = BPF_CORE_READ(task, real_parent, tgid);
	event->uid = (__u32)uid_gid;
	event->gid = uid_gid >> 32;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), filename);

	gadget_submit(event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
