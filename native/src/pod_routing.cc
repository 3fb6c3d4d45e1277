// In-pod routing for inbound delivery: the fwmark rule and local route over rtnetlink, and
// the two sysctls under /proc/sys/net (which resolves to the calling thread's netns).
#include "pod_routing.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "native_error.h"
#include "unique_fd.h"

namespace nodemesh {
namespace {

constexpr const char* kFwmarkAccept = "/proc/sys/net/ipv4/tcp_fwmark_accept";
constexpr const char* kFwmarkReflect = "/proc/sys/net/ipv4/fwmark_reflect";

// One rtnetlink request: the netlink header, the family header, then u32 attributes.
class Request {
 public:
  Request(uint16_t type, uint16_t flags, uint32_t seq, const void* family_hdr, size_t len) {
    buf_.resize(NLMSG_SPACE(len));
    nlmsghdr* h = hdr();
    h->nlmsg_len = NLMSG_LENGTH(len);
    h->nlmsg_type = type;
    h->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
    h->nlmsg_seq = seq;
    std::memcpy(NLMSG_DATA(h), family_hdr, len);
  }

  void U32(uint16_t type, uint32_t value) {
    size_t off = NLMSG_ALIGN(hdr()->nlmsg_len);
    size_t len = RTA_LENGTH(sizeof(value));
    buf_.resize(off + RTA_ALIGN(len));
    auto* rta = reinterpret_cast<rtattr*>(buf_.data() + off);
    rta->rta_type = type;
    rta->rta_len = static_cast<uint16_t>(len);
    std::memcpy(RTA_DATA(rta), &value, sizeof(value));
    hdr()->nlmsg_len = static_cast<uint32_t>(off + RTA_ALIGN(len));
  }

  const char* data() const { return buf_.data(); }
  size_t size() const { return hdr_const()->nlmsg_len; }
  uint32_t seq() const { return hdr_const()->nlmsg_seq; }

 private:
  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  const nlmsghdr* hdr_const() const { return reinterpret_cast<const nlmsghdr*>(buf_.data()); }
  std::vector<char> buf_;
};

class Rtnl {
 public:
  Rtnl() : fd_(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)) {
    if (!fd_.valid()) throw NativeError::FromErrno("socket", "AF_NETLINK NETLINK_ROUTE");
  }

  uint32_t NextSeq() { return ++seq_; }

  // Sends one request and returns the kernel's answer: 0, or a negative errno.
  int Talk(const Request& req, const std::string& what) {
    if (::send(fd_.get(), req.data(), req.size(), 0) < 0) throw NativeError::FromErrno("send", "rtnetlink " + what);
    alignas(nlmsghdr) char buf[8192];
    for (;;) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw NativeError::FromErrno("recv", "rtnetlink " + what);
      }
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_seq != req.seq() || h->nlmsg_type != NLMSG_ERROR) continue;
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) throw NativeError(EPROTO, "recv", "short rtnetlink ack for " + what);
        return reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
      }
    }
  }

 private:
  UniqueFd fd_;
  uint32_t seq_ = 0;
};

std::string Describe(const char* op, const DeliveryRouting& r) {
  char text[160];
  std::snprintf(text, sizeof(text), "%s fwmark 0x%x/0x%x lookup %u pref %u", op, r.mark, r.mask, r.table, r.priority);
  return text;
}

std::string DescribeRoute(const char* op, const DeliveryRouting& r) {
  return std::string(op) + " local 0.0.0.0/0 dev lo table " + std::to_string(r.table);
}

Request RuleRequest(Rtnl& nl, uint16_t type, uint16_t flags, const DeliveryRouting& r) {
  fib_rule_hdr frh{};
  frh.family = AF_INET;
  frh.action = FR_ACT_TO_TBL;
  frh.table = static_cast<uint8_t>(r.table < 256 ? r.table : static_cast<uint32_t>(RT_TABLE_UNSPEC));
  Request req(type, flags, nl.NextSeq(), &frh, sizeof(frh));
  req.U32(FRA_PRIORITY, r.priority);
  req.U32(FRA_FWMARK, r.mark);
  req.U32(FRA_FWMASK, r.mask);
  req.U32(FRA_TABLE, r.table);
  return req;
}

Request RouteRequest(Rtnl& nl, uint16_t type, uint16_t flags, const DeliveryRouting& r, unsigned lo) {
  rtmsg rtm{};
  rtm.rtm_family = AF_INET;
  rtm.rtm_table = static_cast<uint8_t>(r.table < 256 ? r.table : static_cast<uint32_t>(RT_TABLE_UNSPEC));
  rtm.rtm_type = RTN_LOCAL;
  // As iproute2 does: a delete matches any scope and protocol, an add states them.
  rtm.rtm_scope = type == RTM_DELROUTE ? RT_SCOPE_NOWHERE : RT_SCOPE_HOST;
  rtm.rtm_protocol = type == RTM_DELROUTE ? 0 : RTPROT_BOOT;
  Request req(type, flags, nl.NextSeq(), &rtm, sizeof(rtm));
  req.U32(RTA_TABLE, r.table);
  req.U32(RTA_OIF, lo);
  return req;
}

unsigned LoopbackIndex() {
  unsigned lo = if_nametoindex("lo");
  if (lo == 0) throw NativeError::FromErrno("if_nametoindex", "'lo'");
  return lo;
}

int ReadSysctl(const char* path) {
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw NativeError::FromErrno("open", path);
  char text[32] = {};
  ssize_t n = ::read(fd.get(), text, sizeof(text) - 1);
  if (n < 0) throw NativeError::FromErrno("read", path);
  return std::atoi(text);
}

void WriteSysctl(const char* path, int value) {
  UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) throw NativeError::FromErrno("open", path);
  std::string text = std::to_string(value) + "\n";
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    throw NativeError::FromErrno("write", std::string(path) + " = " + std::to_string(value));
}

}  // namespace

RoutingInstalled PodRouting::Install(const DeliveryRouting& r) {
  RoutingInstalled out{};
  out.prev_fwmark_accept = ReadSysctl(kFwmarkAccept);
  out.prev_fwmark_reflect = ReadSysctl(kFwmarkReflect);
  Rtnl nl;
  unsigned lo = LoopbackIndex();

  // REPLACE: whatever sits at that key in our table becomes exactly our route.
  std::string what = DescribeRoute("RTM_NEWROUTE", r);
  int err = nl.Talk(RouteRequest(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, r, lo), what);
  if (err != 0) throw NativeError(-err, "rtnetlink", what);

  // EXCL: the kernel answers EEXIST for an identical rule, so a re-install adds no duplicate.
  what = Describe("RTM_NEWRULE", r);
  err = nl.Talk(RuleRequest(nl, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, r), what);
  if (err != 0 && err != -EEXIST) throw NativeError(-err, "rtnetlink", what);
  out.rule_added = err == 0;

  // The app's socket accepted from our SYN takes its mark, so its replies follow the rule;
  // resets and ICMP errors answering our packets carry it too.
  WriteSysctl(kFwmarkAccept, 1);
  WriteSysctl(kFwmarkReflect, 1);
  return out;
}

RoutingRemoved PodRouting::Remove(const DeliveryRouting& r, int fwmark_accept, int fwmark_reflect) {
  RoutingRemoved out{};
  Rtnl nl;
  // Earlier duplicates (none should exist) go too; bounded so a kernel quirk cannot spin.
  std::string what = Describe("RTM_DELRULE", r);
  for (int i = 0; i < 16; i++) {
    int err = nl.Talk(RuleRequest(nl, RTM_DELRULE, 0, r), what);
    if (err == -ENOENT) break;
    if (err != 0) throw NativeError(-err, "rtnetlink", what);
    out.rule_removed = true;
  }
  what = DescribeRoute("RTM_DELROUTE", r);
  int err = nl.Talk(RouteRequest(nl, RTM_DELROUTE, 0, r, LoopbackIndex()), what);
  if (err != 0 && err != -ESRCH && err != -ENOENT) throw NativeError(-err, "rtnetlink", what);
  out.route_removed = err == 0;
  if (fwmark_accept >= 0) WriteSysctl(kFwmarkAccept, fwmark_accept);
  if (fwmark_reflect >= 0) WriteSysctl(kFwmarkReflect, fwmark_reflect);
  return out;
}

}  // namespace nodemesh
