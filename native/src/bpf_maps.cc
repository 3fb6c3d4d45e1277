// BPF map operations by map fd.
#include "bpf_maps.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>

#include <cstring>
#include <string>

#include "native_error.h"
#include "redirect.h"
#include "sockets.h"

namespace nodemesh {
namespace {

void CheckSize(const char* what, size_t got, uint32_t want, const char* call) {
  if (got != want)
    throw NativeError(EINVAL, call,
                      std::string(what) + " is " + std::to_string(got) + " bytes, the map wants " +
                          std::to_string(want));
}

}  // namespace

MapShape BpfMaps::Shape(int map_fd) {
  bpf_map_info info;
  std::memset(&info, 0, sizeof(info));
  __u32 len = sizeof(info);
  CheckRc(bpf_obj_get_info_by_fd(map_fd, &info, &len), "bpf_obj_get_info_by_fd");
  return MapShape{info.type, info.key_size, info.value_size, info.max_entries};
}

void BpfMaps::Update(int map_fd, const std::vector<uint8_t>& key, const std::vector<uint8_t>& value,
                     uint64_t flags) {
  MapShape shape = Shape(map_fd);
  CheckSize("key", key.size(), shape.key_size, "bpf_map_update_elem");
  CheckSize("value", value.size(), shape.value_size, "bpf_map_update_elem");
  CheckRc(bpf_map_update_elem(map_fd, key.data(), value.data(), flags), "bpf_map_update_elem");
}

std::optional<std::vector<uint8_t>> BpfMaps::Lookup(int map_fd, const std::vector<uint8_t>& key) {
  MapShape shape = Shape(map_fd);
  CheckSize("key", key.size(), shape.key_size, "bpf_map_lookup_elem");
  std::vector<uint8_t> value(shape.value_size);
  if (bpf_map_lookup_elem(map_fd, key.data(), value.data()) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw NativeError::FromErrno("bpf_map_lookup_elem");
  }
  return value;
}

bool BpfMaps::Delete(int map_fd, const std::vector<uint8_t>& key) {
  MapShape shape = Shape(map_fd);
  CheckSize("key", key.size(), shape.key_size, "bpf_map_delete_elem");
  if (bpf_map_delete_elem(map_fd, key.data()) != 0) {
    if (errno == ENOENT) return false;
    throw NativeError::FromErrno("bpf_map_delete_elem");
  }
  return true;
}

std::optional<std::vector<uint8_t>> BpfMaps::NextKey(int map_fd,
                                                    const std::optional<std::vector<uint8_t>>& key) {
  MapShape shape = Shape(map_fd);
  if (key) CheckSize("key", key->size(), shape.key_size, "bpf_map_get_next_key");
  std::vector<uint8_t> next(shape.key_size);
  if (bpf_map_get_next_key(map_fd, key ? key->data() : nullptr, next.data()) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw NativeError::FromErrno("bpf_map_get_next_key");
  }
  return next;
}

void BpfMaps::UpdateSocket(int map_fd, const std::vector<uint8_t>& key, int sock_fd, uint64_t flags) {
  MapShape shape = Shape(map_fd);
  if (shape.type != BPF_MAP_TYPE_SOCKHASH && shape.type != BPF_MAP_TYPE_SOCKMAP)
    throw NativeError(EINVAL, "bpf_map_update_elem", "not a SOCKHASH or SOCKMAP");
  CheckSize("key", key.size(), shape.key_size, "bpf_map_update_elem");
  uint64_t value64 = static_cast<uint64_t>(sock_fd);
  uint32_t value32 = static_cast<uint32_t>(sock_fd);
  const void* value = shape.value_size == 8 ? static_cast<const void*>(&value64) : &value32;
  CheckRc(bpf_map_update_elem(map_fd, key.data(), value, flags), "bpf_map_update_elem",
          "(socket fd " + std::to_string(sock_fd) + ")");
}

std::optional<OriginalDst> BpfMaps::LookupOriginalDst(int orig_dst_map_fd, int sock_fd) {
  // Hot path (once per accepted connection): the layout is fixed by redirect.h, and the
  // TypeScript side checked the map's sizes when it loaded the object.
  std::optional<Endpoint4> peer = Sockets::PeerIPv4(sock_fd);
  if (!peer) return std::nullopt;
  nm_orig_dst_key key;
  std::memset(&key, 0, sizeof(key));
  key.netns_cookie = Sockets::NetnsCookie(sock_fd);
  key.client_ip = peer->ip;
  key.client_port = peer->port;
  nm_addr4 value;
  if (bpf_map_lookup_elem(orig_dst_map_fd, &key, &value) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw NativeError::FromErrno("bpf_map_lookup_elem", "nm_orig_dst");
  }
  return OriginalDst{value.ip, value.port};
}

}  // namespace nodemesh
