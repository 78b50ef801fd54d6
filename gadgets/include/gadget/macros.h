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

#endif /* BPFLEET_GADGET_MACROS_H */
