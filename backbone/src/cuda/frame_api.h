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

/* Pixel formats: the values of backbone::PixelFormat (frame.h). */
enum {
  BACKBONE_CUDA_FRAME_RGB = 0,
  BACKBONE_CUDA_FRAME_BGR = 1,
  BACKBONE_CUDA_FRAME_RGBX = 2,
  BACKBONE_CUDA_FRAME_BGRX = 3,
  BACKBONE_CUDA_FRAME_XRGB = 4,
  BACKBONE_CUDA_FRAME_XBGR = 5,
  BACKBONE_CUDA_FRAME_RGBA = 6,
  BACKBONE_CUDA_FRAME_BGRA = 7,
  BACKBONE_CUDA_FRAME_ARGB = 8,
  BACKBONE_CUDA_FRAME_ABGR = 9,
  BACKBONE_CUDA_FRAME_NV12 = 10,
  BACKBONE_CUDA_FRAME_I420 = 11,
  BACKBONE_CUDA_FRAME_GRAY8 = 12
};

/* What BackboneCudaFrameArgs::detail points to (detail_size == sizeof), all precomputed on the host
 * by libbackbone from the frame and the options, exactly as preprocess_frame computes them. */
struct BackboneCudaFrameDetail {
  /* Plane layout: n_planes planes of plane_rows[p] rows of plane_row_bytes[p] bytes each (the
   * bytes a host frame's upload copies; rows `strides[p]` apart in the frame). */
  int32_t n_planes;
  int64_t plane_row_bytes[3];
  int64_t plane_rows[3];
  /* Packed formats: bytes per pixel (1 for GRAY8) and the byte offsets of R, G, B in a pixel. */
  int32_t pixel_stride;
  int32_t offset_r, offset_g, offset_b;
  /* NV12/I420: videoconvert's fixed-point coefficients (Y, V->R, U->G, V->G, U->B; int16 range) and
   * NV12's chroma siting (1: co-sited horizontally / vertically, else centred). */
  int32_t yuv_y, yuv_rv, yuv_gu, yuv_gv, yuv_bu;
  int32_t h_cosited, v_cosited;
  /* Model channel order: 1 when channel 0 is blue (input_format BGR), 0 for RGB. */
  int32_t bgr;
  /* (x - mean[c]) / std[c] in float32, per model channel. */
  float mean[3];
  float std[3];
  /* PIL's bilinear resize, one pass per axis whose size changes (resize_h: width != resized_width,
   * resize_v: height != resized_height). Output index i of an axis sums `bounds[2i + 1]` inputs from
   * `bounds[2i]` on, weighted by weights[i * ksize + k] (fixed point, 22 fractional bits); tables in
   * host memory, null for a pass that does not run. */
  int32_t resize_h, resize_v;
  int32_t h_ksize, v_ksize;
  const int32_t* h_bounds;  /* [2 * resized_width] */
  const int32_t* h_weights; /* [resized_width * h_ksize] */
  const int32_t* v_bounds;  /* [2 * resized_height] */
  const int32_t* v_weights; /* [resized_height * v_ksize] */
};

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
  /* Filled and used by libbackbone's frame/cuda_frame.cpp and the kernel only: a
   * BackboneCudaFrameDetail (colour matrix, channel order, mean/std, resize coefficient tables in
   * host memory, ...), detail_size == sizeof(BackboneCudaFrameDetail). */
  const void* detail;
  size_t detail_size;
};

#ifdef __cplusplus
}
#endif

#endif /* BACKBONE_SRC_CUDA_FRAME_API_H_ */
