// Routes libbpf's printouts: a thread that is running a native call captures them (they
// become part of the error, e.g. the verifier log); anything else goes to stderr.
#pragma once

#include <string>

namespace nodemesh {

class LibbpfLog {
 public:
  // Installs the print callback; call once per process (idempotent).
  static void Install();

  // While alive, libbpf output printed by this thread is kept instead of printed.
  class Capture {
   public:
    Capture();
    ~Capture();
    Capture(const Capture&) = delete;
    Capture& operator=(const Capture&) = delete;
    // Returns what was captured so far and clears it.
    std::string Take();

   private:
    std::string buffer_;
    std::string* previous_;
  };
};

}  // namespace nodemesh
