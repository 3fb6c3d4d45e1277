// A failed native call (errno, the call that failed, libbpf's text), carried from a worker
// thread to JavaScript, where it becomes an Error shaped like a Node system error.
#pragma once

#include <napi.h>

#include <exception>
#include <string>

namespace nodemesh {

class NativeError : public std::exception {
 public:
  // err is a positive errno value.
  NativeError(int err, std::string syscall, std::string detail = {}, std::string log = {});
  // Takes errno as the failed call left it.
  static NativeError FromErrno(std::string syscall, std::string detail = {});

  int err() const { return err_; }
  const std::string& syscall() const { return syscall_; }
  const char* what() const noexcept override { return message_.c_str(); }
  void set_log(std::string log);
  bool has_log() const { return !log_.empty(); }

  // 'EPERM', 'ENOTSUPP' (kernel-internal 524), ... or 'UNKNOWN'.
  static std::string CodeName(int err);
  // { message, errno (negative, as Node reports it), code, syscall, libbpfLog? }
  Napi::Error ToJs(Napi::Env env) const;

 private:
  void Compose();

  int err_;
  std::string syscall_;
  std::string detail_;
  std::string log_;
  std::string message_;
};

// Throws NativeError::FromErrno(syscall, detail) when rc is negative. libbpf 1.x returns
// -errno and also sets errno, so both styles of call work with it.
int CheckRc(int rc, const char* syscall, const std::string& detail = {});

}  // namespace nodemesh
