// Owner of one libbpf ring_buffer over a BPF_MAP_TYPE_RINGBUF map and of the thread that
// polls it: records are copied into batches (at most max_batch records, or what arrived
// within max_delay of the first one) and each batch is handed to `deliver` on that thread.
// Knows nothing of JavaScript (ring_events.h puts a ThreadSafeFunction behind `deliver`).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "unique_fd.h"

struct ring_buffer;

namespace nodemesh {

struct RingPollerOptions {
  size_t record_size;  // every record must be exactly this long; others are counted and skipped
  size_t max_batch;    // records per batch
  int max_delay_ms;    // a batch is delivered at the latest this long after its first record
};

struct RingPollerStats {
  uint64_t delivered;    // records handed to deliver() and accepted by it
  uint64_t dropped;      // records of batches deliver() refused (its queue was full)
  uint64_t bad_records;  // records of the wrong size, skipped
  uint64_t poll_errors;  // failed poll(2)/ring_buffer__consume calls (the loop goes on)
};

class RingPoller {
 public:
  // Takes the batch; returns false when it could not take it (the records are then dropped).
  // Called on the poller thread only; must never block for long.
  using Deliver = std::function<bool(std::vector<uint8_t>&& records, size_t count)>;

  // Dups map_fd and maps the ring; throws NativeError. Does not start the thread.
  RingPoller(int map_fd, RingPollerOptions options, Deliver deliver);
  ~RingPoller();
  RingPoller(const RingPoller&) = delete;
  RingPoller& operator=(const RingPoller&) = delete;

  // Consumes and drops what the ring holds now (records from before anyone listened).
  // Only before Start(). Returns how many records it dropped.
  uint64_t DiscardBacklog();
  void Start();
  // Wakes the thread and joins it; records not yet delivered are dropped. Idempotent.
  void Stop();
  // While paused the thread consumes nothing, so the ring fills and the programs count what
  // they cannot write (nm_events_lost). For tests of a consumer that falls behind.
  void SetPaused(bool paused);
  RingPollerStats Stats() const;

 private:
  static int OnSample(void* ctx, void* data, size_t size);
  void Run();
  void Flush();
  void Wake();

  UniqueFd map_fd_;
  UniqueFd wake_fd_;  // eventfd: Stop() and SetPaused() interrupt the poll at once
  ring_buffer* rb_ = nullptr;
  RingPollerOptions options_;
  Deliver deliver_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  bool discarding_ = false;
  uint64_t discarded_ = 0;

  // Poller thread only.
  std::vector<uint8_t> pending_;
  size_t pending_count_ = 0;
  std::chrono::steady_clock::time_point first_at_;

  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> bad_records_{0};
  std::atomic<uint64_t> poll_errors_{0};
};

}  // namespace nodemesh
