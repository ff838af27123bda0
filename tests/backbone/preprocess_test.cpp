// SPDX-License-Identifier: Apache-2.0
// Preprocessing against golden data from tests/data/make_preprocess.py: PIL's Image.resize
// (BILINEAR) bit for bit, detectron2's ResizeShortestEdge.get_output_shape, and the whole
// DefaultPredictor + GeneralizedRCNN.preprocess_image + ImageList.from_tensors pipeline.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "backbone/config.h"
#include "backbone/error.h"
#include "backbone/npy.h"
#include "backbone/preprocess.h"
#include "backbone/tensor.h"

namespace backbone {
namespace {

std::string data_path(const std::string& name) { return std::string(BACKBONE_TEST_DATA_DIR) + "/preprocess/" + name; }

std::vector<std::vector<std::string>> read_cases(const std::string& name) {
  std::ifstream in(data_path(name));
  EXPECT_TRUE(in.good()) << "cannot open " << data_path(name) << " (run tests/data/make_preprocess.py)";
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::vector<std::string> fields;
    std::string f;
    while (ss >> f) fields.push_back(f);
    rows.push_back(fields);
  }
  return rows;
}

// A view of an HWC (or HW for gray) uint8 tensor loaded from an .npy file.
ImageView view_of(const Tensor& t, const std::string& format) {
  ImageView v;
  v.data = t.data_ptr<uint8_t>();
  v.height = t.size(0);
  v.width = t.size(1);
  v.channels = t.dim() == 3 ? t.size(2) : 1;
  v.format = format;
  return v;
}

int max_abs_diff_u8(const Tensor& a, const Tensor& b) {
  int m = 0;
  const uint8_t* pa = a.data_ptr<uint8_t>();
  const uint8_t* pb = b.data_ptr<uint8_t>();
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(int(pa[i]) - int(pb[i])));
  return m;
}

TEST(ResizeBilinearPilTest, BitExactAgainstPillow) {
  auto cases = read_cases("resize_cases.txt");
  ASSERT_GE(cases.size(), 21u);
  int only_h = 0, only_v = 0, up = 0, down = 0;
  for (const auto& c : cases) {
    ASSERT_EQ(c.size(), 5u);
    const std::string mode = c[0];
    Tensor src = load_npy(data_path(c[1]));
    const int64_t w = std::stoll(c[2]), h = std::stoll(c[3]);
    Tensor expected = load_npy(data_path(c[4]));
    for (const std::string& format : (mode == "L" ? std::vector<std::string>{"L"}
                                                 : std::vector<std::string>{"RGB", "BGR"})) {
      ImageView view = view_of(src, format);
      Tensor out = resize_bilinear_pil(view, w, h);
      ASSERT_EQ(out.dtype(), DType::UInt8);
      ASSERT_EQ(out.shape(), (Shape{h, w, view.channels})) << c[4];
      ASSERT_EQ(out.numel(), expected.numel()) << c[4];
      EXPECT_EQ(max_abs_diff_u8(out, expected), 0) << c[4] << " as " << format;
    }
    only_h += (w != src.size(1) && h == src.size(0));
    only_v += (w == src.size(1) && h != src.size(0));
    up += (w > src.size(1) || h > src.size(0));
    down += (w < src.size(1) || h < src.size(0));
  }
  // The table covers each branch of Pillow's resampler.
  EXPECT_GE(only_h, 2);
  EXPECT_GE(only_v, 2);
  EXPECT_GE(up, 4);
  EXPECT_GE(down, 8);
}

TEST(ResizeBilinearPilTest, HonoursRowStride) {
  // The same pixels inside a wider buffer (padding bytes set to garbage) resize identically.
  Tensor src = load_npy(data_path("src_rgb37x53.npy"));
  Tensor expected = load_npy(data_path("resize_rgb37x53_29x20.npy"));
  const int64_t H = src.size(0), W = src.size(1), stride = W * 3 + 13;
  std::vector<uint8_t> buffer(static_cast<std::size_t>(H * stride), 0xAB);
  for (int64_t y = 0; y < H; ++y)
    std::memcpy(buffer.data() + y * stride, src.data_ptr<uint8_t>() + y * W * 3, static_cast<std::size_t>(W * 3));
  ImageView v = view_of(src, "RGB");
  v.data = buffer.data();
  v.row_stride = stride;
  EXPECT_EQ(max_abs_diff_u8(resize_bilinear_pil(v, 29, 20), expected), 0);
  // Same size: a copy, also with a row stride.
  Tensor same = resize_bilinear_pil(v, W, H);
  EXPECT_EQ(max_abs_diff_u8(same, src), 0);
}

TEST(ResizeBilinearPilTest, RejectsBadArguments) {
  Tensor src = load_npy(data_path("src_rgb37x53.npy"));
  ImageView v = view_of(src, "RGB");
  EXPECT_THROW(resize_bilinear_pil(v, 0, 10), ShapeError);
  EXPECT_THROW(resize_bilinear_pil(v, 10, -1), ShapeError);
  ImageView bad = v;
  bad.channels = 4;
  EXPECT_THROW(resize_bilinear_pil(bad, 10, 10), ShapeError);
  bad = v;
  bad.format = "L";
  EXPECT_THROW(resize_bilinear_pil(bad, 10, 10), ShapeError);
  bad = v;
  bad.format = "YUV";
  EXPECT_THROW(resize_bilinear_pil(bad, 10, 10), ShapeError);
  bad = v;
  bad.width = 0;
  EXPECT_THROW(resize_bilinear_pil(bad, 10, 10), ShapeError);
  bad = v;
  bad.row_stride = 10;
  EXPECT_THROW(resize_bilinear_pil(bad, 10, 10), ShapeError);
  bad = v;
  bad.data = nullptr;
  EXPECT_THROW(resize_bilinear_pil(bad, 10, 10), ShapeError);
  try {
    resize_bilinear_pil(v, 0, 5);
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("height and width must be > 0"), std::string::npos) << e.what();
  }
}

TEST(ResizeShortestEdgeTest, MatchesDetectron2) {
  Tensor table = load_npy(data_path("shapes.npy"));
  ASSERT_EQ(table.dim(), 2);
  ASSERT_EQ(table.size(1), 6);
  ASSERT_GE(table.size(0), 20);
  const int64_t* t = table.data_ptr<int64_t>();
  int max_branch = 0;
  for (int64_t r = 0; r < table.size(0); ++r) {
    const int64_t* row = t + r * 6;
    auto got = resize_shortest_edge_shape(row[0], row[1], row[2], row[3]);
    EXPECT_EQ(got.first, row[4]) << "h " << row[0] << " w " << row[1] << " short " << row[2] << " max " << row[3];
    EXPECT_EQ(got.second, row[5]) << "h " << row[0] << " w " << row[1] << " short " << row[2] << " max " << row[3];
    // Rows whose longer side would exceed max_size take detectron2's max_size branch.
    const double longer = double(row[2]) / double(std::min(row[0], row[1])) * double(std::max(row[0], row[1]));
    max_branch += longer > double(row[3]);
  }
  EXPECT_GE(max_branch, 4);
  EXPECT_THROW(resize_shortest_edge_shape(0, 10, 800, 1333), ShapeError);
}

struct PreCase {
  std::string name, source, source_format, model_format, expected;
  int64_t min_size = 0, max_size = 0, div = 0, resized_h = 0, resized_w = 0, orig_h = 0, orig_w = 0;
  std::vector<double> mean, std;
};

std::vector<PreCase> preprocess_cases() {
  std::vector<PreCase> out;
  for (const auto& f : read_cases("preprocess_cases.txt")) {
    EXPECT_EQ(f.size(), 18u);
    if (f.size() != 18u) continue;
    PreCase c;
    c.name = f[0];
    c.source = f[1];
    c.source_format = f[2];
    c.model_format = f[3];
    c.min_size = std::stoll(f[4]);
    c.max_size = std::stoll(f[5]);
    c.div = std::stoll(f[6]);
    c.resized_h = std::stoll(f[7]);
    c.resized_w = std::stoll(f[8]);
    c.orig_h = std::stoll(f[9]);
    c.orig_w = std::stoll(f[10]);
    c.mean = {std::stod(f[11]), std::stod(f[12]), std::stod(f[13])};
    c.std = {std::stod(f[14]), std::stod(f[15]), std::stod(f[16])};
    c.expected = f[17];
    out.push_back(c);
  }
  return out;
}

TEST(PreprocessTest, MatchesDetectron2DefaultPredictorAndImageList) {
  auto cases = preprocess_cases();
  ASSERT_GE(cases.size(), 6u);
  for (const auto& c : cases) {
    Tensor src = load_npy(data_path(c.source));
    Tensor expected = load_npy(data_path(c.expected));
    ImageView view = view_of(src, c.source_format);
    PreprocessOptions o;
    o.input_format = c.model_format;
    o.pixel_mean = c.mean;
    o.pixel_std = c.std;
    o.min_size_test = c.min_size;
    o.max_size_test = c.max_size;
    o.size_divisibility = c.div;
    PreprocessResult r = preprocess(view, o);
    ASSERT_EQ(r.tensor.dtype(), DType::Float32) << c.name;
    ASSERT_EQ(r.tensor.shape(), expected.shape()) << c.name;
    EXPECT_EQ(r.resized_height, c.resized_h) << c.name;
    EXPECT_EQ(r.resized_width, c.resized_w) << c.name;
    EXPECT_DOUBLE_EQ(r.scale_y, double(c.resized_h) / double(c.orig_h)) << c.name;
    EXPECT_DOUBLE_EQ(r.scale_x, double(c.resized_w) / double(c.orig_w)) << c.name;
    const float* a = r.tensor.data_ptr<float>();
    const float* b = expected.data_ptr<float>();
    double max_diff = 0;
    for (int64_t i = 0; i < expected.numel(); ++i) max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
    EXPECT_LE(max_diff, 1e-5) << c.name;  // measured: 0 (bit-exact) with Pillow 9.4.0 / torch 1.13
    // The padding is zero (ImageList pads after normalising).
    const int64_t hp = expected.size(2), wp = expected.size(3);
    if (c.div > 1) {
      EXPECT_EQ(hp % c.div, 0) << c.name;
      EXPECT_EQ(wp % c.div, 0) << c.name;
    }
    // The same pixels with padded rows (row_stride) give the same tensor.
    const int64_t row = view.width * view.channels, stride = row + 7;
    std::vector<uint8_t> buffer(static_cast<std::size_t>(view.height * stride), 0xEE);
    for (int64_t y = 0; y < view.height; ++y)
      std::memcpy(buffer.data() + y * stride, view.data + y * row, static_cast<std::size_t>(row));
    ImageView strided = view;
    strided.data = buffer.data();
    strided.row_stride = stride;
    PreprocessResult rs = preprocess(strided, o);
    ASSERT_EQ(rs.tensor.shape(), r.tensor.shape()) << c.name;
    EXPECT_EQ(std::memcmp(rs.tensor.data(), r.tensor.data(), r.tensor.nbytes()), 0) << c.name << " with row_stride";
    for (int64_t ch = 0; ch < 3; ++ch)
      for (int64_t y = 0; y < hp; ++y)
        for (int64_t x = 0; x < wp; ++x)
          if (y >= c.resized_h || x >= c.resized_w) {
            ASSERT_EQ(a[(ch * hp + y) * wp + x], 0.0f) << c.name;
          }
  }
}

TEST(PreprocessTest, NormalizeAndPadMatchesTheFullPipelineTail) {
  // normalize_and_pad of the resized pixels gives preprocess()'s result, also for a batch of two.
  for (const auto& c : preprocess_cases()) {
    if (c.source_format != "BGR" || c.model_format != "BGR") continue;
    Tensor src = load_npy(data_path(c.source));
    PreprocessOptions o;
    o.pixel_mean = c.mean;
    o.pixel_std = c.std;
    o.min_size_test = c.min_size;
    o.max_size_test = c.max_size;
    o.size_divisibility = c.div;
    Tensor resized = resize_bilinear_pil(view_of(src, "BGR"), c.resized_w, c.resized_h);
    const int64_t H = c.resized_h, W = c.resized_w;
    Tensor chw = Tensor::empty({2, 3, H, W});
    float* p = chw.data_ptr<float>();
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x)
            p[((n * 3 + ch) * H + y) * W + x] = resized.data_ptr<uint8_t>()[(y * W + x) * 3 + ch];
    Tensor out = normalize_and_pad(chw, c.mean, c.std, c.div);
    Tensor expected = load_npy(data_path(c.expected));
    ASSERT_EQ(out.shape(), (Shape{2, 3, expected.size(2), expected.size(3)}));
    const int64_t per = expected.numel();
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t i = 0; i < per; ++i)
        ASSERT_NEAR(out.data_ptr<float>()[n * per + i], expected.data_ptr<float>()[i], 1e-5) << c.name << " " << i;
    return;
  }
  FAIL() << "no BGR -> BGR case in preprocess_cases.txt";
}

TEST(PreprocessTest, NormalizeAndPadHandlesStridedInput) {
  // A [1, 2, 3, 2] view with non-contiguous strides over a [1, 2, 2, 3] buffer (a transposed H/W).
  std::vector<float> buf(12);
  for (int i = 0; i < 12; ++i) buf[i] = float(i);
  Tensor t = Tensor::from_blob(buf.data(), {1, 2, 3, 2}, DType::Float32, Device::cpu(), nullptr, {12, 6, 1, 3});
  Tensor out = normalize_and_pad(t, {1.0, 2.0}, {2.0, 4.0}, 4);
  ASSERT_EQ(out.shape(), (Shape{1, 2, 4, 4}));
  const float* o = out.data_ptr<float>();
  for (int c = 0; c < 2; ++c)
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 4; ++x) {
        const float v = o[(c * 4 + y) * 4 + x];
        if (y < 3 && x < 2) {
          EXPECT_EQ(v, (buf[c * 6 + x * 3 + y] - (c ? 2.0f : 1.0f)) / (c ? 4.0f : 2.0f));
        } else {
          EXPECT_EQ(v, 0.0f);
        }
      }
}

TEST(PreprocessTest, NormalizeAndPadRejectsBadArguments) {
  Tensor t = Tensor::zeros({1, 3, 4, 4});
  EXPECT_THROW(normalize_and_pad(Tensor(), {0, 0, 0}, {1, 1, 1}, 0), ShapeError);
  EXPECT_THROW(normalize_and_pad(Tensor::zeros({3, 4, 4}), {0, 0, 0}, {1, 1, 1}, 0), ShapeError);
  EXPECT_THROW(normalize_and_pad(Tensor::zeros({1, 3, 4, 4}, DType::Float64), {0, 0, 0}, {1, 1, 1}, 0), ShapeError);
  EXPECT_THROW(normalize_and_pad(t, {0, 0}, {1, 1}, 0), ShapeError);
  EXPECT_THROW(normalize_and_pad(t, {0, 0, 0}, {1, 1}, 0), ConfigError);
  EXPECT_THROW(normalize_and_pad(t, {0, 0, 0}, {1, 0, 1}, 0), ConfigError);
  EXPECT_THROW(normalize_and_pad(t, {0, 0, 0}, {1, 1, 1}, -32), ConfigError);
}

void expect_option_error(const PreprocessOptions& o, const std::string& part) {
  std::vector<uint8_t> pixels(4 * 5 * 3, 7);
  ImageView v;
  v.data = pixels.data();
  v.width = 5;
  v.height = 4;
  try {
    preprocess(v, o);
    ADD_FAILURE() << "no error, expected one mentioning '" << part << "'";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(PreprocessTest, RejectsEveryBadOption) {
  PreprocessOptions o;
  o.input_format = "L";
  expect_option_error(o, "INPUT.FORMAT");
  o.input_format = "YUV-BT.601";
  expect_option_error(o, "INPUT.FORMAT");
  o = PreprocessOptions();
  o.pixel_mean = {1.0, 2.0};
  o.pixel_std = {1.0, 2.0};
  expect_option_error(o, "MODEL.PIXEL_MEAN");
  o = PreprocessOptions();
  o.pixel_std = {1.0, 1.0};
  expect_option_error(o, "different shapes");
  o = PreprocessOptions();
  o.pixel_std = {1.0, 0.0, 1.0};
  expect_option_error(o, "MODEL.PIXEL_STD[1]");
  o = PreprocessOptions();
  o.pixel_std = {1.0, 1.0, NAN};
  expect_option_error(o, "MODEL.PIXEL_STD[2]");
  o = PreprocessOptions();
  o.pixel_mean = {1.0, INFINITY, 1.0};
  expect_option_error(o, "MODEL.PIXEL_MEAN[1]");
  o = PreprocessOptions();
  o.min_size_test = -1;
  expect_option_error(o, "INPUT.MIN_SIZE_TEST");
  o = PreprocessOptions();
  o.max_size_test = 0;
  expect_option_error(o, "INPUT.MAX_SIZE_TEST");
  o = PreprocessOptions();
  o.size_divisibility = -1;
  expect_option_error(o, "size_divisibility");
}

TEST(PreprocessTest, RejectsBadImages) {
  std::vector<uint8_t> pixels(4 * 5 * 3, 7);
  ImageView v;
  v.data = pixels.data();
  v.width = 5;
  v.height = 4;
  PreprocessOptions o;
  EXPECT_NO_THROW(preprocess(v, o));
  ImageView bad = v;
  bad.channels = 1;  // "BGR" with one channel
  EXPECT_THROW(preprocess(bad, o), ShapeError);
  bad = v;
  bad.channels = 2;
  EXPECT_THROW(preprocess(bad, o), ShapeError);
  bad = v;
  bad.height = 0;
  EXPECT_THROW(preprocess(bad, o), ShapeError);
  bad = v;
  bad.format = "bgr";
  EXPECT_THROW(preprocess(bad, o), ShapeError);
  // An extreme aspect ratio that detectron2 would shrink to height 0: PIL refuses it, so do we.
  std::vector<uint8_t> wide(1 * 5000 * 3, 1);
  ImageView w;
  w.data = wide.data();
  w.width = 5000;
  w.height = 1;
  EXPECT_THROW(preprocess(w, o), ShapeError);
}

TEST(PreprocessTest, DefaultsAreDetectron2s) {
  PreprocessOptions o;
  EXPECT_EQ(o.input_format, "BGR");
  EXPECT_EQ(o.pixel_mean, (std::vector<double>{103.530, 116.280, 123.675}));
  EXPECT_EQ(o.pixel_std, (std::vector<double>{1.0, 1.0, 1.0}));
  EXPECT_EQ(o.min_size_test, 800);
  EXPECT_EQ(o.max_size_test, 1333);
  EXPECT_EQ(o.size_divisibility, 0);
}

TEST(PreprocessTest, FromConfigReadsDetectron2Keys) {
  Config cfg;
  PreprocessOptions d = PreprocessOptions::from_config(cfg);
  EXPECT_EQ(d.input_format, "BGR");
  EXPECT_EQ(d.pixel_mean, (std::vector<double>{103.530, 116.280, 123.675}));
  EXPECT_EQ(d.pixel_std, (std::vector<double>{1.0, 1.0, 1.0}));
  EXPECT_EQ(d.min_size_test, 800);
  EXPECT_EQ(d.max_size_test, 1333);
  EXPECT_EQ(d.size_divisibility, 0);
  cfg.merge_from_list({"INPUT.FORMAT", "RGB", "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]", "MODEL.PIXEL_STD",
                       "[58.395, 57.12, 57.375]", "INPUT.MIN_SIZE_TEST", "640", "INPUT.MAX_SIZE_TEST", "1000"});
  PreprocessOptions o = PreprocessOptions::from_config(cfg);
  EXPECT_EQ(o.input_format, "RGB");
  EXPECT_EQ(o.pixel_mean, (std::vector<double>{123.675, 116.28, 103.53}));
  EXPECT_EQ(o.pixel_std, (std::vector<double>{58.395, 57.12, 57.375}));
  EXPECT_EQ(o.min_size_test, 640);
  EXPECT_EQ(o.max_size_test, 1000);
  EXPECT_EQ(o.size_divisibility, 0);
  Config bad;
  bad.merge_from_list({"MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]"});
  EXPECT_THROW(PreprocessOptions::from_config(bad), ConfigError);
}

}  // namespace
}  // namespace backbone
