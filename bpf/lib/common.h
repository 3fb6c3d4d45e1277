/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Constants the uapi headers leave to libc, and address predicates shared by the programs. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* From <sys/socket.h> and <netinet/in.h>, which are libc headers and not for BPF. */
#define NM_AF_INET 2
#define NM_AF_INET6 10
#define NM_SOCK_STREAM 1
#define NM_IPPROTO_TCP 6

/* Return values of cgroup sock_addr and sockops programs: 1 lets the call proceed. */
#define NM_SYSCALL_ALLOW 1
#define NM_SYSCALL_DENY 0

#define NM_LOOPBACK4 0x7f000001U /* 127.0.0.1, host order */
/* The loopback device's ifindex, the same in every netns (LOOPBACK_IFINDEX, net/flow.h). */
#define NM_LOOPBACK_IFINDEX 1

/* 127.0.0.0/8; ip in network order. */
static __always_inline int nm_is_loopback4(__u32 ip)
{
	return (bpf_ntohl(ip) >> 24) == 127;
}

/* ::ffff:a.b.c.d; words in network order. */
static __always_inline int nm_is_v4mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffffU);
}
