// SPDX-License-Identifier: GPL-2.0
/*
 * snapshot_process: the processes running when the gadget starts, one record
 * per process (thread group leader), or per thread with show_threads, from
 * a BPF task iterator. The runner reads the iterator once and exits.
 *
 * Iterators are BPF tracing programs: they need a kernel with
 * BPF_PROG_TYPE_TRACING (5.8 or later, built with BTF), such as Debian 12's.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include <gadget/macros.h>
#include <gadget/types.h>

struct process {
	gadget_pid pid;   /* thread group ID */
	gadget_tid tid;   /* thread ID; equal to pid for a process's record */
	gadget_ppid ppid; /* the parent's thread group ID, as getppid() returns */
	gadget_uid uid;   /* real user ID */
	gadget_gid gid;   /* real group ID */
	gadget_comm comm[TASK_COMM_LEN];
};

/* One record per thread instead of one per process. */
const volatile bool show_threads = false;
GADGET_PARAM(show_threads);

GADGET_SNAPSHOTTER(processes, process, snapshot_tasks);

SEC("iter/task")
int snapshot_tasks(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct process p = {};

	/* The iterator calls once more with no task when it is done. */
	if (!task)
		return 0;
	p.pid = BPF_CORE_READ(task, tgid);
	p.tid = BPF_CORE_READ(task, pid);
	if (!show_threads && p.pid != p.tid)
		return 0;
	p.ppid = BPF_CORE_READ(task, real_parent, tgid);
	p.uid = BPF_CORE_READ(task, cred, uid.val);
	p.gid = BPF_CORE_READ(task, cred, gid.val);
	BPF_CORE_READ_INTO(&p.comm, task, comm);

	bpf_seq_write(seq, &p, sizeof(p));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
