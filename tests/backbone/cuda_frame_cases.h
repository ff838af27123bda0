// SPDX-License-Identifier: Apache-2.0
// Test frames and option sets for frame preprocessing on the GPU (cuda_frame_test.cpp on the CPU,
// cuda_frame_cuda_test.cpp on a GPU): random pixels in every PixelFormat with padded strides, and the
// resize modes in both directions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backbone/frame.h"

namespace backbone::test {

constexpr PixelFormat kAllFormats[] = {PixelFormat::RGB,  PixelFormat::BGR,  PixelFormat::RGBx, PixelFormat::BGRx,
                                       PixelFormat::xRGB, PixelFormat::xBGR, PixelFormat::RGBA, PixelFormat::BGRA,
                                       PixelFormat::ARGB, PixelFormat::ABGR, PixelFormat::NV12, PixelFormat::I420,
                                       PixelFormat::GRAY8};

// A frame in host memory with its own planes: random bytes, padding bytes included.
struct TestFrame {
  std::vector<uint8_t> planes[3];
  int64_t row_bytes[3] = {0, 0, 0};
  int64_t rows[3] = {0, 0, 0};
  int n_planes = 1;
  FrameView view;
};

// `pad` extra bytes per row (strides left 0, "tight", when pad < 0).
inline TestFrame make_test_frame(PixelFormat format, int64_t width, int64_t height, int64_t pad, uint32_t seed) {
  TestFrame t;
  t.view.format = format;
  t.view.width = width;
  t.view.height = height;
  const int64_t cw = (width + 1) / 2, ch = (height + 1) / 2;
  switch (format) {
    case PixelFormat::NV12:
      t.n_planes = 2;
      t.row_bytes[0] = width;
      t.rows[0] = height;
      t.row_bytes[1] = 2 * cw;
      t.rows[1] = ch;
      break;
    case PixelFormat::I420:
      t.n_planes = 3;
      t.row_bytes[0] = width;
      t.rows[0] = height;
      t.row_bytes[1] = t.row_bytes[2] = cw;
      t.rows[1] = t.rows[2] = ch;
      break;
    case PixelFormat::GRAY8:
      t.row_bytes[0] = width;
      t.rows[0] = height;
      break;
    case PixelFormat::RGB:
    case PixelFormat::BGR:
      t.row_bytes[0] = 3 * width;
      t.rows[0] = height;
      break;
    default:
      t.row_bytes[0] = 4 * width;
      t.rows[0] = height;
      break;
  }
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int p = 0; p < t.n_planes; ++p) {
    const int64_t stride = t.row_bytes[p] + (pad > 0 ? pad + p : 0);
    t.planes[p].resize(static_cast<std::size_t>(stride * t.rows[p]));
    for (auto& b : t.planes[p]) b = static_cast<uint8_t>(byte(gen));
    t.view.planes[p] = t.planes[p].data();
    t.view.strides[p] = pad < 0 ? 0 : stride;
  }
  return t;
}

struct OptionCase {
  std::string name;
  FramePreprocessOptions options;
};

// Options for a frame of width x height: no resize, shortest edge shrinking and enlarging (and
// clamped by max_size), fixed sizes changing both axes, one axis only, heavily shrinking; with and
// without size_divisibility; BGR and RGB model order with non-trivial mean/std.
inline std::vector<OptionCase> option_cases(int64_t width, int64_t height) {
  std::vector<OptionCase> cases;
  auto add = [&](const std::string& name, ResizeMode mode, int64_t a, int64_t b, int64_t div) {
    for (int order = 0; order < 2; ++order) {
      OptionCase c;
      c.name = name + (order == 0 ? "/BGR" : "/RGB") + "/div" + std::to_string(div);
      FramePreprocessOptions& o = c.options;
      if (order == 0) {
        o.input_format = "BGR";
        o.pixel_mean = {103.53, 116.28, 123.675};
        o.pixel_std = {57.375, 57.12, 58.395};
      } else {
        o.input_format = "RGB";
        o.pixel_mean = {123.675, 116.28, 103.53};
        o.pixel_std = {58.395, 57.12, 1.0};
      }
      o.resize = mode;
      if (mode == ResizeMode::ShortestEdge) {
        o.min_size = a;
        o.max_size = b;
      } else if (mode == ResizeMode::Fixed) {
        o.width = a;
        o.height = b;
      }
      o.size_divisibility = div;
      cases.push_back(c);
    }
  };
  const int64_t shortest = std::min(width, height);
  add("none", ResizeMode::None, 0, 0, 0);
  add("none", ResizeMode::None, 0, 0, 32);
  add("shortest-shrink", ResizeMode::ShortestEdge, std::max<int64_t>(1, shortest * 2 / 3), 4000, 8);
  add("shortest-enlarge", ResizeMode::ShortestEdge, shortest * 2 + 3, 4000, 0);
  add("shortest-max", ResizeMode::ShortestEdge, shortest * 3, std::max(width, height) + 2, 16);
  add("fixed-both", ResizeMode::Fixed, width * 3 / 5 + 1, height * 7 / 4 + 1, 0);
  add("fixed-h-only", ResizeMode::Fixed, width + 5, height, 4);
  add("fixed-v-only", ResizeMode::Fixed, width, std::max<int64_t>(1, height / 2), 0);
  add("fixed-heavy-shrink", ResizeMode::Fixed, std::max<int64_t>(1, width / 5), std::max<int64_t>(1, height / 4), 0);
  add("fixed-1x1", ResizeMode::Fixed, 1, 1, 2);
  return cases;
}

}  // namespace backbone::test
