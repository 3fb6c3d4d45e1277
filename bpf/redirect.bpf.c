// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* In-pod redirection: steers an enrolled pod's TCP connections into the node agent's
 * proxy. Outbound connects are rewritten to the proxy's 127.0.0.1 listener in the pod
 * netns; inbound SYNs for the pod IP are steered to the proxy's listeners by sk_lookup.
 * Every decision is also reported as a kernel event while a consumer listens (lib/events.h),
 * and the observer programs at the end report the pods that are not enrolled.
 * docs/redirect.md describes the maps, the pins and how the agent attaches all this;
 * docs/capture.md the events. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lib/common.h"
#include "lib/events.h"
#include "lib/inbound.h"
#include "lib/ipv6.h"
#include "lib/orig_dst.h"
#include "lib/pod_cfg.h"
#include "lib/splice.h"
#include "redirect.h"

/* Set by the loader before load (native loadObject rodata); defaults are Istio's ports. */
const volatile __u16 nm_outbound_port = NM_DEFAULT_OUTBOUND_PORT;
const volatile __u16 nm_hbone_port = NM_DEFAULT_HBONE_PORT;

/* Shared by connect4/connect6: decides whether to capture a TCP connect to ip:port
 * (ip network order, port host order) and records the destination. Returns 1 to rewrite,
 * 0 to leave the connect alone, -1 to refuse it; *reason says why it was not rewritten. */
static __always_inline int nm_capture(void *ctx, __u32 ip, __u16 port, __u8 *reason)
{
	__u64 netns, cookie;
	int excl;

	if (nm_is_loopback4(ip)) {
		*reason = NM_EVR_LOOPBACK;
		return 0;
	}
	netns = bpf_get_netns_cookie(ctx);
	excl = nm_outbound_excluded(netns, ip, port);
	if (excl) {
		*reason = excl == NM_EXCL_PORT ? NM_EVR_EXCLUDED_PORT : NM_EVR_EXCLUDED_CIDR;
		return 0;
	}
	/* One pod may not hold more than its quota of the node-wide maps: beyond it its new
	 * connects fail at once with EPERM (never a hang), and the other pods keep theirs. */
	if (nm_pod_over_quota(netns)) {
		*reason = NM_EVR_QUOTA;
		return -1;
	}

	cookie = bpf_get_socket_cookie(ctx);
	/* Without a record the proxy could not route the connection. Refusing the connect
	 * (EPERM) is the fail-closed answer; leaving it uncaptured would bypass the mesh. */
	if (nm_cookie_dst_put(cookie, ip, port)) {
		NM_STAT_INC(record_failed);
		*reason = NM_EVR_RECORD_FAILED;
		return -1;
	}
	NM_STAT_INC(captured);
	*reason = NM_EVR_NONE;
	return 1;
}

/* The connect event of an enrolled pod, for the verdict nm_capture returned. */
static __always_inline void nm_connect_event4(struct bpf_sock_addr *ctx, int verdict, __u8 reason,
					      __u32 ip, __u16 port)
{
	__u8 kind = verdict > 0 ? NM_EV_CONNECT_REDIRECTED :
		    verdict < 0 ? NM_EV_CONNECT_REFUSED : NM_EV_CONNECT_PASSED;

	if (nm_events_on())
		nm_event_connect4(ctx, kind, reason, NM_EVF_ENROLLED, ip, port);
}

/* Attaches to each enrolled pod's cgroup (BPF_CGROUP_INET4_CONNECT, via bpf_link). */
SEC("cgroup/connect4")
int nm_connect4(struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u8 reason = NM_EVR_NONE;
	int verdict;

	if (ctx->type != NM_SOCK_STREAM || ctx->protocol != NM_IPPROTO_TCP)
		return NM_SYSCALL_ALLOW;

	verdict = nm_capture(ctx, ip, port, &reason);
	nm_connect_event4(ctx, verdict, reason, ip, port); /* before the rewrite: the app's dst */
	if (verdict < 0)
		return NM_SYSCALL_DENY;
	if (verdict > 0) {
		ctx->user_ip4 = bpf_htonl(NM_LOOPBACK4);
		ctx->user_port = bpf_htons(nm_outbound_port);
	}
	return NM_SYSCALL_ALLOW;
}

/* Attaches to each enrolled pod's cgroup (BPF_CGROUP_INET6_CONNECT). v4-mapped
 * destinations (::ffff:a.b.c.d, as dual-stack clients such as Java use) are captured like
 * connect4's; native IPv6 TCP is refused except loopback (lib/ipv6.h). UDP is left alone:
 * the mesh is TCP-only. */
SEC("cgroup/connect6")
int nm_connect6(struct bpf_sock_addr *ctx)
{
	__u8 reason = NM_EVR_NONE;
	__u32 ip;
	__u16 port;
	int verdict;

	if (ctx->type != NM_SOCK_STREAM || ctx->protocol != NM_IPPROTO_TCP)
		return NM_SYSCALL_ALLOW;
	if (!nm_is_v4mapped(ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2]))
		return nm_connect6_native(ctx);

	ip = ctx->user_ip6[3];
	port = bpf_ntohs((__u16)ctx->user_port);
	verdict = nm_capture(ctx, ip, port, &reason);
	nm_connect_event4(ctx, verdict, reason, ip, port); /* v4-mapped: reported as IPv4 */
	if (verdict < 0)
		return NM_SYSCALL_DENY;
	if (verdict > 0) {
		ctx->user_ip6[3] = bpf_htonl(NM_LOOPBACK4); /* words 0..2 already say ::ffff: */
		ctx->user_port = bpf_htons(nm_outbound_port);
	}
	return NM_SYSCALL_ALLOW;
}

/* The local IPv4 of a sockops socket; for a v4-mapped AF_INET6 socket, the low word.
 * Both fields are read with volatile loads: otherwise clang turns the choice into one load
 * at a computed ctx offset, which the verifier rejects ("dereference of modified ctx ptr"). */
static __always_inline __u32 nm_sockops_local_ip4(struct bpf_sock_ops *skops)
{
	__u32 v6_low = *(volatile __u32 *)&skops->local_ip6[3];
	__u32 v4 = *(volatile __u32 *)&skops->local_ip4;

	return skops->family == NM_AF_INET6 ? v6_low : v4;
}

static __always_inline void nm_sockops_orig_dst_key(struct bpf_sock_ops *skops,
						    struct nm_orig_dst_key *key)
{
	nm_orig_dst_key_init(key, bpf_get_netns_cookie(skops), nm_sockops_local_ip4(skops),
			     (__u16)skops->local_port);
}

/* Attaches to each enrolled pod's cgroup (BPF_CGROUP_SOCK_OPS). Re-keys the original
 * destination by what the proxy can see, and cleans both maps up on close. */
SEC("sockops")
int nm_sockops(struct bpf_sock_ops *skops)
{
	struct nm_orig_dst_key key;
	struct nm_addr4 *dst;
	__u64 cookie;
	int counted, had_cookie;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Before the SYN: ask for STATE_CB already, so a connect that never
		 * establishes (nothing on the proxy port) still cleans nm_cookie_dst up. */
		cookie = bpf_get_socket_cookie(skops);
		if (nm_cookie_dst_get(cookie))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;

	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		/* Runs on the SYN-ACK, before the client's final ACK: the entry exists before
		 * the proxy can accept the connection. */
		cookie = bpf_get_socket_cookie(skops);
		dst = nm_cookie_dst_get(cookie);
		if (!dst) {
			/* Captured (TCP_CONNECT_CB saw the entry) but evicted since. */
			if (skops->bpf_sock_ops_cb_flags & BPF_SOCK_OPS_STATE_CB_FLAG)
				NM_STAT_INC(evicted_cookie);
			break;
		}
		nm_sockops_orig_dst_key(skops, &key);
		if (bpf_map_update_elem(&nm_orig_dst, &key, dst, BPF_ANY))
			NM_STAT_INC(record_failed);
		else
			nm_sk_count(skops);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;

	case BPF_SOCK_OPS_STATE_CB:
		/* args[0] is the old state, args[1] the new one. This program enables STATE_CB
		 * only on captured sockets, so a close here is one of ours, but for the case below. */
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		if (nm_events_on())
			nm_event_close(skops, NM_EVR_NONE, NM_EVF_ENROLLED);
		cookie = bpf_get_socket_cookie(skops);
		counted = nm_sk_uncount(skops);
		/* A counted socket had both entries: one that is gone now was evicted (LRU)
		 * while the connection was open, which the agent exports as a counter. */
		had_cookie = bpf_map_delete_elem(&nm_cookie_dst, &cookie) == 0;
		if (!had_cookie && counted)
			NM_STAT_INC(evicted_cookie);
		/* Neither entry nor count: never captured (the observer asked for its STATE_CB
		 * before the pod was enrolled). It owns no nm_orig_dst entry, and its key might
		 * name a captured socket's (127.0.0.1 and the same local port, another peer). */
		if (!had_cookie && !counted)
			break;
		nm_sockops_orig_dst_key(skops, &key);
		if (bpf_map_delete_elem(&nm_orig_dst, &key) && counted)
			NM_STAT_INC(evicted_orig);
		break;

	default:
		break;
	}
	return 1;
}

/* Attaches to each enrolled pod's cgroup (BPF_CGROUP_INET4_GETPEERNAME). The app sees
 * the peer it asked for, not 127.0.0.1:15001. */
SEC("cgroup/getpeername4")
int nm_getpeername4(struct bpf_sock_addr *ctx)
{
	struct nm_addr4 *dst = nm_cookie_dst_get(bpf_get_socket_cookie(ctx));

	if (dst) {
		ctx->user_ip4 = dst->ip;
		ctx->user_port = bpf_htons(dst->port);
	}
	return NM_SYSCALL_ALLOW; /* getpeername hooks must return 1 */
}

/* Attaches to each enrolled pod's cgroup (BPF_CGROUP_INET6_GETPEERNAME). */
SEC("cgroup/getpeername6")
int nm_getpeername6(struct bpf_sock_addr *ctx)
{
	struct nm_addr4 *dst = nm_cookie_dst_get(bpf_get_socket_cookie(ctx));

	if (dst) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffffU);
		ctx->user_ip6[3] = dst->ip;
		ctx->user_port = bpf_htons(dst->port);
	}
	return NM_SYSCALL_ALLOW;
}

/* Attaches to each enrolled pod's network namespace (BPF_SK_LOOKUP, via bpf_link).
 * Steers TCP SYNs for the pod IP, any port, to the agent's listener in that netns, and
 * drops native IPv6 SYNs. */
SEC("sk_lookup")
int nm_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct nm_listener_key lkey;
	struct nm_enrolled *pod;
	struct bpf_sock *sk;
	__u32 local_ip, local_port;
	int events;
	long err;

	if (ctx->protocol != NM_IPPROTO_TCP)
		return SK_PASS;
	/* Native IPv6 never reaches an enrolled pod, except its own and loopback (lib/ipv6.h). */
	if (ctx->family == NM_AF_INET6)
		return nm_sk_lookup6(ctx);
	if (ctx->family != NM_AF_INET)
		return SK_PASS;
	/* An earlier sk_lookup program on this netns already chose a socket: respect it
	 * (assigning again would fail with -EEXIST). */
	if (ctx->sk)
		return SK_PASS;
	local_ip = ctx->local_ip4;
	local_port = ctx->local_port;
	/* No event: a SYN from 127/8 is the pod talking to itself over loopback (or to the
	 * outbound listener), which its connect already reported. */
	if (nm_is_loopback4(ctx->remote_ip4))
		return SK_PASS;
	events = nm_events_on();
	/* The agent delivering a connection it already authorized: its delivery sockets are
	 * bound to lo inside the pod netns with the client's IP as the source, and a SYN from
	 * a socket bound to lo arrives with ingress_ifindex = lo (the route it took is our
	 * in-pod `local 0.0.0.0/0 dev lo` one). A packet from outside the netns never does:
	 * it arrives on the pod's interface. docs/redirect.md "Inbound delivery". */
	if (ctx->ingress_ifindex == NM_LOOPBACK_IFINDEX) {
		if (events)
			nm_event_lookup4(ctx, NM_EV_LOOKUP_PASSED, NM_EVR_DELIVERY,
					 bpf_map_lookup_elem(&nm_enrolled, &local_ip));
		return SK_PASS;
	}
	/* The pod talking to itself on its own IP (it arrives with ingress_ifindex = eth0,
	 * not lo, since the local route names eth0), including the agent delivering a pod's
	 * connection to itself, which needs no transparent socket. */
	if (ctx->remote_ip4 == local_ip) {
		if (events)
			nm_event_lookup4(ctx, NM_EV_LOOKUP_PASSED, NM_EVR_SELF,
					 bpf_map_lookup_elem(&nm_enrolled, &local_ip));
		return SK_PASS;
	}

	pod = bpf_map_lookup_elem(&nm_enrolled, &local_ip);
	if (!pod) {
		if (events)
			nm_event_lookup4(ctx, NM_EV_LOOKUP_PASSED, NM_EVR_NOT_ENROLLED, NULL);
		return SK_PASS;
	}
	if (nm_inbound_port_excluded(pod, local_port)) {
		if (events)
			nm_event_lookup4(ctx, NM_EV_LOOKUP_PASSED, NM_EVR_EXCLUDED_PORT, pod);
		return SK_PASS;
	}

	lkey.pod_ip = local_ip;
	lkey.kind = local_port == nm_hbone_port ? NM_LISTENER_HBONE : NM_LISTENER_PLAINTEXT;
	sk = bpf_map_lookup_elem(&nm_listeners, &lkey);
	if (!sk) {
		/* Enrolled, but the agent's listener is gone (agent down or restarting). */
		if (pod->flags & NM_ENROLLED_F_FAIL_OPEN) {
			if (events)
				nm_event_lookup4(ctx, NM_EV_LOOKUP_PASSED, NM_EVR_NO_LISTENER, pod);
			return SK_PASS;
		}
		if (events)
			nm_event_lookup4(ctx, NM_EV_LOOKUP_DROPPED, NM_EVR_NO_LISTENER, pod);
		return SK_DROP;
	}

	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (events) {
		if (err)
			nm_event_lookup4(ctx, NM_EV_LOOKUP_DROPPED, NM_EVR_ASSIGN_FAILED, pod);
		else
			nm_event_lookup4(ctx, NM_EV_LOOKUP_STEERED, NM_EVR_NONE, pod);
	}
	return err ? SK_DROP : SK_PASS;
}

/* ---- observation of pods that are not enrolled --------------------------------------------
 * These attach to the node's pod cgroup parent (Redirector.observeCgroup), so they run for
 * every pod below it, after the pod's own programs (cgroup bpf_links run the child's first,
 * then the ancestors'). They never rewrite, refuse or change a socket: they only report, and
 * only while a consumer listens. Enrolled pods are skipped (nm_netns_enrolled): their own
 * programs report them, so nothing is reported twice. */

/* Attaches to the node's pod cgroup parent (BPF_CGROUP_INET4_CONNECT). */
SEC("cgroup/connect4")
int nm_observe_connect4(struct bpf_sock_addr *ctx)
{
	if (!nm_events_on())
		return NM_SYSCALL_ALLOW;
	if (ctx->type != NM_SOCK_STREAM || ctx->protocol != NM_IPPROTO_TCP)
		return NM_SYSCALL_ALLOW;
	if (nm_netns_enrolled(bpf_get_netns_cookie(ctx)))
		return NM_SYSCALL_ALLOW;
	nm_event_connect4(ctx, NM_EV_CONNECT_PASSED, NM_EVR_OBSERVED, 0, ctx->user_ip4,
			  bpf_ntohs((__u16)ctx->user_port));
	return NM_SYSCALL_ALLOW;
}

/* Attaches to the node's pod cgroup parent (BPF_CGROUP_INET6_CONNECT). */
SEC("cgroup/connect6")
int nm_observe_connect6(struct bpf_sock_addr *ctx)
{
	__u32 w0, w1, w2, w3;

	if (!nm_events_on())
		return NM_SYSCALL_ALLOW;
	if (ctx->type != NM_SOCK_STREAM || ctx->protocol != NM_IPPROTO_TCP)
		return NM_SYSCALL_ALLOW;
	if (nm_netns_enrolled(bpf_get_netns_cookie(ctx)))
		return NM_SYSCALL_ALLOW;
	w0 = ctx->user_ip6[0];
	w1 = ctx->user_ip6[1];
	w2 = ctx->user_ip6[2];
	w3 = ctx->user_ip6[3];
	if (nm_is_v4mapped(w0, w1, w2))
		nm_event_connect4(ctx, NM_EV_CONNECT_PASSED, NM_EVR_OBSERVED, 0, w3,
				  bpf_ntohs((__u16)ctx->user_port));
	else
		nm_event_connect6(ctx, NM_EV_CONNECT_PASSED, NM_EVR_OBSERVED, 0, w0, w1, w2, w3);
	return NM_SYSCALL_ALLOW;
}

/* Attaches to the node's pod cgroup parent (BPF_CGROUP_SOCK_OPS). Asks for STATE_CB on the
 * established TCP sockets of pods that are not enrolled, while a consumer listens, and
 * reports their close with the kernel's byte counts. It never sets a reply. */
SEC("sockops")
int nm_observe_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	if (!nm_events_on())
		return 1;
	if (nm_netns_enrolled(bpf_get_netns_cookie(skops)))
		return 1;
	if (op == BPF_SOCK_OPS_STATE_CB) {
		if (skops->args[1] == BPF_TCP_CLOSE)
			nm_event_close(skops, NM_EVR_OBSERVED, 0);
		return 1;
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	return 1;
}

/* Attaches to nm_splice (BPF_SK_SKB_STREAM_VERDICT with no parser, by the agent at load): runs for every skb that
 * arrives on a spliced socket. Moves it out of the peer socket when that is safe (see
 * lib/splice.h), else leaves it to the proxy, which reads it like any other byte. */
SEC("sk_skb/stream_verdict")
int nm_splice_verdict(struct __sk_buff *skb)
{
	__u64 self = bpf_get_socket_cookie(skb);
	struct nm_splice_peer *p = bpf_map_lookup_elem(&nm_splice_peer, &self);
	struct bpf_sock *peer;
	__u64 *taken;
	__u64 key;

	if (!p)
		return SK_PASS;
	/* A FIN without payload comes as an empty skb. TCP has already taken the FIN (the proxy
	 * reads the end of stream); redirected, the peer's send path takes 0 bytes sent for a
	 * broken pipe and fails that socket with EPIPE. Nothing is lost by dropping it. */
	if (skb->len == 0)
		return SK_DROP;
	taken = bpf_map_lookup_elem(&nm_splice_taken, &self);
	if (!taken || *taken != p->passed)
		goto pass;
	key = p->peer;
	/* Redirecting to a key with no socket would drop the bytes; pass them instead. */
	peer = bpf_map_lookup_elem(&nm_splice, &key);
	if (!peer)
		goto pass;
	bpf_sk_release(peer);
	__sync_fetch_and_add(&p->spliced, skb->len);
	return bpf_sk_redirect_hash(skb, &nm_splice, &key, 0);
pass:
	__sync_fetch_and_add(&p->passed, skb->len);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
