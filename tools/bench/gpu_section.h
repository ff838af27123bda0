// SPDX-License-Identifier: Apache-2.0
// backbone-bench's GPU section: this project's engine "cuda" (fp32, TF32, fp16, bf16) against
// PyTorch eager on the same GPU with the same weights, on R-50 at 800x1216 batch 1 and 8, the
// deformable R-50 and the NV12-frame path; agreement check first, then alternated timing; figures
// against the GPU's dense fp16 tensor peak and the speed targets. See --help.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backbone/tensor.h"
#include "bench_core.h"

namespace backbone::bench {

struct GpuSectionOptions {
  Device device = Device::cuda(0);
  std::string workloads = "all";  // parse_gpu_workloads
  std::string runners;            // "" or "all": every GPU runner; else a list of gpu_runner_catalog() names
  int frames = 100, warmup = 10, rounds = 5;
  double seconds = 2;
  double timeout = 1800;
  int seed = 0;
  std::string python;       // makes the weights and runs the pytorch-cuda-* peers
  std::string weights_python;  // tried for the weights when `python` cannot make them (e.g. no torchvision)
  std::string peer_script;  // bench/peers/peer.py
  std::string self_exe;     // backbone-bench, for its --worker processes
  std::filesystem::path work, logs;
  int cpu_threads = 1;  // the CPU reference engine's threads (and the PyTorch workers' CPU threads)
  std::function<void()> after_workload;  // called after each workload (partial reports survive a cut-off run)
};

struct GpuRunnerSpec {
  std::string name;
  bool ours = false;
  std::string py_runner;    // peer.py --runner for the PyTorch ones
  double tolerance = 0;     // kFp32Tolerance, or kBf16Tolerance for fp16/bf16/TF32
  bool plain_only = false;  // b1 and b8 only (no deformable or NV12 counterpart)
  std::string what;
};
// Every runner of the GPU section, in the order they are listed and started.
const std::vector<GpuRunnerSpec>& gpu_runner_catalog();

// The one line printed when there is no usable CUDA device: "GPU section skipped: <reason>".
std::string gpu_skip_line(const std::string& reason);

// Whether cuda:index can be used: its description, or the reason it cannot (the CUDA module's
// loader's message: not built, not found, no driver, no device, no such index).
struct GpuProbe {
  std::optional<CudaDeviceInfo> info;
  std::string why;
};
GpuProbe probe_gpu(const Device& device);

class GpuSection {
 public:
  GpuSection(GpuSectionOptions options, CudaDeviceInfo info);
  ~GpuSection();
  GpuSection(const GpuSection&) = delete;
  GpuSection& operator=(const GpuSection&) = delete;

  // Makes the files and runs every workload. Throws UsageError-like std::invalid_argument for an
  // unknown runner or workload (before anything runs).
  void run();
  // True when every runner that ran agreed and was timed (unsupported ones do not count).
  bool all_ok() const;
  std::string markdown() const;
  nlohmann::json to_json() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace backbone::bench
