// BPF_PROG_RUN for tests.
#include "prog_test_run.h"

#include <bpf/bpf.h>

#include "native_error.h"

namespace nodemesh {

TestRunResult ProgTestRun::Run(int prog_fd, const TestRunInput& in) {
  TestRunResult out{0, 0, std::vector<uint8_t>(in.ctx_out_size), std::vector<uint8_t>(in.data_out_size)};
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  if (!in.ctx_in.empty()) {
    opts.ctx_in = in.ctx_in.data();
    opts.ctx_size_in = static_cast<__u32>(in.ctx_in.size());
  }
  if (in.ctx_out_size > 0) {
    opts.ctx_out = out.ctx_out.data();
    opts.ctx_size_out = in.ctx_out_size;
  }
  if (!in.data_in.empty()) {
    opts.data_in = in.data_in.data();
    opts.data_size_in = static_cast<__u32>(in.data_in.size());
  }
  if (in.data_out_size > 0) {
    opts.data_out = out.data_out.data();
    opts.data_size_out = in.data_out_size;
  }
  opts.repeat = static_cast<int>(in.repeat);
  CheckRc(bpf_prog_test_run_opts(prog_fd, &opts), "bpf_prog_test_run_opts");
  out.retval = opts.retval;
  out.duration_ns = opts.duration;
  out.ctx_out.resize(in.ctx_out_size > 0 ? opts.ctx_size_out : 0);
  out.data_out.resize(in.data_out_size > 0 ? opts.data_size_out : 0);
  return out;
}

}  // namespace nodemesh
