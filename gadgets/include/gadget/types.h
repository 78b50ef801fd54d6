/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Typedefs that mark event fields with a meaning. The BTF of an event struct
 * keeps these names, so a runner can treat a field specially (for example,
 * turn a gadget_timestamp into wall-clock time) without knowing the gadget.
 */
/* Include after vmlinux.h, which defines the __u32/__u64 family. */
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
typedef __s32 gadget_errno;

/*
 * Element types of command-name arrays, used as
 * "gadget_comm comm[TASK_COMM_LEN];" so the array keeps its length in C.
 */
typedef char gadget_comm;
typedef char gadget_pcomm;

#endif /* BPFLEET_GADGET_TYPES_H */
