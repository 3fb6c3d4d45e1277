// Runs a function on a dedicated thread that has joined another network namespace.
// setns(CLONE_NEWNET) changes only the calling thread, so neither the JS thread nor a
// libuv pool thread ever switches: a fresh std::thread does, and is joined before return.
#pragma once

#include <exception>
#include <string>
#include <thread>
#include <type_traits>

#include "unique_fd.h"

namespace nodemesh {

class NetnsThread {
 public:
  // Runs fn() inside the netns at netns_path (e.g. /run/netns/x or /proc/<pid>/ns/net)
  // and returns its result. Throws NativeError, or whatever fn throws.
  template <typename Fn>
  static auto Run(const std::string& netns_path, Fn fn) -> decltype(fn()) {
    UniqueFd target = OpenNetns(netns_path);
    std::exception_ptr failure;
    using Result = decltype(fn());
    std::conditional_t<std::is_void_v<Result>, int, Result> result{};
    std::thread worker([&] {
      try {
        UniqueFd home = Enter(target.get(), netns_path);
        if constexpr (std::is_void_v<Result>) {
          fn();
        } else {
          result = fn();
        }
        Leave(home);
      } catch (...) {
        failure = std::current_exception();
      }
    });
    worker.join();
    if (failure) std::rethrow_exception(failure);
    if constexpr (!std::is_void_v<Result>) return result;
  }

 private:
  static UniqueFd OpenNetns(const std::string& path);
  // Joins the target netns; returns an fd of the thread's previous one.
  static UniqueFd Enter(int target_fd, const std::string& path);
  static void Leave(const UniqueFd& home);
};

}  // namespace nodemesh
