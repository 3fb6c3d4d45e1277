// Routes libbpf's printouts into per-thread captures or stderr.
#include "libbpf_log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace nodemesh {
namespace {

// The verifier's verdict is at the end of its log, so a long log keeps its tail.
constexpr size_t kMaxCapture = 64 * 1024;

thread_local std::string* tl_capture = nullptr;
bool g_debug = false;

int Print(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG && !g_debug) return 0;
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::vector<char> text(static_cast<size_t>(n) + 1);
  vsnprintf(text.data(), text.size(), format, args);

  if (tl_capture != nullptr) {
    tl_capture->append(text.data(), static_cast<size_t>(n));
    if (tl_capture->size() > kMaxCapture) {
      tl_capture->erase(0, tl_capture->size() - kMaxCapture);
      tl_capture->insert(0, "[...]\n");
    }
  } else if (level != LIBBPF_DEBUG || g_debug) {
    fputs(text.data(), stderr);
  }
  return n;
}

}  // namespace

void LibbpfLog::Install() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* debug = getenv("NODEMESH_LIBBPF_DEBUG");
    g_debug = debug != nullptr && debug[0] != '\0' && debug[0] != '0';
    libbpf_set_print(Print);
  });
}

LibbpfLog::Capture::Capture() : previous_(tl_capture) { tl_capture = &buffer_; }

LibbpfLog::Capture::~Capture() { tl_capture = previous_; }

std::string LibbpfLog::Capture::Take() {
  std::string out;
  out.swap(buffer_);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace nodemesh
