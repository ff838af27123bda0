// SPDX-License-Identifier: Apache-2.0
// frame/cuda_frame.h on the CPU: the arguments of the GPU preprocessing kernel and its CPU twin
// against preprocess_frame, the independent reference (frame.cpp + preprocess.cpp): every pixel
// format, odd sizes and padded strides, every resize mode in both directions, the YUV matrices,
// ranges and chroma sites, both model channel orders and size_divisibility, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backbone/error.h"
#include "backbone/frame.h"
#include "backbone/preprocess.h"
#include "cuda_frame_cases.h"
#include "frame/cuda_frame.h"
#include "frame/frame_pixel.h"

namespace backbone {
namespace {

using detail::CudaFrameArgs;
using detail::make_cuda_frame_args;
using detail::preprocess_frame_twin;

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// preprocess_frame's [1, 3, Hp, Wp] against the twin's NHWC [Hp][Wp][c_padded]: every value bit
// for bit, channels beyond 3 exactly +0.
::testing::AssertionResult same_as_reference(const Tensor& nchw, const std::vector<float>& nhwc, int64_t c_padded) {
  if (nchw.dim() != 4 || nchw.size(0) != 1 || nchw.size(1) != 3)
    return ::testing::AssertionFailure() << "reference of shape " << shape_str(nchw.shape());
  const int64_t hp = nchw.size(2), wp = nchw.size(3);
  if (static_cast<int64_t>(nhwc.size()) != hp * wp * c_padded)
    return ::testing::AssertionFailure() << "twin has " << nhwc.size() << " values, expected " << hp * wp * c_padded;
  const float* ref = nchw.data_ptr<float>();
  int64_t mismatches = 0;
  std::string first;
  for (int64_t y = 0; y < hp; ++y)
    for (int64_t x = 0; x < wp; ++x)
      for (int64_t c = 0; c < c_padded; ++c) {
        const float want = c < 3 ? ref[(c * hp + y) * wp + x] : 0.0f;
        const float got = nhwc[static_cast<std::size_t>((y * wp + x) * c_padded + c)];
        if (bits(want) != bits(got)) {
          if (mismatches++ == 0)
            first = "(y " + std::to_string(y) + ", x " + std::to_string(x) + ", c " + std::to_string(c) +
                    "): expected " + std::to_string(want) + ", found " + std::to_string(got);
        }
      }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " of " << hp * wp * c_padded << " values differ, first at "
                                       << first;
}

// Runs one frame through both paths and compares values and geometry.
void expect_twin_matches(const FrameView& frame, const FramePreprocessOptions& options, const std::string& what,
                         std::initializer_list<int64_t> channel_counts = {3, 4}) {
  SCOPED_TRACE(what);
  const PreprocessResult ref = preprocess_frame(frame, options);
  const CudaFrameArgs a = make_cuda_frame_args(frame, options);
  EXPECT_EQ(a.geometry.resized_height, ref.resized_height);
  EXPECT_EQ(a.geometry.resized_width, ref.resized_width);
  EXPECT_EQ(a.geometry.scale_y, ref.scale_y);
  EXPECT_EQ(a.geometry.scale_x, ref.scale_x);
  EXPECT_FALSE(a.geometry.tensor.defined());
  EXPECT_EQ(a.args.resized_height, ref.resized_height);
  EXPECT_EQ(a.args.resized_width, ref.resized_width);
  EXPECT_EQ(a.args.padded_height, ref.tensor.size(2));
  EXPECT_EQ(a.args.padded_width, ref.tensor.size(3));
  EXPECT_EQ(a.args.on_device, 0);
  EXPECT_EQ(a.args.format, static_cast<int32_t>(frame.format));
  for (int64_t c_padded : channel_counts)
    EXPECT_TRUE(same_as_reference(ref.tensor, preprocess_frame_twin(a.args, c_padded), c_padded))
        << "c_padded " << c_padded;
}

std::string frame_name(PixelFormat f, int64_t w, int64_t h, int64_t pad) {
  return std::string(pixel_format_name(f)) + " " + std::to_string(w) + "x" + std::to_string(h) + " pad " +
         std::to_string(pad);
}

// ---------------------------------------------------------------------------------------------
// The twin against preprocess_frame

TEST(CudaFrameTwin, EveryFormatSizeAndResizeModeMatchesPreprocessFrame) {
  const std::pair<int64_t, int64_t> sizes[] = {{1, 1}, {2, 3}, {5, 2}, {7, 5}, {16, 9}, {33, 17}};
  uint32_t seed = 1;
  for (PixelFormat f : test::kAllFormats)
    for (const auto& s : sizes)
      for (int64_t pad : {-1, 0, 3}) {
        const test::TestFrame t = test::make_test_frame(f, s.first, s.second, pad, seed++);
        for (const auto& c : test::option_cases(s.first, s.second))
          expect_twin_matches(t.view, c.options, frame_name(f, s.first, s.second, pad) + " " + c.name);
      }
}

TEST(CudaFrameTwin, LargerFramesShrinkingAndEnlarging) {
  // Big enough for supports of several taps when shrinking (Pillow's filter widens) and for
  // interior chroma interpolation; c_padded 8 too.
  const std::pair<int64_t, int64_t> sizes[] = {{97, 61}, {64, 48}};
  uint32_t seed = 100;
  for (PixelFormat f : test::kAllFormats)
    for (const auto& s : sizes) {
      const test::TestFrame t = test::make_test_frame(f, s.first, s.second, 5, seed++);
      for (const auto& c : test::option_cases(s.first, s.second))
        expect_twin_matches(t.view, c.options, frame_name(f, s.first, s.second, 5) + " " + c.name, {3, 8});
    }
}

TEST(CudaFrameTwin, YuvMatricesRangesAndChromaSites) {
  const ColorMatrix matrices[] = {ColorMatrix::BT601, ColorMatrix::BT709, ColorMatrix::BT2020, ColorMatrix::FCC,
                                  ColorMatrix::SMPTE240M};
  const ChromaSite sites[] = {ChromaSite::Center, ChromaSite::HCosited, ChromaSite::VCosited, ChromaSite::Cosited};
  const std::pair<int64_t, int64_t> sizes[] = {{1, 2}, {2, 1}, {3, 3}, {6, 4}, {11, 7}};
  uint32_t seed = 1000;
  for (PixelFormat f : {PixelFormat::NV12, PixelFormat::I420})
    for (ColorMatrix m : matrices)
      for (ColorRange r : {ColorRange::Limited, ColorRange::Full})
        for (ChromaSite site : sites)
          for (const auto& s : sizes) {
            test::TestFrame t = test::make_test_frame(f, s.first, s.second, 2, seed++);
            t.view.matrix = m;
            t.view.range = r;
            t.view.chroma_site = site;
            const std::string name = frame_name(f, s.first, s.second, 2) + " matrix " +
                                     std::to_string(static_cast<int>(m)) + " range " +
                                     std::to_string(static_cast<int>(r)) + " site " +
                                     std::to_string(static_cast<int>(site));
            const auto cases = test::option_cases(s.first, s.second);
            // no resize, shrink and enlarge of both axes
            for (std::size_t i : {std::size_t{0}, std::size_t{4}, std::size_t{6}, std::size_t{11}})
              expect_twin_matches(t.view, cases[i].options, name + " " + cases[i].name);
          }
}

TEST(CudaFrameTwin, RandomFramesAndOptions) {
  // Random formats, sizes, strides, colorimetry and options (fixed seed), beyond the grids above.
  std::mt19937 gen(2024);
  auto pick = [&gen](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen); };
  int runs = 0, refusals = 0;
  for (int i = 0; i < 300; ++i) {
    const PixelFormat f = test::kAllFormats[pick(0, 12)];
    const int64_t w = pick(1, 48), h = pick(1, 48);
    test::TestFrame t = test::make_test_frame(f, w, h, pick(-1, 7), static_cast<uint32_t>(i));
    t.view.matrix = static_cast<ColorMatrix>(pick(0, 4));
    t.view.range = static_cast<ColorRange>(pick(0, 1));
    t.view.chroma_site = static_cast<ChromaSite>(pick(0, 3));
    FramePreprocessOptions o;
    o.input_format = pick(0, 1) ? "RGB" : "BGR";
    for (int c = 0; c < 3; ++c) {
      o.pixel_mean[c] = static_cast<double>(pick(0, 2550)) / 10.0;
      o.pixel_std[c] = static_cast<double>(pick(1, 1000)) / 7.0;
    }
    o.resize = static_cast<ResizeMode>(pick(0, 2));
    o.min_size = pick(1, 64);
    o.max_size = pick(1, 96);
    o.width = pick(1, 80);
    o.height = pick(1, 80);
    o.size_divisibility = pick(0, 9);
    const std::string name = "random case " + std::to_string(i) + ": " + frame_name(f, w, h, 0);
    bool refused = false;
    try {
      preprocess_frame(t.view, o);
    } catch (const ShapeError&) {
      refused = true;  // e.g. a shortest edge that rounds to 0 under a small max_size
      EXPECT_THROW(make_cuda_frame_args(t.view, o), ShapeError) << name;
    }
    if (!refused) expect_twin_matches(t.view, o, name, {3, 5});
    ++(refused ? refusals : runs);
  }
  EXPECT_GT(runs, 250);
  EXPECT_GT(refusals, 0);
}

TEST(CudaFrameTwin, Detectron2SizedFrame) {
  // A 1280x720 NV12 frame to detectron2's 800 / 1333 with size_divisibility 32, as the element runs it.
  test::TestFrame t = test::make_test_frame(PixelFormat::NV12, 1280, 720, 64, 7);
  t.view.matrix = ColorMatrix::BT709;
  FramePreprocessOptions o;
  o.resize = ResizeMode::ShortestEdge;
  o.min_size = 800;
  o.max_size = 1333;
  o.size_divisibility = 32;
  expect_twin_matches(t.view, o, "NV12 1280x720 -> 800", {4});
}

// ---------------------------------------------------------------------------------------------
// Arguments

TEST(CudaFrameArgs, FieldsAndTables) {
  test::TestFrame t = test::make_test_frame(PixelFormat::NV12, 33, 17, 3, 5);
  t.view.chroma_site = ChromaSite::HCosited;
  FramePreprocessOptions o;
  o.resize = ResizeMode::Fixed;
  o.width = 20;
  o.height = 17;  // horizontal pass only
  o.size_divisibility = 8;
  const CudaFrameArgs a = make_cuda_frame_args(t.view, o);
  ASSERT_EQ(a.args.detail_size, sizeof(BackboneCudaFrameDetail));
  const auto& d = *static_cast<const BackboneCudaFrameDetail*>(a.args.detail);
  EXPECT_EQ(a.args.width, 33);
  EXPECT_EQ(a.args.height, 17);
  EXPECT_EQ(a.args.planes[0], t.view.planes[0]);
  EXPECT_EQ(a.args.planes[1], t.view.planes[1]);
  EXPECT_EQ(a.args.planes[2], nullptr);
  EXPECT_EQ(a.args.strides[0], 36);
  EXPECT_EQ(a.args.strides[1], 34 + 4);
  EXPECT_EQ(a.args.padded_width, 24);
  EXPECT_EQ(a.args.padded_height, 24);
  EXPECT_EQ(d.n_planes, 2);
  EXPECT_EQ(d.plane_row_bytes[1], 34);
  EXPECT_EQ(d.plane_rows[1], 9);
  EXPECT_EQ(d.h_cosited, 1);
  EXPECT_EQ(d.v_cosited, 0);
  EXPECT_EQ(d.bgr, 1);
  EXPECT_EQ(d.resize_h, 1);
  EXPECT_EQ(d.resize_v, 0);
  EXPECT_NE(d.h_bounds, nullptr);
  EXPECT_EQ(d.v_bounds, nullptr);
  // BT601 limited range: Y scaled by 255/219 (x 256 fixed point, applied to the word (y - 128) * 257).
  EXPECT_EQ(d.yuv_y, static_cast<int32_t>(std::lround(255.0 / 219.0 * 256.0)));
  EXPECT_EQ(d.mean[2], static_cast<float>(123.675));
  EXPECT_EQ(frame_pixel::check_frame_args(a.args, 4), "");
  EXPECT_EQ(frame_pixel::check_resize_tables(a.args), "");
  // Tight strides are resolved.
  test::TestFrame tight = test::make_test_frame(PixelFormat::BGRx, 5, 3, -1, 6);
  const CudaFrameArgs b = make_cuda_frame_args(tight.view, o);
  EXPECT_EQ(b.args.strides[0], 20);
}

TEST(CudaFrameArgs, MovedArgumentsStayValid) {
  const test::TestFrame t = test::make_test_frame(PixelFormat::I420, 19, 11, 1, 9);
  const auto cases = test::option_cases(19, 11);
  const FramePreprocessOptions& o = cases[10].options;  // fixed, both axes
  CudaFrameArgs a = make_cuda_frame_args(t.view, o);
  const std::vector<float> before = preprocess_frame_twin(a.args, 3);
  CudaFrameArgs b = std::move(a);
  std::vector<CudaFrameArgs> many;
  many.push_back(std::move(b));
  many.emplace_back(make_cuda_frame_args(t.view, o));  // may reallocate and move the first
  EXPECT_EQ(preprocess_frame_twin(many[0].args, 3), before);
  EXPECT_TRUE(same_as_reference(preprocess_frame(t.view, o).tensor, preprocess_frame_twin(many[0].args, 3), 3));
}

TEST(CudaFrameArgs, DeviceFramesKeepTheirPointers) {
  test::TestFrame t = test::make_test_frame(PixelFormat::NV12, 8, 6, 8, 3);
  t.view.device = Device::cuda(0);  // the planes are not read
  const CudaFrameArgs a = make_cuda_frame_args(t.view, FramePreprocessOptions{});
  EXPECT_EQ(a.args.on_device, 1);
  EXPECT_EQ(a.args.planes[0], t.view.planes[0]);
  EXPECT_EQ(a.args.strides[1], 17);
  EXPECT_EQ(frame_pixel::check_frame_args(a.args, 4), "");
  try {
    preprocess_frame_twin(a.args, 4);
    ADD_FAILURE() << "the twin read device planes";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("on_device: expected 0"), std::string::npos) << e.what();
  }
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(CudaFrameArgs, RefusesWhatPreprocessFrameRefuses) {
  test::TestFrame t = test::make_test_frame(PixelFormat::RGB, 4, 4, 0, 1);
  FramePreprocessOptions o;
  {
    FrameView bad = t.view;
    bad.planes[0] = nullptr;
    EXPECT_THROW(make_cuda_frame_args(bad, o), ShapeError);
    EXPECT_NE(message_of([&] { make_cuda_frame_args(bad, o); }).find("make_cuda_frame_args"), std::string::npos);
  }
  {
    FrameView bad = t.view;
    bad.format = static_cast<PixelFormat>(42);
    EXPECT_THROW(make_cuda_frame_args(bad, o), ShapeError);
  }
  {
    FrameView bad = t.view;
    bad.strides[0] = 5;
    EXPECT_THROW(make_cuda_frame_args(bad, o), ShapeError);
  }
  {
    FramePreprocessOptions bad = o;
    bad.input_format = "YUV";
    EXPECT_THROW(make_cuda_frame_args(t.view, bad), ConfigError);
    bad = o;
    bad.resize = ResizeMode::Fixed;
    bad.width = 0;
    EXPECT_THROW(make_cuda_frame_args(t.view, bad), ConfigError);
    bad.width = int64_t{1} << 24;
    bad.height = 3;
    EXPECT_THROW(make_cuda_frame_args(t.view, bad), ShapeError);
  }
}

TEST(CudaFrameArgs, KernelChecksNameExpectedAndFound) {
  const test::TestFrame t = test::make_test_frame(PixelFormat::NV12, 9, 7, 0, 2);
  FramePreprocessOptions o;
  o.resize = ResizeMode::Fixed;
  o.width = 5;
  o.height = 12;
  const CudaFrameArgs a = make_cuda_frame_args(t.view, o);
  EXPECT_EQ(frame_pixel::check_frame_args(a.args, 3), "");
  EXPECT_EQ(frame_pixel::check_frame_args(a.args, 2), "channels: expected 3 to 1024, found 2");
  EXPECT_NE(message_of([&] { preprocess_frame_twin(a.args, 2); }).find("channels: expected 3 to 1024, found 2"),
            std::string::npos);

  BackboneCudaFrameArgs bad = a.args;
  bad.detail_size = 8;
  EXPECT_NE(frame_pixel::check_frame_args(bad, 3).find("detail: expected a BackboneCudaFrameDetail of"),
            std::string::npos);
  bad = a.args;
  bad.format = 13;
  EXPECT_NE(frame_pixel::check_frame_args(bad, 3).find("format: expected one of RGB"), std::string::npos);
  EXPECT_NE(frame_pixel::check_frame_args(bad, 3).find("found 13"), std::string::npos);
  bad = a.args;
  bad.format = BACKBONE_CUDA_FRAME_I420;  // 2 planes described, 3 expected
  EXPECT_EQ(frame_pixel::check_frame_args(bad, 3), "I420 frame: planes: expected 3, found 2");
  bad = a.args;
  bad.strides[1] = 9;
  EXPECT_EQ(frame_pixel::check_frame_args(bad, 3), "NV12 frame: plane 1 stride: expected at least 10 bytes, found 9");
  bad = a.args;
  bad.planes[1] = nullptr;
  EXPECT_EQ(frame_pixel::check_frame_args(bad, 3), "NV12 frame: plane 1: expected a pointer, found null");
  bad = a.args;
  bad.padded_width = 4;
  EXPECT_NE(frame_pixel::check_frame_args(bad, 3).find("padded size: expected at least"), std::string::npos);
  bad = a.args;
  bad.resized_width = 9;  // the horizontal pass would be skipped although the detail has one
  bad.padded_width = 9;
  EXPECT_NE(frame_pixel::check_frame_args(bad, 3).find("resize passes: expected horizontal 0"), std::string::npos);

  // A table reading outside the frame is refused before anything reads it.
  BackboneCudaFrameDetail d = *static_cast<const BackboneCudaFrameDetail*>(a.args.detail);
  std::vector<int32_t> bounds(d.h_bounds, d.h_bounds + 2 * 5);
  bounds[2 * 4] = 8;  // 8 + count > 9
  d.h_bounds = bounds.data();
  bad = a.args;
  bad.detail = &d;
  EXPECT_EQ(frame_pixel::check_frame_args(bad, 3), "");
  EXPECT_NE(frame_pixel::check_resize_tables(bad).find("horizontal resize table, output 4"), std::string::npos);
  EXPECT_THROW(preprocess_frame_twin(bad, 3), Error);
}

// The per-pixel YUV helpers agree with frame_to_rgb8 for every chroma position of a small NV12 frame
// (the whole-frame tests above already cover it; this one isolates conversion from resizing).
TEST(CudaFrameTwin, PixelLoadEqualsFrameToRgb8) {
  for (ChromaSite site : {ChromaSite::Center, ChromaSite::HCosited, ChromaSite::VCosited, ChromaSite::Cosited})
    for (const auto& s : {std::pair<int64_t, int64_t>{8, 6}, {7, 5}, {1, 1}, {2, 2}}) {
      test::TestFrame t = test::make_test_frame(PixelFormat::NV12, s.first, s.second, 1, 77);
      t.view.chroma_site = site;
      t.view.matrix = ColorMatrix::BT709;
      const Tensor rgb = frame_to_rgb8(t.view, "RGB");
      FramePreprocessOptions o;
      o.input_format = "RGB";
      const CudaFrameArgs a = make_cuda_frame_args(t.view, o);
      frame_pixel::Params p;
      p.format = a.args.format;
      p.width = a.args.width;
      p.height = a.args.height;
      for (int i = 0; i < 3; ++i) {
        p.planes[i] = a.args.planes[i];
        p.strides[i] = a.args.strides[i];
      }
      p.d = *static_cast<const BackboneCudaFrameDetail*>(a.args.detail);
      const uint8_t* ref = rgb.data_ptr<uint8_t>();
      for (int64_t y = 0; y < s.second; ++y)
        for (int64_t x = 0; x < s.first; ++x) {
          int32_t v[3];
          frame_pixel::load_pixel(p, x, y, v);
          for (int c = 0; c < 3; ++c)
            ASSERT_EQ(v[c], ref[(y * s.first + x) * 3 + c])
                << "site " << static_cast<int>(site) << " " << s.first << "x" << s.second << " at (" << x << ", " << y
                << ") channel " << c;
        }
    }
}

}  // namespace
}  // namespace backbone
