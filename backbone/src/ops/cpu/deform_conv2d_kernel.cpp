// SPDX-License-Identifier: Apache-2.0
// CPU reference of deformable convolution v1/v2, following torchvision's
// csrc/ops/cpu/deform_conv2d_kernel.cpp (deformable_im2col + GEMM) and its bilinear_interpolate.
// Unlike torchvision, the sampling positions and bilinear weights of a (deformable group, tap,
// pixel) are computed once and reused for every channel of the group; the arithmetic per sampled
// value is the same.
#include "ops/cpu/deform_conv2d_kernel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/gemm.h"
#include "ops/cpu/parallel.h"

namespace backbone::detail {
namespace {

// Sampling of one pixel for one tap: the four corners' linear indices into a channel plane (-1 for
// a corner torchvision does not read) and their bilinear weights, plus the mask value.
struct TapSamples {
  std::vector<int64_t> index[4];
  std::vector<float> weight[4];
  std::vector<float> mask;
  explicit TapSamples(std::size_t n) : mask(n) {
    for (int c = 0; c < 4; ++c) {
      index[c].resize(n);
      weight[c].resize(n);
    }
  }
};

constexpr int64_t kPixelBlock = 1024;  // pixels per block: the TapSamples of a block stay in L1/L2

// Fills `s` for pixels [p0, p0 + n) of tap (i, j) of one deformable group, torchvision's
// bilinear_interpolate with the corner conditions made explicit.
void compute_tap_samples(const float* offset_g, const float* mask_g, int64_t height, int64_t width, int64_t kw,
                         int64_t i, int64_t j, const ops::DeformConv2dParams& p, int64_t out_w, int64_t plane,
                         int64_t p0, int64_t n, TapSamples& s) {
  const int64_t tap = i * kw + j;
  const float* dy_row = offset_g + (2 * tap) * plane;
  const float* dx_row = offset_g + (2 * tap + 1) * plane;
  const float* m_row = mask_g ? mask_g + tap * plane : nullptr;
  for (int64_t q = 0; q < n; ++q) {
    const int64_t pix = p0 + q;
    const int64_t out_y = pix / out_w;
    const int64_t out_x = pix - out_y * out_w;
    s.mask[q] = m_row ? m_row[pix] : 1.0f;
    const float h = static_cast<float>(out_y * p.stride_h - p.pad_h + i * p.dilation_h) + dy_row[pix];
    const float w = static_cast<float>(out_x * p.stride_w - p.pad_w + j * p.dilation_w) + dx_row[pix];
    if (h <= -1 || static_cast<float>(height) <= h || w <= -1 || static_cast<float>(width) <= w) {
      for (int c = 0; c < 4; ++c) {
        s.index[c][q] = -1;
        s.weight[c][q] = 0.0f;
      }
      continue;
    }
    const int64_t h_low = static_cast<int64_t>(std::floor(h));
    const int64_t w_low = static_cast<int64_t>(std::floor(w));
    const int64_t h_high = h_low + 1;
    const int64_t w_high = w_low + 1;
    const float lh = h - static_cast<float>(h_low);
    const float lw = w - static_cast<float>(w_low);
    const float hh = 1 - lh, hw = 1 - lw;
    s.index[0][q] = (h_low >= 0 && w_low >= 0) ? h_low * width + w_low : -1;
    s.index[1][q] = (h_low >= 0 && w_high <= width - 1) ? h_low * width + w_high : -1;
    s.index[2][q] = (h_high <= height - 1 && w_low >= 0) ? h_high * width + w_low : -1;
    s.index[3][q] = (h_high <= height - 1 && w_high <= width - 1) ? h_high * width + w_high : -1;
    s.weight[0][q] = hh * hw;
    s.weight[1][q] = hh * lw;
    s.weight[2][q] = lh * hw;
    s.weight[3][q] = lh * lw;
  }
}

}  // namespace

void deformable_im2col(const float* input, const float* offset, const float* mask_or_null, int64_t channels,
                       int64_t height, int64_t width, int64_t kh, int64_t kw, const ops::DeformConv2dParams& params,
                       int64_t out_h, int64_t out_w, float* columns) {
  const int64_t plane = out_h * out_w;
  const int64_t in_plane = height * width;
  const int64_t groups = params.deformable_groups;
  const int64_t channels_per_group = channels / groups;
  const int64_t taps = kh * kw;
  // Each thread owns a range of output pixels (columns) for every row.
  const int64_t grain = std::max<int64_t>(64, (int64_t{1} << 15) / std::max<int64_t>(1, channels * taps));
  parallel_for(plane, grain, 16, [&](int64_t begin, int64_t end) {
    TapSamples s(static_cast<std::size_t>(std::min(kPixelBlock, end - begin)));
    for (int64_t p0 = begin; p0 < end; p0 += kPixelBlock) {
      const int64_t n = std::min(kPixelBlock, end - p0);
      for (int64_t g = 0; g < groups; ++g) {
        const float* offset_g = offset + g * 2 * taps * plane;
        const float* mask_g = mask_or_null ? mask_or_null + g * taps * plane : nullptr;
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j = 0; j < kw; ++j) {
            compute_tap_samples(offset_g, mask_g, height, width, kw, i, j, params, out_w, plane, p0, n, s);
            const int64_t *i0 = s.index[0].data(), *i1 = s.index[1].data(), *i2 = s.index[2].data(),
                          *i3 = s.index[3].data();
            const float *w0 = s.weight[0].data(), *w1 = s.weight[1].data(), *w2 = s.weight[2].data(),
                        *w3 = s.weight[3].data(), *m = s.mask.data();
            for (int64_t c = g * channels_per_group; c < (g + 1) * channels_per_group; ++c) {
              const float* in = input + c * in_plane;
              float* col = columns + ((c * kh + i) * kw + j) * plane + p0;
              for (int64_t q = 0; q < n; ++q) {
                const float v1 = i0[q] >= 0 ? in[i0[q]] : 0.0f;
                const float v2 = i1[q] >= 0 ? in[i1[q]] : 0.0f;
                const float v3 = i2[q] >= 0 ? in[i2[q]] : 0.0f;
                const float v4 = i3[q] >= 0 ? in[i3[q]] : 0.0f;
                col[q] = m[q] * (w0[q] * v1 + w1[q] * v2 + w2[q] * v3 + w3[q] * v4);
              }
            }
          }
        }
      }
    }
  });
}

void deform_conv2d_cpu(const Tensor& input, const Tensor& offset, const Tensor& weight, const Tensor& mask,
                       const Tensor& bias, const ops::DeformConv2dParams& params, Tensor& out) {
  const int64_t batch = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t out_channels = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  const int64_t out_h = out.size(2), out_w = out.size(3);
  const int64_t plane = out_h * out_w;
  const int64_t groups = params.groups;
  const int64_t out_per_group = out_channels / groups;
  const int64_t k_per_group = (channels / groups) * kh * kw;  // GEMM inner size: weight.shape[1] * kh * kw
  const int64_t offset_channels = 2 * params.deformable_groups * kh * kw;
  const int64_t mask_channels = params.deformable_groups * kh * kw;

  const float* in = input.data_ptr<float>();
  const float* off = offset.data_ptr<float>();
  const float* wt = weight.data_ptr<float>();
  const float* mk = mask.defined() ? mask.data_ptr<float>() : nullptr;
  const float* bs = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* o = out.data_ptr<float>();

  std::vector<float> columns(static_cast<std::size_t>(channels * kh * kw * plane));
  for (int64_t b = 0; b < batch; ++b) {
    deformable_im2col(in + b * channels * height * width, off + b * offset_channels * plane,
                      mk ? mk + b * mask_channels * plane : nullptr, channels, height, width, kh, kw, params, out_h,
                      out_w, columns.data());
    float* ob = o + b * out_channels * plane;
    if (bs) {
      for (int64_t oc = 0; oc < out_channels; ++oc) std::fill(ob + oc * plane, ob + (oc + 1) * plane, bs[oc]);
    }
    for (int64_t g = 0; g < groups; ++g) {
      sgemm(out_per_group, plane, k_per_group, wt + g * out_per_group * k_per_group, k_per_group,
            columns.data() + g * k_per_group * plane, plane, ob + g * out_per_group * plane, plane,
            /*accumulate=*/bs != nullptr);
    }
  }
}

}  // namespace backbone::detail
