// Runs one short blocking native call on the libuv pool and settles a Promise with it.
// Execute() never touches JS: it runs `exec`, capturing libbpf output; `resolve` then
// builds the JS value on the main thread. A NativeError rejects the Promise.
#pragma once

#include <napi.h>

#include <functional>
#include <optional>

#include "native_error.h"

namespace nodemesh {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Exec = std::function<void()>;
  using Resolve = std::function<Napi::Value(Napi::Env)>;

  // Queues the work and returns the Promise it will settle.
  static Napi::Promise Start(Napi::Env env, const char* name, Exec exec, Resolve resolve);

 protected:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& error) override;

 private:
  PromiseWorker(Napi::Env env, const char* name, Exec exec, Resolve resolve);

  Napi::Promise::Deferred deferred_;
  Exec exec_;
  Resolve resolve_;
  std::optional<NativeError> failure_;
};

}  // namespace nodemesh
