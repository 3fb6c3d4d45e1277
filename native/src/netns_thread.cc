// Runs a function on a dedicated thread that has joined another network namespace.
#include "netns_thread.h"

#include <fcntl.h>
#include <sched.h>

#include "native_error.h"

namespace nodemesh {

UniqueFd NetnsThread::OpenNetns(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw NativeError::FromErrno("open", "'" + path + "'");
  return fd;
}

UniqueFd NetnsThread::Enter(int target_fd, const std::string& path) {
  UniqueFd home(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!home.valid()) throw NativeError::FromErrno("open", "'/proc/thread-self/ns/net'");
  // EINVAL here means the path is not a network namespace.
  if (::setns(target_fd, CLONE_NEWNET) != 0) throw NativeError::FromErrno("setns", "'" + path + "'");
  return home;
}

void NetnsThread::Leave(const UniqueFd& home) {
  // The thread ends right after this, so a failure cannot leak the namespace into other
  // work; it is still reported because it would mean something is badly wrong.
  if (::setns(home.get(), CLONE_NEWNET) != 0) throw NativeError::FromErrno("setns", "(back)");
}

}  // namespace nodemesh
