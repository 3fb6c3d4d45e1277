/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The original destination of captured connections: first by socket cookie (written at
 * connect time), then re-keyed by (netns cookie, client ip, client port) once established,
 * which is what the proxy can compute from an accepted socket. */
#pragma once

#include "lib/common.h"
#include "redirect.h"

/* socket cookie -> original destination. Written by connect4/connect6, read by sockops and
 * getpeername4/6. LRU, so connects that never reach STATE_CB cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* socket cookie */
	__type(value, struct nm_addr4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_cookie_dst SEC(".maps");

/* (netns cookie, client ip, client port) -> original destination. Written by sockops on
 * ACTIVE_ESTABLISHED, read by the proxy (native originalDst), deleted on TCP_CLOSE. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct nm_orig_dst_key);
	__type(value, struct nm_addr4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_orig_dst SEC(".maps");

/* Records the original destination of socket `cookie`. Returns 0 or a negative errno. */
static __always_inline int nm_cookie_dst_put(__u64 cookie, __u32 ip, __u16 port)
{
	struct nm_addr4 dst = { .ip = ip, .port = port, .pad = 0 };

	return bpf_map_update_elem(&nm_cookie_dst, &cookie, &dst, BPF_ANY);
}

static __always_inline struct nm_addr4 *nm_cookie_dst_get(__u64 cookie)
{
	return bpf_map_lookup_elem(&nm_cookie_dst, &cookie);
}

/* Per-pod quota of established captured connections (NM_DEFAULT_ORIG_DST_POD_QUOTA; 0: off).
 * Set by the loader before load (native loadObject rodata). */
const volatile __u32 nm_orig_dst_pod_quota = NM_DEFAULT_ORIG_DST_POD_QUOTA;

/* Node-wide counters of the two maps above (one entry, key 0). A plain ARRAY, not per-CPU, so
 * the agent reads it with one lookup; every update is an atomic add. Only ever incremented. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nm_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_stats SEC(".maps");

/* pod netns cookie -> its established captured connections and quota refusals. Written by
 * sockops and connect4/6; the agent reads it for metrics and deletes a pod's entry, by its
 * netns cookie, when the pod leaves. A pod without an entry has no connection counted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* netns cookie */
	__type(value, struct nm_pod_conns);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_pod_conns SEC(".maps");

/* Socket local storage: what was counted for a captured socket, so its close uncounts
 * exactly that. It lives and dies with the socket, so the LRU maps cannot evict it. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct nm_sk_acct);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_sk_acct SEC(".maps");

#define NM_STAT_INC(field)                                                 \
	do {                                                               \
		__u32 nm_k__ = 0;                                          \
		struct nm_stats *nm_s__ = bpf_map_lookup_elem(&nm_stats, &nm_k__); \
		if (nm_s__)                                                \
			__sync_fetch_and_add(&nm_s__->field, 1);           \
	} while (0)

/* True when the pod in netns `netns_cookie` holds its quota of captured connections already;
 * counts the refusal. The signed compare keeps a count that ever went below zero (it must
 * not) from refusing the pod forever. */
static __always_inline int nm_pod_over_quota(__u64 netns_cookie)
{
	struct nm_pod_conns *pc;

	if (nm_orig_dst_pod_quota == 0)
		return 0;
	pc = bpf_map_lookup_elem(&nm_pod_conns, &netns_cookie);
	if (!pc || (__s64)pc->entries < (__s64)nm_orig_dst_pod_quota)
		return 0;
	__sync_fetch_and_add(&pc->refused, 1);
	NM_STAT_INC(quota_refused);
	return 1;
}

/* Counts one established captured connection for its pod. Returns 0 when the pod has no
 * entry and none can be made (nm_pod_conns full). */
static __always_inline int nm_pod_conns_inc(__u64 netns_cookie)
{
	struct nm_pod_conns *pc = bpf_map_lookup_elem(&nm_pod_conns, &netns_cookie);

	if (!pc) {
		struct nm_pod_conns zero = { .entries = 0, .refused = 0 };

		bpf_map_update_elem(&nm_pod_conns, &netns_cookie, &zero, BPF_NOEXIST);
		pc = bpf_map_lookup_elem(&nm_pod_conns, &netns_cookie);
		if (!pc)
			return 0;
	}
	__sync_fetch_and_add(&pc->entries, 1);
	return 1;
}

static __always_inline void nm_pod_conns_dec(__u64 netns_cookie)
{
	struct nm_pod_conns *pc = bpf_map_lookup_elem(&nm_pod_conns, &netns_cookie);

	/* Gone when the agent removed the pod's entry (the pod left) while it still had sockets. */
	if (pc && pc->entries > 0)
		__sync_fetch_and_add(&pc->entries, -1);
}

/* On ACTIVE_ESTABLISHED of a captured socket: counts it node-wide and for its pod, and
 * remembers on the socket what was counted. A socket whose storage cannot be made is not
 * counted at all (untracked), so that no close ever uncounts what was never counted. */
static __always_inline void nm_sk_count(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct nm_sk_acct *acct;

	if (!sk) {
		NM_STAT_INC(untracked);
		return;
	}
	acct = bpf_sk_storage_get(&nm_sk_acct, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!acct) {
		NM_STAT_INC(untracked);
		return;
	}
	NM_STAT_INC(established);
	acct->flags = NM_SK_COUNTED;
	if (nm_pod_conns_inc(bpf_get_netns_cookie(skops)))
		acct->flags |= NM_SK_POD;
	else
		NM_STAT_INC(untracked);
}

/* On TCP_CLOSE of a captured socket: undoes what nm_sk_count counted, once. Returns whether
 * the socket had been counted (it was established with its entries written). */
static __always_inline int nm_sk_uncount(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct nm_sk_acct *acct;
	__u32 flags;

	if (!sk)
		return 0;
	acct = bpf_sk_storage_get(&nm_sk_acct, sk, 0, 0);
	if (!acct)
		return 0;
	flags = acct->flags;
	acct->flags = 0;
	if (!(flags & NM_SK_COUNTED))
		return 0;
	NM_STAT_INC(closed);
	if (flags & NM_SK_POD)
		nm_pod_conns_dec(bpf_get_netns_cookie(skops));
	return 1;
}

static __always_inline void nm_orig_dst_key_init(struct nm_orig_dst_key *key, __u64 netns_cookie,
						 __u32 client_ip, __u16 client_port)
{
	key->netns_cookie = netns_cookie;
	key->client_ip = client_ip;
	key->client_port = client_port;
	key->pad = 0;
}
