// The same-node kernel splice (bpf/lib/splice.h): pairing two proxy sockets in nm_splice so
// the stream verdict moves their bytes in the kernel, and the TCP facts the proxy needs about
// a spliced socket, whose bytes it no longer sees (byte counts for telemetry and for knowing
// when a half-close may follow the last byte).
#pragma once

#include <cstdint>

namespace nodemesh {

struct SpliceMaps {
  int sockhash;  // nm_splice
  int peer;      // nm_splice_peer
  int taken;     // nm_splice_taken
};

struct SplicedPair {
  uint64_t cookie_a;
  uint64_t cookie_b;
};

// What the kernel says of one TCP socket (TCP_INFO and SIOCOUTQ).
struct TcpStats {
  uint64_t bytes_received;  // tcpi_bytes_received: payload bytes received, in order
  uint64_t bytes_acked;     // tcpi_bytes_acked: payload bytes sent and acknowledged
  uint32_t outq;            // bytes in the send queue, not yet acknowledged (SIOCOUTQ)
  uint32_t last_data_recv_ms;  // since the last payload byte arrived
  uint32_t last_data_sent_ms;  // since the last payload byte was sent
};

class Splice {
 public:
  // Attaches the verdict program to nm_splice (BPF_SK_SKB_STREAM_VERDICT, no parser: the kernel runs it on every skb).
  static void Attach(int prog_fd, int sockhash_fd);
  // Pairs two established TCP sockets: peers named first, then both sockets put in nm_splice,
  // then each socket's receive queue handed to the verdict (bytes that were waiting before the
  // pairing go out first, in order). On failure the peers are unnamed again, so every byte
  // stays with user space in order, and the error names the step.
  static SplicedPair Pair(const SpliceMaps& maps, int fd_a, int fd_b);
  // Forgets a pair's peers and counts (the sockets leave nm_splice when they close).
  static void Release(const SpliceMaps& maps, uint64_t cookie_a, uint64_t cookie_b);
  // User space has written `total` passed bytes of this socket to its peer.
  static void Taken(const SpliceMaps& maps, uint64_t cookie, uint64_t total);
  static TcpStats Stats(int fd);
};

}  // namespace nodemesh
