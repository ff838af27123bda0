// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module: the CUDA kernel of ops::deform_conv2d.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "cuda/module_api.h"
#include "cuda/module_common.h"

namespace backbone::cuda_module {

// Runs deform_conv2d for `args` (already checked by libbackbone's front end) on `stream` with
// `handle` (already bound to the stream); `workspace` grows to hold the im2col columns of one
// image. Throws ModuleError. Does not synchronise the stream.
void deform_conv2d(const BackboneDeformConv2dArgs& args, cudaStream_t stream, cublasHandle_t handle,
                   DeviceBuffer& workspace);

}  // namespace backbone::cuda_module
