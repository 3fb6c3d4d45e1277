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

static __always_inline void nm_orig_dst_key_init(struct nm_orig_dst_key *key, __u64 netns_cookie,
						 __u32 client_ip, __u16 client_port)
{
	key->netns_cookie = netns_cookie;
	key->client_ip = client_ip;
	key->client_port = client_port;
	key->pad = 0;
}
