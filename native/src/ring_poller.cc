// The ring buffer poller thread: poll(2) on the ring's epoll fd and an eventfd, consume,
// batch, deliver.
#include "ring_poller.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "libbpf_log.h"
#include "native_error.h"

namespace nodemesh {

RingPoller::RingPoller(int map_fd, RingPollerOptions options, Deliver deliver)
    : options_(options), deliver_(std::move(deliver)) {
  if (options_.record_size == 0 || options_.max_batch == 0 || options_.max_delay_ms <= 0)
    throw NativeError(EINVAL, "ring_buffer__new", "record size, batch size and delay must be positive");
  int copy = fcntl(map_fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) throw NativeError::FromErrno("fcntl", "F_DUPFD_CLOEXEC");
  map_fd_.Reset(copy);
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) throw NativeError::FromErrno("eventfd");
  wake_fd_.Reset(efd);
  LibbpfLog::Capture capture;
  errno = 0;
  rb_ = ring_buffer__new(map_fd_.get(), &RingPoller::OnSample, this, nullptr);
  if (rb_ == nullptr) {
    NativeError e = NativeError::FromErrno("ring_buffer__new", "(map fd " + std::to_string(map_fd) + ")");
    e.set_log(capture.Take());
    throw e;
  }
  pending_.reserve(options_.record_size * options_.max_batch);
}

RingPoller::~RingPoller() {
  Stop();
  if (rb_ != nullptr) ring_buffer__free(rb_);
}

uint64_t RingPoller::DiscardBacklog() {
  if (thread_.joinable()) return 0;
  discarding_ = true;
  discarded_ = 0;
  ring_buffer__consume(rb_);
  discarding_ = false;
  return discarded_;
}

void RingPoller::Start() {
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { Run(); });
}

void RingPoller::Stop() {
  stop_ = true;
  Wake();
  if (thread_.joinable()) thread_.join();
}

void RingPoller::SetPaused(bool paused) {
  paused_ = paused;
  Wake();
}

RingPollerStats RingPoller::Stats() const {
  return RingPollerStats{delivered_.load(), dropped_.load(), bad_records_.load(), poll_errors_.load()};
}

void RingPoller::Wake() {
  if (!wake_fd_.valid()) return;
  uint64_t one = 1;
  // EAGAIN (the counter is saturated) still leaves it readable: the thread wakes either way.
  ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)n;
}

int RingPoller::OnSample(void* ctx, void* data, size_t size) {
  auto* self = static_cast<RingPoller*>(ctx);
  if (self->discarding_) {
    self->discarded_++;
    return 0;
  }
  if (size != self->options_.record_size) {
    self->bad_records_++;
    return 0;
  }
  if (self->pending_count_ == 0) self->first_at_ = std::chrono::steady_clock::now();
  const auto* bytes = static_cast<const uint8_t*>(data);
  self->pending_.insert(self->pending_.end(), bytes, bytes + size);
  if (++self->pending_count_ >= self->options_.max_batch) self->Flush();
  return 0;
}

void RingPoller::Flush() {
  if (pending_count_ == 0) return;
  size_t count = pending_count_;
  std::vector<uint8_t> batch;
  batch.reserve(options_.record_size * options_.max_batch);
  batch.swap(pending_);
  pending_count_ = 0;
  if (deliver_(std::move(batch), count))
    delivered_ += count;
  else
    dropped_ += count;
}

void RingPoller::Run() {
  pthread_setname_np(pthread_self(), "nm-ring-events");
  const auto max_delay = std::chrono::milliseconds(options_.max_delay_ms);
  pollfd fds[2] = {{ring_buffer__epoll_fd(rb_), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
  while (!stop_) {
    // Sleep until the kernel wakes us (it does when we had caught up), Stop/SetPaused, or the
    // pending batch falls due.
    int timeout = 1000;
    if (pending_count_ > 0) {
      auto due = first_at_ + max_delay - std::chrono::steady_clock::now();
      timeout = static_cast<int>(std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(due).count()));
    }
    // Paused: wait on the eventfd alone (the ring stays readable while nobody consumes it).
    bool paused = paused_;
    if (paused) timeout = 1000;
    int n = paused ? ::poll(&fds[1], 1, timeout) : ::poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) {
      poll_errors_++;
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.max_delay_ms));
      continue;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      ssize_t r = ::read(wake_fd_.get(), &v, sizeof(v));
      (void)r;
    }
    if (stop_) break;
    if (paused) continue;
    if (ring_buffer__consume(rb_) < 0) poll_errors_++;
    if (pending_count_ > 0 && std::chrono::steady_clock::now() - first_at_ >= max_delay) Flush();
  }
  // Whatever is pending now had no consumer left to take it.
  pending_.clear();
  pending_count_ = 0;
}

}  // namespace nodemesh
