// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module: the engine behind module_api.h's engine_* entries (engine=cuda).
// These throw ModuleError; module.cpp turns that into a status code and a message at the C boundary.
#pragma once

#include <cstdint>

#include "cuda/frame_api.h"
#include "cuda/module_api.h"

namespace backbone::cuda_module {

BackboneCudaEngine* engine_create(const BackboneCudaNetDesc& net, const BackboneCudaEngineOptions& options);
void engine_destroy(BackboneCudaEngine* engine) noexcept;
const char* engine_describe(BackboneCudaEngine* engine) noexcept;
void engine_forward(BackboneCudaEngine* engine, const float* images, bool on_device, int64_t n, int64_t h, int64_t w,
                    BackboneCudaOutput* outputs, int32_t num_outputs);
void engine_forward_frame(BackboneCudaEngine* engine, const BackboneCudaFrameArgs& frame, BackboneCudaOutput* outputs,
                          int32_t num_outputs);
void engine_release_output(BackboneCudaEngine* engine, uint64_t token) noexcept;

}  // namespace backbone::cuda_module
