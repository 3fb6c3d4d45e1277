// Socket primitives for the redirection: listeners, unconnected and delivery sockets, cookies, peers.
#include "sockets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "native_error.h"
#include "unique_fd.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace nodemesh {
namespace {

socklen_t ParseAddress(const std::string& host, int port, sockaddr_storage* out) {
  std::memset(out, 0, sizeof(*out));
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    return sizeof(sockaddr_in);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    return sizeof(sockaddr_in6);
  }
  throw NativeError(EINVAL, "inet_pton", "'" + host + "' is not an IP address");
}

void SetIntOption(int fd, int level, int name, int value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0)
    throw NativeError::FromErrno("setsockopt", what);
}

uint64_t GetU64Option(int fd, int name, const char* what) {
  uint64_t value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, name, &value, &len) != 0)
    throw NativeError::FromErrno("getsockopt", what);
  return value;
}

}  // namespace

int Sockets::Listen(const ListenSpec& spec) {
  sockaddr_storage addr;
  socklen_t len = ParseAddress(spec.host, spec.port, &addr);
  UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd.valid()) throw NativeError::FromErrno("socket");
  SetIntOption(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
  if (spec.reuse_port) SetIntOption(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    throw NativeError::FromErrno("bind", spec.host + ":" + std::to_string(spec.port));
  if (::listen(fd.get(), spec.backlog) != 0) throw NativeError::FromErrno("listen");
  return fd.Release();
}

int Sockets::Unconnected(const std::optional<std::string>& bind_ip, int family) {
  sockaddr_storage addr;
  socklen_t len = 0;
  int domain = family == 6 ? AF_INET6 : AF_INET;
  if (bind_ip) {
    len = ParseAddress(*bind_ip, 0, &addr);
    domain = addr.ss_family;
  }
  UniqueFd fd(::socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd.valid()) throw NativeError::FromErrno("socket");
  if (bind_ip) {
    if (domain == AF_INET)
      SetIntOption(fd.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1, "IP_BIND_ADDRESS_NO_PORT");
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
      throw NativeError::FromErrno("bind", *bind_ip);
  }
  return fd.Release();
}

int Sockets::Transparent(uint32_t mark) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd.valid()) throw NativeError::FromErrno("socket");
  SetIntOption(fd.get(), IPPROTO_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT");
  SetIntOption(fd.get(), SOL_SOCKET, SO_MARK, static_cast<int>(mark), "SO_MARK");
  static const char kLo[] = "lo";
  if (setsockopt(fd.get(), SOL_SOCKET, SO_BINDTODEVICE, kLo, sizeof(kLo)) != 0)
    throw NativeError::FromErrno("setsockopt", "SO_BINDTODEVICE lo");
  SetIntOption(fd.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1, "IP_BIND_ADDRESS_NO_PORT");
  return fd.Release();
}

uint64_t Sockets::NetnsCookie(int fd) { return GetU64Option(fd, SO_NETNS_COOKIE, "SO_NETNS_COOKIE"); }

uint64_t Sockets::SocketCookie(int fd) { return GetU64Option(fd, SO_COOKIE, "SO_COOKIE"); }

std::optional<Endpoint4> Sockets::PeerIPv4(int fd) {
  sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw NativeError::FromErrno("getpeername");
  if (addr.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
    return Endpoint4{v4->sin_addr.s_addr, ntohs(v4->sin_port)};
  }
  if (addr.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
    if (!IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) return std::nullopt;
    uint32_t ip;
    std::memcpy(&ip, &v6->sin6_addr.s6_addr[12], sizeof(ip));
    return Endpoint4{ip, ntohs(v6->sin6_port)};
  }
  return std::nullopt;
}

std::string Sockets::FormatIPv4(uint32_t ip_be) {
  char text[INET_ADDRSTRLEN];
  in_addr a{};
  a.s_addr = ip_be;
  inet_ntop(AF_INET, &a, text, sizeof(text));
  return text;
}

}  // namespace nodemesh
