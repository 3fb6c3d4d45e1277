// BPF map operations by map fd, with the key and value sizes checked against the map
// itself (the kernel reads exactly key_size/value_size bytes from the buffers given).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace nodemesh {

struct MapShape {
  uint32_t type;
  uint32_t key_size;
  uint32_t value_size;
  uint32_t max_entries;
};

struct OriginalDst {
  uint32_t ip;    // network order
  uint16_t port;  // host order
};

class BpfMaps {
 public:
  static MapShape Shape(int map_fd);
  static void Update(int map_fd, const std::vector<uint8_t>& key, const std::vector<uint8_t>& value,
                     uint64_t flags);
  static std::optional<std::vector<uint8_t>> Lookup(int map_fd, const std::vector<uint8_t>& key);
  // false when the key was not there.
  static bool Delete(int map_fd, const std::vector<uint8_t>& key);
  // The key after `key` (the first key when none given); nullopt at the end.
  static std::optional<std::vector<uint8_t>> NextKey(int map_fd,
                                                    const std::optional<std::vector<uint8_t>>& key);
  // SOCKHASH/SOCKMAP update whose value is a socket fd.
  static void UpdateSocket(int map_fd, const std::vector<uint8_t>& key, int sock_fd, uint64_t flags);
  // nm_orig_dst lookup for an accepted socket: (its SO_NETNS_COOKIE, its peer) -> dst.
  static std::optional<OriginalDst> LookupOriginalDst(int orig_dst_map_fd, int sock_fd);
};

}  // namespace nodemesh
