// SPDX-License-Identifier: GPL-2.0
/*
 * Test gadget for the attach kinds that only a running kernel can check
 * (attach_test.go): one program per section type, each sending an event
 * that names it. The two exec programs report only children of target_pid
 * (the test), which execs the uprobe target; the uprobe and uretprobe
 * programs fire only in that binary, whose path the test puts in place of
 * UPROBE_TARGET_PATH_PLACEHOLDER in the ELF (same length, see rename).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

struct event {
	gadget_pid pid;
	gadget_comm comm[TASK_COMM_LEN];
	char prog[12];	    /* the program that sent it: its section's type */
	__u64 value;	    /* exec: old_pid; uprobe: the argument; uretprobe: the return value */
	char filename[256]; /* exec only */
};

const volatile __u32 target_pid = 0;
GADGET_PARAM(target_pid);

GADGET_TRACER_MAP(events, 256 * 1024);
GADGET_TRACER(attach_kinds, events, event);

/* UPROBE_TARGET is the probed function, in the binary the test execs. */
#define UPROBE_TARGET                                                              \
	"/UPROBE_TARGET_PATH_PLACEHOLDER_PADDED_TO_LEAVE_ROOM_FOR_A_TEMPORARY_DIRECTORY_0123456789" \
	":bpfleet_probe_target"

/* send sends an event from program prog; filename (exec only) may be NULL. */
static __always_inline void send(void *ctx, const char prog[12], __u64 value, const char *filename)
{
	struct event *event = gadget_reserve(events, struct event);

	if (!event)
		return;
	event->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	__builtin_memcpy(event->prog, prog, sizeof(event->prog));
	event->value = value;
	event->filename[0] = 0;
	if (filename)
		bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), filename);
	gadget_submit(ctx, events, event);
}

/* raw_tp: untyped arguments, read with BPF_CORE_READ (bpf_probe_read_kernel). */
SEC("raw_tp/sched_process_exec")
int BPF_PROG(on_raw_tp, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (BPF_CORE_READ(p, real_parent, tgid) == target_pid)
		send(ctx, "raw_tp", old_pid, BPF_CORE_READ(bprm, filename));
	return 0;
}

/* tp_btf: the same tracepoint with BTF-typed arguments, dereferenced directly. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (p->real_parent->tgid == target_pid)
		send(ctx, "tp_btf", old_pid, bprm->filename);
	return 0;
}

SEC("uprobe/" UPROBE_TARGET)
int BPF_KPROBE(on_uprobe, unsigned long arg)
{
	send(ctx, "uprobe", arg, NULL);
	return 0;
}

SEC("uretprobe/" UPROBE_TARGET)
int BPF_KRETPROBE(on_uretprobe, unsigned long ret)
{
	send(ctx, "uretprobe", ret, NULL);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
