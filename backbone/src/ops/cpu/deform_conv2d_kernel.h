// SPDX-License-Identifier: Apache-2.0
// Internal: the CPU reference kernel of ops::deform_conv2d (torchvision.ops.deform_conv2d's
// semantics), split into a deformable im2col that other engines can pair with their own GEMM.
#pragma once

#include <cstdint>

#include "backbone/ops.h"
#include "backbone/tensor.h"

namespace backbone::detail {

// Deformable im2col of ONE image: columns (row-major [channels * kh * kw, out_h * out_w]) row
// (c * kh + i) * kw + j, column y * out_w + x holds
//   mask[g, i * kw + j, y, x] * bilinear(input[c], y * stride_h - pad_h + i * dilation_h + dy,
//                                                  x * stride_w - pad_w + j * dilation_w + dx)
// with g = c / (channels / deformable_groups), (dy, dx) = offset[2 * (g * kh * kw + i * kw + j) + {0, 1}, y, x]
// and bilinear() torchvision's bilinear_interpolate (zero outside the image, 0 when h <= -1,
// h >= height, w <= -1 or w >= width). input is [channels, height, width], offset
// [2 * deformable_groups * kh * kw, out_h, out_w], mask [deformable_groups * kh * kw, out_h, out_w] or
// null (= 1); all contiguous. Uses params' stride, pad, dilation and deformable_groups (which must
// divide channels). Runs on several threads for large images.
void deformable_im2col(const float* input, const float* offset, const float* mask_or_null, int64_t channels,
                       int64_t height, int64_t width, int64_t kh, int64_t kw, const ops::DeformConv2dParams& params,
                       int64_t out_h, int64_t out_w, float* columns);

// The CPU kernel behind ops::deform_conv2d: arguments already checked by the front end, every
// tensor contiguous float32 on the CPU (mask, bias may be undefined), `out` allocated [N, O, Ho, Wo].
// Per image: deformable_im2col, then one GEMM per convolution group, bias added first.
void deform_conv2d_cpu(const Tensor& input, const Tensor& offset, const Tensor& weight, const Tensor& mask,
                       const Tensor& bias, const ops::DeformConv2dParams& params, Tensor& out);

}  // namespace backbone::detail
