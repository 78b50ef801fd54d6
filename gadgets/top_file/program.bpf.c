// SPDX-License-Identifier: GPL-2.0
/*
 * top_file: reads and writes per thread and file, fetched and cleared by the
 * runner every interval. It counts the read(), pread64(), readv(), write(),
 * pwrite64() and writev() calls that succeeded, and the bytes they
 * transferred, from the syscalls/sys_enter_* and sys_exit_* tracepoints
 * (which, unlike kprobes on vfs_read/vfs_write, every kernel with
 * tracepoints has). Other ways of moving data (sendfile, splice, mmap,
 * io_uring) are not counted.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include <gadget/macros.h>
#include <gadget/types.h>

#define NAME_LEN 256 /* NAME_MAX + 1 */

/* Mode bits of an inode (include/uapi/linux/stat.h). */
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFREG 0100000

enum file_type {
	REGULAR,
	SOCKET,
	OTHER, /* pipes, terminals, devices, ... */
};

/* One row: a thread and one of its files. Ordered so there is no padding. */
struct file_key {
	gadget_pid pid;
	gadget_tid tid;
	gadget_comm comm[TASK_COMM_LEN];
	char file[NAME_LEN]; /* the file's name: the last component of its path */
	enum file_type type;
	__u32 dev;   /* device of its file system, as stat() reports st_dev */
	__u64 inode; /* inode number, as stat() reports st_ino */
};

struct file_stats {
	__u64 reads;  /* successful read calls (the runner sorts rows by this) */
	__u64 writes; /* successful write calls */
	__u64 rbytes; /* bytes read */
	__u64 wbytes; /* bytes written */
};

/* Only count calls made by this process (thread group ID); 0 for all. */
const volatile __u32 target_pid = 0;
GADGET_PARAM(target_pid);

/* Count every kind of file, not only regular files. */
const volatile bool all_files = false;
GADGET_PARAM(all_files);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* sized by stats_max_entries */
	__type(key, struct file_key);
	__type(value, struct file_stats);
} stats SEC(".maps");

/* How many thread and file pairs one interval can show. */
GADGET_MAX_ENTRIES(stats, 10240);
GADGET_PARAM(stats_max_entries);

GADGET_MAPITER(file, stats);

/* A call in flight, by thread ID: which descriptor, and whether it writes. */
struct call {
	__u32 fd;
	__u32 write;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct call);
} calls SEC(".maps");

static __always_inline int on_enter(struct trace_event_raw_sys_enter *ctx, __u32 write)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct call call = {
		.fd = (__u32)ctx->args[0],
		.write = write,
	};

	if (target_pid && target_pid != pid_tgid >> 32)
		return 0;
	bpf_map_update_elem(&calls, &tid, &call, BPF_ANY);
	return 0;
}

/* fd_file returns the current task's open file fd, NULL if there is none. */
static __always_inline struct file *fd_file(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

static __always_inline int on_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	long ret = ctx->ret;
	struct file_stats zero = {}, *value;
	struct file_key key;
	struct call *call;
	struct inode *inode;
	struct file *file;
	const unsigned char *name;
	__u32 mode, dev, write;

	call = bpf_map_lookup_elem(&calls, &tid);
	if (!call)
		return 0;
	file = ret >= 0 ? fd_file(call->fd) : NULL;
	write = call->write;
	bpf_map_delete_elem(&calls, &tid);
	if (!file)
		return 0;

	inode = BPF_CORE_READ(file, f_inode);
	mode = BPF_CORE_READ(inode, i_mode) & S_IFMT;
	if (!all_files && mode != S_IFREG)
		return 0;

	/* The whole key is hashed, unused bytes of the name included. */
	__builtin_memset(&key, 0, sizeof(key));
	key.pid = pid_tgid >> 32;
	key.tid = tid;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	name = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	bpf_probe_read_kernel_str(key.file, sizeof(key.file), name);
	key.type = mode == S_IFREG ? REGULAR : mode == S_IFSOCK ? SOCKET : OTHER;
	/* The kernel's dev_t (major << 20 | minor) in the encoding stat() returns. */
	dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key.dev = (dev & 0xff) | ((dev >> 20) << 8) | ((dev & 0xfff00) << 12);
	key.inode = BPF_CORE_READ(inode, i_ino);

	value = bpf_map_lookup_elem(&stats, &key);
	if (!value) {
		/* Fails when the map is full: the call goes uncounted. */
		bpf_map_update_elem(&stats, &key, &zero, BPF_NOEXIST);
		value = bpf_map_lookup_elem(&stats, &key);
		if (!value)
			return 0;
	}
	if (write) {
		__sync_fetch_and_add(&value->writes, 1);
		__sync_fetch_and_add(&value->wbytes, ret);
	} else {
		__sync_fetch_and_add(&value->reads, 1);
		__sync_fetch_and_add(&value->rbytes, ret);
	}
	return 0;
}

#define FILE_CALL(syscall, write)                                               \
	SEC("tracepoint/syscalls/sys_enter_" #syscall)                         \
	int enter_##syscall(struct trace_event_raw_sys_enter *ctx)             \
	{                                                                      \
		return on_enter(ctx, write);                                   \
	}                                                                      \
	SEC("tracepoint/syscalls/sys_exit_" #syscall)                          \
	int exit_##syscall(struct trace_event_raw_sys_exit *ctx)               \
	{                                                                      \
		return on_exit(ctx);                                           \
	}

FILE_CALL(read, 0)
FILE_CALL(pread64, 0)
FILE_CALL(readv, 0)
FILE_CALL(write, 1)
FILE_CALL(pwrite64, 1)
FILE_CALL(writev, 1)

char LICENSE[] SEC("license") = "GPL";
