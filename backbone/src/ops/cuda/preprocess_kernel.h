// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module: a frame (cuda/frame_api.h) to the engine's NHWC input in one kernel:
// colour conversion (YUV matrix/range/chroma siting, channel order), PIL's bilinear resize, (x - mean)
// / std and zero padding, bit-for-bit what libbackbone's preprocess_frame computes on the CPU. Each
// output pixel is frame/frame_pixel.h's output_pixel, which the CPU twin (frame/cuda_frame.h:
// detail::preprocess_frame_twin) runs in a host loop.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "cuda/frame_api.h"
#include "ops/cuda/kernels.h"

namespace backbone::cuda_module {

// Holds what successive frames reuse: pinned and device staging for host frames, the device copy of
// the coefficient tables. One per engine; not thread-safe (the engine serialises its calls).
class FramePreprocessor {
 public:
  FramePreprocessor();
  ~FramePreprocessor();
  FramePreprocessor(const FramePreprocessor&) = delete;
  FramePreprocessor& operator=(const FramePreprocessor&) = delete;

  // Enqueues on `stream`: for host frames a copy into pinned staging and an asynchronous upload, then
  // the kernel writing storage type `t`, NHWC [1, padded_height, padded_width, c_padded] (channels
  // beyond 3 zero) into `dst`. Throws ModuleError (argument errors name what was found).
  // The host planes may be reused as soon as run() returns; device planes must stay valid until the
  // kernel has run on `stream`. The host may block here until the previous call's upload (or, when
  // the staging grows, its kernel) has completed. Successive calls may use different streams (each
  // waits for the previous kernel). Refuses a stream that is capturing a CUDA graph.
  void run(const BackboneCudaFrameArgs& args, StorageType t, void* dst, int64_t c_padded, cudaStream_t stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace backbone::cuda_module
