// SPDX-License-Identifier: Apache-2.0
// backbone-bench's C++ workers (`backbone-bench --worker NAME ...`): this project's engines and
// OpenCV DNN on the ONNX export, speaking the same line protocol as bench/peers/peer.py.
#pragma once

#include <string>

namespace backbone::bench {

struct WorkerOptions {
  std::string runner;   // "ours-onednn", "ours-onednn-bf16", "ours-libtorch", "ours-opencv", "opencv-dnn"
  std::string model;    // "R-50"
  std::string weights;  // torchvision .pth
  std::string onnx;     // for opencv-dnn
  std::string input;    // .npy
  int threads = 1;
  int reply_fd = 3;
};

// Runs the worker until "quit" or the end of stdin; returns the exit status.
int run_worker(const WorkerOptions& options);

// Splits "ours-<engine>[-bf16|-fp16]" into the engine name and precision; false for other names.
// "ours-<engine>[-winograd][-bf16|-fp16]"; winograd (when given) says whether "-winograd" was there.
bool parse_ours_runner(const std::string& runner, std::string& engine, std::string& precision,
                       bool* winograd = nullptr);

}  // namespace backbone::bench
