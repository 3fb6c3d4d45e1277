// Socket primitives: listeners and unconnected sockets (created by the caller's thread, so
// run them through NetnsThread to place them in a pod netns), and the socket facts the
// redirection needs (netns cookie, socket cookie, IPv4 peer).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace nodemesh {

struct ListenSpec {
  std::string host;  // IPv4 or IPv6 literal
  int port;
  int backlog;
  bool reuse_port;
};

struct Endpoint4 {
  uint32_t ip;    // network order
  uint16_t port;  // host order
};

class Sockets {
 public:
  // socket + SO_REUSEADDR (+ SO_REUSEPORT) + bind + listen; non-blocking, close-on-exec.
  static int Listen(const ListenSpec& spec);
  // A non-blocking TCP socket, optionally bound to bind_ip (port 0, with
  // IP_BIND_ADDRESS_NO_PORT so the port is picked at connect time). family is 4 or 6.
  static int Unconnected(const std::optional<std::string>& bind_ip, int family);
  // A non-blocking IPv4 TCP socket for delivering inbound connections inside a pod netns
  // with the client's address as the source: IP_TRANSPARENT (it may bind a non-local
  // address), SO_MARK = mark (the in-pod rule routes replies back to it), bound to lo (its
  // SYNs then arrive with ingress_ifindex = lo, which sk_lookup passes) and
  // IP_BIND_ADDRESS_NO_PORT (the caller binds the client IP, the port is picked at connect).
  static int Transparent(uint32_t mark);
  static uint64_t NetnsCookie(int fd);   // SO_NETNS_COOKIE
  static uint64_t SocketCookie(int fd);  // SO_COOKIE
  // The peer as IPv4 (also for a v4-mapped AF_INET6 socket); nullopt for pure IPv6.
  static std::optional<Endpoint4> PeerIPv4(int fd);
  static std::string FormatIPv4(uint32_t ip_be);
};

}  // namespace nodemesh
