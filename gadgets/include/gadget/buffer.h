/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Include after vmlinux.h or gadget/nocore.h, which define the __u32/__u64 family. */
#ifndef BPFLEET_GADGET_BUFFER_H
#define BPFLEET_GADGET_BUFFER_H

#include <bpf/bpf_helpers.h>

/*
 * GADGET_TRACER_MAP defines a ring buffer of "size" bytes (a power of two,
 * multiple of the page size) and its "<name>_lost_samples" counter, a global
 * in .bss the runner reads to report events the gadget dropped.
 *
 * Kernels before 5.8 have no ring buffers. There, as in Inspektor Gadget,
 * the runner turns the map into a perf event array before loading, and the
 * gadget builds each event in gadget_heap and sends it with
 * bpf_perf_event_output. Which of the two happens is decided at load time
 * by CO-RE, from the kernel's BTF or the image's btfgen BTF: see
 * gadget_has_ringbuf.
 *
 * Use the helpers below, never the bpf_ringbuf_* ones directly:
 *
 *	event = gadget_reserve(events, struct event);
 *	if (!event)
 *		return 0;
 *	... fill in event, or gadget_discard(event) and return ...
 *	gadget_submit(ctx, events, event);
 */
#define GADGET_TRACER_MAP(name, size)                                          \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                            \
		__uint(max_entries, size);                                     \
	} name SEC(".maps");                                                   \
	__u64 name##_lost_samples

#ifdef BPFLEET_GADGET_NOCORE_H

/*
 * A gadget built without vmlinux.h has no CO-RE, so it cannot ask the kernel
 * whether it has ring buffers: it always uses one.
 */
#define gadget_has_ringbuf() 1
#define gadget_check_size(type) _Static_assert(1, "")
#define gadget_heap_lookup() ((void *)0)
#define gadget_perf_output(ctx, map, event, size) (-1)

#else /* CO-RE */

#include <bpf/bpf_core_read.h>

/* The largest event gadget_reserve can build in gadget_heap. */
#ifndef GADGET_MAX_EVENT_SIZE
#define GADGET_MAX_EVENT_SIZE 10240
#endif

/* Per-CPU room for the event being built when there are no ring buffers. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(value_size, GADGET_MAX_EVENT_SIZE);
} gadget_heap SEC(".maps");

/*
 * gadget_has_ringbuf is 1 when the kernel has BPF ring buffers. CO-RE turns it
 * into a constant at load time and the verifier never looks at the branch not
 * taken, so the same program loads with either kind of map. The runner makes
 * exactly this check (this enum value, in the same BTF) to choose the map's
 * type: keep them in step.
 */
#define gadget_has_ringbuf()                                                   \
	bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ringbuf_reserve)

static __always_inline void *gadget_heap_lookup(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&gadget_heap, &zero);
}

#define gadget_check_size(type)                                                \
	_Static_assert(sizeof(type) <= GADGET_MAX_EVENT_SIZE,                  \
		       "event larger than GADGET_MAX_EVENT_SIZE")

#define gadget_perf_output(ctx, map, event, size)                              \
	bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, event, size)

#endif /* BPFLEET_GADGET_NOCORE_H */

/* ENOSPC, which vmlinux.h does not define. */
#define GADGET_ENOSPC 28

/*
 * gadget_reserve reserves room for one "type" in tracer map "map", counting
 * a lost sample when there is none (the ring buffer is full). Submit the
 * result with gadget_submit or drop it with gadget_discard; NULL means there
 * is nothing to submit.
 */
#define gadget_reserve(map, type)                                              \
	({                                                                     \
		gadget_check_size(type);                                       \
		(type *)gadget_reserve_or_count(&map, sizeof(type),            \
						&map##_lost_samples);          \
	})

/*
 * gadget_submit sends "event" through tracer map "map"; ctx is the program's
 * context, which bpf_perf_event_output needs. Events a full perf buffer drops
 * are counted by the kernel and reported to the runner's reader, so only
 * other failures are counted in <map>_lost_samples.
 */
#define gadget_submit(ctx, map, event)                                         \
	gadget_submit_or_count(ctx, &map, event, sizeof(*(event)),             \
			       &map##_lost_samples)

/* gadget_discard drops a reserved event without sending it. */
static __always_inline void gadget_discard(void *event)
{
	if (gadget_has_ringbuf())
		bpf_ringbuf_discard(event, 0);
}

static __always_inline void *
gadget_reserve_or_count(void *map, __u64 size, __u64 *lost)
{
	void *buf;

	if (gadget_has_ringbuf())
		buf = bpf_ringbuf_reserve(map, size, 0);
	else
		buf = gadget_heap_lookup();
	if (!buf)
		__sync_fetch_and_add(lost, 1);
	return buf;
}

static __always_inline void gadget_submit_or_count(void *ctx, void *map,
						   void *event, __u64 size,
						   __u64 *lost)
{
	long err;

	if (gadget_has_ringbuf()) {
		bpf_ringbuf_submit(event, 0);
		return;
	}
	err = gadget_perf_output(ctx, map, event, size);
	if (err && err != -GADGET_ENOSPC)
		__sync_fetch_and_add(lost, 1);
}

#endif /* BPFLEET_GADGET_BUFFER_H */
