// The JavaScript handle of a ring buffer subscription (RingPoller + ThreadSafeFunction).
#include "ring_events.h"

#include "native_error.h"

namespace nodemesh {
namespace {

uint32_t PositiveArg(const Napi::CallbackInfo& info, size_t i, const char* name, uint32_t max) {
  if (i >= info.Length() || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v != static_cast<double>(static_cast<int64_t>(v)) || v < 1 || v > max)
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [1, " + std::to_string(max) + "]");
  return static_cast<uint32_t>(v);
}

}  // namespace

Napi::Function RingEventsWrap::Define(Napi::Env env) {
  return DefineClass(env, "RingEvents",
                     {
                         InstanceMethod<&RingEventsWrap::Close>("close"),
                         InstanceMethod<&RingEventsWrap::SetPaused>("setPaused"),
                         InstanceMethod<&RingEventsWrap::Stats>("stats"),
                         InstanceAccessor<&RingEventsWrap::Discarded>("discarded"),
                     });
}

RingEventsWrap::RingEventsWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RingEventsWrap>(info) {
  Napi::Env env = info.Env();
  int map_fd = static_cast<int>(PositiveArg(info, 0, "mapFd", INT32_MAX));
  RingPollerOptions options;
  options.record_size = PositiveArg(info, 1, "recordSize", 1 << 16);
  options.max_batch = PositiveArg(info, 2, "maxBatch", 1 << 16);
  options.max_delay_ms = static_cast<int>(PositiveArg(info, 3, "maxDelayMs", 60'000));
  uint32_t max_queue = PositiveArg(info, 4, "maxQueuedBatches", 1 << 16);
  if (info.Length() < 6 || !info[5].IsFunction()) throw Napi::TypeError::New(env, "onBatch must be a function");

  // The poller first: if the ring cannot be mapped, nothing else was made.
  try {
    poller_ = std::make_unique<RingPoller>(map_fd, options, [this](std::vector<uint8_t>&& records, size_t count) {
      auto* batch = new RingBatch{std::move(records), count, poller_ ? poller_->Stats().dropped : 0};
      // Non-blocking: with maxQueuedBatches already waiting for JS, the batch is dropped
      // (and counted by the poller) rather than holding up the ring.
      if (tsfn_.NonBlockingCall(batch) != napi_ok) {
        delete batch;
        return false;
      }
      return true;
    });
  } catch (const NativeError& e) {
    throw e.ToJs(env);
  }
  tsfn_ = Tsfn::New(env, info[5].As<Napi::Function>(), "nodemesh.ringEvents", max_queue, 1);
  // A subscription alone does not keep the process alive (a test that forgets to close it
  // must not hang); the agent has its servers for that.
  tsfn_.Unref(env);
  env_ = env;
  open_ = true;
  // Added after the TSFN: cleanup hooks run last-added first, so at environment teardown the
  // thread is joined before Node finalizes the TSFN.
  if (napi_add_env_cleanup_hook(env, &RingEventsWrap::OnEnvCleanup, this) == napi_ok) hook_added_ = true;
  discarded_ = poller_->DiscardBacklog();
  poller_->Start();
}

RingEventsWrap::~RingEventsWrap() {
  Shutdown();
  if (hook_added_ && env_ != nullptr) napi_remove_env_cleanup_hook(env_, &RingEventsWrap::OnEnvCleanup, this);
}

void RingEventsWrap::OnEnvCleanup(void* arg) {
  auto* self = static_cast<RingEventsWrap*>(arg);
  self->hook_added_ = false;  // Node drops the hook itself once it ran
  self->Shutdown();
}

void RingEventsWrap::Shutdown() {
  if (!open_) return;
  open_ = false;
  if (poller_) poller_->Stop();  // joined: the thread touches neither poller_ nor tsfn_ again
  tsfn_.Release();
}

void RingEventsWrap::CallJs(Napi::Env env, Napi::Function fn, std::nullptr_t*, RingBatch* batch) {
  std::unique_ptr<RingBatch> owned(batch);
  // No env: the TSFN is being finalized with this batch still queued; it only needs freeing.
  if (static_cast<napi_env>(env) == nullptr || fn.IsEmpty() || !owned) return;
  try {
    fn.Call({Napi::Buffer<uint8_t>::Copy(env, owned->records.data(), owned->records.size()),
             Napi::Number::New(env, static_cast<double>(owned->count)),
             Napi::BigInt::New(env, owned->dropped_total)});
  } catch (const Napi::Error&) {
    // src/redirect's dispatcher contains every subscriber's error; nothing can reach here.
  }
}

Napi::Value RingEventsWrap::Close(const Napi::CallbackInfo& info) {
  Shutdown();
  return info.Env().Undefined();
}

Napi::Value RingEventsWrap::SetPaused(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean()) throw Napi::TypeError::New(info.Env(), "paused must be a boolean");
  if (open_ && poller_) poller_->SetPaused(info[0].As<Napi::Boolean>().Value());
  return info.Env().Undefined();
}

Napi::Value RingEventsWrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RingPollerStats s = poller_ ? poller_->Stats() : RingPollerStats{0, 0, 0, 0};
  Napi::Object o = Napi::Object::New(env);
  o.Set("delivered", Napi::BigInt::New(env, s.delivered));
  o.Set("dropped", Napi::BigInt::New(env, s.dropped));
  o.Set("badRecords", Napi::BigInt::New(env, s.bad_records));
  o.Set("pollErrors", Napi::BigInt::New(env, s.poll_errors));
  o.Set("open", Napi::Boolean::New(env, open_));
  return o;
}

Napi::Value RingEventsWrap::Discarded(const Napi::CallbackInfo& info) {
  return Napi::BigInt::New(info.Env(), discarded_);
}

}  // namespace nodemesh
