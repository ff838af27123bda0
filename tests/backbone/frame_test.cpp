// SPDX-License-Identifier: Apache-2.0
// backbone/frame.h: frames to RGB8 (packed formats against a reordering of the same pixels, YUV
// against GStreamer's videoconvert output made by tests/data/make_frame.py) and preprocess_frame
// against the library's own pieces composed by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backbone/error.h"
#include "backbone/frame.h"
#include "backbone/preprocess.h"

namespace backbone {
namespace {

std::vector<uint8_t> random_bytes(std::size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(d(gen));
  return v;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

int max_abs_diff(const Tensor& t, const uint8_t* ref, std::size_t n) {
  EXPECT_EQ(t.nbytes(), n);
  const uint8_t* p = t.data_ptr<uint8_t>();
  int m = 0;
  for (std::size_t i = 0; i < std::min(n, t.nbytes()); ++i) m = std::max(m, std::abs(int(p[i]) - int(ref[i])));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Names

TEST(FrameTest, FormatNamesRoundTrip) {
  for (const char* name :
       {"RGB", "BGR", "RGBx", "BGRx", "xRGB", "xBGR", "RGBA", "BGRA", "ARGB", "ABGR", "NV12", "I420", "GRAY8"}) {
    EXPECT_STREQ(pixel_format_name(pixel_format_from_name(name)), name);
  }
  try {
    pixel_format_from_name("YUY2");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"YUY2\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("NV12"), std::string::npos) << e.what();
  }
  EXPECT_EQ(chroma_site_from_name("jpeg"), ChromaSite::Center);
  EXPECT_EQ(chroma_site_from_name("unknown"), ChromaSite::Center);
  EXPECT_EQ(chroma_site_from_name("mpeg2"), ChromaSite::HCosited);
  EXPECT_EQ(chroma_site_from_name("v-cosited"), ChromaSite::VCosited);
  EXPECT_EQ(chroma_site_from_name("cosited"), ChromaSite::Cosited);
  EXPECT_EQ(chroma_site_from_name("dv"), ChromaSite::Cosited);
  EXPECT_THROW(chroma_site_from_name("left"), Error);
}

// ---------------------------------------------------------------------------------------------
// Packed formats and GRAY8: a reordering of the same bytes, exact.

struct Packed {
  const char* name;
  int ps, r, g, b;
};
const Packed kPacked[] = {{"RGB", 3, 0, 1, 2},  {"BGR", 3, 2, 1, 0},  {"RGBx", 4, 0, 1, 2}, {"BGRx", 4, 2, 1, 0},
                          {"xRGB", 4, 1, 2, 3}, {"xBGR", 4, 3, 2, 1}, {"RGBA", 4, 0, 1, 2}, {"BGRA", 4, 2, 1, 0},
                          {"ARGB", 4, 1, 2, 3}, {"ABGR", 4, 3, 2, 1}};

TEST(FrameTest, PackedFormatsAreReorderings) {
  for (const auto& [w, h] : {std::pair<int, int>{13, 7}, {1, 1}, {64, 48}}) {
    const std::vector<uint8_t> rgb = random_bytes(static_cast<std::size_t>(w * h * 3), 7u + w);
    for (const Packed& p : kPacked) {
      for (int pad : {0, 5}) {
        const int64_t stride = int64_t{w} * p.ps + pad;
        // Alpha / padding bytes and row padding hold noise that must not leak into the result.
        std::vector<uint8_t> buf = random_bytes(static_cast<std::size_t>(stride * h), 99u);
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x) {
            uint8_t* px = &buf[static_cast<std::size_t>(y * stride + x * p.ps)];
            const uint8_t* s = &rgb[static_cast<std::size_t>((y * w + x) * 3)];
            px[p.r] = s[0];
            px[p.g] = s[1];
            px[p.b] = s[2];
          }
        FrameView f;
        f.format = pixel_format_from_name(p.name);
        f.width = w;
        f.height = h;
        f.planes[0] = buf.data();
        f.strides[0] = pad == 0 ? 0 : stride;  // 0: tightly packed
        const Tensor out_rgb = frame_to_rgb8(f, "RGB");
        ASSERT_EQ(out_rgb.shape(), (Shape{h, w, 3}));
        EXPECT_EQ(max_abs_diff(out_rgb, rgb.data(), rgb.size()), 0) << p.name << " " << w << "x" << h;
        const Tensor out_bgr = frame_to_rgb8(f, "BGR");
        std::vector<uint8_t> bgr(rgb.size());
        for (std::size_t i = 0; i < rgb.size(); i += 3) {
          bgr[i] = rgb[i + 2];
          bgr[i + 1] = rgb[i + 1];
          bgr[i + 2] = rgb[i];
        }
        EXPECT_EQ(max_abs_diff(out_bgr, bgr.data(), bgr.size()), 0) << p.name << " BGR";
      }
    }
  }
}

TEST(FrameTest, Gray8IsThreeEqualChannels) {
  const int w = 9, h = 5, stride = 12;
  const std::vector<uint8_t> buf = random_bytes(stride * h, 3);
  FrameView f;
  f.format = PixelFormat::GRAY8;
  f.width = w;
  f.height = h;
  f.planes[0] = buf.data();
  f.strides[0] = stride;
  for (const char* order : {"RGB", "BGR"}) {
    const Tensor t = frame_to_rgb8(f, order);
    ASSERT_EQ(t.shape(), (Shape{h, w, 3}));
    const uint8_t* p = t.data_ptr<uint8_t>();
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c) ASSERT_EQ(p[(y * w + x) * 3 + c], buf[y * stride + x]) << y << "," << x;
  }
}

TEST(FrameTest, Gray8MatchesVideoconvert) {
  const std::string dir = std::string(BACKBONE_TEST_DATA_DIR) + "/frame/";
  const std::vector<uint8_t> gray = read_file(dir + "gray8_17x11.gray");
  const std::vector<uint8_t> ref = read_file(dir + "gray8_17x11.rgb");
  ASSERT_EQ(gray.size(), 20u * 11u);
  FrameView f;
  f.format = PixelFormat::GRAY8;
  f.width = 17;
  f.height = 11;
  f.planes[0] = gray.data();
  f.strides[0] = 20;
  EXPECT_EQ(max_abs_diff(frame_to_rgb8(f, "RGB"), ref.data(), ref.size()), 0);
}

// ---------------------------------------------------------------------------------------------
// YUV against GStreamer's videoconvert

struct GoldenCase {
  std::string name, yuv_file, format;
  int64_t width = 0, height = 0;
  ColorMatrix matrix = ColorMatrix::BT601;
  ColorRange range = ColorRange::Limited;
  ChromaSite site = ChromaSite::Center;
  int64_t strides[3] = {0, 0, 0};
  int64_t offsets[2] = {0, 0};
  std::string rgb_file;
};

std::vector<GoldenCase> load_manifest() {
  const std::string dir = std::string(BACKBONE_TEST_DATA_DIR) + "/frame/";
  std::ifstream f(dir + "manifest.txt");
  EXPECT_TRUE(f.good()) << "missing " << dir << "manifest.txt (run tests/data/make_frame.py)";
  const std::map<std::string, ColorMatrix> matrices{{"BT601", ColorMatrix::BT601},
                                                    {"BT709", ColorMatrix::BT709},
                                                    {"BT2020", ColorMatrix::BT2020},
                                                    {"FCC", ColorMatrix::FCC},
                                                    {"SMPTE240M", ColorMatrix::SMPTE240M}};
  const std::map<std::string, ChromaSite> sites{{"Center", ChromaSite::Center},
                                                {"HCosited", ChromaSite::HCosited},
                                                {"VCosited", ChromaSite::VCosited},
                                                {"Cosited", ChromaSite::Cosited}};
  std::vector<GoldenCase> cases;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    GoldenCase c;
    std::string matrix, range, site;
    in >> c.name >> c.yuv_file >> c.format >> c.width >> c.height >> matrix >> range >> site >> c.strides[0] >>
        c.strides[1] >> c.strides[2] >> c.offsets[0] >> c.offsets[1] >> c.rgb_file;
    EXPECT_FALSE(in.fail()) << line;
    c.matrix = matrices.at(matrix);
    c.range = range == "Full" ? ColorRange::Full : ColorRange::Limited;
    c.site = sites.at(site);
    c.yuv_file = dir + c.yuv_file;
    c.rgb_file = dir + c.rgb_file;
    cases.push_back(c);
  }
  return cases;
}

FrameView golden_frame(const GoldenCase& c, const std::vector<uint8_t>& yuv) {
  FrameView f;
  f.format = pixel_format_from_name(c.format);
  f.width = c.width;
  f.height = c.height;
  f.matrix = c.matrix;
  f.range = c.range;
  f.chroma_site = c.site;
  f.planes[0] = yuv.data();
  f.planes[1] = yuv.data() + c.offsets[0];
  f.strides[0] = c.strides[0];
  f.strides[1] = c.strides[1];
  if (f.format == PixelFormat::I420) {
    f.planes[2] = yuv.data() + c.offsets[1];
    f.strides[2] = c.strides[2];
  }
  return f;
}

// The same frame copied into planes with other strides (extra = -1: tightly packed, stride 0).
std::vector<uint8_t> relayout(const FrameView& f, int64_t extra, FrameView* out) {
  *out = f;
  const int64_t cw = (f.width + 1) / 2, ch = (f.height + 1) / 2;
  const bool nv12 = f.format == PixelFormat::NV12;
  const int n = nv12 ? 2 : 3;
  const int64_t rows[3] = {f.height, ch, ch};
  const int64_t bytes[3] = {f.width, nv12 ? 2 * cw : cw, cw};
  int64_t offsets[3], total = 0;
  for (int p = 0; p < n; ++p) {
    const int64_t s = extra < 0 ? bytes[p] : bytes[p] + extra;
    out->strides[p] = extra < 0 ? 0 : s;
    offsets[p] = total;
    total += s * rows[p];
  }
  std::vector<uint8_t> buf = random_bytes(static_cast<std::size_t>(total), 1234);
  for (int p = 0; p < n; ++p) {
    const int64_t s = extra < 0 ? bytes[p] : bytes[p] + extra;
    for (int64_t y = 0; y < rows[p]; ++y)
      std::memcpy(&buf[static_cast<std::size_t>(offsets[p] + y * s)], f.planes[p] + y * f.strides[p],
                  static_cast<std::size_t>(bytes[p]));
  }
  for (int p = 0; p < n; ++p) out->planes[p] = buf.data() + offsets[p];
  return buf;
}

TEST(FrameTest, YuvMatchesVideoconvert) {
  const std::vector<GoldenCase> cases = load_manifest();
  ASSERT_GE(cases.size(), 54u);
  int overall = 0;
  for (const GoldenCase& c : cases) {
    const std::vector<uint8_t> yuv = read_file(c.yuv_file);
    const std::vector<uint8_t> ref = read_file(c.rgb_file);
    ASSERT_EQ(ref.size(), static_cast<std::size_t>(c.width * c.height * 3)) << c.name;
    const FrameView f = golden_frame(c, yuv);
    const Tensor rgb = frame_to_rgb8(f, "RGB");
    ASSERT_EQ(rgb.shape(), (Shape{c.height, c.width, 3}));
    const int d = max_abs_diff(rgb, ref.data(), ref.size());
    overall = std::max(overall, d);
    EXPECT_EQ(d, 0) << c.name << ": max abs diff against videoconvert";

    // BGR is the same pixels reversed.
    const Tensor bgr = frame_to_rgb8(f, "BGR");
    const uint8_t* pr = rgb.data_ptr<uint8_t>();
    const uint8_t* pb = bgr.data_ptr<uint8_t>();
    for (int64_t i = 0; i < c.width * c.height; ++i) {
      ASSERT_EQ(pb[3 * i], pr[3 * i + 2]) << c.name;
      ASSERT_EQ(pb[3 * i + 1], pr[3 * i + 1]) << c.name;
      ASSERT_EQ(pb[3 * i + 2], pr[3 * i]) << c.name;
    }

    // Strides: tightly packed (0) and with 13 bytes of noise after each row give the same result.
    for (int64_t extra : {int64_t{-1}, int64_t{13}}) {
      FrameView g;
      const std::vector<uint8_t> keep = relayout(f, extra, &g);
      EXPECT_EQ(max_abs_diff(frame_to_rgb8(g, "RGB"), ref.data(), ref.size()), 0) << c.name << " extra " << extra;
    }
  }
  std::printf("[ frame    ] %zu videoconvert cases, max abs diff %d\n", cases.size(), overall);
  RecordProperty("max_abs_diff", overall);
}

// The matrix and range actually matter: every colorimetry of one frame gives a different picture.
TEST(FrameTest, ColorimetryChangesTheResult) {
  const std::vector<GoldenCase> cases = load_manifest();
  std::vector<Tensor> results;
  for (const GoldenCase& c : cases) {
    if (c.yuv_file != cases.front().yuv_file) continue;
    const std::vector<uint8_t> yuv = read_file(c.yuv_file);
    results.push_back(frame_to_rgb8(golden_frame(c, yuv), "RGB"));
  }
  ASSERT_GE(results.size(), 8u);
  for (std::size_t i = 0; i < results.size(); ++i)
    for (std::size_t j = i + 1; j < results.size(); ++j)
      EXPECT_NE(std::memcmp(results[i].data(), results[j].data(), results[i].nbytes()), 0) << i << " vs " << j;
}

// ---------------------------------------------------------------------------------------------
// preprocess_frame against the library's pieces composed by hand

struct OwnedFrame {
  std::vector<uint8_t> buf;
  FrameView view;
};

// A frame of `format` with w x h random pixels and 3 bytes of row padding.
OwnedFrame make_frame(PixelFormat format, int64_t w, int64_t h, uint32_t seed) {
  OwnedFrame o;
  FrameView& f = o.view;
  f.format = format;
  f.width = w;
  f.height = h;
  f.matrix = ColorMatrix::BT709;
  f.range = ColorRange::Limited;
  const int64_t cw = (w + 1) / 2, ch = (h + 1) / 2;
  int64_t bytes[3] = {0, 0, 0}, rows[3] = {h, ch, ch};
  int n = 1;
  switch (format) {
    case PixelFormat::NV12: n = 2; bytes[0] = w; bytes[1] = 2 * cw; break;
    case PixelFormat::I420: n = 3; bytes[0] = w; bytes[1] = bytes[2] = cw; break;
    case PixelFormat::GRAY8: bytes[0] = w; break;
    case PixelFormat::RGB:
    case PixelFormat::BGR: bytes[0] = 3 * w; break;
    default: bytes[0] = 4 * w; break;
  }
  int64_t total = 0, offsets[3];
  for (int p = 0; p < n; ++p) {
    offsets[p] = total;
    f.strides[p] = bytes[p] + 3;
    total += f.strides[p] * rows[p];
  }
  o.buf = random_bytes(static_cast<std::size_t>(total), seed);
  for (int p = 0; p < n; ++p) f.planes[p] = o.buf.data() + offsets[p];
  return o;
}

// frame_to_rgb8 -> resize_bilinear_pil -> float [1, 3, H, W] -> normalize_and_pad.
Tensor by_hand(const FrameView& f, const FramePreprocessOptions& o, int64_t new_h, int64_t new_w) {
  Tensor rgb = frame_to_rgb8(f, o.input_format);
  if (new_h != f.height || new_w != f.width) {
    ImageView v;
    v.data = rgb.data_ptr<uint8_t>();
    v.width = f.width;
    v.height = f.height;
    v.channels = 3;
    v.format = o.input_format;
    rgb = resize_bilinear_pil(v, new_w, new_h);
  }
  Tensor chw = Tensor::empty({1, 3, new_h, new_w}, DType::Float32);
  float* p = chw.data_ptr<float>();
  const uint8_t* s = rgb.data_ptr<uint8_t>();
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < new_h * new_w; ++i) p[c * new_h * new_w + i] = static_cast<float>(s[i * 3 + c]);
  return normalize_and_pad(chw, o.pixel_mean, o.pixel_std, o.size_divisibility);
}

void expect_same(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  ASSERT_EQ(a.dtype(), DType::Float32) << what;
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(pa[i], pb[i]) << what << " at flat index " << i;
}

TEST(FrameTest, PreprocessFrameEqualsComposedPieces) {
  const PixelFormat formats[] = {PixelFormat::RGB,  PixelFormat::BGR,  PixelFormat::BGRx, PixelFormat::xRGB,
                                 PixelFormat::RGBA, PixelFormat::NV12, PixelFormat::I420, PixelFormat::GRAY8};
  struct Mode {
    const char* name;
    ResizeMode mode;
    int64_t a, b;  // min/max size or width/height
  };
  const Mode modes[] = {{"none", ResizeMode::None, 0, 0},
                        {"shortest-edge shrink", ResizeMode::ShortestEdge, 24, 1000},
                        {"shortest-edge enlarge", ResizeMode::ShortestEdge, 60, 1000},
                        {"shortest-edge max", ResizeMode::ShortestEdge, 60, 70},
                        {"shortest-edge same", ResizeMode::ShortestEdge, 37, 1000},
                        {"fixed", ResizeMode::Fixed, 40, 20}};
  int n = 0;
  for (PixelFormat format : formats) {
    const OwnedFrame frame = make_frame(format, 51, 37, 11u + static_cast<uint32_t>(format));
    for (const Mode& m : modes) {
      for (const char* order : {"BGR", "RGB"}) {
        for (int64_t div : {int64_t{0}, int64_t{32}}) {
          FramePreprocessOptions o;
          o.input_format = order;
          o.pixel_mean = {103.53, 116.28, 123.675};
          o.pixel_std = {57.375, 57.12, 58.395};
          o.resize = m.mode;
          if (m.mode == ResizeMode::ShortestEdge) {
            o.min_size = m.a;
            o.max_size = m.b;
          } else if (m.mode == ResizeMode::Fixed) {
            o.width = m.a;
            o.height = m.b;
          }
          o.size_divisibility = div;
          int64_t nh = 37, nw = 51;
          if (m.mode == ResizeMode::ShortestEdge) {
            const auto s = resize_shortest_edge_shape(37, 51, m.a, m.b);
            nh = s.first;
            nw = s.second;
          } else if (m.mode == ResizeMode::Fixed) {
            nh = m.b;
            nw = m.a;
          }
          const std::string what = std::string(pixel_format_name(format)) + " " + m.name + " " + order + " div " +
                                   std::to_string(div);
          const PreprocessResult r = preprocess_frame(frame.view, o);
          EXPECT_EQ(r.resized_height, nh) << what;
          EXPECT_EQ(r.resized_width, nw) << what;
          EXPECT_DOUBLE_EQ(r.scale_y, static_cast<double>(nh) / 37.0) << what;
          EXPECT_DOUBLE_EQ(r.scale_x, static_cast<double>(nw) / 51.0) << what;
          if (div == 32) {
            EXPECT_EQ(r.tensor.size(2) % 32, 0) << what;
            EXPECT_EQ(r.tensor.size(3) % 32, 0) << what;
          }
          expect_same(r.tensor, by_hand(frame.view, o, nh, nw), what);
          ++n;
        }
      }
    }
  }
  EXPECT_EQ(n, 8 * 6 * 2 * 2);
}

TEST(FrameTest, PreprocessFrameShapesAndScales) {
  const OwnedFrame frame = make_frame(PixelFormat::NV12, 640, 480, 5);
  FramePreprocessOptions o;
  o.resize = ResizeMode::ShortestEdge;
  o.min_size = 800;
  o.max_size = 1333;
  o.size_divisibility = 32;
  const PreprocessResult r = preprocess_frame(frame.view, o);
  EXPECT_EQ(r.resized_height, 800);
  EXPECT_EQ(r.resized_width, 1067);  // int(640 * 800 / 480 + 0.5)
  EXPECT_EQ(r.tensor.shape(), (Shape{1, 3, 800, 1088}));
  EXPECT_DOUBLE_EQ(r.scale_y, 800.0 / 480.0);
  EXPECT_DOUBLE_EQ(r.scale_x, 1067.0 / 640.0);
  // Padding is zero.
  const float* p = r.tensor.data_ptr<float>();
  for (int c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 800; ++y)
      for (int64_t x = 1067; x < 1088; ++x) ASSERT_EQ(p[(c * 800 + y) * 1088 + x], 0.0f);
}

TEST(FrameTest, PreprocessFrameReusesOutput) {
  const OwnedFrame frame = make_frame(PixelFormat::I420, 33, 21, 8);
  FramePreprocessOptions o;
  o.size_divisibility = 16;
  const PreprocessResult expected = preprocess_frame(frame.view, o);
  ASSERT_EQ(expected.tensor.shape(), (Shape{1, 3, 32, 48}));

  // Right shape: written in place (garbage, padding included, is overwritten), same storage.
  Tensor out = Tensor::empty({1, 3, 32, 48}, DType::Float32);
  std::fill(out.data_ptr<float>(), out.data_ptr<float>() + out.numel(), std::numeric_limits<float>::quiet_NaN());
  void* data = out.data();
  const PreprocessResult r = preprocess_frame(frame.view, o, &out);
  EXPECT_EQ(r.tensor.data(), data);
  EXPECT_EQ(out.data(), data);
  expect_same(r.tensor, expected.tensor, "reused");
  // Again with a different frame into the same storage.
  const OwnedFrame frame2 = make_frame(PixelFormat::I420, 33, 21, 9);
  const PreprocessResult r2 = preprocess_frame(frame2.view, o, &out);
  EXPECT_EQ(r2.tensor.data(), data);
  expect_same(r2.tensor, preprocess_frame(frame2.view, o).tensor, "reused twice");

  // Wrong shape, dtype or undefined: a new tensor, `out` untouched.
  for (Tensor other : {Tensor::empty({1, 3, 32, 32}, DType::Float32), Tensor::empty({1, 3, 32, 48}, DType::Float64),
                       Tensor()}) {
    Tensor before = other;
    const PreprocessResult q = preprocess_frame(frame.view, o, &other);
    if (other.defined()) {
      EXPECT_NE(q.tensor.data(), other.data());
    }
    EXPECT_EQ(other.data(), before.data());
    expect_same(q.tensor, expected.tensor, "new allocation");
  }
  // nullptr
  expect_same(preprocess_frame(frame.view, o, nullptr).tensor, expected.tensor, "nullptr");
}

// ---------------------------------------------------------------------------------------------
// Errors

template <typename E, typename F>
void expect_error(F f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << fragments.front();
  } catch (const E& e) {
    for (const std::string& s : fragments)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << "message: " << e.what() << "\nmissing: " << s;
  }
}

TEST(FrameTest, OptionErrors) {
  const OwnedFrame frame = make_frame(PixelFormat::RGB, 8, 6, 1);
  auto run = [&](FramePreprocessOptions o) { return [&frame, o]() { preprocess_frame(frame.view, o); }; };
  FramePreprocessOptions o;
  o.input_format = "RGBA";
  expect_error<ConfigError>(run(o), {"INPUT.FORMAT", "\"RGBA\""});
  o = {};
  o.input_format = "L";
  expect_error<ConfigError>(run(o), {"INPUT.FORMAT", "\"L\""});
  o = {};
  o.pixel_mean = {1, 2};
  expect_error<ConfigError>(run(o), {"PIXEL_MEAN and MODEL.PIXEL_STD have different shapes", "2 vs 3"});
  o = {};
  o.pixel_mean = {1, 2, 3, 4};
  o.pixel_std = {1, 1, 1, 1};
  expect_error<ConfigError>(run(o), {"MODEL.PIXEL_MEAN", "found 4"});
  o = {};
  o.pixel_std = {1, 0, 1};
  expect_error<ConfigError>(run(o), {"MODEL.PIXEL_STD[1]", "non-zero"});
  o = {};
  o.pixel_std = {1, 1, std::nan("")};
  expect_error<ConfigError>(run(o), {"MODEL.PIXEL_STD[2]"});
  o = {};
  o.pixel_mean = {1, std::numeric_limits<double>::infinity(), 1};
  expect_error<ConfigError>(run(o), {"MODEL.PIXEL_MEAN[1]", "finite"});
  o = {};
  o.resize = ResizeMode::ShortestEdge;
  o.min_size = 0;
  expect_error<ConfigError>(run(o), {"min_size > 0", "found min_size 0"});
  o = {};
  o.resize = ResizeMode::ShortestEdge;
  o.max_size = -1;
  expect_error<ConfigError>(run(o), {"max_size > 0", "max_size -1"});
  o = {};
  o.resize = ResizeMode::Fixed;
  o.width = 10;
  expect_error<ConfigError>(run(o), {"fixed resize", "width 10 and height 0"});
  o = {};
  o.resize = ResizeMode::Fixed;
  o.height = 10;
  o.width = -2;
  expect_error<ConfigError>(run(o), {"fixed resize", "width -2"});
  o = {};
  o.resize = static_cast<ResizeMode>(7);
  expect_error<ConfigError>(run(o), {"unknown resize mode 7"});
  o = {};
  o.size_divisibility = -1;
  expect_error<ConfigError>(run(o), {"size_divisibility", "found -1"});
  // Fixed does not look at min/max, ShortestEdge not at width/height.
  o = {};
  o.resize = ResizeMode::Fixed;
  o.width = 4;
  o.height = 3;
  o.min_size = -5;
  EXPECT_NO_THROW(run(o)());
}

TEST(FrameTest, FrameErrors) {
  std::vector<uint8_t> buf(4096, 0);
  FrameView f;
  f.format = PixelFormat::NV12;
  f.width = 17;
  f.height = 11;
  f.planes[0] = buf.data();
  f.planes[1] = buf.data() + 1024;
  f.strides[0] = 20;
  f.strides[1] = 20;
  EXPECT_NO_THROW(frame_to_rgb8(f, "RGB"));
  expect_error<ShapeError>([&] { frame_to_rgb8(f, "rgb"); }, {"\"RGB\" or \"BGR\"", "\"rgb\""});
  expect_error<ShapeError>([&] { frame_to_rgb8(f, "RGBA"); }, {"found \"RGBA\""});
  FrameView g = f;
  g.planes[1] = nullptr;
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"NV12", "plane 1 of 2 is null"});
  expect_error<ShapeError>([&] { preprocess_frame(g, {}); }, {"preprocess_frame", "plane 1 of 2 is null"});
  g = f;
  g.strides[1] = 17;
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"plane 1 stride 17", "row of 18 bytes"});
  g = f;
  g.strides[0] = 16;
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"plane 0 stride 16", "row of 17 bytes"});
  g = f;
  g.strides[0] = -20;
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"plane 0 stride -20"});
  g = f;
  g.width = 0;
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"non-empty NV12 frame", "width 0 and height 11"});
  g = f;
  g.height = -3;
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"height -3"});
  g = f;
  g.format = PixelFormat::I420;
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"I420", "plane 2 of 3 is null"});
  g = f;
  g.format = PixelFormat::BGRx;
  g.strides[0] = 60;
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"BGRx", "stride 60", "row of 68 bytes"});
  g = f;
  g.format = static_cast<PixelFormat>(42);
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"unknown pixel format 42"});
  g = f;
  g.matrix = static_cast<ColorMatrix>(9);
  expect_error<ShapeError>([&] { frame_to_rgb8(g, "RGB"); }, {"invalid colorimetry", "matrix 9"});
}

// ---------------------------------------------------------------------------------------------
// Timing (printed, not asserted): 640x480 NV12, the element's default case. The machine may be
// shared, so the best of 30 calls is printed along with the median.

template <typename F>
std::pair<double, double> best_and_median_ms(F f) {
  std::vector<double> t;
  for (int i = 0; i < 30; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return {t.front(), t[t.size() / 2]};
}

TEST(FrameTest, Timing640x480Nv12) {
  const OwnedFrame frame = make_frame(PixelFormat::NV12, 640, 480, 21);
  struct Case {
    const char* name;
    ResizeMode mode;
    int64_t min_size;
  };
  for (const Case& c : {Case{"None", ResizeMode::None, 0}, Case{"ShortestEdge 480", ResizeMode::ShortestEdge, 480},
                        Case{"ShortestEdge 800", ResizeMode::ShortestEdge, 800}}) {
    FramePreprocessOptions o;
    o.resize = c.mode;
    if (c.mode == ResizeMode::ShortestEdge) o.min_size = c.min_size;
    Tensor out = preprocess_frame(frame.view, o).tensor;
    PreprocessResult r;
    const auto t = best_and_median_ms([&] { r = preprocess_frame(frame.view, o, &out); });
    EXPECT_EQ(r.tensor.data(), out.data());
    std::printf("[ frame    ] preprocess_frame 640x480 NV12, %s -> %s: best %.3f ms, median %.3f ms\n", c.name,
                shape_str(r.tensor.shape()).c_str(), t.first, t.second);
  }
  const auto t = best_and_median_ms([&] { (void)frame_to_rgb8(frame.view, "BGR"); });
  std::printf("[ frame    ] frame_to_rgb8 640x480 NV12: best %.3f ms, median %.3f ms\n", t.first, t.second);
  const OwnedFrame i420 = make_frame(PixelFormat::I420, 640, 480, 22);
  const auto t2 = best_and_median_ms([&] { (void)frame_to_rgb8(i420.view, "BGR"); });
  std::printf("[ frame    ] frame_to_rgb8 640x480 I420: best %.3f ms, median %.3f ms\n", t2.first, t2.second);
  const OwnedFrame bgrx = make_frame(PixelFormat::BGRx, 640, 480, 23);
  FramePreprocessOptions o;
  Tensor out = preprocess_frame(bgrx.view, o).tensor;
  const auto t3 = best_and_median_ms([&] { (void)preprocess_frame(bgrx.view, o, &out); });
  std::printf("[ frame    ] preprocess_frame 640x480 BGRx, None: best %.3f ms, median %.3f ms\n", t3.first, t3.second);
}

}  // namespace
}  // namespace backbone
