// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module's engine: the layers detectron2's FPN adds to a ResNet's description
// (module_api.h): UPSAMPLE_ADD (the top-down nearest 2x upsample + lateral sum, with the avg fuse's
// scale) and RELU (LastLevelP6P7's relu(p6) feeding p7, p6 itself kept). The FPN's convolutions are
// CONV layers and LastLevelMaxPool a MAX_POOL layer (kernel 1, stride 2, padding 0), which the engine
// runs as for the ResNet; this file checks and runs the two FPN-only kinds for engine.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/module_api.h"
#include "ops/cuda/kernels.h"

namespace backbone::cuda_module {

// UPSAMPLE_ADD or RELU.
bool is_fpn_layer(int32_t kind);

// engine_create's checks of such a layer (host only; `channels`: per value, those computed so far,
// -1 for the others): "" when it is well formed, else what is wrong ("aux: expected ...").
std::string check_fpn_layer(const BackboneCudaLayer& l, const std::vector<int64_t>& channels);

// A plan's shape check: UPSAMPLE_ADD's coarser level (aux) must be exactly half its input in height
// and width (the FPN pads its input to size_divisibility so that it is). "" when it is, else what was
// found.
std::string check_fpn_layer_shapes(const BackboneCudaLayer& l, const NhwcShape& input, const NhwcShape& aux);

// Enqueues the layer on `stream` (output shape = input shape).
void run_fpn_layer(StorageType t, const BackboneCudaLayer& l, const void* input, const NhwcShape& shape,
                   const void* aux, void* output, cudaStream_t stream);

// "; FPN: 3 top-down sums (upsample 2x + add kernel), 1 ReLU" for describe(), "" without FPN layers.
std::string describe_fpn_layers(const std::vector<BackboneCudaLayer>& layers);

}  // namespace backbone::cuda_module
