// bpffs mounts: the agent's pins live on one; mount it where the node has none.
#pragma once

#include <string>

namespace nodemesh {

class Bpffs {
 public:
  static bool IsBpffs(const std::string& path);  // statfs f_type == BPF_FS_MAGIC
  // mount("bpf", path, "bpf", 0, "mode=0700"); no-op when already bpffs.
  static void Mount(const std::string& path);
  static void Unmount(const std::string& path);
};

}  // namespace nodemesh
