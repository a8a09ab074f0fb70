// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * DNS: every query a process sends and every response it receives, over
 * UDP (and TCP, best effort) to or from remote port 53, copied from the
 * packets at the cgroup v2 root so every container is covered.
 *
 * Packets carry no task: an ingress packet is handled in softirq context,
 * and even egress may run on another task's time. So the process identity
 * is taken where it is certain, at connect() and sendto() to port 53 (the
 * cgroup/connect and cgroup/sendmsg hooks run in the caller's context), and
 * kept in the socket's own storage; the packet programs read it from the
 * packet's socket. The storage dies with the socket, so nothing is evicted
 * and closing a socket costs no program run.
 *
 * Only the client side is reported: egress to remote port 53 (a query) and
 * ingress from remote port 53 (its response). A local resolver's side of
 * the same exchange (ingress to, egress from local port 53) is skipped, so
 * one exchange over loopback is reported once per direction.
 *
 * Every program returns 1: DNS observation never blocks traffic.
 *
 * EV_DNS  header: the owner's identity, from its last connect or sendto to
 *                 port 53; pid 0 and the socket's cgroup when unknown
 *         args: 0 direction (0 sent, 1 received), 1 address family
 *               (AF_INET, AF_INET6), 2 IP protocol (17 UDP, 6 TCP),
 *               3 local port, 4 remote port, 5 payload bytes in the packet,
 *               6 socket cookie, 7 owner known (1) or not (0)
 *         strs: 0 local address (16) + remote address (16), IPv4 in the
 *                 first 4 bytes of each
 *               1 the L4 payload, at most DNS_PAYLOAD_MAX bytes (F_TRUNCATED
 *                 when cut); for TCP the segment as sent, length prefix
 *                 included when the segment starts a message. TCP segments
 *                 of two bytes or less (a lone length prefix) are skipped.
 *
 * DNS_PAYLOAD_MAX must be a power of two (the copy length is masked).
 */
#include "mamori.h"
#include <bpf/bpf_endian.h>

#define DNS_PORT 53
#define DNS_PAYLOAD_MAX 512
#define AF_INET_ 2
#define AF_INET6_ 10
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

/* owner is what the packet programs learn about a socket's process. */
struct owner {
	struct event_hdr hdr;
	__u32 self; /* the agent's own socket: not reported */
	__u32 pad;
};

struct {
	/* socket-local: freed with its socket, never evicted, no close hook */
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct owner);
} dns_owners SEC(".maps");

/* One fixed-size record: the string table laid out as a struct, so the
 * ring buffer slot is filled in place (no per-CPU scratch, which a softirq
 * packet could otherwise overwrite under a tracepoint program). */
struct dns_record {
	struct event_hdr hdr;
	__u16 addr_len;
	__u8 addrs[32];
	__u16 payload_len;
	__u8 payload[DNS_PAYLOAD_MAX];
};

/* config_on returns the sensor's configuration, or NULL when paused. */
static __always_inline struct config *config_on(void)
{
	__u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config_map, &zero);
	return c && c->enabled ? c : 0;
}

/* dns_port reports whether DNS is read on port (53 unless configured). */
static __always_inline int dns_port(struct config *c, __u16 port)
{
	if (!c->dns_ports[0])
		return port == DNS_PORT;
	return port && (port == c->dns_ports[0] || port == c->dns_ports[1] || port == c->dns_ports[2] ||
			port == c->dns_ports[3]);
}

/* remember_owner records the calling process as the socket's owner when
 * the destination is a DNS server. */
static __always_inline int remember_owner(struct bpf_sock_addr *ctx)
{
	struct config *c = config_on();
	if (!c || !dns_port(c, bpf_ntohs(ctx->user_port)))
		return 1;
	struct owner o = {};
	fill_hdr(&o.hdr, EV_DNS);
	/* fill_hdr's ns_pid is the calling thread's; the process is wanted */
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	o.hdr.ns_pid = ns_pid_of(BPF_CORE_READ(t, group_leader));
	o.self = !should_trace();
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct owner *st = bpf_sk_storage_get(&dns_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (st)
		__builtin_memcpy(st, &o, sizeof(o));
	return 1;
}

SEC("cgroup/connect4")
int dns_connect4(struct bpf_sock_addr *ctx) { return remember_owner(ctx); }

SEC("cgroup/connect6")
int dns_connect6(struct bpf_sock_addr *ctx) { return remember_owner(ctx); }

SEC("cgroup/sendmsg4")
int dns_sendmsg4(struct bpf_sock_addr *ctx) { return remember_owner(ctx); }

SEC("cgroup/sendmsg6")
int dns_sendmsg6(struct bpf_sock_addr *ctx) { return remember_owner(ctx); }

/* handle reports one packet when it is client-side DNS. */
static __always_inline int handle(struct __sk_buff *skb, __u32 ingress)
{
	struct config *c = config_on();
	if (!c)
		return 1;
	/* Most packets belong to connected sockets, whose remote port is known
	 * without reading the packet: skip them unless it is a DNS port.
	 * Kernels differ in which half of remote_port holds the port, so both
	 * are tried (a false match only costs the full check below).
	 * Unconnected sockets and listeners read 0 and take the full check. */
	__u32 rp = skb->remote_port;
	if (rp && !dns_port(c, bpf_ntohs((__u16)rp)) && !dns_port(c, bpf_ntohs((__u16)(rp >> 16))))
		return 1;
	__u8 local[16] = {}, remote[16] = {};
	__u32 l4off, family;
	__u8 proto;
	if (skb->protocol == bpf_htons(ETH_P_IP_)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 1;
		/* a later fragment has no L4 header */
		if (ip.frag_off & bpf_htons(0x1fff))
			return 1;
		proto = ip.protocol;
		l4off = ip.ihl * 4;
		family = AF_INET_;
		__builtin_memcpy(ingress ? local : remote, &ip.daddr, 4);
		__builtin_memcpy(ingress ? remote : local, &ip.saddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 1;
		/* extension headers are not walked: UDP or TCP must come first */
		proto = ip6.nexthdr;
		l4off = sizeof(ip6);
		family = AF_INET6_;
		__builtin_memcpy(ingress ? local : remote, &ip6.daddr, 16);
		__builtin_memcpy(ingress ? remote : local, &ip6.saddr, 16);
	} else {
		return 1;
	}
	if (proto != IPPROTO_UDP_ && proto != IPPROTO_TCP_)
		return 1;
	__be16 ports[2];
	if (bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)))
		return 1;
	__u16 sport = bpf_ntohs(ports[0]), dport = bpf_ntohs(ports[1]);
	__u16 rport = ingress ? sport : dport;
	__u16 lport = ingress ? dport : sport;
	if (!dns_port(c, rport))
		return 1;
	__u32 poff = l4off + 8;
	if (proto == IPPROTO_TCP_) {
		__u8 doff;
		if (bpf_skb_load_bytes(skb, l4off + 12, &doff, 1))
			return 1;
		poff = l4off + (doff >> 4) * 4;
	}
	if (skb->len <= poff)
		return 1; /* no payload: a TCP handshake or ACK */
	__u32 plen = skb->len - poff;
	if (proto == IPPROTO_TCP_ && plen <= 2)
		return 1; /* a TCP length prefix sent on its own: nothing to read */

	__u64 cookie = bpf_get_socket_cookie(skb);
	struct owner *o = 0;
	struct bpf_sock *sk = skb->sk;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (sk)
		o = bpf_sk_storage_get(&dns_owners, sk, 0, 0);
	if (o && o->self)
		return 1;

	struct dns_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count(&drops, EV_DNS);
		return 1;
	}
	if (o) {
		__builtin_memcpy(&r->hdr, &o->hdr, sizeof(r->hdr));
	} else {
		__builtin_memset(&r->hdr, 0, sizeof(r->hdr));
		r->hdr.cgroup_id = bpf_skb_cgroup_id(skb);
	}
	r->hdr.ts_ns = bpf_ktime_get_boot_ns();
	r->hdr.kind = EV_DNS;
	r->hdr.flags = 0;
	r->hdr.ret = 0;
	r->hdr.nstr = 2;
	r->hdr.str_rev = 0;
	r->hdr.args[0] = ingress;
	r->hdr.args[1] = family;
	r->hdr.args[2] = proto;
	r->hdr.args[3] = lport;
	r->hdr.args[4] = rport;
	r->hdr.args[5] = plen;
	r->hdr.args[6] = cookie;
	r->hdr.args[7] = o ? 1 : 0;
	r->addr_len = 32;
	__builtin_memcpy(r->addrs, local, 16);
	__builtin_memcpy(r->addrs + 16, remote, 16);

	__u32 n = plen;
	if (n > DNS_PAYLOAD_MAX) {
		n = DNS_PAYLOAD_MAX;
		r->hdr.flags |= F_TRUNCATED;
	}
	/* (n-1) & mask + 1 keeps n in 1..DNS_PAYLOAD_MAX in a form the
	 * verifier can follow; the barrier stops clang from undoing it. */
	asm volatile("" : "+r"(n));
	n = ((n - 1) & (DNS_PAYLOAD_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, poff, r->payload, n))
		n = 0;
	r->payload_len = n;
	bpf_ringbuf_submit(r, wakeup_flag());
	count(&emitted, EV_DNS);
	return 1;
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb) { return handle(skb, 0); }

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb) { return handle(skb, 1); }
