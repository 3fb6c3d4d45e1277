// In-pod routing for inbound delivery with the client's address kept as the source: one
// fwmark rule, one local route and two sysctls, written over rtnetlink and /proc/sys by a
// thread that is already inside the pod netns (run it through NetnsThread).
#pragma once

#include <cstdint>

namespace nodemesh {

// The agent's delivery sockets carry `mark` (SO_MARK). Replies to them (the app's accepted
// socket inherits the mark with tcp_fwmark_accept, its resets with fwmark_reflect) are sent
// through `table`, whose one route delivers every destination locally over lo.
struct DeliveryRouting {
  uint32_t mark;
  uint32_t mask;
  uint32_t table;
  uint32_t priority;  // of the rule: after `local` (0), before `main` (32766)
};

struct RoutingInstalled {
  bool rule_added;          // false when the identical rule was there already (re-install)
  int prev_fwmark_accept;   // net.ipv4.tcp_fwmark_accept before this call
  int prev_fwmark_reflect;  // net.ipv4.fwmark_reflect before this call
};

struct RoutingRemoved {
  bool rule_removed;
  bool route_removed;
};

class PodRouting {
 public:
  // Idempotent: replaces the route, adds the rule unless the identical one exists, then
  // sets both sysctls to 1. Throws NativeError naming the step that failed.
  static RoutingInstalled Install(const DeliveryRouting& r);
  // Deletes exactly our rule and route (absence is fine) and writes the sysctls back to the
  // given values; a negative value leaves that sysctl as it is.
  static RoutingRemoved Remove(const DeliveryRouting& r, int fwmark_accept, int fwmark_reflect);
};

}  // namespace nodemesh
