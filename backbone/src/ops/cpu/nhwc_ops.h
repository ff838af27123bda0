// SPDX-License-Identifier: Apache-2.0
// Internal: the CPU twins of the CUDA module's NHWC kernels (ops/cuda/kernels.h): the same
// computation on float32 NHWC arrays ([n][h][w][c], c fastest) in host memory, written for clarity
// (plain loops, float32 accumulation in the same order of taps as the kernels where it matters).
// Tests compare each CUDA kernel with its twin; the cuda engine's CPU executor (engines/cuda) runs a
// whole network description through them. No CUDA header here.
#pragma once

#include <cstdint>

namespace backbone::detail::nhwc {

struct Shape {
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t numel() const { return n * h * w * c; }
};

// max_pool2d(kernel, stride, padding), floor output size, padding never wins.
void max_pool(const float* in, Shape in_shape, float* out, int64_t out_h, int64_t out_w, int kernel, int stride,
              int padding);

// A plain convolution (the twin of the cuDNN convolutions the engine runs), then bias, residual and
// ReLU: out = act(conv(in, weight) + bias + residual). weight [out_channels][kernel][kernel][in_channels /
// groups]; bias [out_channels] or nullptr; residual NHWC [n, out_h, out_w, out_channels] or nullptr.
struct ConvArgs {
  const float* input = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;
  const float* residual = nullptr;
  float* out = nullptr;
  int64_t n = 0, h = 0, w = 0, in_channels = 0, out_channels = 0, out_h = 0, out_w = 0;
  int64_t kernel = 1, stride = 1, padding = 0, dilation = 1, groups = 1;
  bool relu = false;
};
void conv(const ConvArgs& args);

// Deformable convolution (torchvision deform_conv2d semantics) then bias/residual/ReLU, as
// cuda_module::DeformConvNhwcArgs describes: offset NHWC [n, out_h, out_w, offset_channels] with
// (dy, dx) at channels 2*(g*k*k + tap), +1, and, modulated, mask logits at 2*G*k*k + g*k*k + tap
// (sigmoid applied here); weight [out_channels][kernel][kernel][in_channels / groups].
struct DeformConvArgs {
  const float* input = nullptr;
  const float* offset = nullptr;
  int64_t offset_channels = 0;
  const float* weight = nullptr;
  const float* bias = nullptr;
  const float* residual = nullptr;
  float* out = nullptr;
  int64_t n = 0, h = 0, w = 0, in_channels = 0, out_channels = 0, out_h = 0, out_w = 0;
  int64_t kernel = 3, stride = 1, padding = 1, dilation = 1, groups = 1, deformable_groups = 1;
  bool modulated = false;
  bool relu = true;
};
void deform_conv(const DeformConvArgs& args);

// GroupNorm / detectron2's channel LayerNorm, then gamma/beta, residual (or nullptr), ReLU.
void group_norm(const float* in, Shape shape, int64_t num_groups, double eps, const float* gamma, const float* beta,
                const float* residual, bool relu, float* out);
void layer_norm(const float* in, Shape shape, double eps, const float* gamma, const float* beta,
                const float* residual, bool relu, float* out);

// out = act(x + bias[c] + residual) (bias, residual may be nullptr; out may be x).
void bias_residual_act(const float* x, Shape shape, const float* bias, const float* residual, bool relu, float* out);

// detectron2's FPN top-down step: out = (x + nearest_upsample_2x(coarse)) * scale, x NHWC `shape`,
// coarse NHWC [n, shape.h / 2, shape.w / 2, c] (shape.h and shape.w must be even: the FPN's sizes
// are exactly 2x, detail::check_fpn_level_sizes); scale 1 (sum) or 0.5 (avg). Sum and product in
// float32, in this order (PyTorch's add_ then div_(2) computes the same value).
void upsample2x_add(const float* x, Shape shape, const float* coarse, float scale, float* out);

// float32 NCHW -> NHWC with c_padded channels (extra zero), and NHWC [.., c_stored] -> NCHW (first c).
void nchw_to_nhwc(const float* in, int64_t n, int64_t c, int64_t h, int64_t w, int64_t c_padded, float* out);
void nhwc_to_nchw(const float* in, int64_t n, int64_t h, int64_t w, int64_t c_stored, int64_t c, float* out);

// adaptive_avg_pool2d(1) + flatten + linear: out [n][classes].
void avgpool_linear(const float* in, Shape shape, const float* weight, const float* bias, int64_t classes,
                    float* out);

// Rounds every value to float16 / bfloat16 and back (round to nearest even), as storing an
// activation in that type does: the engine's CPU executor uses it to follow a reduced-precision run.
void round_to_half(float* data, int64_t count);
void round_to_bfloat16(float* data, int64_t count);

// torchvision's bilinear_interpolate on one channel of an HWC image (`in` points at the channel in
// pixel (0, 0); pixels `channels` floats apart): 0 outside (-1, height) x (-1, width), corners
// outside the image count as 0. The deformable convolution's sampling, also used by the tests.
float bilinear_sample(const float* in, int64_t height, int64_t width, int64_t channels, float y, float x);

}  // namespace backbone::detail::nhwc
