// SPDX-License-Identifier: Apache-2.0
// The CPU twins of the CUDA module's NHWC kernels (ops/cpu/nhwc_ops.h) against independent
// references: the deformable convolution against ops::deform_conv2d (NCHW, itself tested against
// torchvision) and torchvision's goldens of tests/data/deform, the plain convolution against a
// brute-force formula and the deformable one with zero offsets, max pooling, GroupNorm, detectron2's
// LayerNorm and avgpool + linear against PyTorch's goldens (tests/data/make_nhwc_ops.py), layout
// conversions, and the rounding to fp16 / bf16 against backbone::float_to_half / float_to_bfloat16.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backbone/npy.h"
#include "backbone/ops.h"
#include "backbone/tensor.h"
#include "deform_cases.h"
#include "ops/cpu/nhwc_ops.h"
#include "ops/cuda/deform_conv_nhwc_tile.cuh"
#include "ops/cuda/group_norm_stats.cuh"

namespace backbone {
namespace {

namespace nhwc = backbone::detail::nhwc;
using Vec = std::vector<float>;

Vec random_vec(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  Vec v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// Independent layout helpers (plain index formulas, not the twins').
Vec nchw_to_nhwc_ref(const float* in, int64_t n, int64_t c, int64_t h, int64_t w) {
  Vec out(static_cast<std::size_t>(n * c * h * w));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) out[((b * h + y) * w + x) * c + k] = in[((b * c + k) * h + y) * w + x];
  return out;
}

Vec nhwc_to_nchw_ref(const float* in, int64_t n, int64_t h, int64_t w, int64_t c) {
  Vec out(static_cast<std::size_t>(n * c * h * w));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) out[((b * c + k) * h + y) * w + x] = in[((b * h + y) * w + x) * c + k];
  return out;
}

double max_abs_of(const Vec& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

double max_abs_diff_of(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}

Vec to_vec(const Tensor& t) {
  const Tensor c = t.contiguous();
  const float* p = c.data_ptr<float>();
  return Vec(p, p + c.numel());
}

Tensor to_tensor(const Vec& v, const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  std::memcpy(t.data_ptr<float>(), v.data(), v.size() * sizeof(float));
  return t;
}

std::string data_path(const std::string& file) { return std::string(BACKBONE_TEST_DATA_DIR) + "/nhwc_ops/" + file; }

Vec load_vec(const std::string& file) { return to_vec(load_npy(data_path(file))); }

std::vector<int64_t> load_params(const std::string& file) {
  const Tensor t = load_npy(data_path(file));
  const int64_t* p = t.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + t.numel());
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// ---- deformable convolution --------------------------------------------------------------------

struct DeformConfig {
  std::string name;
  int64_t n, cin, h, w, cout, kernel, stride, padding, dilation, groups, dgs;
  bool modulated, bias, residual, relu;
  float offset_scale;
  int64_t extra_offset_channels = 0;
};

void PrintTo(const DeformConfig& c, std::ostream* os) { *os << c.name; }

class NhwcDeformTwin : public ::testing::TestWithParam<DeformConfig> {};

// The NHWC twin against ops::deform_conv2d on the same (random) data in NCHW; residual and ReLU
// applied to the reference here.
TEST_P(NhwcDeformTwin, MatchesOpsDeformConv2d) {
  const DeformConfig& c = GetParam();
  std::mt19937 rng(1234);
  const int64_t out_h = ops::conv_output_size(c.h, c.kernel, c.stride, c.padding, c.dilation);
  const int64_t out_w = ops::conv_output_size(c.w, c.kernel, c.stride, c.padding, c.dilation);
  const int64_t taps = c.kernel * c.kernel;
  const int64_t off_ch = 2 * c.dgs * taps, mask_ch = c.dgs * taps;
  const int64_t stored_off_ch = off_ch + (c.modulated ? mask_ch : 0) + c.extra_offset_channels;
  const int64_t cg = c.cin / c.groups;

  const Vec input = random_vec(c.n * c.cin * c.h * c.w, rng);                                 // NCHW
  const Vec offset = random_vec(c.n * off_ch * out_h * out_w, rng, c.offset_scale);           // NCHW
  const Vec logits = random_vec(c.n * mask_ch * out_h * out_w, rng, 2.0f);                    // NCHW
  const Vec weight = random_vec(c.cout * cg * taps, rng, 0.5f);                               // OIHW
  const Vec bias = random_vec(c.cout, rng);
  const Vec residual = random_vec(c.n * out_h * out_w * c.cout, rng);                         // NHWC

  // Reference.
  Vec mask(logits.size());
  std::transform(logits.begin(), logits.end(), mask.begin(), sigmoid);
  ops::DeformConv2dParams p;
  p.stride_h = p.stride_w = c.stride;
  p.pad_h = p.pad_w = c.padding;
  p.dilation_h = p.dilation_w = c.dilation;
  p.groups = c.groups;
  p.deformable_groups = c.dgs;
  const Tensor ref_t = ops::deform_conv2d(
      to_tensor(input, {c.n, c.cin, c.h, c.w}), to_tensor(offset, {c.n, off_ch, out_h, out_w}),
      to_tensor(weight, {c.cout, cg, c.kernel, c.kernel}),
      c.modulated ? to_tensor(mask, {c.n, mask_ch, out_h, out_w}) : Tensor(),
      c.bias ? to_tensor(bias, {c.cout}) : Tensor(), p);
  Vec ref = nchw_to_nhwc_ref(to_vec(ref_t).data(), c.n, c.cout, out_h, out_w);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (c.residual) ref[i] += residual[i];
    if (c.relu) ref[i] = std::max(ref[i], 0.0f);
  }

  // Twin inputs in NHWC: offsets, then mask logits, then ignored extra channels.
  const Vec input_nhwc = nchw_to_nhwc_ref(input.data(), c.n, c.cin, c.h, c.w);
  Vec offset_nhwc(static_cast<std::size_t>(c.n * out_h * out_w * stored_off_ch), 1e3f);
  for (int64_t b = 0; b < c.n; ++b)
    for (int64_t pix = 0; pix < out_h * out_w; ++pix) {
      float* dst = offset_nhwc.data() + (b * out_h * out_w + pix) * stored_off_ch;
      for (int64_t k = 0; k < off_ch; ++k) dst[k] = offset[(b * off_ch + k) * out_h * out_w + pix];
      if (c.modulated)
        for (int64_t k = 0; k < mask_ch; ++k) dst[off_ch + k] = logits[(b * mask_ch + k) * out_h * out_w + pix];
    }
  Vec weight_ohwi(weight.size());
  for (int64_t o = 0; o < c.cout; ++o)
    for (int64_t i = 0; i < cg; ++i)
      for (int64_t t = 0; t < taps; ++t) weight_ohwi[(o * taps + t) * cg + i] = weight[(o * cg + i) * taps + t];

  Vec out(ref.size(), std::nanf(""));
  nhwc::DeformConvArgs a;
  a.input = input_nhwc.data();
  a.offset = offset_nhwc.data();
  a.offset_channels = stored_off_ch;
  a.weight = weight_ohwi.data();
  a.bias = c.bias ? bias.data() : nullptr;
  a.residual = c.residual ? residual.data() : nullptr;
  a.out = out.data();
  a.n = c.n, a.h = c.h, a.w = c.w, a.in_channels = c.cin, a.out_channels = c.cout, a.out_h = out_h, a.out_w = out_w;
  a.kernel = c.kernel, a.stride = c.stride, a.padding = c.padding, a.dilation = c.dilation;
  a.groups = c.groups, a.deformable_groups = c.dgs;
  a.modulated = c.modulated;
  a.relu = c.relu;
  nhwc::deform_conv(a);
  const double err = max_abs_diff_of(out, ref);
  EXPECT_LE(err, 1e-5 * max_abs_of(ref) + 1e-6) << c.name << ": max |ref| " << max_abs_of(ref);
  if (c.relu) {
    EXPECT_GE(*std::min_element(out.begin(), out.end()), 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Configs, NhwcDeformTwin,
    ::testing::Values(
        DeformConfig{"v1_basic", 1, 4, 7, 9, 5, 3, 1, 1, 1, 1, 1, false, false, false, false, 1.0f},
        DeformConfig{"v2_bias_relu", 2, 6, 8, 7, 4, 3, 1, 1, 1, 1, 1, true, true, false, true, 1.5f},
        DeformConfig{"v2_stride2_residual", 1, 5, 9, 10, 6, 3, 2, 1, 1, 1, 1, true, false, true, true, 2.0f},
        DeformConfig{"v1_dilation2_bias", 1, 4, 11, 10, 3, 3, 1, 2, 2, 1, 1, false, true, false, false, 1.0f},
        DeformConfig{"v2_groups2_dg2", 2, 8, 8, 7, 6, 3, 1, 1, 1, 2, 2, true, true, true, true, 2.0f},
        DeformConfig{"v2_groups2_dg4", 1, 8, 6, 6, 4, 3, 1, 1, 1, 2, 4, true, false, false, false, 1.0f},
        DeformConfig{"v1_groups4_dg1", 1, 8, 7, 6, 8, 3, 2, 1, 1, 4, 1, false, true, true, true, 1.0f},
        DeformConfig{"v2_large_offsets", 1, 3, 6, 7, 2, 3, 1, 0, 1, 1, 1, true, false, false, false, 6.0f},
        DeformConfig{"v2_extra_offset_channels", 1, 4, 5, 6, 3, 3, 1, 1, 1, 1, 2, true, true, false, false, 1.0f, 5},
        DeformConfig{"v1_pointwise", 2, 4, 6, 5, 3, 1, 1, 0, 1, 1, 1, false, false, false, false, 1.0f}),
    [](const ::testing::TestParamInfo<DeformConfig>& info) { return info.param.name; });

// Against torchvision's goldens directly (tests/data/deform, square-kernel cases): the stored masks
// are sigmoid outputs, handed to the twin as logits log(m / (1 - m)).
TEST(NhwcDeformTwinGolden, MatchesTorchvision) {
  int checked = 0;
  for (const std::string& name : test::kDeformCases) {
    const test::DeformCase g = test::load_deform_case(name);
    const ops::DeformConv2dParams& p = g.params;
    const int64_t kh = g.weight.size(2), kw = g.weight.size(3);
    if (kh != kw || p.stride_h != p.stride_w || p.pad_h != p.pad_w || p.dilation_h != p.dilation_w) continue;
    SCOPED_TRACE(name);
    const int64_t n = g.input.size(0), cin = g.input.size(1), h = g.input.size(2), w = g.input.size(3);
    const int64_t cout = g.weight.size(0), cg = g.weight.size(1), taps = kh * kw;
    const int64_t out_h = g.out.size(2), out_w = g.out.size(3);
    const int64_t off_ch = g.offset.size(1);
    const bool modulated = g.mask.defined();
    const int64_t mask_ch = modulated ? g.mask.size(1) : 0;
    const int64_t stored = off_ch + mask_ch;
    const Vec offset = to_vec(g.offset);
    const Vec mask = modulated ? to_vec(g.mask) : Vec();
    Vec off_nhwc(static_cast<std::size_t>(n * out_h * out_w * stored));
    for (int64_t b = 0; b < n; ++b)
      for (int64_t pix = 0; pix < out_h * out_w; ++pix) {
        float* dst = off_nhwc.data() + (b * out_h * out_w + pix) * stored;
        for (int64_t k = 0; k < off_ch; ++k) dst[k] = offset[(b * off_ch + k) * out_h * out_w + pix];
        for (int64_t k = 0; k < mask_ch; ++k) {
          const double m = std::clamp<double>(mask[(b * mask_ch + k) * out_h * out_w + pix], 1e-7, 1 - 1e-7);
          dst[off_ch + k] = static_cast<float>(std::log(m / (1 - m)));
        }
      }
    const Vec weight = to_vec(g.weight);
    Vec weight_ohwi(weight.size());
    for (int64_t o = 0; o < cout; ++o)
      for (int64_t i = 0; i < cg; ++i)
        for (int64_t t = 0; t < taps; ++t) weight_ohwi[(o * taps + t) * cg + i] = weight[(o * cg + i) * taps + t];
    const Vec input_nhwc = nchw_to_nhwc_ref(to_vec(g.input).data(), n, cin, h, w);
    const Vec bias = g.bias.defined() ? to_vec(g.bias) : Vec();
    Vec out(static_cast<std::size_t>(n * out_h * out_w * cout));
    nhwc::DeformConvArgs a;
    a.input = input_nhwc.data();
    a.offset = off_nhwc.data();
    a.offset_channels = stored;
    a.weight = weight_ohwi.data();
    a.bias = bias.empty() ? nullptr : bias.data();
    a.out = out.data();
    a.n = n, a.h = h, a.w = w, a.in_channels = cin, a.out_channels = cout, a.out_h = out_h, a.out_w = out_w;
    a.kernel = kh, a.stride = p.stride_h, a.padding = p.pad_h, a.dilation = p.dilation_h;
    a.groups = p.groups, a.deformable_groups = p.deformable_groups;
    a.modulated = modulated;
    a.relu = false;
    nhwc::deform_conv(a);
    const Vec ref = nchw_to_nhwc_ref(to_vec(g.out).data(), n, cout, out_h, out_w);
    EXPECT_LE(max_abs_diff_of(out, ref), 1e-5 * max_abs_of(ref) + 1e-5);
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

TEST(NhwcDeformTwinChecks, RejectsBadArguments) {
  Vec buf(4096, 0.0f);
  nhwc::DeformConvArgs a;
  a.input = a.offset = a.weight = buf.data();
  a.out = buf.data();
  a.n = 1, a.h = 4, a.w = 4, a.in_channels = 4, a.out_channels = 4, a.out_h = 4, a.out_w = 4;
  a.offset_channels = 18;
  a.groups = 3;
  EXPECT_THROW(nhwc::deform_conv(a), std::invalid_argument);  // 4 channels in 3 groups
  a.groups = 1;
  a.deformable_groups = 3;
  EXPECT_THROW(nhwc::deform_conv(a), std::invalid_argument);
  a.deformable_groups = 1;
  a.modulated = true;
  EXPECT_THROW(nhwc::deform_conv(a), std::invalid_argument);  // 18 < 27 offset channels
}

// Bilinear sampling at exact pixel centres reads the pixel, halfway between averages, and
// torchvision's border rule: zero outside (-1, H) x (-1, W), partial weights on the border.
TEST(NhwcDeformTwinChecks, BilinearSampleClosedForm) {
  // 2x3 image with 2 channels: channel 0 = 10 * y + x, channel 1 = -1.
  Vec img(2 * 3 * 2);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x) {
      img[(y * 3 + x) * 2] = static_cast<float>(10 * y + x);
      img[(y * 3 + x) * 2 + 1] = -1.0f;
    }
  EXPECT_FLOAT_EQ(nhwc::bilinear_sample(img.data(), 2, 3, 2, 1.0f, 2.0f), 12.0f);
  EXPECT_FLOAT_EQ(nhwc::bilinear_sample(img.data(), 2, 3, 2, 0.5f, 0.5f), 5.5f);
  EXPECT_FLOAT_EQ(nhwc::bilinear_sample(img.data() + 1, 2, 3, 2, 0.25f, 1.0f), -1.0f);
  EXPECT_FLOAT_EQ(nhwc::bilinear_sample(img.data(), 2, 3, 2, -0.5f, 0.0f), 0.0f * 0.5f + 0.5f * 0.0f);
  EXPECT_FLOAT_EQ(nhwc::bilinear_sample(img.data(), 2, 3, 2, 1.5f, 1.0f), 0.5f * 11.0f);
  EXPECT_FLOAT_EQ(nhwc::bilinear_sample(img.data() + 1, 2, 3, 2, 1.0f, -0.25f), -0.75f);
  EXPECT_EQ(nhwc::bilinear_sample(img.data(), 2, 3, 2, -1.0f, 1.0f), 0.0f);
  EXPECT_EQ(nhwc::bilinear_sample(img.data(), 2, 3, 2, 2.0f, 1.0f), 0.0f);
  EXPECT_EQ(nhwc::bilinear_sample(img.data(), 2, 3, 2, 1.0f, 3.0f), 0.0f);
}

// ---- the CUDA deformable kernel's tile code, run block by block on the host ---------------------
// deform_conv_nhwc_tile.cuh holds the kernel's phases as __host__ __device__ functions; here each
// phase runs for all 256 threads of a block in turn (the kernel's __syncthreads() between phases),
// with shared memory poisoned (NaN floats, -1 indices) before every block, in float32 and in a
// float16 storage (uint16_t through backbone::float_to_half), against the twin.

namespace tile = backbone::cuda_module::deform_tile;

struct HostFloatIo {
  static float load(const float* p, int64_t i) { return p[i]; }
  static void store(float* p, int64_t i, float v) { p[i] = v; }
  static float convert(float v) { return v; }
};

struct HostHalfIo {
  static float load(const uint16_t* p, int64_t i) { return half_to_float(p[i]); }
  static void store(uint16_t* p, int64_t i, float v) { p[i] = float_to_half(v); }
  static uint16_t convert(float v) { return float_to_half(v); }
};

// bf16 storage as a distinct type, so that the mma path's tiles are typed like on the device.
struct Bf16 {
  uint16_t bits;
};
struct HostBf16Io {
  static float load(const Bf16* p, int64_t i) { return bfloat16_to_float(p[i].bits); }
  static void store(Bf16* p, int64_t i, float v) { p[i].bits = float_to_bfloat16(v); }
  static Bf16 convert(float v) { return Bf16{float_to_bfloat16(v)}; }
};

template <typename StateT>
struct HostExecT {
  using State = StateT;
  std::vector<State> state = std::vector<State>(tile::kThreads);
  template <typename Fn>
  void each(Fn&& fn) {
    for (int t = 0; t < tile::kThreads; ++t) fn(t, state[static_cast<std::size_t>(t)]);
  }
};
using HostExec = HostExecT<tile::Accumulator>;

// The tensor-core policy on the host: the first thread of each warp does the warp's 16 x 32 part
// with a plain loop, accumulating in float directly in the staged accumulators.
template <typename T, typename Io>
struct HostMmaOps {
  struct State {};
  static void zero(tile::SharedMma<T>& s, State&, int tid) {
    if (tid % 32) return;
    int row, col;
    tile::warp_origin(tid / 32, row, col);
    for (int i = 0; i < tile::kWarpRows; ++i)
      for (int j = 0; j < tile::kWarpCols; ++j) s.c[row + i][col + j] = 0.0f;
  }
  static void step(tile::SharedMma<T>& s, State&, int tid) {
    if (tid % 32) return;
    int row, col;
    tile::warp_origin(tid / 32, row, col);
    for (int i = 0; i < tile::kWarpRows; ++i)
      for (int j = 0; j < tile::kWarpCols; ++j) {
        float acc = s.c[row + i][col + j];
        for (int k = 0; k < tile::kTileK; ++k) acc += Io::load(&s.a[row + i][0], k) * Io::load(&s.b[k][col + j], 0);
        s.c[row + i][col + j] = acc;
      }
  }
  static void finish(tile::SharedMma<T>&, State&, int) {}
};

template <typename T, typename Io>
void run_tile_kernel_on_host(const tile::Problem& pr, const T* in, const T* off, const T* w, const float* bias,
                             const T* res, T* out) {
  ASSERT_EQ(tile::validate(pr), "");
  const tile::Params p = tile::make_params(pr);
  auto shared = std::make_unique<tile::Shared>();
  HostExec exec;
  for (int64_t bx = 0; bx < p.m_tiles; ++bx)
    for (int64_t by = 0; by < p.groups * p.oc_tiles; ++by) {
      std::memset(static_cast<void*>(shared.get()), 0xff, sizeof(tile::Shared));
      for (auto& a : exec.state)
        for (auto& row : a.v)
          for (float& v : row) v = std::nanf("");
      tile::run_block<T, Io>(p, *shared, exec, bx, by, in, off, w, bias, res, out);
    }
}

template <typename T, typename Io>
void run_tile_mma_on_host(const tile::Problem& pr, const T* in, const T* off, const T* w, const float* bias,
                          const T* res, T* out) {
  ASSERT_EQ(tile::validate(pr), "");
  const tile::Params p = tile::make_params(pr);
  auto shared = std::make_unique<tile::SharedMma<T>>();
  HostExecT<typename HostMmaOps<T, Io>::State> exec;
  for (int64_t bx = 0; bx < p.m_tiles; ++bx)
    for (int64_t by = 0; by < p.groups * p.oc_tiles; ++by) {
      std::memset(static_cast<void*>(shared.get()), 0xff, sizeof(tile::SharedMma<T>));
      tile::run_block_mma<T, Io, HostMmaOps<T, Io>>(p, *shared, exec, bx, by, in, off, w, bias, res, out);
    }
}

struct TileConfig {
  std::string name;
  int64_t n, cin, h, w, cout, kernel, stride, padding, dilation, groups, dgs;
  bool modulated, bias, residual, relu;
};

void PrintTo(const TileConfig& c, std::ostream* os) { *os << c.name; }

class NhwcDeformTileOnHost : public ::testing::TestWithParam<TileConfig> {};

TEST_P(NhwcDeformTileOnHost, MatchesTwin) {
  const TileConfig& c = GetParam();
  std::mt19937 rng(77);
  tile::Problem pr;
  pr.n = c.n, pr.h = c.h, pr.w = c.w, pr.in_channels = c.cin, pr.out_channels = c.cout;
  pr.kernel = c.kernel, pr.stride = c.stride, pr.padding = c.padding, pr.dilation = c.dilation;
  pr.groups = c.groups, pr.deformable_groups = c.dgs, pr.modulated = c.modulated, pr.relu = c.relu;
  pr.out_h = (c.h + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
  pr.out_w = (c.w + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
  pr.offset_channels = (c.modulated ? 3 : 2) * c.dgs * c.kernel * c.kernel + 1;  // one ignored extra channel
  const int64_t pixels = c.n * pr.out_h * pr.out_w;
  Vec input = random_vec(c.n * c.h * c.w * c.cin, rng);
  Vec offset = random_vec(pixels * pr.offset_channels, rng, 1.5f);
  Vec weight = random_vec(c.cout * c.kernel * c.kernel * (c.cin / c.groups), rng, 0.3f);
  const Vec bias = random_vec(c.cout, rng);
  Vec residual = random_vec(pixels * c.cout, rng);

  auto twin = [&](const Vec& in, const Vec& off, const Vec& wt, const Vec& res) {
    Vec out(static_cast<std::size_t>(pixels * c.cout), std::nanf(""));
    nhwc::DeformConvArgs a;
    a.input = in.data(), a.offset = off.data(), a.offset_channels = pr.offset_channels, a.weight = wt.data();
    a.bias = c.bias ? bias.data() : nullptr;
    a.residual = c.residual ? res.data() : nullptr;
    a.out = out.data();
    a.n = c.n, a.h = c.h, a.w = c.w, a.in_channels = c.cin, a.out_channels = c.cout, a.out_h = pr.out_h;
    a.out_w = pr.out_w, a.kernel = c.kernel, a.stride = c.stride, a.padding = c.padding, a.dilation = c.dilation;
    a.groups = c.groups, a.deformable_groups = c.dgs, a.modulated = c.modulated, a.relu = c.relu;
    nhwc::deform_conv(a);
    return out;
  };

  // float32 storage.
  const Vec ref = twin(input, offset, weight, residual);
  Vec out(ref.size(), std::nanf(""));
  run_tile_kernel_on_host<float, HostFloatIo>(pr, input.data(), offset.data(), weight.data(),
                                              c.bias ? bias.data() : nullptr,
                                              c.residual ? residual.data() : nullptr, out.data());
  EXPECT_LE(max_abs_diff_of(out, ref), 1e-5 * max_abs_of(ref)) << "fp32, max |ref| " << max_abs_of(ref);

  // float16 storage: the twin on the inputs rounded to half; the output is rounded once more.
  for (Vec* v : {&input, &offset, &weight, &residual}) nhwc::round_to_half(v->data(), static_cast<int64_t>(v->size()));
  const Vec ref_h = twin(input, offset, weight, residual);
  auto to_half = [](const Vec& v) {
    std::vector<uint16_t> h(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) h[i] = float_to_half(v[i]);
    return h;
  };
  const auto in_h = to_half(input), off_h = to_half(offset), wt_h = to_half(weight), res_h = to_half(residual);
  std::vector<uint16_t> out_h(ref_h.size(), 0x7e00);
  run_tile_kernel_on_host<uint16_t, HostHalfIo>(pr, in_h.data(), off_h.data(), wt_h.data(),
                                                c.bias ? bias.data() : nullptr, c.residual ? res_h.data() : nullptr,
                                                out_h.data());
  Vec out_hf(out_h.size());
  for (std::size_t i = 0; i < out_h.size(); ++i) out_hf[i] = half_to_float(out_h[i]);
  EXPECT_LE(max_abs_diff_of(out_hf, ref_h), 2e-3 * max_abs_of(ref_h)) << "fp16, max |ref| " << max_abs_of(ref_h);

  // The tensor-core variant (sampled values rounded to the storage type before the products).
  std::fill(out_h.begin(), out_h.end(), uint16_t{0x7e00});
  run_tile_mma_on_host<uint16_t, HostHalfIo>(pr, in_h.data(), off_h.data(), wt_h.data(), c.bias ? bias.data() : nullptr,
                                             c.residual ? res_h.data() : nullptr, out_h.data());
  for (std::size_t i = 0; i < out_h.size(); ++i) out_hf[i] = half_to_float(out_h[i]);
  EXPECT_LE(max_abs_diff_of(out_hf, ref_h), 2e-3 * max_abs_of(ref_h)) << "fp16 mma, max |ref| " << max_abs_of(ref_h);

  // bf16, both variants.
  Vec in_b = input, off_b = offset, wt_b = weight, res_b = residual;  // already half: round again to bf16
  for (Vec* v : {&in_b, &off_b, &wt_b, &res_b}) nhwc::round_to_bfloat16(v->data(), static_cast<int64_t>(v->size()));
  const Vec ref_b = twin(in_b, off_b, wt_b, res_b);
  auto to_bf16 = [](const Vec& v) {
    std::vector<Bf16> b(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) b[i].bits = float_to_bfloat16(v[i]);
    return b;
  };
  const auto in_bb = to_bf16(in_b), off_bb = to_bf16(off_b), wt_bb = to_bf16(wt_b), res_bb = to_bf16(res_b);
  std::vector<Bf16> out_b(ref_b.size(), Bf16{0x7fc0});
  Vec out_bf(out_b.size());
  for (int mma = 0; mma < 2; ++mma) {
    if (mma)
      run_tile_mma_on_host<Bf16, HostBf16Io>(pr, in_bb.data(), off_bb.data(), wt_bb.data(),
                                             c.bias ? bias.data() : nullptr, c.residual ? res_bb.data() : nullptr,
                                             out_b.data());
    else
      run_tile_kernel_on_host<Bf16, HostBf16Io>(pr, in_bb.data(), off_bb.data(), wt_bb.data(),
                                                c.bias ? bias.data() : nullptr, c.residual ? res_bb.data() : nullptr,
                                                out_b.data());
    for (std::size_t i = 0; i < out_b.size(); ++i) out_bf[i] = bfloat16_to_float(out_b[i].bits);
    EXPECT_LE(max_abs_diff_of(out_bf, ref_b), 1.6e-2 * max_abs_of(ref_b))
        << "bf16 " << (mma ? "mma" : "fma") << ", max |ref| " << max_abs_of(ref_b);
    std::fill(out_b.begin(), out_b.end(), Bf16{0x7fc0});
  }
}

// Sizes around the tiles (64 pixels x 64 channels, K steps of 16 channels): partial tiles and
// steps, several of each, deformable groups smaller and larger than convolution groups.
INSTANTIATE_TEST_SUITE_P(
    Configs, NhwcDeformTileOnHost,
    ::testing::Values(TileConfig{"v2_partial_tiles", 2, 20, 9, 8, 70, 3, 1, 1, 1, 1, 1, true, true, true, true},
                      TileConfig{"v2_groups2_dg4_stride2", 1, 24, 11, 9, 10, 3, 2, 1, 1, 2, 4, true, true, false, false},
                      TileConfig{"v1_groups4_dg2_dilation2", 1, 16, 10, 10, 132, 3, 1, 2, 2, 4, 2, false, false, true,
                                 true},
                      TileConfig{"v1_exact_tiles", 2, 32, 8, 8, 64, 3, 1, 1, 1, 1, 1, false, true, false, false},
                      TileConfig{"v2_pointwise", 3, 5, 4, 6, 7, 1, 1, 0, 1, 1, 1, true, false, true, false},
                      TileConfig{"v2_dg3_odd_channels", 1, 45, 7, 5, 65, 3, 1, 1, 1, 1, 3, true, true, true, true}),
    [](const ::testing::TestParamInfo<TileConfig>& info) { return info.param.name; });

TEST(NhwcDeformTileChecks, ValidateNamesTheProblem) {
  tile::Problem p;
  p.n = 1, p.h = 8, p.w = 8, p.in_channels = 8, p.out_channels = 8, p.out_h = 8, p.out_w = 8, p.offset_channels = 18;
  EXPECT_EQ(tile::validate(p), "");
  p.out_w = 7;
  EXPECT_NE(tile::validate(p).find("expected output 8x8, found 8x7"), std::string::npos) << tile::validate(p);
  p.out_w = 8;
  p.modulated = true;
  EXPECT_NE(tile::validate(p).find("at least 27 offset channels"), std::string::npos) << tile::validate(p);
  p.offset_channels = 27;
  p.groups = 3;
  EXPECT_NE(tile::validate(p).find("divisible by groups"), std::string::npos);
  p.groups = 1;
  p.deformable_groups = 3;
  EXPECT_NE(tile::validate(p).find("divisible by deformable_groups"), std::string::npos);
  p.deformable_groups = 1;
  p.out_channels = 64 * 65536;
  EXPECT_NE(tile::validate(p).find("65535"), std::string::npos);
}

// ---- the CUDA GroupNorm statistics, run block by block on the host ------------------------------
// group_norm_stats.cuh holds the split of a group over blocks, each thread's Welford moments and
// their combination; here the stats kernel's blocks (and its tree reduction) and the finalize kernel
// run on the host, against double-precision two-pass statistics.

struct NormFloatIo {
  static float load(const float* p, int64_t i) { return p[i]; }
};

TEST(NhwcGroupNormStatsOnHost, MatchesTwoPassStatistics) {
  namespace ns = backbone::cuda_module::norm_stats;
  struct Case {
    nhwc::Shape s;
    int64_t groups;
    float mean, std;
  };
  const Case cases[] = {{{1, 64, 64, 32}, 1, 3.0f, 2.0f},     // 8 splits
                        {{2, 45, 50, 96}, 3, -2.0f, 1.0f},    // 5 splits
                        {{1, 3, 5, 8}, 4, 0.0f, 1.0f},        // 30 elements: most threads get none
                        {{1, 40, 40, 64}, 2, 50.0f, 0.5f}};   // mean far from 0, small variance
  for (const Case& c : cases) {
    std::mt19937 rng(8);
    const Vec in = random_vec(c.s.numel(), rng, c.std);
    Vec x(in);
    for (float& v : x) v += c.mean;
    const int64_t hw = c.s.h * c.s.w, cg = c.s.c / c.groups, elements = hw * cg;
    const int64_t splits = ns::splits_for(elements);
    EXPECT_EQ(splits, std::min<int64_t>(64, std::max<int64_t>(1, (elements + 16383) / 16384)));
    for (int64_t b = 0; b < c.s.n; ++b)
      for (int64_t g = 0; g < c.groups; ++g) {
        const float* base = x.data() + b * hw * c.s.c + g * cg;
        std::vector<ns::Moments> partial;
        float covered = 0;
        for (int64_t split = 0; split < splits; ++split) {
          int64_t begin, end;
          ns::slice(elements, splits, split, begin, end);
          std::vector<ns::Moments> shared(ns::kThreads);
          for (int t = 0; t < ns::kThreads; ++t)
            shared[static_cast<std::size_t>(t)] = ns::thread_moments<float, NormFloatIo>(base, c.s.c, cg, begin, end, t);
          for (int st = ns::kThreads / 2; st > 0; st >>= 1)
            for (int t = 0; t < st; ++t)
              shared[static_cast<std::size_t>(t)] =
                  ns::combine(shared[static_cast<std::size_t>(t)], shared[static_cast<std::size_t>(t + st)]);
          partial.push_back(shared[0]);
          covered += shared[0].count;
        }
        EXPECT_EQ(covered, static_cast<float>(elements));
        ns::Moments m = partial[0];
        for (std::size_t i = 1; i < partial.size(); ++i) m = ns::combine(m, partial[i]);
        const ns::MeanRstd st = ns::finish(m, 1e-5f);
        double sum = 0, sq = 0;
        for (int64_t p = 0; p < hw; ++p)
          for (int64_t k = 0; k < cg; ++k) sum += base[p * c.s.c + k];
        const double mean = sum / static_cast<double>(elements);
        for (int64_t p = 0; p < hw; ++p)
          for (int64_t k = 0; k < cg; ++k) sq += (base[p * c.s.c + k] - mean) * (base[p * c.s.c + k] - mean);
        const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(elements) + 1e-5);
        EXPECT_NEAR(st.mean, mean, 1e-5 * (std::fabs(mean) + c.std)) << c.s.c << " group " << g;
        EXPECT_NEAR(st.rstd, rstd, 1e-4 * rstd) << c.s.c << " group " << g;
      }
  }
  EXPECT_EQ(ns::stats_offset(3), 40u);  // 3 x 12 bytes, rounded up to 8
  EXPECT_EQ(ns::stats_offset(4), 48u);
}

// ---- plain convolution -------------------------------------------------------------------------

struct ConvConfig {
  std::string name;
  int64_t n, cin, h, w, cout, kernel, stride, padding, dilation, groups;
  bool bias, residual, relu;
};

void PrintTo(const ConvConfig& c, std::ostream* os) { *os << c.name; }

class NhwcConvTwin : public ::testing::TestWithParam<ConvConfig> {};

TEST_P(NhwcConvTwin, MatchesBruteForceAndDeformWithZeroOffsets) {
  const ConvConfig& c = GetParam();
  std::mt19937 rng(99);
  const int64_t out_h = (c.h + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
  const int64_t out_w = (c.w + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
  const int64_t cg = c.cin / c.groups, og = c.cout / c.groups;
  const Vec input = random_vec(c.n * c.h * c.w * c.cin, rng);
  const Vec weight = random_vec(c.cout * c.kernel * c.kernel * cg, rng, 0.5f);
  const Vec bias = random_vec(c.cout, rng);
  const Vec residual = random_vec(c.n * out_h * out_w * c.cout, rng);

  // Brute force, in double.
  Vec ref(static_cast<std::size_t>(c.n * out_h * out_w * c.cout));
  for (int64_t b = 0; b < c.n; ++b)
    for (int64_t oy = 0; oy < out_h; ++oy)
      for (int64_t ox = 0; ox < out_w; ++ox)
        for (int64_t oc = 0; oc < c.cout; ++oc) {
          double acc = c.bias ? bias[oc] : 0.0;
          const int64_t grp = oc / og;
          for (int64_t i = 0; i < c.kernel; ++i)
            for (int64_t j = 0; j < c.kernel; ++j) {
              const int64_t y = oy * c.stride - c.padding + i * c.dilation;
              const int64_t x = ox * c.stride - c.padding + j * c.dilation;
              if (y < 0 || y >= c.h || x < 0 || x >= c.w) continue;
              for (int64_t k = 0; k < cg; ++k)
                acc += static_cast<double>(input[((b * c.h + y) * c.w + x) * c.cin + grp * cg + k]) *
                       weight[((oc * c.kernel + i) * c.kernel + j) * cg + k];
            }
          const int64_t oi = ((b * out_h + oy) * out_w + ox) * c.cout + oc;
          if (c.residual) acc += residual[oi];
          if (c.relu) acc = std::max(acc, 0.0);
          ref[oi] = static_cast<float>(acc);
        }

  Vec out(ref.size(), std::nanf(""));
  nhwc::ConvArgs a;
  a.input = input.data();
  a.weight = weight.data();
  a.bias = c.bias ? bias.data() : nullptr;
  a.residual = c.residual ? residual.data() : nullptr;
  a.out = out.data();
  a.n = c.n, a.h = c.h, a.w = c.w, a.in_channels = c.cin, a.out_channels = c.cout, a.out_h = out_h, a.out_w = out_w;
  a.kernel = c.kernel, a.stride = c.stride, a.padding = c.padding, a.dilation = c.dilation, a.groups = c.groups;
  a.relu = c.relu;
  nhwc::conv(a);
  EXPECT_LE(max_abs_diff_of(out, ref), 1e-5 * max_abs_of(ref) + 1e-6);

  // Deformable with zero offsets (v1, and v2 with logits +inf -> mask 1) is the plain convolution.
  for (bool modulated : {false, true}) {
    const int64_t taps = c.kernel * c.kernel;
    const int64_t off_ch = (modulated ? 3 : 2) * taps;
    Vec offset(static_cast<std::size_t>(c.n * out_h * out_w * off_ch), 0.0f);
    if (modulated)
      for (int64_t p = 0; p < c.n * out_h * out_w; ++p)
        for (int64_t t = 0; t < taps; ++t) offset[p * off_ch + 2 * taps + t] = 100.0f;  // sigmoid(100) == 1
    Vec dout(ref.size(), std::nanf(""));
    nhwc::DeformConvArgs d;
    d.input = input.data();
    d.offset = offset.data();
    d.offset_channels = off_ch;
    d.weight = weight.data();
    d.bias = a.bias;
    d.residual = a.residual;
    d.out = dout.data();
    d.n = c.n, d.h = c.h, d.w = c.w, d.in_channels = c.cin, d.out_channels = c.cout, d.out_h = out_h, d.out_w = out_w;
    d.kernel = c.kernel, d.stride = c.stride, d.padding = c.padding, d.dilation = c.dilation, d.groups = c.groups;
    d.deformable_groups = 1;
    d.modulated = modulated;
    d.relu = c.relu;
    nhwc::deform_conv(d);
    EXPECT_EQ(max_abs_diff_of(dout, out), 0.0) << "modulated " << modulated;
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, NhwcConvTwin,
                         ::testing::Values(ConvConfig{"k3", 1, 5, 7, 8, 6, 3, 1, 1, 1, 1, false, false, false},
                                           ConvConfig{"k3_s2_bias_relu", 2, 4, 9, 7, 5, 3, 2, 1, 1, 1, true, false, true},
                                           ConvConfig{"k1_residual", 1, 8, 5, 5, 4, 1, 1, 0, 1, 1, true, true, true},
                                           ConvConfig{"k3_d2_groups2", 1, 6, 8, 9, 4, 3, 1, 2, 2, 2, false, true, false},
                                           ConvConfig{"k7_s2_p3", 1, 3, 13, 11, 4, 7, 2, 3, 1, 1, true, false, true},
                                           ConvConfig{"k1_s2", 2, 4, 7, 6, 6, 1, 2, 0, 1, 1, false, false, false}),
                         [](const ::testing::TestParamInfo<ConvConfig>& info) { return info.param.name; });

// ---- pooling, norms, head ----------------------------------------------------------------------

class NhwcMaxPool : public ::testing::TestWithParam<std::string> {};

TEST_P(NhwcMaxPool, MatchesPyTorch) {
  const std::string name = GetParam();
  const Tensor in = load_npy(data_path(name + "_input.npy"));
  const Tensor ref = load_npy(data_path(name + "_out.npy"));
  const auto p = load_params(name + "_params.npy");
  ASSERT_EQ(p.size(), 3u);
  const nhwc::Shape s{in.size(0), in.size(1), in.size(2), in.size(3)};
  Vec out(static_cast<std::size_t>(ref.numel()), std::nanf(""));
  nhwc::max_pool(in.data_ptr<float>(), s, out.data(), ref.size(1), ref.size(2), static_cast<int>(p[0]),
                 static_cast<int>(p[1]), static_cast<int>(p[2]));
  EXPECT_EQ(max_abs_diff_of(out, to_vec(ref)), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Goldens, NhwcMaxPool, ::testing::Values("max_pool_stem", "max_pool_k2s2", "max_pool_k3s1p1"));

TEST(NhwcMaxPoolClosedForm, PaddingNeverWinsAndNanPropagates) {
  // 1x2x2x1 all negative, kernel 3 stride 1 padding 1: every output is the max of the in-bounds part.
  const Vec in = {-4.0f, -3.0f, -2.0f, -1.0f};
  Vec out(4);
  nhwc::max_pool(in.data(), {1, 2, 2, 1}, out.data(), 2, 2, 3, 1, 1);
  EXPECT_EQ(out, (Vec{-1.0f, -1.0f, -1.0f, -1.0f}));
  const Vec with_nan = {-4.0f, std::nanf(""), 5.0f, -1.0f};
  Vec out1(1);
  nhwc::max_pool(with_nan.data(), {1, 2, 2, 1}, out1.data(), 1, 1, 2, 2, 0);
  EXPECT_TRUE(std::isnan(out1[0]));
  EXPECT_THROW(nhwc::max_pool(in.data(), {1, 2, 2, 1}, out.data(), 2, 2, 3, 1, 2), std::invalid_argument);
}

class NhwcGroupNorm : public ::testing::TestWithParam<std::string> {};

TEST_P(NhwcGroupNorm, MatchesPyTorchWithResidualAndRelu) {
  const std::string name = GetParam();
  const Tensor in = load_npy(data_path(name + "_input.npy"));
  const Vec ref = load_vec(name + "_out.npy");
  const Vec gamma = load_vec(name + "_gamma.npy"), beta = load_vec(name + "_beta.npy");
  const auto p = load_params(name + "_params.npy");
  const nhwc::Shape s{in.size(0), in.size(1), in.size(2), in.size(3)};
  Vec out(ref.size(), std::nanf(""));
  nhwc::group_norm(in.data_ptr<float>(), s, p.at(0), 1e-5, gamma.data(), beta.data(), nullptr, false, out.data());
  EXPECT_LE(max_abs_diff_of(out, ref), 1e-5 * max_abs_of(ref) + 1e-6);
  std::mt19937 rng(5);
  const Vec residual = random_vec(s.numel(), rng);
  Vec fused(ref.size());
  nhwc::group_norm(in.data_ptr<float>(), s, p.at(0), 1e-5, gamma.data(), beta.data(), residual.data(), true,
                   fused.data());
  Vec expect(ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) expect[i] = std::max(0.0f, ref[i] + residual[i]);
  EXPECT_LE(max_abs_diff_of(fused, expect), 1e-5 * max_abs_of(expect) + 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Goldens, NhwcGroupNorm, ::testing::Values("group_norm_g4", "group_norm_g1_shift"));

class NhwcLayerNorm : public ::testing::TestWithParam<std::string> {};

TEST_P(NhwcLayerNorm, MatchesDetectron2Formula) {
  const std::string name = GetParam();
  const Tensor in = load_npy(data_path(name + "_input.npy"));
  const Vec ref = load_vec(name + "_out.npy");
  const Vec gamma = load_vec(name + "_gamma.npy"), beta = load_vec(name + "_beta.npy");
  const nhwc::Shape s{in.size(0), in.size(1), in.size(2), in.size(3)};
  Vec out(ref.size(), std::nanf(""));
  nhwc::layer_norm(in.data_ptr<float>(), s, 1e-6, gamma.data(), beta.data(), nullptr, false, out.data());
  EXPECT_LE(max_abs_diff_of(out, ref), 1e-5 * max_abs_of(ref) + 1e-6);
  std::mt19937 rng(6);
  const Vec residual = random_vec(s.numel(), rng);
  Vec fused(ref.size());
  nhwc::layer_norm(in.data_ptr<float>(), s, 1e-6, gamma.data(), beta.data(), residual.data(), true, fused.data());
  Vec expect(ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) expect[i] = std::max(0.0f, ref[i] + residual[i]);
  EXPECT_LE(max_abs_diff_of(fused, expect), 1e-5 * max_abs_of(expect) + 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Goldens, NhwcLayerNorm, ::testing::Values("layer_norm_c6", "layer_norm_c33"));

TEST(NhwcAvgPoolLinear, MatchesPyTorch) {
  const Tensor in = load_npy(data_path("avgpool_linear_input.npy"));
  const Vec ref = load_vec("avgpool_linear_out.npy");
  const Vec weight = load_vec("avgpool_linear_weight.npy"), bias = load_vec("avgpool_linear_bias.npy");
  const int64_t classes = load_params("avgpool_linear_params.npy").at(0);
  const nhwc::Shape s{in.size(0), in.size(1), in.size(2), in.size(3)};
  ASSERT_EQ(static_cast<int64_t>(ref.size()), s.n * classes);
  Vec out(ref.size(), std::nanf(""));
  nhwc::avgpool_linear(in.data_ptr<float>(), s, weight.data(), bias.data(), classes, out.data());
  EXPECT_LE(max_abs_diff_of(out, ref), 1e-5 * max_abs_of(ref) + 1e-6);
  // Without bias: the same minus the bias.
  nhwc::avgpool_linear(in.data_ptr<float>(), s, weight.data(), nullptr, classes, out.data());
  for (std::size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(out[i], ref[i] - bias[i % classes], 1e-5) << i;
}

TEST(NhwcBiasResidualAct, ClosedForm) {
  const Vec x = {1.0f, -2.0f, 3.0f, -4.0f, 0.5f, -0.5f};  // 1x1x2x3
  const Vec bias = {0.5f, 1.0f, -1.0f};
  const Vec residual = {0.0f, 0.5f, -3.0f, 10.0f, 0.0f, 0.0f};
  Vec out(6);
  nhwc::bias_residual_act(x.data(), {1, 1, 2, 3}, bias.data(), residual.data(), true, out.data());
  EXPECT_EQ(out, (Vec{1.5f, 0.0f, 0.0f, 6.5f, 1.5f, 0.0f}));
  nhwc::bias_residual_act(x.data(), {1, 1, 2, 3}, bias.data(), nullptr, false, out.data());
  EXPECT_EQ(out, (Vec{1.5f, -1.0f, 2.0f, -3.5f, 1.5f, -1.5f}));
  Vec in_place = x;
  nhwc::bias_residual_act(in_place.data(), {1, 1, 2, 3}, nullptr, residual.data(), false, in_place.data());
  EXPECT_EQ(in_place, (Vec{1.0f, -1.5f, 0.0f, 6.0f, 0.5f, -0.5f}));
}

TEST(NhwcLayout, RoundTripWithPaddedChannels) {
  std::mt19937 rng(3);
  const int64_t n = 2, c = 3, h = 5, w = 4, cp = 8;
  const Vec nchw = random_vec(n * c * h * w, rng);
  Vec padded(static_cast<std::size_t>(n * h * w * cp), std::nanf(""));
  nhwc::nchw_to_nhwc(nchw.data(), n, c, h, w, cp, padded.data());
  const Vec expect = nchw_to_nhwc_ref(nchw.data(), n, c, h, w);
  for (int64_t p = 0; p < n * h * w; ++p)
    for (int64_t k = 0; k < cp; ++k)
      EXPECT_EQ(padded[p * cp + k], k < c ? expect[p * c + k] : 0.0f) << p << " " << k;
  Vec back(nchw.size(), std::nanf(""));
  nhwc::nhwc_to_nchw(padded.data(), n, h, w, cp, c, back.data());
  EXPECT_EQ(back, nchw);
  Vec plain(nchw.size());
  nhwc::nchw_to_nhwc(nchw.data(), n, c, h, w, c, plain.data());
  EXPECT_EQ(plain, expect);
  EXPECT_EQ(nhwc_to_nchw_ref(plain.data(), n, h, w, c), nchw);
  EXPECT_THROW(nhwc::nchw_to_nhwc(nchw.data(), n, c, h, w, 2, padded.data()), std::invalid_argument);
  EXPECT_THROW(nhwc::nhwc_to_nchw(padded.data(), n, h, w, 2, c, back.data()), std::invalid_argument);
}

TEST(NhwcRounding, MatchesTensorConversions) {
  std::mt19937 rng(11);
  Vec v = random_vec(2000, rng, 100.0f);
  v.insert(v.end(), {0.0f, -0.0f, 1.0f + 1.0f / 2048.0f, 1.0f + 3.0f / 2048.0f, 65504.0f, 65520.0f, 1e-8f,
                     6.1e-5f, 1.0f + 1.0f / 256.0f, 1.0f + 3.0f / 256.0f, 3.0e38f,
                     std::numeric_limits<float>::infinity()});
  Vec h = v, b = v;
  nhwc::round_to_half(h.data(), static_cast<int64_t>(h.size()));
  nhwc::round_to_bfloat16(b.data(), static_cast<int64_t>(b.size()));
  for (std::size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(h[i], half_to_float(float_to_half(v[i]))) << v[i];
    EXPECT_EQ(b[i], bfloat16_to_float(float_to_bfloat16(v[i]))) << v[i];
  }
  // Ties to even and overflow, independently of the library's conversions.
  const std::size_t k = 2000;
  EXPECT_EQ(h[k + 2], 1.0f);                      // 1 + 2^-11: halfway, to even (1.0)
  EXPECT_EQ(h[k + 3], 1.0f + 2.0f / 1024.0f);     // 1 + 3 * 2^-11: halfway, to even (1 + 2^-9)
  EXPECT_EQ(h[k + 4], 65504.0f);
  EXPECT_TRUE(std::isinf(h[k + 5]));              // 65520 rounds up past the largest half
  EXPECT_EQ(b[k + 8], 1.0f);                      // 1 + 2^-8: halfway in bf16, to even
  EXPECT_EQ(b[k + 9], 1.0f + 2.0f / 128.0f);
  EXPECT_EQ(b[k + 2], 1.0f);
  EXPECT_FALSE(std::isinf(b[k + 10]));
  Vec nan = {std::nanf("")};
  nhwc::round_to_half(nan.data(), 1);
  EXPECT_TRUE(std::isnan(nan[0]));
  nhwc::round_to_bfloat16(nan.data(), 1);
  EXPECT_TRUE(std::isnan(nan[0]));
}

}  // namespace
}  // namespace backbone
