// SPDX-License-Identifier: GPL-2.0
/*
 * trace_open: one event per openat() system call, with the file name, the
 * flags and either the new descriptor or the error, from the
 * syscalls/sys_enter_openat and sys_exit_openat tracepoints.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

#define FNAME_LEN 256
#define PREFIX_LEN 128

struct event {
	gadget_timestamp timestamp;
	gadget_pid pid;
	gadget_tid tid;
	gadget_uid uid;
	gadget_gid gid;
	gadget_comm comm[TASK_COMM_LEN];
	__s32 fd;           /* the new descriptor, -1 if the call failed */
	gadget_errno error; /* why it failed, 0 if it did not */
	__u32 flags;
	__u32 mode;
	char fname[FNAME_LEN];
};

/* Only report files whose path starts with this prefix ("" for all). */
const volatile char prefix[PREFIX_LEN] = "";
GADGET_PARAM(prefix);

/* Only report calls that failed. */
const volatile bool failed_only = false;
GADGET_PARAM(failed_only);

/* Arguments of the openat() calls in flight, by thread ID. */
struct args {
	__u64 fname;
	__u32 flags;
	__u32 mode;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* sized by start_max_entries */
	__type(key, __u32);
	__type(value, struct args);
} start SEC(".maps");

/* How many threads can be inside openat() at once without losing calls. */
GADGET_MAX_ENTRIES(start, 10240);
GADGET_PARAM(start_max_entries);

GADGET_TRACER_MAP(events, 256 * 1024);
/* Ring buffer bytes: more rides out bursts of opens the reader cannot take at once. */
GADGET_MAX_ENTRIES(events, 256 * 1024);
GADGET_PARAM(events_max_entries);
GADGET_TRACER(open, events, event);

SEC("tracepoint/syscalls/sys_enter_openat")
int trace_enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct args args = {
		.fname = ctx->args[1],
		.flags = (__u32)ctx->args[2],
		.mode = (__u32)ctx->args[3],
	};

	bpf_map_update_elem(&start, &tid, &args, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int trace_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	__u64 uid_gid = bpf_get_current_uid_gid();
	long ret = ctx->ret;
	struct event *event;
	struct args *args;

	args = bpf_map_lookup_elem(&start, &tid);
	if (!args)
		return 0;
	if (failed_only && ret >= 0)
		goto cleanup;

	event = gadget_reserve(events, struct event);
	if (!event)
		goto cleanup;

	/* The kernel has read the name by now, so its pages are present. */
	bpf_probe_read_user_str(event->fname, sizeof(event->fname), (void *)args->fname);
	for (int i = 0; i < PREFIX_LEN; i++) {
		if (prefix[i] == '\0')
			break;
		if (event->fname[i] != prefix[i]) {
			gadget_discard(event);
			goto cleanup;
		}
	}

	event->timestamp = bpf_ktime_get_boot_ns();
	event->pid = pid_tgid >> 32;
	event->tid = tid;
	event->uid = (__u32)uid_gid;
	event->gid = uid_gid >> 32;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	event->fd = ret >= 0 ? (__s32)ret : -1;
	event->error = ret < 0 ? (__s32)-ret : 0;
	event->flags = args->flags;
	event->mode = args->mode;
	gadget_submit(ctx, events, event);

cleanup:
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
