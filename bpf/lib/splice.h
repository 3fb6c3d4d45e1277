/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The same-node kernel splice: once the proxy has authorized a connection between two local
 * pods, it puts both of its sockets in nm_splice and names each one's peer in
 * nm_splice_peer. The stream verdict below then moves every byte that arrives on one socket
 * out of the other, without waking the proxy (docs/redirect.md, "Kernel splice").
 *
 * Ordering is the whole difficulty. A byte the verdict passes to user space (SK_PASS: the
 * peer is not in the map yet) is written to the peer by the proxy later; a byte after it
 * must not overtake it in the kernel. So the verdict moves bytes only while user space has
 * written out everything it was passed: nm_splice_taken[cookie] (written by the proxy once
 * its write of those bytes reached the kernel) equals nm_splice_peer.passed. Until then it
 * passes them too, in order, and the proxy relays them. None of these maps is pinned: the
 * sockets they hold belong to this agent's process and die with it. */
#pragma once

#include "lib/common.h"
#include "redirect.h"

/* socket cookie -> the socket. Every socket here is a proxy socket of a spliced connection. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, NM_SPLICE_MAX);
	__type(key, __u64);
	__type(value, __u64);
} nm_splice SEC(".maps");

/* socket cookie -> its peer and the verdict's counts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NM_SPLICE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct nm_splice_peer);
} nm_splice_peer SEC(".maps");

/* socket cookie -> bytes of `passed` that user space has written to the peer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NM_SPLICE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u64);
} nm_splice_taken SEC(".maps");
