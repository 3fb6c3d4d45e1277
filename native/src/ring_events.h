// The JavaScript handle of a ring buffer subscription: a RingPoller whose batches reach a JS
// callback through a ThreadSafeFunction (non-blocking: a full queue drops the batch and counts
// it, the poller thread never waits on JS). Stopped and joined by close(), by the garbage
// collector, or when the Node environment tears down, whichever comes first.
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "ring_poller.h"

namespace nodemesh {

// One batch on its way to JS: the raw records and the poller's drop count at that moment.
struct RingBatch {
  std::vector<uint8_t> records;
  size_t count;
  uint64_t dropped_total;
};

class RingEventsWrap : public Napi::ObjectWrap<RingEventsWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // new RingEvents(mapFd, recordSize, maxBatch, maxDelayMs, maxQueuedBatches,
  //                onBatch(records: Buffer, count: number, droppedTotal: bigint))
  explicit RingEventsWrap(const Napi::CallbackInfo& info);
  ~RingEventsWrap() override;

 private:
  static void CallJs(Napi::Env env, Napi::Function fn, std::nullptr_t* ctx, RingBatch* batch);
  static void OnEnvCleanup(void* arg);
  using Tsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, RingBatch, &RingEventsWrap::CallJs>;

  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value SetPaused(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Discarded(const Napi::CallbackInfo& info);
  // Joins the thread, then releases the TSFN. JS thread only; idempotent.
  void Shutdown();

  napi_env env_ = nullptr;
  std::unique_ptr<RingPoller> poller_;
  Tsfn tsfn_;
  bool open_ = false;
  bool hook_added_ = false;
  uint64_t discarded_ = 0;
};

}  // namespace nodemesh
