/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Inbound steering state: which pod IPs are enrolled (and must fail closed), and the
 * agent's listeners inside each pod netns. */
#pragma once

#include "lib/common.h"
#include "redirect.h"

/* pod IPv4 -> enrollment. Present for as long as the pod is enrolled, whether or not the
 * agent currently has a listener: that difference is what makes inbound fail closed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* pod IPv4, network order */
	__type(value, struct nm_enrolled);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_enrolled SEC(".maps");

/* (pod ip, kind) -> the agent's listening socket inside that pod's netns. The kernel drops
 * an entry when its socket closes, e.g. when the agent dies. Values are 8 bytes so that a
 * user-space lookup returns the socket cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 8192);
	__type(key, struct nm_listener_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nm_listeners SEC(".maps");

static __always_inline int nm_inbound_port_excluded(const struct nm_enrolled *e, __u32 port)
{
	int i;

#pragma unroll
	for (i = 0; i < NM_MAX_EXCLUDES; i++) {
		if (i >= e->n_ports)
			break;
		if (e->excl_ports[i] == port)
			return 1;
	}
	return 0;
}
