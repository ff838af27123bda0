// SPDX-License-Identifier: Apache-2.0
// Internal, libbackbone's side of frame preprocessing on the GPU (no CUDA header): a FrameView and
// FramePreprocessOptions become the module's BackboneCudaFrameArgs (cuda/frame_api.h), with
// everything the kernel needs precomputed on the host exactly as preprocess_frame computes it
// (videoconvert's YUV coefficients, Pillow's resize coefficients, float32 mean/std, channel order);
// and the CPU twin of the module's kernel (ops/cuda/preprocess_kernel.cu), which computes the same
// output element by element through the same function (frame/frame_pixel.h).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backbone/frame.h"
#include "backbone/preprocess.h"
#include "cuda/frame_api.h"

namespace backbone::detail {

// A filled BackboneCudaFrameArgs and the host storage its pointers refer to (the detail struct and
// the resize coefficient tables; the planes stay the caller's). Movable: `args` stays valid when
// the object moves (the storage is on the heap), and as long as the object and the frame's planes live.
struct CudaFrameArgs {
  BackboneCudaFrameArgs args{};
  // What preprocess_frame returns, without the tensor (left undefined): resized size and scales.
  PreprocessResult geometry;
  // What args.detail and the table pointers in it point to.
  std::unique_ptr<BackboneCudaFrameDetail> detail;
  std::unique_ptr<int32_t[]> tables;
};

// Checks `frame` and `options` as preprocess_frame does (ShapeError / ConfigError with the same
// messages, "make_cuda_frame_args" naming the caller) and fills the arguments of the kernel.
// frame.device says where the planes are: the CPU (host memory) or cuda:N (device memory of that
// device, read in place). Every PixelFormat is supported.
CudaFrameArgs make_cuda_frame_args(const FrameView& frame, const FramePreprocessOptions& options);

// The CPU twin of the module's kernel: the network input the kernel writes for `args` (host planes
// only: on_device 0), as float32 NHWC [padded_height][padded_width][c_padded], channels >= 3 zero.
// Equal, after NCHW -> NHWC, to preprocess_frame's tensor. Throws Error for arguments the kernel
// would refuse (the message names what was expected and found).
std::vector<float> preprocess_frame_twin(const BackboneCudaFrameArgs& args, int64_t c_padded);

}  // namespace backbone::detail
