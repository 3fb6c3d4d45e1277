/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Kernel events: what the programs decided (connects rewritten, passed or refused, sk_lookup
 * verdicts, closes with byte counts), written to a ring buffer the agent polls. Emitting never
 * waits and never changes a verdict: with no consumer (nm_events_cfg off) it costs one array
 * lookup; with a full ring the event is dropped and counted in nm_events_lost. */
#pragma once

#include <bpf/bpf_core_read.h>

#include "lib/common.h"
#include "redirect.h"

/* The events themselves (struct nm_event records); one consumer, the agent's poller thread.
 * Pinned, so an agent restart or upgrade keeps it (and whatever it still holds). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NM_EVENTS_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_events SEC(".maps");

/* Key 0: struct nm_events_cfg. All zero (off) until a consumer subscribes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nm_events_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_events_cfg SEC(".maps");

/* Key 0: events dropped because the ring was full, only ever incremented (atomic add; only
 * the full-ring path touches it, so it costs nothing while the consumer keeps up). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_events_lost SEC(".maps");

/* Checked first by every emitter, so events cost nothing measurable while nobody listens. */
static __always_inline int nm_events_on(void)
{
	__u32 k = 0;
	struct nm_events_cfg *cfg = bpf_map_lookup_elem(&nm_events_cfg, &k);

	return cfg && cfg->enabled;
}

/* Reserves one event and fills everything but the addresses and cookies (zeroed); NULL when
 * the ring is full, which is counted. The caller submits it. */
static __always_inline struct nm_event *nm_event_new(__u8 kind, __u8 reason, __u8 flags)
{
	struct nm_event *e = bpf_ringbuf_reserve(&nm_events, sizeof(*e), 0);
	__u32 k = 0;
	__u64 *lost;

	if (!e) {
		lost = bpf_map_lookup_elem(&nm_events_lost, &k);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return NULL;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->socket_cookie = 0;
	e->netns_cookie = 0;
	e->bytes_sent = 0;
	e->bytes_received = 0;
	e->src_port = 0;
	e->dst_port = 0;
	e->kind = kind;
	e->reason = reason;
	e->family = 4;
	e->flags = flags;
	return e;
}

/* An IPv4 address (network order) as the event stores it: ::ffff:a.b.c.d. */
static __always_inline void nm_event_ip4(__u32 *w, __u32 ip)
{
	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffffU);
	w[3] = ip;
}

static __always_inline void nm_event_ip6(__u32 *w, __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = w3;
}

/* Submitting wakes the poller only when it has caught up (adaptive wakeup): no syscall. */
static __always_inline void nm_event_submit(struct nm_event *e)
{
	bpf_ringbuf_submit(e, 0);
}

/* connect4, or connect6 of a v4-mapped destination: dst is what the app asked for (ip
 * network order, port host order), src the socket's bound address when it has one. */
static __always_inline void nm_event_connect4(struct bpf_sock_addr *ctx, __u8 kind, __u8 reason,
					      __u8 flags, __u32 ip, __u16 port)
{
	struct bpf_sock *sk = ctx->sk;
	struct nm_event *e;
	__u32 src = 0;

	e = nm_event_new(kind, reason, flags);
	if (!e)
		return;
	e->socket_cookie = bpf_get_socket_cookie(ctx);
	e->netns_cookie = bpf_get_netns_cookie(ctx);
	if (sk) {
		if (sk->family == NM_AF_INET) {
			src = sk->src_ip4;
		} else {
			/* An AF_INET6 socket bound to ::ffff:a.b.c.d; any other binding is shown as 0. */
			__u32 s0 = *(volatile __u32 *)&sk->src_ip6[0];
			__u32 s1 = *(volatile __u32 *)&sk->src_ip6[1];
			__u32 s2 = *(volatile __u32 *)&sk->src_ip6[2];
			__u32 s3 = *(volatile __u32 *)&sk->src_ip6[3];

			if (nm_is_v4mapped(s0, s1, s2))
				src = s3;
		}
		if (src)
			e->src_port = (__u16)sk->src_port;
	}
	nm_event_ip4(e->src_ip, src);
	nm_event_ip4(e->dst_ip, ip);
	e->dst_port = port;
	nm_event_submit(e);
}

/* connect6 of a native IPv6 destination (w0..w3 network order). */
static __always_inline void nm_event_connect6(struct bpf_sock_addr *ctx, __u8 kind, __u8 reason,
					      __u8 flags, __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	struct bpf_sock *sk = ctx->sk;
	struct nm_event *e;

	e = nm_event_new(kind, reason, flags);
	if (!e)
		return;
	e->family = 6;
	e->socket_cookie = bpf_get_socket_cookie(ctx);
	e->netns_cookie = bpf_get_netns_cookie(ctx);
	nm_event_ip6(e->src_ip, 0, 0, 0, 0);
	if (sk && sk->family == NM_AF_INET6) {
		nm_event_ip6(e->src_ip, *(volatile __u32 *)&sk->src_ip6[0], *(volatile __u32 *)&sk->src_ip6[1],
			     *(volatile __u32 *)&sk->src_ip6[2], *(volatile __u32 *)&sk->src_ip6[3]);
		e->src_port = (__u16)sk->src_port;
	}
	nm_event_ip6(e->dst_ip, w0, w1, w2, w3);
	e->dst_port = bpf_ntohs((__u16)ctx->user_port);
	nm_event_submit(e);
}

/* An IPv4 SYN at sk_lookup. The netns cookie comes from nm_enrolled (sk_lookup programs may
 * not call bpf_get_netns_cookie); a SYN for an address that is not enrolled has none. */
static __always_inline void nm_event_lookup4(struct bpf_sk_lookup *ctx, __u8 kind, __u8 reason,
					     const struct nm_enrolled *pod)
{
	struct nm_event *e;

	e = nm_event_new(kind, reason, pod ? NM_EVF_ENROLLED : 0);
	if (!e)
		return;
	if (pod)
		e->netns_cookie = pod->netns_cookie;
	nm_event_ip4(e->src_ip, ctx->remote_ip4);
	e->src_port = bpf_ntohs(ctx->remote_port);
	nm_event_ip4(e->dst_ip, ctx->local_ip4);
	e->dst_port = (__u16)ctx->local_port;
	nm_event_submit(e);
}

/* An IPv6 SYN at sk_lookup (remote r*, local l*, network order). Its netns is unknown: an
 * IPv6 SYN names no enrolled IPv4 to look up (lib/ipv6.h); the attachment is the enrollment. */
static __always_inline void nm_event_lookup6(struct bpf_sk_lookup *ctx, __u8 kind, __u8 reason,
					     __u32 r0, __u32 r1, __u32 r2, __u32 r3,
					     __u32 l0, __u32 l1, __u32 l2, __u32 l3)
{
	struct nm_event *e;

	e = nm_event_new(kind, reason, NM_EVF_ENROLLED);
	if (!e)
		return;
	e->family = 6;
	nm_event_ip6(e->src_ip, r0, r1, r2, r3);
	e->src_port = bpf_ntohs(ctx->remote_port);
	nm_event_ip6(e->dst_ip, l0, l1, l2, l3);
	e->dst_port = (__u16)ctx->local_port;
	nm_event_submit(e);
}

/* As much of the kernel's struct tcp_sock and struct sock as the close event reads. With
 * preserve_access_index, libbpf relocates each field to this kernel's layout at load (CO-RE,
 * from /sys/kernel/btf/vmlinux); bpf_skc_to_tcp_sock (bpf_helper_defs.h) returns this type. */
struct tcp_sock {
	__u64 bytes_sent;     /* payload bytes transmitted, retransmissions included */
	__u64 bytes_retrans;  /* payload bytes retransmitted */
	__u64 bytes_received; /* sequence space received: payload, plus 1 for the peer's FIN */
} __attribute__((preserve_access_index));

/* sock_flags live in struct sock_common (skc_flags, behind the sk_flags macro) on recent
 * kernels, in struct sock itself (sk_flags) on older ones: whichever this kernel has. */
struct sock_common___nm {
	unsigned long skc_flags;
} __attribute__((preserve_access_index));

struct sock___nm {
	unsigned long sk_flags;
} __attribute__((preserve_access_index));

/* enum sock_flags (include/net/sock.h): SOCK_DONE is set by tcp_fin(), once the peer's FIN
 * was taken in sequence, i.e. exactly when bytes_received counts it. */
#define NM_SOCK_DONE 1

/* The payload bytes a TCP socket sent and received, as the application wrote and read them:
 * the bpf_sock_ops counters (bytes_acked, bytes_received) count sequence space, which includes
 * the SYN and FINs. Falls back to those when the socket is not a full TCP socket. */
static __always_inline void nm_event_bytes(struct bpf_sock_ops *skops, struct nm_event *e)
{
	struct bpf_sock *sk = skops->sk;
	unsigned long sk_flags;
	struct tcp_sock *tp;
	__u64 received;

	e->bytes_sent = *(volatile __u64 *)&skops->bytes_acked;
	e->bytes_received = *(volatile __u64 *)&skops->bytes_received;
	if (!sk)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	e->bytes_sent = tp->bytes_sent - tp->bytes_retrans;
	received = tp->bytes_received;
	/* struct tcp_sock starts with its struct sock, which starts with its sock_common. */
	if (bpf_core_field_exists(((struct sock_common___nm *)0)->skc_flags))
		sk_flags = ((struct sock_common___nm *)tp)->skc_flags;
	else
		sk_flags = ((struct sock___nm *)tp)->sk_flags;
	if ((sk_flags & (1UL << NM_SOCK_DONE)) && received > 0)
		received--;
	e->bytes_received = received;
}

/* A TCP socket at STATE_CB -> TCP_CLOSE, with its payload byte counts (nm_event_bytes). The
 * ctx fields are read with volatile loads so clang keeps each a plain ctx load (see
 * nm_sockops_local_ip4 in redirect.bpf.c). */
static __always_inline void nm_event_close(struct bpf_sock_ops *skops, __u8 reason, __u8 flags)
{
	__u32 family = *(volatile __u32 *)&skops->family;
	struct nm_event *e;

	e = nm_event_new(NM_EV_CLOSE, reason, flags);
	if (!e)
		return;
	e->socket_cookie = bpf_get_socket_cookie(skops);
	e->netns_cookie = bpf_get_netns_cookie(skops);
	nm_event_bytes(skops, e);
	e->src_port = (__u16)*(volatile __u32 *)&skops->local_port;
	e->dst_port = (__u16)bpf_ntohl(*(volatile __u32 *)&skops->remote_port);
	if (family == NM_AF_INET6) {
		__u32 r0 = *(volatile __u32 *)&skops->remote_ip6[0];
		__u32 r1 = *(volatile __u32 *)&skops->remote_ip6[1];
		__u32 r2 = *(volatile __u32 *)&skops->remote_ip6[2];
		__u32 r3 = *(volatile __u32 *)&skops->remote_ip6[3];
		__u32 s0 = *(volatile __u32 *)&skops->local_ip6[0];
		__u32 s1 = *(volatile __u32 *)&skops->local_ip6[1];
		__u32 s2 = *(volatile __u32 *)&skops->local_ip6[2];
		__u32 s3 = *(volatile __u32 *)&skops->local_ip6[3];

		/* A v4-mapped peer is IPv4 traffic on a dual-stack socket: shown as IPv4. */
		if (!nm_is_v4mapped(r0, r1, r2))
			e->family = 6;
		nm_event_ip6(e->src_ip, s0, s1, s2, s3);
		nm_event_ip6(e->dst_ip, r0, r1, r2, r3);
	} else {
		nm_event_ip4(e->src_ip, *(volatile __u32 *)&skops->local_ip4);
		nm_event_ip4(e->dst_ip, *(volatile __u32 *)&skops->remote_ip4);
	}
	nm_event_submit(e);
}
