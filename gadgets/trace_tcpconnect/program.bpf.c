// SPDX-License-Identifier: GPL-2.0
/*
 * trace_tcpconnect: one event per outgoing TCP connection attempt, from the
 * sock/inet_sock_set_state tracepoint.
 *
 * connect() moves the socket to SYN_SENT in the calling process, but before
 * the kernel picks the source port. So the move to SYN_SENT only records
 * who connects, by socket; the event is sent when the socket leaves
 * SYN_SENT (to ESTABLISHED, or to CLOSE when the attempt failed), by which
 * time both endpoints are known.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

#define AF_INET 2
#define AF_INET6 10

struct event {
	gadget_timestamp timestamp; /* when connect() sent the SYN */
	gadget_pid pid;
	gadget_tid tid;
	gadget_uid uid;
	gadget_gid gid;
	gadget_comm comm[TASK_COMM_LEN];
	struct gadget_l4endpoint src;
	struct gadget_l4endpoint dst;
	bool established; /* false: the attempt failed (refused, timed out, reset) */
};

/* Who connects, by socket address, while the socket is in SYN_SENT. */
struct connector {
	gadget_timestamp timestamp;
	__u64 pid_tgid;
	__u64 uid_gid;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* sized by sockets_max_entries */
	__type(key, __u64);
	__type(value, struct connector);
} sockets SEC(".maps");

/* How many connection attempts can be in flight without losing events. */
GADGET_MAX_ENTRIES(sockets, 8192);
GADGET_PARAM(sockets_max_entries);

/* Only report connections to this destination port (0 for all). */
const volatile __u16 target_port = 0;
GADGET_PARAM(target_port);

GADGET_TRACER_MAP(events, 256 * 1024);
GADGET_TRACER(tcpconnect, events, event);

SEC("tracepoint/sock/inet_sock_set_state")
int trace_inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 sk = (__u64)ctx->skaddr;
	__u16 family = ctx->family;
	struct connector *c;
	struct event *event;

	if (ctx->protocol != IPPROTO_TCP || (family != AF_INET && family != AF_INET6))
		return 0;
	if (target_port && ctx->dport != target_port)
		return 0;

	if (ctx->newstate == TCP_SYN_SENT) {
		struct connector new = {
			.timestamp = bpf_ktime_get_boot_ns(),
			.pid_tgid = bpf_get_current_pid_tgid(),
			.uid_gid = bpf_get_current_uid_gid(),
		};

		bpf_get_current_comm(new.comm, sizeof(new.comm));
		bpf_map_update_elem(&sockets, &sk, &new, BPF_ANY);
		return 0;
	}
	if (ctx->oldstate != TCP_SYN_SENT)
		return 0;

	c = bpf_map_lookup_elem(&sockets, &sk);
	if (!c)
		return 0; /* connect() ran before the gadget started */

	event = gadget_reserve(events, struct event);
	if (!event)
		goto cleanup;

	event->timestamp = c->timestamp;
	event->pid = c->pid_tgid >> 32;
	event->tid = (__u32)c->pid_tgid;
	event->uid = (__u32)c->uid_gid;
	event->gid = c->uid_gid >> 32;
	__builtin_memcpy(event->comm, c->comm, sizeof(event->comm));

	__builtin_memset(&event->src, 0, sizeof(event->src));
	__builtin_memset(&event->dst, 0, sizeof(event->dst));
	/*
	 * The verifier only allows loads at constant offsets from the context,
	 * which a copy of an array may not compile to: read the arrays instead.
	 */
	if (family == AF_INET) {
		bpf_probe_read_kernel(event->src.addr, 4, ctx->saddr);
		bpf_probe_read_kernel(event->dst.addr, 4, ctx->daddr);
		event->src.version = event->dst.version = GADGET_IPV4;
	} else {
		bpf_probe_read_kernel(event->src.addr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(event->dst.addr, 16, ctx->daddr_v6);
		event->src.version = event->dst.version = GADGET_IPV6;
	}
	/* The tracepoint gives the ports in host byte order. */
	event->src.port = ctx->sport;
	event->dst.port = ctx->dport;
	event->src.proto = event->dst.proto = IPPROTO_TCP;
	event->established = ctx->newstate == TCP_ESTABLISHED;
	gadget_submit(ctx, events, event);

cleanup:
	bpf_map_delete_elem(&sockets, &sk);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
