// Owner of one loaded libbpf bpf_object: opens it with a pin root (so maps marked
// LIBBPF_PIN_BY_NAME are pinned or reused there), sets const volatile globals, loads it,
// and closes it (which releases its program and map fds; pins and links stay).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

struct bpf_object;

namespace nodemesh {

struct ProgramInfo {
  std::string name;
  std::string section;
  int fd;
  int type;         // enum bpf_prog_type
  int attach_type;  // enum bpf_attach_type (expected)
};

struct MapInfo {
  std::string name;
  int fd;
  int type;  // enum bpf_map_type
  uint32_t key_size;
  uint32_t value_size;
  uint32_t max_entries;
};

class BpfObjectOwner {
 public:
  using Rodata = std::vector<std::pair<std::string, std::vector<uint8_t>>>;

  // Throws NativeError (libbpf's log in it) on failure. Blocking: call off the JS thread.
  static std::unique_ptr<BpfObjectOwner> OpenAndLoad(const std::string& path,
                                                     const std::string& pin_root,
                                                     const Rodata& rodata);
  ~BpfObjectOwner();
  BpfObjectOwner(const BpfObjectOwner&) = delete;
  BpfObjectOwner& operator=(const BpfObjectOwner&) = delete;

  std::vector<ProgramInfo> Programs() const;
  std::vector<MapInfo> Maps() const;
  void Close();
  bool closed() const { return obj_ == nullptr; }

 private:
  explicit BpfObjectOwner(bpf_object* obj) : obj_(obj) {}
  // Writes `value` over the .rodata variable `name` (a const volatile global).
  void SetRodata(const std::string& name, const std::vector<uint8_t>& value);

  bpf_object* obj_;
};

}  // namespace nodemesh
