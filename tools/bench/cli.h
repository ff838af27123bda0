// SPDX-License-Identifier: Apache-2.0
// backbone-bench's command line: --help's text, the driver's options and the worker's.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include "worker.h"

namespace backbone::bench {

extern const char* const kUsage;  // --help

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --gpu without a usable CUDA device: exit status 4.
struct GpuUnavailableError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string models, sizes, threads = "1,0", runners;
  int frames = 20, warmup = 2, rounds = 5;
  double seconds = 6;
  double timeout = 1800;
  std::string json_path, markdown_path, work_dir, peers_venv, python = "/usr/bin/python3", peers_dir;
  int seed = 0;
  bool list_runners = false;
  bool setup_peers = false;
  bool python_given = false;
  // GPU section
  bool gpu = false, cpu = false, quick = false;
  std::string device = "cuda:0", gpu_workloads = "all", gpu_runners, gpu_python;
  std::optional<int> gpu_frames, gpu_warmup, rounds_given;
  std::optional<double> gpu_seconds;
};

// The driver's options; --help and --version print and exit. Throws UsageError.
Options parse_args(int argc, char** argv);
// The worker's options (backbone-bench --worker NAME ...). Throws UsageError.
WorkerOptions parse_worker_args(int argc, char** argv);

}  // namespace backbone::bench
