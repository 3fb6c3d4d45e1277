// bpf_link lifecycle by pin path: create (cgroup or netns target) and pin, open a pinned
// link and point it at a new program, detach and unpin, and describe a pinned link.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace nodemesh {

struct LinkDescription {
  uint32_t id;
  uint32_t type;  // enum bpf_link_type
  uint32_t prog_id;
  uint32_t attach_type;
  uint64_t cgroup_id;  // cgroup links: 0 once the cgroup is gone
  uint32_t netns_ino;  // netns links: 0 once the netns is gone
};

class BpfLinks {
 public:
  // Attaches prog_fd to the cgroup directory or netns file at target_path with
  // bpf_link_create, pins the link at pin_path, and closes the fd (the pin holds it).
  static void CreateAndPin(int prog_fd, const std::string& target_path, int attach_type,
                           const std::string& pin_path);
  static void Update(const std::string& pin_path, int prog_fd);
  // Detaches the pinned link and removes its pin. A link whose target is already gone
  // (ENOLINK) is only unpinned.
  static void DetachAndUnpin(const std::string& pin_path);
  // nullopt when nothing is pinned there.
  static std::optional<LinkDescription> Describe(const std::string& pin_path);
};

}  // namespace nodemesh
