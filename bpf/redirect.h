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

/* ---- the same-node kernel splice (bpf/lib/splice.h; src/redirect/splice.ts) ------------- */

/* Sockets the splice may hold at once (two per spliced connection). */
#define NM_SPLICE_MAX 32768

/* nm_splice_peer value, keyed by a spliced socket's cookie: where its bytes go, and what the
 * verdict counted. 24 bytes. */
struct nm_splice_peer {
	__u64 peer;    /* cookie of the socket this one's bytes are written out of */
	__u64 passed;  /* bytes the verdict left to user space (SK_PASS), only ever incremented */
	__u64 spliced; /* bytes the verdict moved to the peer in the kernel */
};

/* ---- kernel events (bpf/lib/events.h; decoded by src/redirect/event-layout.ts) ---------- */

/* Compile-time size checks, in both the BPF C and the addon's C++. */
#ifdef __cplusplus
#define NM_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define NM_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* nm_event.kind */
#define NM_EV_CONNECT_REDIRECTED 1 /* connect4/6 rewrote the connect to the outbound listener */
#define NM_EV_CONNECT_PASSED 2     /* connect4/6 let it go where it was going */
#define NM_EV_CONNECT_REFUSED 3    /* connect4/6 refused it (EPERM): quota, record, IPv6; TS: connect_passed + refused */
#define NM_EV_LOOKUP_STEERED 4     /* sk_lookup assigned the SYN to the agent's listener */
#define NM_EV_LOOKUP_PASSED 5      /* sk_lookup let the SYN through to the pod */
#define NM_EV_LOOKUP_DROPPED 6     /* sk_lookup dropped the SYN (the kernel answers RST) */
#define NM_EV_CLOSE 7              /* a tracked TCP socket reached TCP_CLOSE */

/* nm_event.reason (0: none, e.g. for a redirect, a steer or a close) */
#define NM_EVR_NONE 0
#define NM_EVR_EXCLUDED_PORT 1
#define NM_EVR_EXCLUDED_CIDR 2
#define NM_EVR_LOOPBACK 3
#define NM_EVR_NOT_ENROLLED 4
#define NM_EVR_SELF 5
#define NM_EVR_NO_LISTENER 6
#define NM_EVR_IPV6 7
#define NM_EVR_QUOTA 8
#define NM_EVR_OBSERVED 9
#define NM_EVR_DELIVERY 10      /* sk_lookup: the agent's own delivery socket (arrived on lo) */
#define NM_EVR_RECORD_FAILED 11 /* connect: the original destination could not be recorded */
#define NM_EVR_ASSIGN_FAILED 12 /* sk_lookup: bpf_sk_assign refused the agent's listener */

/* nm_event.flags */
#define NM_EVF_ENROLLED (1U << 0) /* the socket's pod is enrolled (else: observation only) */

/* One event in nm_events (BPF_MAP_TYPE_RINGBUF). 80 bytes, no implicit padding; the
 * layout is part of the addon/TS contract (SIZES.event in src/redirect/layout.ts). Addresses
 * are 16 bytes in network order: an IPv4 address (family 4) is stored v4-mapped,
 * ::ffff:a.b.c.d, so word 3 is the IPv4. An unknown address or port is 0.
 *   connects: src = the socket's bound local address (0 when unbound), dst = what the app
 *             asked for (before any rewrite);
 *   lookups:  src = the SYN's source, dst = its destination;
 *   closes:   src = the local side, dst = the remote side. */
struct nm_event {
	__u64 ts_ns;          /*  0: bpf_ktime_get_ns() */
	__u64 socket_cookie;  /*  8: 0 where the hook has no socket (sk_lookup) */
	__u64 netns_cookie;   /* 16: the pod's netns; 0 when unknown (IPv6 sk_lookup, stranger) */
	__u64 bytes_sent;     /* 24: closes: tcp_sock bytes_acked */
	__u64 bytes_received; /* 32: closes: tcp_sock bytes_received */
	__u32 src_ip[4];      /* 40 */
	__u32 dst_ip[4];      /* 56 */
	__u16 src_port;       /* 72: host order */
	__u16 dst_port;       /* 74: host order */
	__u8 kind;            /* 76: NM_EV_* */
	__u8 reason;          /* 77: NM_EVR_* */
	__u8 family;          /* 78: 4 or 6 */
	__u8 flags;           /* 79: NM_EVF_* */
};
NM_STATIC_ASSERT(sizeof(struct nm_event) == 80, "struct nm_event is 80 bytes (SIZES.event)");

/* nm_events_cfg (ARRAY, one entry): whether the programs emit at all. Written by the one
 * consuming agent; off (zero) by default, so events cost a single array lookup. 8 bytes. */
struct nm_events_cfg {
	__u32 enabled;   /* non-zero: emit */
	__u32 owner_pid; /* the process that turned events on (a dead owner's flag is cleared) */
};
NM_STATIC_ASSERT(sizeof(struct nm_events_cfg) == 8, "struct nm_events_cfg is 8 bytes");

/* The ring's size in bytes (a power of two, a multiple of the page size). Each record is 88
 * bytes with its 8-byte header, so 1 MiB holds about 11,900 events: a burst of several
 * thousand connections between two drains of the poller (it drains every 50 ms at most)
 * before anything is lost, while costing the node 1 MiB of locked memory. */
#define NM_EVENTS_RING_BYTES (1U << 20)

NM_STATIC_ASSERT(sizeof(struct nm_splice_peer) == 24, "struct nm_splice_peer is 24 bytes (SIZES.splicePeer)");
