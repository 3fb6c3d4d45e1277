// A failed native call, carried to JavaScript as an Error shaped like a Node system error.
#include "native_error.h"

#include <errno.h>
#include <string.h>

namespace nodemesh {

NativeError::NativeError(int err, std::string syscall, std::string detail, std::string log)
    : err_(err), syscall_(std::move(syscall)), detail_(std::move(detail)), log_(std::move(log)) {
  Compose();
}

NativeError NativeError::FromErrno(std::string syscall, std::string detail) {
  int err = errno != 0 ? errno : EIO;
  return NativeError(err, std::move(syscall), std::move(detail));
}

void NativeError::set_log(std::string log) {
  log_ = std::move(log);
  Compose();
}

std::string NativeError::CodeName(int err) {
  // Kernel-internal values that reach user space from bpf(2) but have no libc name.
  switch (err) {
    case 512: return "ERESTARTSYS";
    case 524: return "ENOTSUPP";
    default: break;
  }
  const char* name = strerrorname_np(err);
  return name ? name : "UNKNOWN";
}

void NativeError::Compose() {
  const char* text = err_ == 524 ? "Operation not supported by the kernel" : strerror(err_);
  message_ = CodeName(err_) + ": " + text + ", " + syscall_;
  if (!detail_.empty()) message_ += " " + detail_;
  if (!log_.empty()) message_ += "\n" + log_;
}

Napi::Error NativeError::ToJs(Napi::Env env) const {
  Napi::Error e = Napi::Error::New(env, message_);
  e.Set("errno", Napi::Number::New(env, -err_));
  e.Set("code", Napi::String::New(env, CodeName(err_)));
  e.Set("syscall", Napi::String::New(env, syscall_));
  if (!log_.empty()) e.Set("libbpfLog", Napi::String::New(env, log_));
  return e;
}

int CheckRc(int rc, const char* syscall, const std::string& detail) {
  if (rc < 0) {
    if (errno == 0) errno = -rc;
    throw NativeError::FromErrno(syscall, detail);
  }
  return rc;
}

}  // namespace nodemesh
