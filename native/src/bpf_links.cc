// bpf_link lifecycle by pin path.
#include "bpf_links.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cstring>

#include "native_error.h"
#include "unique_fd.h"

namespace nodemesh {
namespace {

UniqueFd OpenPinned(const std::string& pin_path) {
  int fd = bpf_obj_get(pin_path.c_str());
  if (fd < 0) throw NativeError::FromErrno("bpf_obj_get", "'" + pin_path + "'");
  return UniqueFd(fd);
}

}  // namespace

void BpfLinks::CreateAndPin(int prog_fd, const std::string& target_path, int attach_type,
                            const std::string& pin_path) {
  UniqueFd target(::open(target_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!target.valid()) throw NativeError::FromErrno("open", "'" + target_path + "'");
  int link = bpf_link_create(prog_fd, target.get(), static_cast<bpf_attach_type>(attach_type), nullptr);
  if (link < 0) throw NativeError::FromErrno("bpf_link_create", "'" + target_path + "'");
  UniqueFd link_fd(link);
  // Until pinned, closing link_fd detaches: a failed pin leaves nothing attached.
  CheckRc(bpf_obj_pin(link_fd.get(), pin_path.c_str()), "bpf_obj_pin", "'" + pin_path + "'");
}

void BpfLinks::Update(const std::string& pin_path, int prog_fd) {
  UniqueFd link = OpenPinned(pin_path);
  CheckRc(bpf_link_update(link.get(), prog_fd, nullptr), "bpf_link_update", "'" + pin_path + "'");
}

void BpfLinks::DetachAndUnpin(const std::string& pin_path) {
  UniqueFd link = OpenPinned(pin_path);
  if (bpf_link_detach(link.get()) != 0 && errno != ENOLINK)
    throw NativeError::FromErrno("bpf_link_detach", "'" + pin_path + "'");
  if (::unlink(pin_path.c_str()) != 0 && errno != ENOENT)
    throw NativeError::FromErrno("unlink", "'" + pin_path + "'");
}

std::optional<LinkDescription> BpfLinks::Describe(const std::string& pin_path) {
  int fd = bpf_obj_get(pin_path.c_str());
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw NativeError::FromErrno("bpf_obj_get", "'" + pin_path + "'");
  }
  UniqueFd link(fd);
  bpf_link_info info;
  std::memset(&info, 0, sizeof(info));
  __u32 len = sizeof(info);
  CheckRc(bpf_obj_get_info_by_fd(link.get(), &info, &len), "bpf_obj_get_info_by_fd",
          "'" + pin_path + "'");
  LinkDescription d{info.id, info.type, info.prog_id, 0, 0, 0};
  if (info.type == BPF_LINK_TYPE_CGROUP) {
    d.cgroup_id = info.cgroup.cgroup_id;
    d.attach_type = info.cgroup.attach_type;
  } else if (info.type == BPF_LINK_TYPE_NETNS) {
    d.netns_ino = info.netns.netns_ino;
    d.attach_type = info.netns.attach_type;
  }
  return d;
}

}  // namespace nodemesh
