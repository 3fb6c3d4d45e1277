// BPF_PROG_RUN (bpf_prog_test_run_opts) with a context and/or data, for tests.
#pragma once

#include <cstdint>
#include <vector>

namespace nodemesh {

struct TestRunInput {
  std::vector<uint8_t> ctx_in;
  uint32_t ctx_out_size = 0;
  std::vector<uint8_t> data_in;
  uint32_t data_out_size = 0;
  uint32_t repeat = 0;
};

struct TestRunResult {
  uint32_t retval;
  uint32_t duration_ns;
  std::vector<uint8_t> ctx_out;
  std::vector<uint8_t> data_out;
};

class ProgTestRun {
 public:
  static TestRunResult Run(int prog_fd, const TestRunInput& in);
};

}  // namespace nodemesh
