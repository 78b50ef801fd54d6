/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Typedefs that mark event fields with a meaning. The BTF of an event struct
 * keeps these names, so a runner can treat a field specially (for example,
 * turn a gadget_timestamp into wall-clock time) without knowing the gadget.
 */
/* Include after vmlinux.h or gadget/nocore.h, which define the __u32/__u64 family. */
#ifndef BPFLEET_GADGET_TYPES_H
#define BPFLEET_GADGET_TYPES_H

/* Nanoseconds since boot, as returned by bpf_ktime_get_boot_ns(). */
typedef __u64 gadget_timestamp;

typedef __u32 gadget_pid;
typedef __u32 gadget_ppid;
typedef __u32 gadget_tid;
typedef __u32 gadget_uid;
typedef __u32 gadget_gid;
typedef __u64 gadget_mntns_id;

/*
 * An error number, printed by name (ENOENT). 0 means no error. A negative
 * value, as system calls return it, is read as its absolute value.
 */
typedef __s32 gadget_errno;

/* A signal number, printed by name (SIGUSR1). */
typedef __u32 gadget_signal;

/*
 * A system call number, printed by its name on the runner's architecture
 * (execve), or as the number when it has none. __u64 as in Inspektor Gadget;
 * any integer type works.
 */
typedef __u64 gadget_syscall;

/*
 * Element types of command-name arrays, used as
 * "gadget_comm comm[TASK_COMM_LEN];" so the array keeps its length in C.
 */
typedef char gadget_comm;
typedef char gadget_pcomm;

/* IP versions of the endpoint structs below. */
#define GADGET_IPV4 4
#define GADGET_IPV6 6

/*
 * An IP address, printed as text (127.0.0.1, ::1). An IPv4 address fills the
 * first 4 bytes of addr, in network byte order like the kernel keeps it.
 */
struct gadget_l3endpoint {
	__u8 addr[16];
	__u8 version; /* GADGET_IPV4 or GADGET_IPV6 */
	__u8 pad[3];
};

/*
 * An IP address and a transport port, printed as 127.0.0.1:8080 or
 * [::1]:8080. The port is in host byte order.
 */
struct gadget_l4endpoint {
	__u8 addr[16];
	__u16 port;
	__u8 version; /* GADGET_IPV4 or GADGET_IPV6 */
	__u8 proto;   /* IPPROTO_TCP, IPPROTO_UDP, or 0 if unknown */
};

#endif /* BPFLEET_GADGET_TYPES_H */
