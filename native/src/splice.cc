#include "splice.h"

#include <bpf/bpf.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <string>

#include "native_error.h"
#include "redirect.h"
#include "sockets.h"

namespace nodemesh {
namespace {

void Check(int rc, const char* call, const std::string& detail) {
  if (rc < 0) throw NativeError::FromErrno(call, detail);
}

void Forget(const SpliceMaps& maps, uint64_t cookie) {
  ::bpf_map_delete_elem(maps.peer, &cookie);
  ::bpf_map_delete_elem(maps.taken, &cookie);
}

// Hands whatever waits in the socket's receive queue to the verdict now: setting SO_RCVLOWAT
// makes TCP signal data ready (tcp_set_rcvlowat -> tcp_data_ready), which for a socket in a
// sockmap with a verdict is the verdict's read of the queue.
void Kick(int fd) {
  int one = 1;
  Check(::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)), "setsockopt", "SO_RCVLOWAT");
}

// Fixed socket buffers for a spliced socket. TCP grows a receive buffer as the application
// reads (tcp_rcv_space_adjust), and nothing reads a spliced socket: the window stayed small and
// a bulk transfer ran at a third of the user-space relay's speed here. The bytes the verdict
// moves stay charged to this socket until the peer has sent them, so the send side needs room
// too. The kernel doubles the value and caps it at net.core.rmem_max / wmem_max.
constexpr int kSpliceSocketBuffer = 4 << 20;

void SizeBuffers(int fd) {
  int b = kSpliceSocketBuffer;
  Check(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof(b)), "setsockopt", "SO_RCVBUF");
  Check(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof(b)), "setsockopt", "SO_SNDBUF");
}

}  // namespace

void Splice::Attach(int prog_fd, int sockhash_fd) {
  Check(::bpf_prog_attach(prog_fd, sockhash_fd, BPF_SK_SKB_STREAM_VERDICT, 0), "bpf_prog_attach",
        "nm_splice_verdict to nm_splice (BPF_SK_SKB_STREAM_VERDICT)");
}

SplicedPair Splice::Pair(const SpliceMaps& maps, int fd_a, int fd_b) {
  SplicedPair p{Sockets::SocketCookie(fd_a), Sockets::SocketCookie(fd_b)};
  nm_splice_peer a{p.cookie_b, 0, 0};
  nm_splice_peer b{p.cookie_a, 0, 0};
  uint64_t zero = 0;
  // Before anything is paired: a failure here leaves the connection as it was.
  SizeBuffers(fd_a);
  SizeBuffers(fd_b);
  try {
    Check(::bpf_map_update_elem(maps.taken, &p.cookie_a, &zero, BPF_NOEXIST), "bpf_map_update_elem", "nm_splice_taken");
    Check(::bpf_map_update_elem(maps.taken, &p.cookie_b, &zero, BPF_NOEXIST), "bpf_map_update_elem", "nm_splice_taken");
    Check(::bpf_map_update_elem(maps.peer, &p.cookie_a, &a, BPF_NOEXIST), "bpf_map_update_elem", "nm_splice_peer");
    Check(::bpf_map_update_elem(maps.peer, &p.cookie_b, &b, BPF_NOEXIST), "bpf_map_update_elem", "nm_splice_peer");
    // From here a socket in nm_splice whose peer is not (yet) there passes its bytes to user
    // space and counts them in `passed`; nothing is ever dropped.
    uint64_t fa = static_cast<uint64_t>(fd_a), fb = static_cast<uint64_t>(fd_b);
    Check(::bpf_map_update_elem(maps.sockhash, &p.cookie_a, &fa, BPF_NOEXIST), "bpf_map_update_elem", "nm_splice (first socket)");
    Check(::bpf_map_update_elem(maps.sockhash, &p.cookie_b, &fb, BPF_NOEXIST), "bpf_map_update_elem", "nm_splice (second socket)");
    Kick(fd_a);
    Kick(fd_b);
  } catch (...) {
    // A socket already in nm_splice stays there (taking it out would drop what the verdict
    // passed to its queue); without peers the verdict passes all its bytes to user space.
    Forget(maps, p.cookie_a);
    Forget(maps, p.cookie_b);
    throw;
  }
  return p;
}

void Splice::Release(const SpliceMaps& maps, uint64_t cookie_a, uint64_t cookie_b) {
  Forget(maps, cookie_a);
  Forget(maps, cookie_b);
}

void Splice::Taken(const SpliceMaps& maps, uint64_t cookie, uint64_t total) {
  Check(::bpf_map_update_elem(maps.taken, &cookie, &total, BPF_EXIST), "bpf_map_update_elem", "nm_splice_taken");
}

TcpStats Splice::Stats(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof(ti);
  Check(::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len), "getsockopt", "TCP_INFO");
  // tcp_info first, then the queue: an ACK between the two can only make the sum smaller.
  int outq = 0;
  Check(::ioctl(fd, SIOCOUTQ, &outq), "ioctl", "SIOCOUTQ");
  return TcpStats{ti.tcpi_bytes_received, ti.tcpi_bytes_acked, static_cast<uint32_t>(outq),
                  ti.tcpi_last_data_recv, ti.tcpi_last_data_sent};
}

}  // namespace nodemesh
