/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * For gadgets compiled without vmlinux.h: they have no CO-RE relocations,
 * so they load on kernels without BTF (Debian's armv7 kernel), but may use
 * no kernel struct, only BPF helpers and the tracepoint records they declare
 * themselves. Include first, in place of vmlinux.h, then the libbpf and
 * gadget/ headers as usual.
 *
 * The uapi headers are not used: <linux/types.h> includes <asm/types.h>,
 * which Debian keeps in a multiarch directory (/usr/include/<triplet>) that
 * clang -target bpf does not search. What is declared here is stable kernel
 * ABI, the same on every architecture.
 */
#ifndef BPFLEET_GADGET_NOCORE_H
#define BPFLEET_GADGET_NOCORE_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
/* Used in the prototypes of libbpf's bpf_helper_defs.h. */
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

/* enum bpf_map_type in <linux/bpf.h>. */
#define BPF_MAP_TYPE_RINGBUF 27

/* The size of a task's comm, with its NUL (include/linux/sched.h). */
#define TASK_COMM_LEN 16

#endif /* BPFLEET_GADGET_NOCORE_H */
