// SPDX-License-Identifier: Apache-2.0
// Internal: factories of the engines compiled into this build (an explicit table, no static
// self-registration, which shared and static libraries would both drop).
#pragma once

#include <memory>

#include "backbone/engine.h"

namespace backbone::detail {

std::unique_ptr<Engine> create_onednn_engine(const ResNet& model, const EngineOptions& options);
std::unique_ptr<Engine> create_libtorch_engine(const ResNet& model, const EngineOptions& options);
std::unique_ptr<Engine> create_opencv_engine(const ResNet& model, const EngineOptions& options);
// engine=cuda (engines/cuda): DeviceError at once for a non-CUDA device, and where CUDA is not
// available (the loader's reason).
std::unique_ptr<Engine> create_cuda_engine(const ResNet& model, const EngineOptions& options);

// The input of Engine::forward checked as every CPU engine needs it (4-d, the stem's channels,
// float32; ShapeError naming what was found otherwise), as a contiguous CPU tensor.
Tensor engine_input(const Tensor& images, int64_t in_channels);

// The thread count an engine runs with: options.num_threads, or every core when it is 0.
int engine_threads(const EngineOptions& options);

}  // namespace backbone::detail
