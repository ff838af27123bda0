// SPDX-License-Identifier: Apache-2.0
// Internal: the cuda engine's description of a ResNet, alone or under detectron2's FPN (module_api.h's layer list over numbered
// values, BN folded in double precision) as libbackbone builds it, and the CPU executor that runs
// such a description through the CPU twins of the module's kernels (ops/cpu/nhwc_ops.h): the
// engine's CPU twin, which tests the description and the folding without a GPU. No CUDA header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backbone/engine.h"
#include "backbone/fpn.h"
#include "backbone/resnet.h"
#include "cuda/module_api.h"
#include "engines/engines.h"

namespace backbone::detail {

// Owns every array the layers point to; desc() is a view valid as long as the CudaNet lives (moving
// a CudaNet keeps the arrays where they are).
struct CudaNet {
  int64_t in_channels = 3;
  int32_t num_values = 1;  // value 0 is the input
  std::vector<BackboneCudaLayer> layers;
  std::vector<int32_t> outputs;             // value of each output, in out_features order
  std::vector<std::string> output_names;    // "stem", "res2", ..., "linear"; with an FPN "p2", ..., "res5"
  std::vector<std::vector<float>> arrays;   // weights and biases the layers point to
  // With an FPN: what check_fpn_level_sizes needs, and the value of each in_feature (in_features order).
  bool fpn = false;
  FpnLevels fpn_levels;
  std::vector<int32_t> fpn_inputs;

  BackboneCudaNetDesc desc() const;
};

// The network of `model`: stem conv1 (+BN folded, or + GROUP_NORM/LAYER_NORM) + ReLU, MAX_POOL 3/2/1
// ("stem"); per block the shortcut convolution (no ReLU), conv1 and conv2 with ReLU where the model
// puts them (the stride sits on the convolution that carries it: conv1 with stride_in_1x1, else
// conv2), conv2_offset (its bias, no ReLU) + DEFORM_CONV for deformable blocks, and the last
// convolution adding the shortcut before its ReLU; AVGPOOL_LINEAR ("linear") with num_classes.
// BN-family norms are folded in double precision (scale = gamma / sqrt(var + eps), bias = (b - mean)
// * scale + beta); GN/LN become their own layer after a convolution with no norm, carrying the
// residual and the ReLU; norm "" keeps the convolution's bias.
//
// With `fpn` (model == fpn->bottom_up()), detectron2's FPN.forward follows on the bottom-up's values:
// per in_feature from the coarsest, its lateral convolution (fpn_lateral: 1x1, norm folded or a
// GN/LN layer, bias without norm), for every level but the coarsest UPSAMPLE_ADD(lateral, previous
// level, scale 1 for fuse_type "sum", 0.5 for "avg"), and the output convolution (fpn_output, 3x3);
// then the top block: LastLevelMaxPool as MAX_POOL(kernel 1, stride 2, padding 0) of the last
// p-level, LastLevelP6P7 as CONV p6 on res5 (bias, no ReLU: p6 is returned as it is), RELU of p6,
// CONV p7. The outputs are fpn->out_features() in that order (p-levels and bottom-up outputs).
CudaNet build_cuda_net(const ResNet& model, const FPN* fpn = nullptr);

// Height and width of every value of `net` for an input of h x w (the module's arithmetic; AVGPOOL_LINEAR 1x1).
std::vector<std::pair<int64_t, int64_t>> cuda_net_value_sizes(const BackboneCudaNetDesc& net, int64_t h, int64_t w);
// With an FPN: check_fpn_level_sizes on the in_features' sizes for an input of h x w (a ShapeError
// saying to pad to size_divisibility); nothing without one. Engines call it before each forward.
void check_cuda_net_fpn_sizes(const CudaNet& net, int64_t h, int64_t w);

// "CONV", "DEFORM_CONV", "MAX_POOL", "GROUP_NORM", "LAYER_NORM", "AVGPOOL_LINEAR", "UPSAMPLE_ADD",
// "RELU" (else "unknown").
const char* cuda_layer_kind_name(int32_t kind);

// Runs `net` on `images` (float32 NCHW [n, in_channels, h, w], any device) with the CPU twins of the
// module's kernels: float32 arithmetic; with fp16/bf16 the input, the convolution weights and every
// layer's output are rounded to that type as the module stores them. Returns the outputs in order
// as float32 NCHW CPU tensors (AVGPOOL_LINEAR: [n, classes]). Throws Error for an inconsistent
// description (naming the layer), ShapeError for a wrong input.
std::vector<Tensor> run_cuda_net_on_cpu(const BackboneCudaNetDesc& net, const Tensor& images, Precision precision);
// The same with the outputs named (and, with an FPN, check_cuda_net_fpn_sizes first).
FeatureMaps run_cuda_net_on_cpu(const CudaNet& net, const Tensor& images, Precision precision);

// Output size of a convolution / pooling along one axis (floor), as PyTorch computes it.
inline int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation) {
  return (in + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1;
}

}  // namespace backbone::detail
