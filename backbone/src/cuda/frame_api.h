/* SPDX-License-Identifier: Apache-2.0
 *
 * Internal: a video frame to preprocess on the GPU, as libbackbone hands it to the CUDA module
 * (engine_forward_frame in module_api.h). Plain C, no CUDA header. libbackbone fills it
 * (frame/cuda_frame.cpp: detail::make_cuda_frame_args) from a FrameView and FramePreprocessOptions,
 * with everything the kernel needs precomputed on the host (resize coefficients as PIL computes
 * them, colour matrix); the module's one kernel (ops/cuda/preprocess_kernel.cu) converts, resizes,
 * normalises and zero-pads into the engine's NHWC input.
 */
#ifndef BACKBONE_SRC_CUDA_FRAME_API_H_
#define BACKBONE_SRC_CUDA_FRAME_API_H_

#include <stddef.h>
#include <stdint.h>

#include "cuda/module_api.h"

#ifdef __cplusplus
extern "C" {
#endif

struct BackboneCudaFrameArgs {
  /* The frame: backbone::PixelFormat as int, planes/strides as FrameView (strides resolved, never 0). */
  int32_t format;
  int32_t on_device; /* 1: planes are device pointers on the engine's device; 0: host memory */
  int64_t width, height;
  const uint8_t* planes[3];
  int64_t strides[3];
  /* The network input: resized to resized_width x resized_height, zero-padded to padded_width x
   * padded_height (bottom/right). */
  int64_t resized_width, resized_height;
  int64_t padded_width, padded_height;
  /* Filled and used by libbackbone's frame/cuda_frame.cpp and the kernel only (colour matrix,
   * channel order, mean/std, resize coefficient tables in host memory, ...). */
  const void* detail;
  size_t detail_size;
};

#ifdef __cplusplus
}
#endif

#endif /* BACKBONE_SRC_CUDA_FRAME_API_H_ */
