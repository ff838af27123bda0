/* SPDX-License-Identifier: Apache-2.0
 *
 * Internal: the C interface between libbackbone (backbone/src/cuda/loader.cpp) and the separately
 * loaded CUDA module libbackbone-cuda.so (backbone/src/cuda/module.cu). Plain C: only fixed-size
 * integers, pointers and function pointers cross it, never C++ types or exceptions, and no CUDA
 * header is needed on either side of it.
 *
 * The module exports exactly one symbol, BACKBONE_CUDA_ENTRY_POINT, returning a static table whose
 * `version` must equal BACKBONE_CUDA_API_VERSION (bump it on any change of this file) and whose
 * `struct_size` is at least sizeof(BackboneCudaApi).
 *
 * Every function returns BACKBONE_CUDA_OK (0) or an error code, and on error writes a
 * NUL-terminated message (truncated to `msg_size`) into `msg` naming the failed call, the CUDA or
 * cuBLAS error and where it happened.
 */
#ifndef BACKBONE_SRC_CUDA_MODULE_API_H_
#define BACKBONE_SRC_CUDA_MODULE_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BACKBONE_CUDA_API_VERSION 1u
#define BACKBONE_CUDA_ENTRY_POINT "backbone_cuda_module_api"

enum BackboneCudaStatus {
  BACKBONE_CUDA_OK = 0,
  BACKBONE_CUDA_ERROR_RUNTIME = 1,   /* a CUDA runtime call failed (message names it) */
  BACKBONE_CUDA_ERROR_CUBLAS = 2,    /* a cuBLAS call failed */
  BACKBONE_CUDA_ERROR_ARGUMENT = 3,  /* an argument the module rejects (bad device, sizes) */
  BACKBONE_CUDA_ERROR_INTERNAL = 4   /* anything else (e.g. std::bad_alloc inside the module) */
};

enum BackboneCudaCopyKind {
  BACKBONE_CUDA_HOST_TO_DEVICE = 0,
  BACKBONE_CUDA_DEVICE_TO_HOST = 1,
  BACKBONE_CUDA_DEVICE_TO_DEVICE = 2
};

/* Arguments of deform_conv2d: contiguous float32 arrays on device `device`, shapes as in
 * backbone/include/backbone/ops.h. mask and bias may be NULL. out is [n, out_channels, out_h, out_w]. */
typedef struct BackboneDeformConv2dArgs {
  int32_t device;
  const float* input;  /* [n, channels, height, width] */
  const float* offset; /* [n, 2 * deformable_groups * kernel_h * kernel_w, out_h, out_w] */
  const float* weight; /* [out_channels, channels / groups, kernel_h, kernel_w] */
  const float* mask;   /* [n, deformable_groups * kernel_h * kernel_w, out_h, out_w] or NULL */
  const float* bias;   /* [out_channels] or NULL */
  float* out;
  int64_t n, channels, height, width;
  int64_t out_channels, kernel_h, kernel_w, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups, deformable_groups;
} BackboneDeformConv2dArgs;

typedef struct BackboneCudaApi {
  uint32_t version;     /* BACKBONE_CUDA_API_VERSION */
  uint32_t struct_size; /* sizeof(BackboneCudaApi) in the module */
  /* "libbackbone-cuda <project version>, CUDA runtime <x.y>, SMs <list>" */
  const char* (*build_info)(void);
  int (*device_count)(int* count, char* msg, size_t msg_size);
  int (*malloc)(int device, size_t bytes, void** ptr, char* msg, size_t msg_size);
  int (*free)(int device, void* ptr, char* msg, size_t msg_size);
  /* Synchronous copy; `kind` is a BackboneCudaCopyKind; `device` is the device to make current. */
  int (*memcpy)(void* dst, const void* src, size_t bytes, int kind, int device, char* msg, size_t msg_size);
  /* Returns when `out` is written (the module synchronises its stream). */
  int (*deform_conv2d)(const BackboneDeformConv2dArgs* args, char* msg, size_t msg_size);
} BackboneCudaApi;

typedef const BackboneCudaApi* (*BackboneCudaEntryPoint)(void);

#ifdef __cplusplus
}
#endif

#endif /* BACKBONE_SRC_CUDA_MODULE_API_H_ */
