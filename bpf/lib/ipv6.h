/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The IPv6 rule for enrolled pods: the mesh's data plane is IPv4, so native IPv6 TCP is
 * refused outbound (connect6) and dropped inbound (sk_lookup), while IPv6 loopback inside
 * the pod keeps working. v4-mapped addresses (::ffff:a.b.c.d) are IPv4 and are captured by
 * connect6 as connect4 does. docs/security.md ("IPv6") says why. */
#pragma once

#include "lib/common.h"
#include "lib/events.h"

/* ::1; words in network order. */
static __always_inline int nm_is_loopback6(__u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	return w0 == 0 && w1 == 0 && w2 == 0 && w3 == bpf_htonl(1);
}

/* ::, which connect() takes to mean the local host (tcp_v6_connect turns it into ::1). */
static __always_inline int nm_is_unspecified6(__u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	return (w0 | w1 | w2 | w3) == 0;
}

/* connect6 of an enrolled pod, TCP to a destination that is not v4-mapped: loopback (::1,
 * or :: which means it) stays inside the pod and is allowed; everything else (link-local,
 * unique-local, global) would leave the pod around the mesh and is refused. Refusing makes
 * connect() fail at once with EPERM, so a dual-stack client falls back to IPv4 instead of
 * hanging. The cgroup link is only ever attached to an enrolled pod's cgroup, so that
 * attachment is the enrollment check, as it is for connect4. */
static __always_inline int nm_connect6_native(struct bpf_sock_addr *ctx)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
	__u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];

	if (nm_is_loopback6(w0, w1, w2, w3) || nm_is_unspecified6(w0, w1, w2, w3)) {
		if (nm_events_on())
			nm_event_connect6(ctx, NM_EV_CONNECT_PASSED, NM_EVR_LOOPBACK, NM_EVF_ENROLLED,
					  w0, w1, w2, w3);
		return NM_SYSCALL_ALLOW;
	}
	if (nm_events_on())
		nm_event_connect6(ctx, NM_EV_CONNECT_REFUSED, NM_EVR_IPV6, NM_EVF_ENROLLED, w0, w1, w2, w3);
	return NM_SYSCALL_DENY;
}

/* sk_lookup of an enrolled pod's netns, TCP SYN of family AF_INET6: SK_PASS for loopback
 * (::1) and for the pod talking to itself (remote == local, as the IPv4 path passes it);
 * SK_DROP for everything else, which the kernel answers with an RST. The kernel gives
 * sk_lookup programs no way to name their netns (bpf_get_netns_cookie is refused for this
 * program type) and an IPv6 SYN carries no enrolled IPv4 address to look up in nm_enrolled,
 * so the enrollment check is the attachment: the agent links nm_sk_lookup only to enrolled
 * pods' netns. Each word is read with a volatile load so that clang keeps them 4-byte ctx
 * loads, the only size the verifier allows for these fields. */
static __always_inline int nm_sk_lookup6(struct bpf_sk_lookup *ctx)
{
	__u32 r0 = *(volatile __u32 *)&ctx->remote_ip6[0];
	__u32 r1 = *(volatile __u32 *)&ctx->remote_ip6[1];
	__u32 r2 = *(volatile __u32 *)&ctx->remote_ip6[2];
	__u32 r3 = *(volatile __u32 *)&ctx->remote_ip6[3];
	__u32 l0 = *(volatile __u32 *)&ctx->local_ip6[0];
	__u32 l1 = *(volatile __u32 *)&ctx->local_ip6[1];
	__u32 l2 = *(volatile __u32 *)&ctx->local_ip6[2];
	__u32 l3 = *(volatile __u32 *)&ctx->local_ip6[3];

	/* No event for loopback, as for IPv4: its connect reported it. */
	if (nm_is_loopback6(r0, r1, r2, r3))
		return SK_PASS;
	if (r0 == l0 && r1 == l1 && r2 == l2 && r3 == l3) {
		if (nm_events_on())
			nm_event_lookup6(ctx, NM_EV_LOOKUP_PASSED, NM_EVR_SELF, r0, r1, r2, r3, l0, l1, l2, l3);
		return SK_PASS;
	}
	if (nm_events_on())
		nm_event_lookup6(ctx, NM_EV_LOOKUP_DROPPED, NM_EVR_IPV6, r0, r1, r2, r3, l0, l1, l2, l3);
	return SK_DROP;
}
