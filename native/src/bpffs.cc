// bpffs mounts.
#include "bpffs.h"

#include <errno.h>
#include <sys/mount.h>
#include <sys/vfs.h>

#include "native_error.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

namespace nodemesh {

bool Bpffs::IsBpffs(const std::string& path) {
  struct statfs st;
  if (::statfs(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    throw NativeError::FromErrno("statfs", "'" + path + "'");
  }
  return static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC;
}

void Bpffs::Mount(const std::string& path) {
  if (IsBpffs(path)) return;
  if (::mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0)
    throw NativeError::FromErrno("mount", "bpf at '" + path + "'");
}

void Bpffs::Unmount(const std::string& path) {
  if (::umount2(path.c_str(), 0) != 0) throw NativeError::FromErrno("umount2", "'" + path + "'");
}

}  // namespace nodemesh
