// SPDX-License-Identifier: Apache-2.0
// Operators of this project that the engines lack, each a front end dispatching to per-device
// kernels (backbone/src/ops/cpu, backbone/src/ops/cuda) in one place (ops.cpp).
#pragma once

#include <cstdint>

#include "backbone/tensor.h"

namespace backbone::ops {

struct DeformConv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;             // convolution groups (ResNeXt num_groups)
  int64_t deformable_groups = 1;  // offset groups
};

// Deformable convolution with detectron2's semantics (DeformConv / ModulatedDeformConv,
// torchvision.ops.deform_conv2d):
//   input  [N, C, H, W] float32
//   offset [N, 2 * G * kh * kw, Ho, Wo]: per deformable group g and kernel tap k = i * kw + j the
//          pair (dy, dx) at channels 2 * (g * kh * kw + k) and 2 * (g * kh * kw + k) + 1
//   weight [O, C / groups, kh, kw]
//   mask   [N, G * kh * kw, Ho, Wo] (v2, already through the sigmoid) or undefined (v1)
//   bias   [O] or undefined
// Sampling is bilinear with zero outside the input. All tensors on one device (CPU or CUDA).
// Throws ShapeError naming the argument, the expected and the found shape.
Tensor deform_conv2d(const Tensor& input, const Tensor& offset, const Tensor& weight, const Tensor& mask,
                     const Tensor& bias, const DeformConv2dParams& params);

// Output spatial size of a convolution: (in + 2 * pad - dilation * (k - 1) - 1) / stride + 1.
int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation);

}  // namespace backbone::ops
