// SPDX-License-Identifier: Apache-2.0
// Test-time preprocessing as detectron2's DefaultPredictor and GeneralizedRCNN.preprocess_image do
// it, with ResizeTransform.apply_image's uint8 path (PIL's Image.resize with BILINEAR).
//
// The resize follows Pillow's separable resampler (libImaging/Resample.c, Pillow 9.4 as shipped by
// Debian's python3-pil): per output pixel, a triangle filter whose support grows with the
// reduction factor; the weights are normalised in double precision, then turned into fixed point
// with PRECISION_BITS = 32 - 8 - 2 fractional bits and rounded. The horizontal pass runs first on the
// source rows the vertical pass needs, each pass rounds and clips to uint8. This file is compiled
// with -ffp-contract=off so the double arithmetic matches Pillow's bit for bit.
#include "backbone/preprocess.h"

#include "preprocess/checks.h"
#include "frame/frame_internal.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "backbone/config.h"
#include "backbone/error.h"

namespace backbone {
namespace {

constexpr int kPrecisionBits = detail::kPilPrecisionBits;
constexpr int64_t kMaxPilSize = detail::kMaxPilSize;
// Bounds on what INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST and size_divisibility may ask for (README.md,
// "Limits"): the preprocessed image has at most 2^26 pixels (e.g. 8192 x 8192; 768 MiB in float32).
constexpr int64_t kMaxPreprocessedPixels = int64_t{1} << 26;
constexpr int64_t kMaxSizeDivisibility = 4096;
using Coefficients = detail::PilCoefficients;

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over source rows [row_begin, row_end) into `dst` (rows of out_w * C bytes).
template <int C>
void resample_horizontal(const uint8_t* src, int64_t src_stride, int row_begin, int row_end, int out_w,
                         const Coefficients& co, uint8_t* dst) {
  constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);
  for (int y = row_begin; y < row_end; ++y) {
    const uint8_t* row = src + static_cast<int64_t>(y) * src_stride;
    uint8_t* out = dst + static_cast<int64_t>(y - row_begin) * out_w * C;
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = co.bounds[static_cast<std::size_t>(xx) * 2];
      const int xmax = co.bounds[static_cast<std::size_t>(xx) * 2 + 1];
      const int32_t* k = &co.kk[static_cast<std::size_t>(xx) * co.ksize];
      const uint8_t* p = row + static_cast<int64_t>(xmin) * C;
      int32_t ss[C];
      for (int ch = 0; ch < C; ++ch) ss[ch] = kHalf;
      for (int x = 0; x < xmax; ++x) {
        for (int ch = 0; ch < C; ++ch) ss[ch] += static_cast<int32_t>(p[x * C + ch]) * k[x];
      }
      for (int ch = 0; ch < C; ++ch) out[xx * C + ch] = clip8(ss[ch]);
    }
  }
}

// Vertical pass: every output row is a weighted sum of whole source rows (`row_len` bytes each).
void resample_vertical(const uint8_t* src, int64_t src_stride, int64_t row_len, int out_h, const Coefficients& co,
                       uint8_t* dst) {
  constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);
  std::vector<int32_t> acc(static_cast<std::size_t>(row_len));
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = co.bounds[static_cast<std::size_t>(yy) * 2];
    const int ymax = co.bounds[static_cast<std::size_t>(yy) * 2 + 1];
    const int32_t* k = &co.kk[static_cast<std::size_t>(yy) * co.ksize];
    std::fill(acc.begin(), acc.end(), kHalf);
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* row = src + static_cast<int64_t>(ymin + y) * src_stride;
      const int32_t w = k[y];
      int32_t* a = acc.data();
      for (int64_t i = 0; i < row_len; ++i) a[i] += static_cast<int32_t>(row[i]) * w;
    }
    uint8_t* out = dst + static_cast<int64_t>(yy) * row_len;
    for (int64_t i = 0; i < row_len; ++i) out[i] = clip8(acc[i]);
  }
}

// Pillow's ImagingResampleInner for 8-bit data with C interleaved channels; `dst` is contiguous
// (out_h rows of out_w * C bytes).
void resize_pil_into(const uint8_t* src, int64_t src_stride, int in_w, int in_h, int C, int out_w, int out_h,
                     uint8_t* dst) {
  const bool need_horizontal = out_w != in_w;
  const bool need_vertical = out_h != in_h;
  if (!need_horizontal && !need_vertical) {
    for (int y = 0; y < in_h; ++y)
      std::memcpy(dst + static_cast<int64_t>(y) * in_w * C, src + y * src_stride, static_cast<std::size_t>(in_w) * C);
    return;
  }
  Coefficients vert = detail::pil_bilinear_coefficients(in_h, out_h);
  const int ybox_first = vert.bounds[0];
  const int ybox_last = vert.bounds[static_cast<std::size_t>(out_h) * 2 - 2] +
                        vert.bounds[static_cast<std::size_t>(out_h) * 2 - 1];
  std::vector<uint8_t> temp;
  const uint8_t* vsrc = src;
  int64_t vstride = src_stride;
  uint8_t* hdst = need_vertical ? nullptr : dst;
  if (need_horizontal) {
    Coefficients horiz = detail::pil_bilinear_coefficients(in_w, out_w);
    for (int i = 0; i < out_h; ++i) vert.bounds[static_cast<std::size_t>(i) * 2] -= ybox_first;
    if (need_vertical) {
      temp.resize(static_cast<std::size_t>(ybox_last - ybox_first) * out_w * C);
      hdst = temp.data();
    }
    switch (C) {
      case 1: resample_horizontal<1>(src, src_stride, ybox_first, ybox_last, out_w, horiz, hdst); break;
      case 3: resample_horizontal<3>(src, src_stride, ybox_first, ybox_last, out_w, horiz, hdst); break;
      default: throw ShapeError("resize_bilinear_pil: expected 1 or 3 channels, found " + std::to_string(C));
    }
    vsrc = hdst;
    vstride = static_cast<int64_t>(out_w) * C;
  }
  if (need_vertical) resample_vertical(vsrc, vstride, static_cast<int64_t>(out_w) * C, out_h, vert, dst);
}

int64_t effective_stride(const ImageView& image) {
  return image.row_stride == 0 ? image.width * image.channels : image.row_stride;
}

void check_image(const ImageView& image, const char* who) {
  const std::string w = std::string(who) + ": ";
  if (image.channels != 1 && image.channels != 3)
    throw ShapeError(w + "expected an image with 1 (L) or 3 (BGR/RGB) channels, found " +
                     std::to_string(image.channels));
  if (image.format == "L") {
    if (image.channels != 1)
      throw ShapeError(w + "image format \"L\" needs 1 channel, found " + std::to_string(image.channels));
  } else if (image.format == "BGR" || image.format == "RGB") {
    if (image.channels != 3)
      throw ShapeError(w + "image format \"" + image.format + "\" needs 3 channels, found " +
                       std::to_string(image.channels));
  } else {
    throw ShapeError(w + "unknown image format \"" + image.format + "\" (expected \"BGR\", \"RGB\" or \"L\")");
  }
  if (image.width <= 0 || image.height <= 0)
    throw ShapeError(w + "expected a non-empty image, found width " + std::to_string(image.width) + " and height " +
                     std::to_string(image.height));
  if (image.width >= kMaxPilSize || image.height >= kMaxPilSize)
    throw ShapeError(w + "image of " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                     " is too large (each side must be below " + std::to_string(kMaxPilSize) + ")");
  if (image.row_stride != 0 && image.row_stride < image.width * image.channels)
    throw ShapeError(w + "row_stride " + std::to_string(image.row_stride) + " is smaller than width * channels = " +
                     std::to_string(image.width * image.channels));
  if (image.data == nullptr) throw ShapeError(w + "image data is null");
}

void check_options(const PreprocessOptions& o) {
  detail::check_normalization(o.input_format, o.pixel_mean, o.pixel_std);
  if (o.min_size_test < 0)
    throw ConfigError("INPUT.MIN_SIZE_TEST must be >= 0 (0 disables resizing), found " +
                      std::to_string(o.min_size_test));
  if (o.min_size_test > 0 && o.max_size_test <= 0)
    throw ConfigError("INPUT.MAX_SIZE_TEST must be > 0, found " + std::to_string(o.max_size_test));
  if (o.min_size_test >= kMaxPilSize)
    throw ConfigError("INPUT.MIN_SIZE_TEST must be below " + std::to_string(kMaxPilSize) + ", found " +
                      std::to_string(o.min_size_test));
  if (o.size_divisibility < 0 || o.size_divisibility > kMaxSizeDivisibility)
    throw ConfigError("size_divisibility must be between 0 and " + std::to_string(kMaxSizeDivisibility) + ", found " +
                      std::to_string(o.size_divisibility));
}

// The preprocessed (resized and padded) image fits kMaxPreprocessedPixels; sides below 2^24 each,
// so that the product fits an int64.
void check_output_size(int64_t h, int64_t w, const PreprocessOptions& o) {
  if (h >= kMaxPilSize || w >= kMaxPilSize || h * w > kMaxPreprocessedPixels)
    throw ConfigError("preprocess: the image would become " + std::to_string(w) + "x" + std::to_string(h) +
                      " (INPUT.MIN_SIZE_TEST " + std::to_string(o.min_size_test) + ", INPUT.MAX_SIZE_TEST " +
                      std::to_string(o.max_size_test) + ", size_divisibility " + std::to_string(o.size_divisibility) +
                      "), more than the " + std::to_string(kMaxPreprocessedPixels) + " pixels allowed");
}

}  // namespace

namespace detail {

// Pillow's precompute_coeffs() for the box [0, in_size) with the BILINEAR filter (support 1.0),
// followed by normalize_coeffs_8bpc().
PilCoefficients pil_bilinear_coefficients(int in_size, int out_size) {
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale;
  PilCoefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<std::size_t>(out_size) * 2);
  c.kk.assign(static_cast<std::size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(static_cast<std::size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      const double w = bilinear_filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
    }
    int32_t* out = &c.kk[static_cast<std::size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double v = k[x];
      out[x] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPilPrecisionBits))
                     : static_cast<int32_t>(0.5 + v * (1 << kPilPrecisionBits));
    }
    c.bounds[static_cast<std::size_t>(xx) * 2] = xmin;
    c.bounds[static_cast<std::size_t>(xx) * 2 + 1] = xmax;
  }
  return c;
}

void check_normalization(const std::string& input_format, const std::vector<double>& pixel_mean,
                         const std::vector<double>& pixel_std) {
  if (input_format != "BGR" && input_format != "RGB")
    throw ConfigError("INPUT.FORMAT must be \"RGB\" or \"BGR\" for inference (DefaultPredictor asserts "
                      "input_format in [\"RGB\", \"BGR\"]), found \"" + input_format + "\"");
  if (pixel_mean.size() != pixel_std.size())
    throw ConfigError("MODEL.PIXEL_MEAN and MODEL.PIXEL_STD have different shapes! (" +
                      std::to_string(pixel_mean.size()) + " vs " + std::to_string(pixel_std.size()) +
                      " values)");
  if (pixel_mean.size() != 3)
    throw ConfigError("MODEL.PIXEL_MEAN must have one value per channel of INPUT.FORMAT \"" + input_format +
                      "\" (3), found " + std::to_string(pixel_mean.size()));
  for (std::size_t i = 0; i < pixel_std.size(); ++i) {
    if (pixel_std[i] == 0.0 || !std::isfinite(pixel_std[i]))
      throw ConfigError("MODEL.PIXEL_STD[" + std::to_string(i) + "] must be a non-zero finite number, found " +
                        std::to_string(pixel_std[i]));
    if (!std::isfinite(pixel_mean[i]))
      throw ConfigError("MODEL.PIXEL_MEAN[" + std::to_string(i) + "] must be finite, found " +
                        std::to_string(pixel_mean[i]));
  }
}

int64_t padded_size(int64_t size, int64_t divisibility) {
  if (divisibility <= 1) return size;
  return (size + divisibility - 1) / divisibility * divisibility;
}

}  // namespace detail

PreprocessOptions PreprocessOptions::from_config(const Config& cfg) {
  PreprocessOptions o;
  o.input_format = cfg.get_string("INPUT.FORMAT");
  o.pixel_mean = cfg.get_float_list("MODEL.PIXEL_MEAN");
  o.pixel_std = cfg.get_float_list("MODEL.PIXEL_STD");
  o.min_size_test = cfg.get_int("INPUT.MIN_SIZE_TEST");
  o.max_size_test = cfg.get_int("INPUT.MAX_SIZE_TEST");
  o.size_divisibility = 0;  // ResNet's Backbone.size_divisibility
  check_options(o);
  return o;
}

std::pair<int64_t, int64_t> resize_shortest_edge_shape(int64_t oldh, int64_t oldw, int64_t short_edge_length,
                                                       int64_t max_size) {
  if (oldh <= 0 || oldw <= 0)
    throw ShapeError("ResizeShortestEdge.get_output_shape: expected a non-empty image, found height " +
                     std::to_string(oldh) + " and width " + std::to_string(oldw));
  const double h = static_cast<double>(oldh), w = static_cast<double>(oldw);
  const double size = static_cast<double>(short_edge_length) * 1.0;
  double scale = size / static_cast<double>(std::min(oldh, oldw));
  double newh, neww;
  if (oldh < oldw) {
    newh = size;
    neww = scale * w;
  } else {
    newh = scale * h;
    neww = size;
  }
  if (std::max(newh, neww) > static_cast<double>(max_size)) {
    scale = static_cast<double>(max_size) * 1.0 / std::max(newh, neww);
    newh = newh * scale;
    neww = neww * scale;
  }
  // Python's int() truncates towards zero.
  const int64_t out_w = static_cast<int64_t>(std::trunc(neww + 0.5));
  const int64_t out_h = static_cast<int64_t>(std::trunc(newh + 0.5));
  return {out_h, out_w};
}

Tensor resize_bilinear_pil(const ImageView& image, int64_t new_width, int64_t new_height) {
  check_image(image, "resize_bilinear_pil");
  if (new_width < 1 || new_height < 1)
    throw ShapeError("resize_bilinear_pil: height and width must be > 0, found width " + std::to_string(new_width) +
                     " and height " + std::to_string(new_height));
  if (new_width >= kMaxPilSize || new_height >= kMaxPilSize)
    throw ShapeError("resize_bilinear_pil: output size " + std::to_string(new_width) + "x" +
                     std::to_string(new_height) + " is too large (each side must be below " +
                     std::to_string(kMaxPilSize) + ")");
  Tensor out = Tensor::empty({new_height, new_width, image.channels}, DType::UInt8);
  resize_pil_into(image.data, effective_stride(image), static_cast<int>(image.width), static_cast<int>(image.height),
                  static_cast<int>(image.channels), static_cast<int>(new_width), static_cast<int>(new_height),
                  out.data_ptr<uint8_t>());
  return out;
}

PreprocessResult preprocess(const ImageView& image, const PreprocessOptions& options) {
  check_image(image, "preprocess");
  check_options(options);
  const int64_t h = image.height, w = image.width, C = image.channels;

  int64_t new_h = h, new_w = w;
  if (options.min_size_test > 0) {
    auto shape = resize_shortest_edge_shape(h, w, options.min_size_test, options.max_size_test);
    new_h = shape.first;
    new_w = shape.second;
  }
  // Checked before the resize allocates (the padded size is at most size_divisibility larger).
  if (new_h >= kMaxPilSize || new_w >= kMaxPilSize)
    check_output_size(new_h, new_w, options);
  check_output_size(detail::padded_size(new_h, options.size_divisibility),
                    detail::padded_size(new_w, options.size_divisibility), options);

  // Resize in the source's channel order (the filter treats channels independently).
  const uint8_t* pixels = image.data;
  int64_t stride = effective_stride(image);
  Tensor resized;
  if (new_h != h || new_w != w) {
    ImageView view = image;
    resized = resize_bilinear_pil(view, new_w, new_h);
    pixels = resized.data_ptr<uint8_t>();
    stride = new_w * C;
  }

  // Model channel c comes from source channel src_channel[c].
  int src_channel[3] = {0, 1, 2};
  if (C == 1) {
    src_channel[1] = src_channel[2] = 0;
  } else if (image.format != options.input_format) {
    src_channel[0] = 2;
    src_channel[2] = 0;
  }

  // (x - mean) / std in float32, as the model's float32 buffers compute it; one table per channel.
  float table[3][256];
  for (int c = 0; c < 3; ++c) {
    const float m = static_cast<float>(options.pixel_mean[c]);
    const float s = static_cast<float>(options.pixel_std[c]);
    for (int v = 0; v < 256; ++v) table[c][v] = (static_cast<float>(v) - m) / s;
  }

  const int64_t hp = detail::padded_size(new_h, options.size_divisibility);
  const int64_t wp = detail::padded_size(new_w, options.size_divisibility);
  PreprocessResult result;
  result.tensor = Tensor::empty({1, 3, hp, wp}, DType::Float32);
  float* out = result.tensor.data_ptr<float>();
  for (int c = 0; c < 3; ++c) {
    const float* t = table[c];
    const int64_t sc = src_channel[c];
    float* plane = out + c * hp * wp;
    for (int64_t y = 0; y < new_h; ++y) {
      const uint8_t* row = pixels + y * stride + sc;
      float* o = plane + y * wp;
      for (int64_t x = 0; x < new_w; ++x) o[x] = t[row[x * C]];
      std::fill(o + new_w, o + wp, 0.0f);
    }
    std::fill(plane + new_h * wp, plane + hp * wp, 0.0f);
  }
  result.resized_height = new_h;
  result.resized_width = new_w;
  result.scale_y = static_cast<double>(new_h) / static_cast<double>(h);
  result.scale_x = static_cast<double>(new_w) / static_cast<double>(w);
  return result;
}

Tensor normalize_and_pad(const Tensor& images, const std::vector<double>& pixel_mean,
                         const std::vector<double>& pixel_std, int64_t size_divisibility) {
  const std::string who = "normalize_and_pad: ";
  if (!images.defined()) throw ShapeError(who + "the images tensor is undefined");
  if (!images.device().is_cpu())
    throw ShapeError(who + "expected a tensor on the CPU, found one on " + images.device().str());
  if (images.dtype() != DType::Float32)
    throw ShapeError(who + "expected float32 images, found " + std::string(dtype_name(images.dtype())));
  if (images.dim() != 4)
    throw ShapeError(who + "expected images of shape [N, C, H, W], found " + shape_str(images.shape()));
  const int64_t N = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  if (pixel_mean.size() != pixel_std.size())
    throw ConfigError(who + "pixel_mean and pixel_std have different shapes! (" + std::to_string(pixel_mean.size()) +
                      " vs " + std::to_string(pixel_std.size()) + " values)");
  if (static_cast<int64_t>(pixel_mean.size()) != C)
    throw ShapeError(who + "expected " + std::to_string(pixel_mean.size()) +
                     " channels (one per pixel_mean value), found images of shape " + shape_str(images.shape()));
  for (std::size_t i = 0; i < pixel_std.size(); ++i)
    if (pixel_std[i] == 0.0 || !std::isfinite(pixel_std[i]))
      throw ConfigError(who + "pixel_std[" + std::to_string(i) + "] must be a non-zero finite number, found " +
                        std::to_string(pixel_std[i]));
  if (size_divisibility < 0 || size_divisibility > kMaxSizeDivisibility)
    throw ConfigError(who + "size_divisibility must be between 0 and " + std::to_string(kMaxSizeDivisibility) +
                      ", found " + std::to_string(size_divisibility));

  const int64_t hp = detail::padded_size(H, size_divisibility), wp = detail::padded_size(W, size_divisibility);
  Tensor out = Tensor::empty({N, C, hp, wp}, DType::Float32);
  float* o = out.data_ptr<float>();
  const float* in = images.data_ptr<float>();
  const int64_t s0 = images.stride(0), s1 = images.stride(1), s2 = images.stride(2), s3 = images.stride(3);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const float m = static_cast<float>(pixel_mean[static_cast<std::size_t>(c)]);
      const float s = static_cast<float>(pixel_std[static_cast<std::size_t>(c)]);
      float* plane = o + (n * C + c) * hp * wp;
      for (int64_t y = 0; y < H; ++y) {
        const float* row = in + n * s0 + c * s1 + y * s2;
        float* orow = plane + y * wp;
        for (int64_t x = 0; x < W; ++x) orow[x] = (row[x * s3] - m) / s;
        std::fill(orow + W, orow + wp, 0.0f);
      }
      std::fill(plane + H * wp, plane + hp * wp, 0.0f);
    }
  }
  return out;
}

}  // namespace backbone
