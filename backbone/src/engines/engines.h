// SPDX-License-Identifier: Apache-2.0
// Internal: factories of the engines compiled into this build (an explicit table, no static
// self-registration, which shared and static libraries would both drop).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backbone/engine.h"

namespace backbone::detail {

// Each factory runs `model` alone (fpn null) or, with `fpn`, the FPN whose bottom_up() is `model`,
// returning fpn->out_features().
std::unique_ptr<Engine> create_onednn_engine(const ResNet& model, const FPN* fpn, const EngineOptions& options);
std::unique_ptr<Engine> create_libtorch_engine(const ResNet& model, const FPN* fpn, const EngineOptions& options);
std::unique_ptr<Engine> create_opencv_engine(const ResNet& model, const FPN* fpn, const EngineOptions& options);
// engine=cuda (engines/cuda): DeviceError at once for a non-CUDA device, and where CUDA is not
// available (the loader's reason).
std::unique_ptr<Engine> create_cuda_engine(const ResNet& model, const FPN* fpn, const EngineOptions& options);

// The FPN's top-down shapes for a bottom-up output: lateral level i (in_features order) must be
// exactly twice level i+1 in height and width (nearest 2x upsampling of the coarser level), else a
// ShapeError saying what was found and that the input must be padded to size_divisibility.
// What engines keep of an FPN for it (the model may be destroyed after create_engine).
struct FpnLevels {
  std::vector<std::string> in_features;
  std::vector<int> stages;
  int64_t size_divisibility = 0;
  explicit FpnLevels(const FPN& fpn)
      : in_features(fpn.in_features()), stages(fpn.stages()), size_divisibility(fpn.size_divisibility()) {}
  FpnLevels() = default;
};
void check_fpn_level_sizes(const FpnLevels& fpn, const std::vector<std::pair<int64_t, int64_t>>& lateral_hw);
// max_pool2d(kernel_size=1, stride=2, padding=0) output size: (n - 1) / 2 + 1.
inline int64_t fpn_maxpool_size(int64_t n) { return (n - 1) / 2 + 1; }

// The input of Engine::forward checked as every CPU engine needs it (4-d, the stem's channels,
// float32; ShapeError naming what was found otherwise), as a contiguous CPU tensor.
Tensor engine_input(const Tensor& images, int64_t in_channels);

// A tensor's values as doubles (any device, any floating dtype).
std::vector<double> to_doubles(const Tensor& t);

// A convolution's weight [out, ...] and bias [out] in double precision, with a BN-family norm folded
// in (W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps)); the bias is zeros when
// the convolution has none. ShapeError when the layer's sizes do not fit together.
struct FoldedConv {
  std::vector<double> weight, bias;
};
FoldedConv fold_batch_norm(const Conv2d& c);

// The thread count an engine runs with: options.num_threads, or every core when it is 0.
int engine_threads(const EngineOptions& options);

}  // namespace backbone::detail
