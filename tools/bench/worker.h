// SPDX-License-Identifier: Apache-2.0
// backbone-bench's C++ workers (`backbone-bench --worker NAME ...`): this project's engines and
// OpenCV DNN on the ONNX export, speaking the same line protocol as bench/peers/peer.py.
#pragma once

#include <cstdint>
#include <string>

namespace backbone::bench {

struct WorkerOptions {
  std::string runner;   // "ours-onednn", "ours-onednn-bf16", "ours-cuda-fp16", "ours-libtorch", "opencv-dnn"
  std::string model;    // "R-50", "R-50-FPN" (detectron2's FPN on it: outputs p2..p6)
  std::string weights;  // torchvision .pth (an FPN model's with detectron2's fpn_lateral*/fpn_output* too)
  std::string onnx;     // for opencv-dnn
  std::string input;    // .npy: float32 [N, 3, H, W], or with nv12 the uint8 [H * 3 / 2, W] NV12 frame
  std::string device = "cpu";  // EngineOptions::device of our engines ("cuda:N" for the cuda engine)
  bool deform = false;  // the deformable R-50 of bench_model (res3-res5)
  bool nv12 = false;    // Engine::forward_frame on the NV12 frame (in CUDA memory on a CUDA device)
  uint64_t seed = 0;    // the offset convolutions' weights (deform)
  int threads = 1;
  int reply_fd = 3;
};

// Runs the worker until "quit" or the end of stdin; returns the exit status.
int run_worker(const WorkerOptions& options);

}  // namespace backbone::bench
