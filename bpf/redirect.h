/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structs and constants shared by bpf/redirect.bpf.c and user space (native/src, and the
 * byte layouts in src/redirect/layout.ts, which must be kept in step with this file). */
#pragma once

#include <linux/types.h>

/* Every per-pod exclusion list holds at most this many entries. */
#define NM_MAX_EXCLUDES 8

#define NM_DEFAULT_OUTBOUND_PORT 15001
#define NM_DEFAULT_HBONE_PORT 15008

/* nm_listeners key kinds. */
#define NM_LISTENER_PLAINTEXT 0 /* inbound plaintext, 15006 */
#define NM_LISTENER_HBONE 1     /* inbound HBONE, 15008 */

/* nm_enrolled flags. */
/* An enrolled pod without a listener passes SYNs instead of dropping them. Off by
 * default: a mesh fails closed. Meant for debugging a broken agent only. */
#define NM_ENROLLED_F_FAIL_OPEN (1U << 0)

/* An IPv4 CIDR, both fields in network byte order. */
struct nm_cidr4 {
	__u32 addr;
	__u32 mask;
};

/* nm_pod_cfg value, keyed by the pod's netns cookie (u64). 88 bytes. */
struct nm_pod_cfg {
	__u32 pod_ip;     /* network order; lets user space find the entry by pod */
	__u16 n_ports;    /* used entries of excl_ports */
	__u16 n_cidrs;    /* used entries of excl_cidrs */
	__u16 excl_ports[NM_MAX_EXCLUDES]; /* destination ports, host order */
	struct nm_cidr4 excl_cidrs[NM_MAX_EXCLUDES];
};

/* An IPv4 endpoint: nm_cookie_dst and nm_orig_dst values. 8 bytes. */
struct nm_addr4 {
	__u32 ip;   /* network order */
	__u16 port; /* host order */
	__u16 pad;
};

/* nm_orig_dst key: the captured client as the proxy sees it. 16 bytes. */
struct nm_orig_dst_key {
	__u64 netns_cookie; /* the pod's netns */
	__u32 client_ip;    /* network order: 127.0.0.1 after the connect rewrite */
	__u16 client_port;  /* host order: the client's ephemeral port */
	__u16 pad;
};

/* nm_enrolled value, keyed by pod IPv4 (u32, network order). 32 bytes. */
struct nm_enrolled {
	__u32 flags;   /* NM_ENROLLED_F_* */
	__u16 n_ports; /* used entries of excl_ports */
	__u16 pad;
	__u16 excl_ports[NM_MAX_EXCLUDES]; /* local ports never steered, host order */
	__u64 netns_cookie; /* the pod's netns, so user space can find nm_pod_cfg by pod IP */
};

/* nm_listeners (SOCKHASH) key. 8 bytes. */
struct nm_listener_key {
	__u32 pod_ip; /* network order */
	__u32 kind;   /* NM_LISTENER_* */
};

/* Per-pod quota of captured connections: 0 turns it off. The default lets one pod hold a
 * quarter of nm_orig_dst (65536 entries), so no single pod can exhaust it for the others. */
#define NM_DEFAULT_ORIG_DST_POD_QUOTA 16384

/* nm_pod_owner key: SHA-256 of the pod UID (UIDs run to 253 bytes). 32 bytes. */
struct nm_pod_owner_key {
	__u8 uid_sha256[32];
};

/* nm_pod_owner value: which netns and IP a pod UID was attached with, so that any later
 * agent deletes the pod's entries by owner (netns cookie), never by IP alone. 16 bytes. */
struct nm_pod_owner {
	__u64 netns_cookie;
	__u32 pod_ip; /* network order */
	__u32 pad;
};

/* nm_pod_conns value, keyed by the pod's netns cookie (u64). 16 bytes. */
struct nm_pod_conns {
	__u64 entries; /* captured connections established and not closed yet */
	__u64 refused; /* connects refused because entries had reached the quota */
};

/* nm_stats (ARRAY, one entry): node-wide counters of the original-destination maps, each
 * only ever incremented. 64 bytes. */
struct nm_stats {
	__u64 captured;        /* connects rewritten to the proxy */
	__u64 record_failed;   /* nm_cookie_dst or nm_orig_dst could not be written */
	__u64 quota_refused;   /* connects refused by the per-pod quota (EPERM) */
	__u64 established;     /* captured connections that reached ESTABLISHED */
	__u64 closed;          /* of those, closed again */
	__u64 evicted_cookie;  /* a live connection's nm_cookie_dst entry was gone (LRU eviction) */
	__u64 evicted_orig;    /* a live connection's nm_orig_dst entry was gone (LRU eviction) */
	__u64 untracked;       /* established, but nm_pod_conns was full: not counted per pod */
};

/* nm_sk_acct value (socket local storage): what was counted for this socket, so that its
 * close undoes exactly that, whatever the LRU maps evicted meanwhile. */
#define NM_SK_COUNTED (1U << 0) /* counted in nm_stats.established */
#define NM_SK_POD (1U << 1)     /* counted in its pod's nm_pod_conns.entries */
struct nm_sk_acct {
	__u32 flags;
};
