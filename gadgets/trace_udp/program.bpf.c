// SPDX-License-Identifier: GPL-2.0
/*
 * trace_udp: one event per UDP datagram over IPv4 or IPv6 that the runner's
 * network namespace sends or receives, on any interface.
 *
 * A socket filter: the runner attaches it to an AF_PACKET socket bound to
 * every protocol, so the kernel runs it on each packet of the namespace,
 * outgoing ones included. It always returns 0, so the socket itself never
 * queues a packet; events go through the ring buffer.
 *
 * Headers are read relative to the network header the kernel recorded, and
 * skb->protocol (the EtherType) says which IP version it is, so the same
 * code works on Ethernet, on loopback and on interfaces without a link-layer
 * header (tun, WireGuard). IPv6 extension headers and IPv4 fragments after
 * the first are not followed: such datagrams are not reported.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <gadget/buffer.h>
#include <gadget/macros.h>
#include <gadget/types.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

/*
 * skb->pkt_type, the PACKET_* values of linux/if_packet.h. Lower case
 * because the runner prints an enum field as its enumerator's name.
 */
enum trace_udp_pkt_type {
	host = 0,      /* addressed to this host */
	broadcast = 1, /* link-layer broadcast */
	multicast = 2, /* link-layer multicast */
	otherhost = 3, /* to another host, seen in promiscuous mode */
	outgoing = 4,  /* sent by this host */
};

struct event {
	gadget_timestamp timestamp;
	struct gadget_l4endpoint src;
	struct gadget_l4endpoint dst;
	__u32 len; /* payload bytes, from the UDP header's length field */
	__u32 ifindex;
	enum trace_udp_pkt_type pkt_type;
};

/* Only report datagrams from or to this port (0 for all). */
const volatile __u16 port = 0;
GADGET_PARAM(port);

GADGET_TRACER_MAP(events, 256 * 1024);
GADGET_TRACER(udp, events, event);

SEC("socket")
int trace_udp(struct __sk_buff *skb)
{
	struct gadget_l4endpoint src = {}, dst = {};
	struct udphdr udp;
	struct event *event;
	__u32 udp_off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes_relative(skb, 0, &ip, sizeof(ip), BPF_HDR_START_NET))
			return 0;
		if (ip.protocol != IPPROTO_UDP || (ip.frag_off & bpf_htons(IP_OFFSET)))
			return 0;
		udp_off = ip.ihl * 4;
		__builtin_memcpy(src.addr, &ip.saddr, 4);
		__builtin_memcpy(dst.addr, &ip.daddr, 4);
		src.version = dst.version = GADGET_IPV4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes_relative(skb, 0, &ip6, sizeof(ip6), BPF_HDR_START_NET))
			return 0;
		if (ip6.nexthdr != IPPROTO_UDP)
			return 0;
		udp_off = sizeof(ip6);
		__builtin_memcpy(src.addr, &ip6.saddr, 16);
		__builtin_memcpy(dst.addr, &ip6.daddr, 16);
		src.version = dst.version = GADGET_IPV6;
	} else {
		return 0;
	}

	if (bpf_skb_load_bytes_relative(skb, udp_off, &udp, sizeof(udp), BPF_HDR_START_NET))
		return 0;
	src.port = bpf_ntohs(udp.source);
	dst.port = bpf_ntohs(udp.dest);
	if (port && src.port != port && dst.port != port)
		return 0;
	src.proto = dst.proto = IPPROTO_UDP;

	event = gadget_reserve(events, struct event);
	if (!event)
		return 0;
	event->timestamp = bpf_ktime_get_boot_ns();
	event->src = src;
	event->dst = dst;
	/* A length below the header's own 8 bytes is malformed: report 0. */
	event->len = bpf_ntohs(udp.len) >= sizeof(udp) ? bpf_ntohs(udp.len) - sizeof(udp) : 0;
	event->ifindex = skb->ifindex;
	event->pkt_type = skb->pkt_type;
	gadget_submit(skb, events, event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
