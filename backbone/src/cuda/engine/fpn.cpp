// SPDX-License-Identifier: Apache-2.0
// The FPN-only layers of the CUDA module's engine (see fpn.h).
#include "cuda/engine/fpn.h"

#include <cmath>

namespace backbone::cuda_module {

bool is_fpn_layer(int32_t kind) { return kind == BACKBONE_CUDA_LAYER_UPSAMPLE_ADD || kind == BACKBONE_CUDA_LAYER_RELU; }

std::string check_fpn_layer(const BackboneCudaLayer& l, const std::vector<int64_t>& channels) {
  if (l.out_channels != l.in_channels)
    return "out_channels: expected " + std::to_string(l.in_channels) + ", found " + std::to_string(l.out_channels);
  if (l.residual != -1) return "residual: expected -1, found " + std::to_string(l.residual);
  if (l.kind == BACKBONE_CUDA_LAYER_RELU) {
    if (l.aux != -1) return "aux: expected -1, found " + std::to_string(l.aux);
    if (l.relu != 1) return "relu: expected 1, found " + std::to_string(l.relu);
    return "";
  }
  // UPSAMPLE_ADD
  if (l.relu != 0) return "relu: expected 0, found " + std::to_string(l.relu);
  const int64_t have =
      l.aux >= 0 && static_cast<size_t>(l.aux) < channels.size() ? channels[static_cast<size_t>(l.aux)] : -1;
  if (have < 0) return "aux: expected the coarser level, a value computed before, found " + std::to_string(l.aux);
  if (have != l.in_channels)
    return "aux: expected " + std::to_string(l.in_channels) + " channels (the lateral's), found " +
           std::to_string(have) + " (value " + std::to_string(l.aux) + ")";
  if (!std::isfinite(l.scale) || l.scale == 0.0)
    return "scale: expected 1 (fuse_type sum) or 0.5 (avg), found " + std::to_string(l.scale);
  return "";
}

std::string check_fpn_layer_shapes(const BackboneCudaLayer& l, const NhwcShape& input, const NhwcShape& aux) {
  if (l.kind != BACKBONE_CUDA_LAYER_UPSAMPLE_ADD) return "";
  if (aux.n == input.n && 2 * aux.h == input.h && 2 * aux.w == input.w) return "";
  return "the coarser level (value " + std::to_string(l.aux) + ", " + std::to_string(aux.h) + "x" +
         std::to_string(aux.w) + ", upsampled 2x to " + std::to_string(2 * aux.h) + "x" + std::to_string(2 * aux.w) +
         ") does not match the lateral features (value " + std::to_string(l.input) + ", " + std::to_string(input.h) +
         "x" + std::to_string(input.w) + "): pad the input to a multiple of the FPN's size_divisibility";
}

void run_fpn_layer(StorageType t, const BackboneCudaLayer& l, const void* input, const NhwcShape& shape,
                   const void* aux, void* output, cudaStream_t stream) {
  if (l.kind == BACKBONE_CUDA_LAYER_UPSAMPLE_ADD)
    launch_upsample2x_add_nhwc(t, input, shape, aux, static_cast<float>(l.scale), output, stream);
  else if (l.kind == BACKBONE_CUDA_LAYER_RELU)
    launch_bias_residual_act_nhwc(t, input, shape, nullptr, nullptr, true, output, stream);
}

std::string describe_fpn_layers(const std::vector<BackboneCudaLayer>& layers) {
  int sums = 0, relus = 0;
  for (const auto& l : layers) {
    sums += l.kind == BACKBONE_CUDA_LAYER_UPSAMPLE_ADD ? 1 : 0;
    relus += l.kind == BACKBONE_CUDA_LAYER_RELU ? 1 : 0;
  }
  if (sums == 0 && relus == 0) return "";
  std::string s = "; FPN: " + std::to_string(sums) + " top-down sum" + (sums == 1 ? "" : "s") +
                  " (nearest 2x upsample + add kernel)";
  if (relus) s += ", " + std::to_string(relus) + " ReLU (LastLevelP6P7)";
  return s;
}

}  // namespace backbone::cuda_module
