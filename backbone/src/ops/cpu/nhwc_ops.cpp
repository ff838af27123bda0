// SPDX-License-Identifier: Apache-2.0
// CPU twins of the CUDA module's NHWC kernels (see nhwc_ops.h). Plain loops over float32 NHWC
// arrays; the convolutions gather the K = taps * (in_channels / groups) values of one output pixel
// (tap-major, channel-minor: the order of the weight layout and of the CUDA kernel's K loop) and
// take one dot product per output channel, accumulating in float32. Statistics of the norms are
// taken in double (two passes), as an accurate reference for the kernels' float32 reductions.
#include "ops/cpu/nhwc_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "backbone/tensor.h"
#include "ops/cpu/parallel.h"

namespace backbone::detail::nhwc {
namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("nhwc: " + what);
}

// Common tail of every convolution: out = act(acc + bias + residual), in this order.
inline float epilogue(float acc, const float* bias, const float* residual, int64_t oc, int64_t out_index, bool relu) {
  if (bias) acc += bias[oc];
  if (residual) acc += residual[out_index];
  if (relu && acc < 0.0f) acc = 0.0f;
  return acc;
}

struct ConvGeometry {
  int64_t n, h, w, cin, cout, out_h, out_w, kernel, stride, padding, dilation, groups;
};

void check_geometry(const ConvGeometry& g, const char* name) {
  const std::string op = name;
  require(g.n >= 0 && g.h > 0 && g.w > 0 && g.out_h >= 0 && g.out_w >= 0,
          op + ": expected positive input sizes, found h " + std::to_string(g.h) + ", w " + std::to_string(g.w));
  require(g.kernel > 0 && g.stride > 0 && g.dilation > 0 && g.padding >= 0,
          op + ": expected kernel, stride, dilation > 0 and padding >= 0");
  require(g.groups > 0 && g.cin % g.groups == 0 && g.cout % g.groups == 0,
          op + ": expected in_channels (" + std::to_string(g.cin) + ") and out_channels (" + std::to_string(g.cout) +
              ") divisible by groups (" + std::to_string(g.groups) + ")");
}

// Runs `gather(b, oy, ox, group, col)` (fills col[tap * cg + c]) then the dot products, for every
// output pixel; parallel over pixels.
template <typename Gather>
void conv_driver(const ConvGeometry& g, const float* weight, const float* bias, const float* residual, bool relu,
                 float* out, const Gather& gather) {
  const int64_t cg = g.cin / g.groups;
  const int64_t og = g.cout / g.groups;
  const int64_t k = g.kernel * g.kernel * cg;
  const int64_t pixels = g.n * g.out_h * g.out_w;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, k * g.cout));
  parallel_for(pixels, grain, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> col(static_cast<std::size_t>(k));
    for (int64_t p = begin; p < end; ++p) {
      const int64_t ox = p % g.out_w;
      const int64_t oy = (p / g.out_w) % g.out_h;
      const int64_t b = p / (g.out_w * g.out_h);
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        gather(b, oy, ox, grp, col.data());
        for (int64_t o = 0; o < og; ++o) {
          const int64_t oc = grp * og + o;
          const float* wrow = weight + oc * k;
          float acc = 0.0f;
          for (int64_t i = 0; i < k; ++i) acc += col[static_cast<std::size_t>(i)] * wrow[i];
          const int64_t oi = p * g.cout + oc;
          out[oi] = epilogue(acc, bias, residual, oc, oi, relu);
        }
      }
    }
  });
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

float bilinear_sample(const float* in, int64_t height, int64_t width, int64_t channels, float y, float x) {
  if (y <= -1 || static_cast<float>(height) <= y || x <= -1 || static_cast<float>(width) <= x) return 0.0f;
  const int64_t y_low = static_cast<int64_t>(std::floor(y));
  const int64_t x_low = static_cast<int64_t>(std::floor(x));
  const int64_t y_high = y_low + 1, x_high = x_low + 1;
  const float ly = y - static_cast<float>(y_low), lx = x - static_cast<float>(x_low);
  const float hy = 1 - ly, hx = 1 - lx;
  const float v1 = (y_low >= 0 && x_low >= 0) ? in[(y_low * width + x_low) * channels] : 0.0f;
  const float v2 = (y_low >= 0 && x_high <= width - 1) ? in[(y_low * width + x_high) * channels] : 0.0f;
  const float v3 = (y_high <= height - 1 && x_low >= 0) ? in[(y_high * width + x_low) * channels] : 0.0f;
  const float v4 = (y_high <= height - 1 && x_high <= width - 1) ? in[(y_high * width + x_high) * channels] : 0.0f;
  return hy * hx * v1 + hy * lx * v2 + ly * hx * v3 + ly * lx * v4;
}

void max_pool(const float* in, Shape s, float* out, int64_t out_h, int64_t out_w, int kernel, int stride,
              int padding) {
  require(kernel > 0 && stride > 0 && padding >= 0 && 2 * padding <= kernel,
          "max_pool: expected kernel, stride > 0 and 0 <= padding <= kernel / 2, found kernel " +
              std::to_string(kernel) + ", stride " + std::to_string(stride) + ", padding " + std::to_string(padding));
  for (int64_t b = 0; b < s.n; ++b)
    for (int64_t oy = 0; oy < out_h; ++oy)
      for (int64_t ox = 0; ox < out_w; ++ox)
        for (int64_t c = 0; c < s.c; ++c) {
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t i = 0; i < kernel; ++i) {
            const int64_t y = oy * stride - padding + i;
            if (y < 0 || y >= s.h) continue;
            for (int64_t j = 0; j < kernel; ++j) {
              const int64_t x = ox * stride - padding + j;
              if (x < 0 || x >= s.w) continue;
              const float v = in[((b * s.h + y) * s.w + x) * s.c + c];
              if (v > m || std::isnan(v)) m = v;  // PyTorch: NaN wins
            }
          }
          out[((b * out_h + oy) * out_w + ox) * s.c + c] = m;
        }
}

void conv(const ConvArgs& a) {
  const ConvGeometry g{a.n, a.h, a.w, a.in_channels, a.out_channels, a.out_h, a.out_w,
                       a.kernel, a.stride, a.padding, a.dilation, a.groups};
  check_geometry(g, "conv");
  const int64_t cg = a.in_channels / a.groups;
  conv_driver(g, a.weight, a.bias, a.residual, a.relu, a.out,
              [&](int64_t b, int64_t oy, int64_t ox, int64_t grp, float* col) {
                for (int64_t i = 0; i < a.kernel; ++i)
                  for (int64_t j = 0; j < a.kernel; ++j) {
                    float* dst = col + (i * a.kernel + j) * cg;
                    const int64_t y = oy * a.stride - a.padding + i * a.dilation;
                    const int64_t x = ox * a.stride - a.padding + j * a.dilation;
                    if (y < 0 || y >= a.h || x < 0 || x >= a.w) {
                      std::fill(dst, dst + cg, 0.0f);
                      continue;
                    }
                    const float* src = a.input + ((b * a.h + y) * a.w + x) * a.in_channels + grp * cg;
                    std::copy(src, src + cg, dst);
                  }
              });
}

void deform_conv(const DeformConvArgs& a) {
  const ConvGeometry g{a.n, a.h, a.w, a.in_channels, a.out_channels, a.out_h, a.out_w,
                       a.kernel, a.stride, a.padding, a.dilation, a.groups};
  check_geometry(g, "deform_conv");
  const int64_t dgs = a.deformable_groups;
  const int64_t taps = a.kernel * a.kernel;
  require(dgs > 0 && a.in_channels % dgs == 0,
          "deform_conv: expected in_channels (" + std::to_string(a.in_channels) +
              ") divisible by deformable_groups (" + std::to_string(dgs) + ")");
  const int64_t needed = (a.modulated ? 3 : 2) * dgs * taps;
  require(a.offset_channels >= needed, "deform_conv: expected at least " + std::to_string(needed) +
                                           " offset channels, found " + std::to_string(a.offset_channels));
  const int64_t cg = a.in_channels / a.groups;
  const int64_t cd = a.in_channels / dgs;
  conv_driver(g, a.weight, a.bias, a.residual, a.relu, a.out,
              [&](int64_t b, int64_t oy, int64_t ox, int64_t grp, float* col) {
                const float* off = a.offset + ((b * a.out_h + oy) * a.out_w + ox) * a.offset_channels;
                const float* img = a.input + b * a.h * a.w * a.in_channels;
                for (int64_t i = 0; i < a.kernel; ++i)
                  for (int64_t j = 0; j < a.kernel; ++j) {
                    const int64_t tap = i * a.kernel + j;
                    for (int64_t c = 0; c < cg; ++c) {
                      const int64_t ic = grp * cg + c;
                      const int64_t dg = ic / cd;
                      const float dy = off[2 * (dg * taps + tap)];
                      const float dx = off[2 * (dg * taps + tap) + 1];
                      const float m = a.modulated ? sigmoid(off[2 * dgs * taps + dg * taps + tap]) : 1.0f;
                      const float y = static_cast<float>(oy * a.stride - a.padding + i * a.dilation) + dy;
                      const float x = static_cast<float>(ox * a.stride - a.padding + j * a.dilation) + dx;
                      col[tap * cg + c] = m * bilinear_sample(img + ic, a.h, a.w, a.in_channels, y, x);
                    }
                  }
              });
}

namespace {

// y = (x - mean) * rstd * gamma + beta (+ residual), ReLU; statistics over the pixels [p0, p1) of
// image b and the channels [c0, c1).
void normalize(const float* in, Shape s, int64_t b, int64_t p0, int64_t p1, int64_t c0, int64_t c1, double eps,
               const float* gamma, const float* beta, const float* residual, bool relu, float* out) {
  double sum = 0;
  for (int64_t p = p0; p < p1; ++p)
    for (int64_t c = c0; c < c1; ++c) sum += in[(b * s.h * s.w + p) * s.c + c];
  const double count = static_cast<double>((p1 - p0) * (c1 - c0));
  const double mean = sum / count;
  double sq = 0;
  for (int64_t p = p0; p < p1; ++p)
    for (int64_t c = c0; c < c1; ++c) {
      const double d = in[(b * s.h * s.w + p) * s.c + c] - mean;
      sq += d * d;
    }
  const float meanf = static_cast<float>(mean);
  const float rstd = static_cast<float>(1.0 / std::sqrt(sq / count + eps));
  for (int64_t p = p0; p < p1; ++p)
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i = (b * s.h * s.w + p) * s.c + c;
      float v = (in[i] - meanf) * rstd;
      v = v * (gamma ? gamma[c] : 1.0f) + (beta ? beta[c] : 0.0f);
      if (residual) v += residual[i];
      if (relu && v < 0.0f) v = 0.0f;
      out[i] = v;
    }
}

}  // namespace

void group_norm(const float* in, Shape s, int64_t num_groups, double eps, const float* gamma, const float* beta,
                const float* residual, bool relu, float* out) {
  require(num_groups > 0 && s.c % num_groups == 0, "group_norm: expected channels (" + std::to_string(s.c) +
                                                       ") divisible by num_groups (" + std::to_string(num_groups) +
                                                       ")");
  const int64_t cg = s.c / num_groups;
  for (int64_t b = 0; b < s.n; ++b)
    for (int64_t grp = 0; grp < num_groups; ++grp)
      normalize(in, s, b, 0, s.h * s.w, grp * cg, (grp + 1) * cg, eps, gamma, beta, residual, relu, out);
}

void layer_norm(const float* in, Shape s, double eps, const float* gamma, const float* beta, const float* residual,
                bool relu, float* out) {
  for (int64_t b = 0; b < s.n; ++b)
    for (int64_t p = 0; p < s.h * s.w; ++p) normalize(in, s, b, p, p + 1, 0, s.c, eps, gamma, beta, residual, relu, out);
}

void bias_residual_act(const float* x, Shape s, const float* bias, const float* residual, bool relu, float* out) {
  const int64_t total = s.numel();
  for (int64_t i = 0; i < total; ++i) {
    float v = x[i];
    if (bias) v += bias[i % s.c];
    if (residual) v += residual[i];
    if (relu && v < 0.0f) v = 0.0f;
    out[i] = v;
  }
}

void upsample2x_add(const float* x, Shape s, const float* coarse, float scale, float* out) {
  require(s.h % 2 == 0 && s.w % 2 == 0,
          "upsample2x_add: expected an even height and width (twice the coarser level's), found " +
              std::to_string(s.h) + "x" + std::to_string(s.w));
  const int64_t ch = s.h / 2, cw = s.w / 2;
  for (int64_t b = 0; b < s.n; ++b)
    for (int64_t y = 0; y < s.h; ++y)
      for (int64_t xx = 0; xx < s.w; ++xx)
        for (int64_t c = 0; c < s.c; ++c) {
          const int64_t i = ((b * s.h + y) * s.w + xx) * s.c + c;
          const float up = coarse[((b * ch + y / 2) * cw + xx / 2) * s.c + c];
          out[i] = (x[i] + up) * scale;
        }
}

void nchw_to_nhwc(const float* in, int64_t n, int64_t c, int64_t h, int64_t w, int64_t c_padded, float* out) {
  require(c_padded >= c, "nchw_to_nhwc: expected c_padded >= c (" + std::to_string(c) + "), found " +
                             std::to_string(c_padded));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t k = 0; k < c_padded; ++k)
          out[((b * h + y) * w + x) * c_padded + k] = k < c ? in[((b * c + k) * h + y) * w + x] : 0.0f;
}

void nhwc_to_nchw(const float* in, int64_t n, int64_t h, int64_t w, int64_t c_stored, int64_t c, float* out) {
  require(c_stored >= c, "nhwc_to_nchw: expected c_stored >= c (" + std::to_string(c) + "), found " +
                             std::to_string(c_stored));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          out[((b * c + k) * h + y) * w + x] = in[((b * h + y) * w + x) * c_stored + k];
}

void avgpool_linear(const float* in, Shape s, const float* weight, const float* bias, int64_t classes, float* out) {
  std::vector<float> mean(static_cast<std::size_t>(s.c));
  for (int64_t b = 0; b < s.n; ++b) {
    for (int64_t c = 0; c < s.c; ++c) {
      double sum = 0;
      for (int64_t p = 0; p < s.h * s.w; ++p) sum += in[(b * s.h * s.w + p) * s.c + c];
      mean[static_cast<std::size_t>(c)] = static_cast<float>(sum / static_cast<double>(s.h * s.w));
    }
    for (int64_t k = 0; k < classes; ++k) {
      double acc = bias ? bias[k] : 0.0;
      for (int64_t c = 0; c < s.c; ++c) acc += static_cast<double>(weight[k * s.c + c]) * mean[static_cast<std::size_t>(c)];
      out[b * classes + k] = static_cast<float>(acc);
    }
  }
}

void round_to_half(float* data, int64_t count) {
  for (int64_t i = 0; i < count; ++i) data[i] = half_to_float(float_to_half(data[i]));
}

void round_to_bfloat16(float* data, int64_t count) {
  for (int64_t i = 0; i < count; ++i) data[i] = bfloat16_to_float(float_to_bfloat16(data[i]));
}

}  // namespace backbone::detail::nhwc
