/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
#ifndef BPFLEET_GADGET_MACROS_H
#define BPFLEET_GADGET_MACROS_H

/*
 * GADGET_TRACER declares that events of type "struct event_type" are sent
 * through the ring buffer map "map". Nothing reads these variables at run
 * time: the runner only looks at their BTF. The name of the first one
 * carries the tracer, map and struct names separated by "___". The second
 * one makes clang emit BTF for the event struct, which it otherwise leaves
 * out when the struct is only used by local variables; its name must not
 * start with "gadget_tracer_".
 */
#define GADGET_TRACER(name, map, event_type)                                   \
	const void *gadget_tracer_##name##___##map##___##event_type           \
		__attribute__((unused));                                       \
	const struct event_type *bpfleet_tracer_event_##name                   \
		__attribute__((unused))

/*
 * GADGET_PARAM exposes the "const volatile" global "name" as a parameter
 * the user can set when the gadget starts (bpfleet run --param name=value).
 * Its initial value is the default. Integers, _Bool and char arrays
 * (strings) are supported.
 */
#define GADGET_PARAM(name)                                                     \
	const void *gadget_param_##name __attribute__((unused))

/*
 * GADGET_MAX_ENTRIES declares "const volatile __u32 <map>_max_entries",
 * which the runner uses as the max_entries of map "map" when it is not 0.
 * Combine with GADGET_PARAM(<map>_max_entries) to let users size the map.
 */
#define GADGET_MAX_ENTRIES(map, value)                                         \
	const volatile __u32 map##_max_entries = (value)

/*
 * GADGET_MAPITER declares that the hash map "map" holds rows the runner
 * fetches periodically (bpfleet run --interval, default 1s): every entry is
 * printed as its key struct's fields followed by its value struct's fields,
 * then deleted, so each round shows what happened since the one before.
 * Key and value must be structs, declared with __type() in the map.
 */
#define GADGET_MAPITER(name, map)                                              \
	const void *gadget_mapiter_##name##___##map __attribute__((unused))

/*
 * GADGET_SNAPSHOTTER declares that the iterator programs prog1 (up to three
 * of them, all SEC("iter/...")) write records of "struct type" with
 * bpf_seq_write(), one whole struct per call. The runner attaches each as a
 * BPF iterator, reads its output once, splits it into structs and prints
 * them: the snapshot is the records of all the programs, in the order
 * listed. The second variable keeps the struct in BTF, as for
 * GADGET_TRACER.
 */
#define GADGET_SNAPSHOTTER(name, type, ...)                                    \
	const struct type *unusedevent_##name##___##type                       \
		__attribute__((unused));                                       \
	__GADGET_SNAPSHOTTER_N(__VA_ARGS__, 3, 2, 1, 0)(name, type, __VA_ARGS__)

/* Helpers of GADGET_SNAPSHOTTER: pick the variant for the number of programs. */
#define __GADGET_SNAPSHOTTER_N(p1, p2, p3, n, ...) __GADGET_SNAPSHOTTER_##n
#define __GADGET_SNAPSHOTTER_1(name, type, p1)                                 \
	const void *gadget_snapshotter_##name##___##type##___##p1               \
		__attribute__((unused))
#define __GADGET_SNAPSHOTTER_2(name, type, p1, p2)                             \
	const void *gadget_snapshotter_##name##___##type##___##p1##___##p2      \
		__attribute__((unused))
#define __GADGET_SNAPSHOTTER_3(name, type, p1, p2, p3)                         \
	const void                                                             \
		*gadget_snapshotter_##name##___##type##___##p1##___##p2##___##p3 \
			__attribute__((unused))

#endif /* BPFLEET_GADGET_MACROS_H */
