// Runs one short blocking native call on the libuv pool and settles a Promise with it.
#include "promise_worker.h"

#include <errno.h>

#include "libbpf_log.h"

namespace nodemesh {

PromiseWorker::PromiseWorker(Napi::Env env, const char* name, Exec exec, Resolve resolve)
    : Napi::AsyncWorker(env, name),
      deferred_(Napi::Promise::Deferred::New(env)),
      exec_(std::move(exec)),
      resolve_(std::move(resolve)) {}

Napi::Promise PromiseWorker::Start(Napi::Env env, const char* name, Exec exec, Resolve resolve) {
  auto* worker = new PromiseWorker(env, name, std::move(exec), std::move(resolve));
  Napi::Promise promise = worker->deferred_.Promise();
  worker->Queue();  // the worker deletes itself once settled
  return promise;
}

void PromiseWorker::Execute() {
  LibbpfLog::Capture capture;
  try {
    exec_();
  } catch (NativeError& e) {
    if (!e.has_log()) e.set_log(capture.Take());
    failure_ = e;
  } catch (const std::bad_alloc&) {
    failure_ = NativeError(ENOMEM, "malloc");
  } catch (const std::exception& e) {
    failure_ = NativeError(EIO, "native", e.what());
  }
}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (failure_) {
    deferred_.Reject(failure_->ToJs(env).Value());
    return;
  }
  try {
    deferred_.Resolve(resolve_(env));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  } catch (const NativeError& e) {
    deferred_.Reject(e.ToJs(env).Value());
  }
}

void PromiseWorker::OnError(const Napi::Error& error) { deferred_.Reject(error.Value()); }

}  // namespace nodemesh
