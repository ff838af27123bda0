// SPDX-License-Identifier: Apache-2.0
// The CPU twins of the FPN's NHWC kernels against plain references in NCHW written from PyTorch's
// definitions: upsample2x_add (detectron2's top-down step: F.interpolate(mode="nearest",
// scale_factor=2), whose source index is floor(dst * in / out), + lateral, then / 2 for "avg") and
// LastLevelMaxPool's max_pool2d(kernel_size=1, stride=2, padding=0) (x[:, :, ::2, ::2]).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/cpu/nhwc_ops.h"

namespace backbone {
namespace {

namespace nhwc = backbone::detail::nhwc;
using Vec = std::vector<float>;

Vec random_vec(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 3.0f);
  Vec v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// NCHW <-> NHWC by index formula.
float& at_nhwc(Vec& v, int64_t h, int64_t w, int64_t c, int64_t b, int64_t k, int64_t y, int64_t x) {
  return v[static_cast<std::size_t>(((b * h + y) * w + x) * c + k)];
}

TEST(NhwcFpnUpsampleAdd, MatchesNearestInterpolateSumAndAvg) {
  const int64_t n = 2, c = 5;
  for (const auto& [ch, cw] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 4}, {7, 5}}) {
    const int64_t h = 2 * ch, w = 2 * cw;
    std::mt19937 rng(static_cast<unsigned>(ch * 31 + cw));
    Vec lateral = random_vec(n * h * w * c, rng), coarse = random_vec(n * ch * cw * c, rng);
    for (const bool avg : {false, true}) {
      SCOPED_TRACE(std::to_string(ch) + "x" + std::to_string(cw) + (avg ? " avg" : " sum"));
      Vec out(lateral.size());
      nhwc::upsample2x_add(lateral.data(), {n, h, w, c}, coarse.data(), avg ? 0.5f : 1.0f, out.data());
      for (int64_t b = 0; b < n; ++b)
        for (int64_t k = 0; k < c; ++k)
          for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x) {
              // PyTorch's upsample_nearest2d: src = floor(dst * (in / out)).
              const int64_t sy = static_cast<int64_t>(static_cast<float>(y) * (static_cast<float>(ch) / h));
              const int64_t sx = static_cast<int64_t>(static_cast<float>(x) * (static_cast<float>(cw) / w));
              float ref = at_nhwc(lateral, h, w, c, b, k, y, x) + at_nhwc(coarse, ch, cw, c, b, k, sy, sx);
              if (avg) ref /= 2;
              ASSERT_EQ(at_nhwc(out, h, w, c, b, k, y, x), ref) << b << " " << k << " " << y << " " << x;
            }
    }
  }
}

TEST(NhwcFpnUpsampleAdd, RefusesOddSizes) {
  Vec x(3 * 4 * 2), coarse(1 * 2 * 2), out(x.size());
  EXPECT_THROW(nhwc::upsample2x_add(x.data(), {1, 3, 4, 2}, coarse.data(), 1.0f, out.data()), std::invalid_argument);
}

// LastLevelMaxPool: p6 = p5[:, :, ::2, ::2], (size - 1) / 2 + 1 per axis, odd and even sizes.
TEST(NhwcFpnMaxPoolKernel1Stride2, IsAStridedSubsample) {
  const int64_t n = 2, c = 3;
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {4, 6}, {5, 7}, {25, 38}}) {
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w));
    std::mt19937 rng(static_cast<unsigned>(h * 17 + w));
    Vec in = random_vec(n * h * w * c, rng);
    const int64_t oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
    Vec out(static_cast<std::size_t>(n * oh * ow * c));
    nhwc::max_pool(in.data(), {n, h, w, c}, out.data(), oh, ow, 1, 2, 0);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t k = 0; k < c; ++k)
        for (int64_t y = 0; y < oh; ++y)
          for (int64_t x = 0; x < ow; ++x)
            ASSERT_EQ(at_nhwc(out, oh, ow, c, b, k, y, x), at_nhwc(in, h, w, c, b, k, 2 * y, 2 * x));
  }
}

}  // namespace
}  // namespace backbone
