/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Include after vmlinux.h, which defines the __u32/__u64 family. */
#ifndef BPFLEET_GADGET_BUFFER_H
#define BPFLEET_GADGET_BUFFER_H

#include <bpf/bpf_helpers.h>

/*
 * GADGET_TRACER_MAP defines a ring buffer of "size" bytes (a power of two,
 * multiple of the page size) and its "<name>_lost_samples" counter, a global
 * in .bss the runner reads to report events dropped because the buffer was
 * full.
 */
#define GADGET_TRACER_MAP(name, size)                                          \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                            \
		__uint(max_entries, size);                                     \
	} name SEC(".maps");                                                   \
	__u64 name##_lost_samples

/*
 * gadget_reserve reserves room for one "type" in ring buffer "map", counting
 * a lost sample when the buffer is full. Submit the result with
 * gadget_submit; NULL means there is nothing to submit.
 */
#define gadget_reserve(map, type)                                              \
	((type *)gadget_reserve_or_count(&map, sizeof(type),                   \
					 &map##_lost_samples))

#define gadget_submit(event) bpf_ringbuf_submit(event, 0)

static __always_inline void *
gadget_reserve_or_count(void *map, __u64 size, __u64 *lost)
{
	void *buf = bpf_ringbuf_reserve(map, size, 0);

	if (!buf)
		__sync_fetch_and_add(lost, 1);
	return buf;
}

#endif /* BPFLEET_GADGET_BUFFER_H */
