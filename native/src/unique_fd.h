// Owner of one file descriptor (socket, BPF object, namespace or cgroup dir): closes it once.
#pragma once

namespace nodemesh {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership, e.g. when the fd is handed to JavaScript.
  int Release();
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

}  // namespace nodemesh
