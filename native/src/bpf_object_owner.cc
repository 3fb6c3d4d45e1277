// Owner of one loaded libbpf bpf_object.
#include "bpf_object_owner.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>

#include <cstring>

#include "libbpf_log.h"
#include "native_error.h"

namespace nodemesh {
namespace {

bool EndsWith(const std::string& s, const char* suffix) {
  size_t n = strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// bpf_object__load does many syscalls; name the one the log says failed.
const char* GuessLoadSyscall(const std::string& log) {
  if (log.find("failed to load program") != std::string::npos ||
      log.find("BEGIN PROG LOAD LOG") != std::string::npos)
    return "bpf_prog_load";
  if (log.find("failed to pin map") != std::string::npos ||
      log.find("failed to auto-pin") != std::string::npos)
    return "bpf_obj_pin";
  if (log.find("couldn't reuse pinned map") != std::string::npos ||
      log.find("failed to create map") != std::string::npos ||
      log.find("map '") != std::string::npos)
    return "bpf_map_create";
  return "bpf_object__load";
}

}  // namespace

std::unique_ptr<BpfObjectOwner> BpfObjectOwner::OpenAndLoad(const std::string& path,
                                                            const std::string& pin_root,
                                                            const Rodata& rodata) {
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root.empty() ? nullptr : pin_root.c_str());
  errno = 0;
  bpf_object* raw = bpf_object__open_file(path.c_str(), &opts);
  if (raw == nullptr) throw NativeError::FromErrno("bpf_object__open_file", "'" + path + "'");
  std::unique_ptr<BpfObjectOwner> owner(new BpfObjectOwner(raw));

  for (const auto& [name, value] : rodata) owner->SetRodata(name, value);

  LibbpfLog::Capture capture;
  int rc = bpf_object__load(raw);
  if (rc < 0) {
    std::string log = capture.Take();
    throw NativeError(-rc, GuessLoadSyscall(log), "'" + path + "'", log);
  }
  return owner;
}

void BpfObjectOwner::SetRodata(const std::string& name, const std::vector<uint8_t>& value) {
  bpf_map* rodata = nullptr;
  bpf_map* map;
  bpf_object__for_each_map(map, obj_) {
    if (bpf_map__is_internal(map) && EndsWith(bpf_map__name(map), ".rodata")) {
      rodata = map;
      break;
    }
  }
  const btf* types = bpf_object__btf(obj_);
  if (rodata == nullptr || types == nullptr)
    throw NativeError(ENOENT, "bpf_map__set_initial_value", "no .rodata with BTF for '" + name + "'");

  int sec_id = btf__find_by_name_kind(types, ".rodata", BTF_KIND_DATASEC);
  if (sec_id < 0) throw NativeError(ENOENT, "btf__find_by_name_kind", "DATASEC .rodata");
  const btf_type* sec = btf__type_by_id(types, static_cast<__u32>(sec_id));
  const btf_var_secinfo* vars = btf_var_secinfos(sec);
  for (int i = 0; i < btf_vlen(sec); i++) {
    const btf_type* var = btf__type_by_id(types, vars[i].type);
    const char* var_name = btf__name_by_offset(types, var->name_off);
    if (var_name == nullptr || name != var_name) continue;
    if (vars[i].size != value.size())
      throw NativeError(EINVAL, "bpf_map__set_initial_value",
                        "'" + name + "' is " + std::to_string(vars[i].size) + " bytes, got " +
                            std::to_string(value.size()));
    size_t size = 0;
    const void* current = bpf_map__initial_value(rodata, &size);
    if (current == nullptr || vars[i].offset + vars[i].size > size)
      throw NativeError(EINVAL, "bpf_map__initial_value", "'" + name + "'");
    std::vector<uint8_t> image(static_cast<const uint8_t*>(current),
                               static_cast<const uint8_t*>(current) + size);
    std::memcpy(image.data() + vars[i].offset, value.data(), value.size());
    CheckRc(bpf_map__set_initial_value(rodata, image.data(), image.size()),
            "bpf_map__set_initial_value", "'" + name + "'");
    return;
  }
  throw NativeError(ENOENT, "bpf_map__set_initial_value", "no const volatile global '" + name + "'");
}

BpfObjectOwner::~BpfObjectOwner() { Close(); }

void BpfObjectOwner::Close() {
  if (obj_ != nullptr) {
    bpf_object__close(obj_);
    obj_ = nullptr;
  }
}

std::vector<ProgramInfo> BpfObjectOwner::Programs() const {
  std::vector<ProgramInfo> out;
  if (obj_ == nullptr) return out;
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) {
    out.push_back({bpf_program__name(prog), bpf_program__section_name(prog), bpf_program__fd(prog),
                   static_cast<int>(bpf_program__type(prog)),
                   static_cast<int>(bpf_program__expected_attach_type(prog))});
  }
  return out;
}

std::vector<MapInfo> BpfObjectOwner::Maps() const {
  std::vector<MapInfo> out;
  if (obj_ == nullptr) return out;
  bpf_map* map;
  bpf_object__for_each_map(map, obj_) {
    out.push_back({bpf_map__name(map), bpf_map__fd(map), static_cast<int>(bpf_map__type(map)),
                   bpf_map__key_size(map), bpf_map__value_size(map), bpf_map__max_entries(map)});
  }
  return out;
}

}  // namespace nodemesh
