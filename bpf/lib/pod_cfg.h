/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-pod outbound settings (exclusions), keyed by the pod's netns cookie, and the check
 * the connect hooks make against them. */
#pragma once

#include "lib/common.h"
#include "redirect.h"

/* Written by the agent on attachPod; read by connect4/connect6. Pinned so that a
 * restarted agent keeps the settings of pods it adopts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* netns cookie */
	__type(value, struct nm_pod_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_pod_cfg SEC(".maps");

/* pod UID (hashed) -> the netns cookie and IP it was attached with. Written at attach and
 * read at detach by the agent only, no program uses it: it lets any later agent delete a
 * pod's entries by their owner (netns cookie) even after a restart, and never the entries
 * of a newer pod that was given the same IP. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct nm_pod_owner_key);
	__type(value, struct nm_pod_owner);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_pod_owner SEC(".maps");

/* What nm_outbound_excluded found. */
#define NM_EXCL_NONE 0
#define NM_EXCL_PORT 1
#define NM_EXCL_CIDR 2

/* Non-zero (NM_EXCL_PORT or NM_EXCL_CIDR, which the connect events report) when the pod
 * living in netns `netns_cookie` excluded this destination from capture. ip in network order,
 * port in host order. A pod without an entry excludes nothing. */
static __always_inline int nm_outbound_excluded(__u64 netns_cookie, __u32 ip, __u16 port)
{
	struct nm_pod_cfg *cfg = bpf_map_lookup_elem(&nm_pod_cfg, &netns_cookie);
	int i;

	if (!cfg)
		return 0;

#pragma unroll
	for (i = 0; i < NM_MAX_EXCLUDES; i++) {
		if (i >= cfg->n_ports)
			break;
		if (cfg->excl_ports[i] == port)
			return NM_EXCL_PORT;
	}

#pragma unroll
	for (i = 0; i < NM_MAX_EXCLUDES; i++) {
		if (i >= cfg->n_cidrs)
			break;
		if ((ip & cfg->excl_cidrs[i].mask) == cfg->excl_cidrs[i].addr)
			return NM_EXCL_CIDR;
	}
	return NM_EXCL_NONE;
}

/* Whether the pod living in this netns is enrolled: attachPod writes its nm_pod_cfg entry,
 * keyed by the netns cookie, and detachPod deletes it. The observer programs use it to skip
 * enrolled pods, whose own programs report their sockets already. */
static __always_inline int nm_netns_enrolled(__u64 netns_cookie)
{
	return bpf_map_lookup_elem(&nm_pod_cfg, &netns_cookie) != NULL;
}
