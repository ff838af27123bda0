// SPDX-License-Identifier: Apache-2.0
// Video frames to network input: packed RGB variants, NV12, I420 and GRAY8 to 8-bit RGB/BGR, then
// detectron2's test-time resize, normalisation and padding.
//
// YUV -> RGB follows GStreamer 1.22's videoconvert bit for bit (video-converter.c, video-chroma.c,
// video-orc.orc, behaviour only; no code copied):
//  * the matrix is built in double precision as the converter does (offsets, 1 / (float) scale,
//    the YCbCr -> R'G'B' matrix of Kr/Kb, x255, x256) and rounded to integers (rint);
//  * each 8-bit sample v becomes the signed word whose two bytes are both (v - 128); the pixel is
//    128 + saturate_int8(sum of (word * coefficient) >> 16) (orc's splatbw / mulhsw / convssswb),
//    where only the Y coefficient and the four chroma coefficients take part;
//  * I420 -> RGB is a fast path that uses chroma sample x / 2 of row y / 2 (no interpolation);
//  * NV12 -> RGB goes through the generic path: each chroma row is first upsampled horizontally
//    ((3a + b + 2) >> 2 and (a + 3b + 2) >> 2 between samples, or (a + b + 1) >> 1 in between
//    co-sited samples), then vertically (the same 3:1 taps between chroma rows, or the nearest row
//    when co-sited); the first and the last pixels/rows repeat the edge sample.
// tests/data/make_frame.py checks these rules against gst-launch-1.0 ... videoconvert.
//
// Built with -ffp-contract=off: the double-precision matrix must round like GStreamer's.
#include "backbone/frame.h"

#include "frame/frame_internal.h"
#include "preprocess/checks.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backbone/error.h"

namespace backbone {
namespace {

using detail::PackedLayout;
using detail::packed_layout;
using detail::PlaneGeometry;
using detail::YuvCoefficients;
using detail::yuv_coefficients;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Formats

PackedLayout detail::packed_layout(PixelFormat f) {
  switch (f) {
    case PixelFormat::RGB: return {3, 0, 1, 2};
    case PixelFormat::BGR: return {3, 2, 1, 0};
    case PixelFormat::RGBx:
    case PixelFormat::RGBA: return {4, 0, 1, 2};
    case PixelFormat::BGRx:
    case PixelFormat::BGRA: return {4, 2, 1, 0};
    case PixelFormat::xRGB:
    case PixelFormat::ARGB: return {4, 1, 2, 3};
    case PixelFormat::xBGR:
    case PixelFormat::ABGR: return {4, 3, 2, 1};
    default: break;
  }
  throw Error(std::string("pixel format ") + pixel_format_name(f) + " is not a packed RGB format");
}

namespace {

struct FormatName {
  PixelFormat format;
  const char* name;
};
constexpr FormatName kFormatNames[] = {
    {PixelFormat::RGB, "RGB"},   {PixelFormat::BGR, "BGR"},   {PixelFormat::RGBx, "RGBx"}, {PixelFormat::BGRx, "BGRx"},
    {PixelFormat::xRGB, "xRGB"}, {PixelFormat::xBGR, "xBGR"}, {PixelFormat::RGBA, "RGBA"}, {PixelFormat::BGRA, "BGRA"},
    {PixelFormat::ARGB, "ARGB"}, {PixelFormat::ABGR, "ABGR"}, {PixelFormat::NV12, "NV12"}, {PixelFormat::I420, "I420"},
    {PixelFormat::GRAY8, "GRAY8"},
};

std::string known_format_names() {
  std::string s;
  for (const auto& f : kFormatNames) s += (s.empty() ? "" : ", ") + std::string(f.name);
  return s;
}

}  // namespace

PlaneGeometry detail::plane_geometry(const FrameView& f) {
  PlaneGeometry g;
  const int64_t cw = (f.width + 1) / 2, ch = (f.height + 1) / 2;
  switch (f.format) {
    case PixelFormat::NV12:
      g.n_planes = 2;
      g.row_bytes[0] = f.width;
      g.rows[0] = f.height;
      g.row_bytes[1] = 2 * cw;
      g.rows[1] = ch;
      break;
    case PixelFormat::I420:
      g.n_planes = 3;
      g.row_bytes[0] = f.width;
      g.rows[0] = f.height;
      g.row_bytes[1] = g.row_bytes[2] = cw;
      g.rows[1] = g.rows[2] = ch;
      break;
    case PixelFormat::GRAY8:
      g.row_bytes[0] = f.width;
      g.rows[0] = f.height;
      break;
    default:
      g.row_bytes[0] = f.width * packed_layout(f.format).pixel_stride;
      g.rows[0] = f.height;
      break;
  }
  return g;
}

// Checks the frame and returns its strides with 0 replaced by the tight row size.
void detail::check_frame(const FrameView& f, const char* who, int64_t strides[3]) {
  const std::string w = std::string(who) + ": ";
  bool known = false;
  for (const auto& n : kFormatNames) known = known || n.format == f.format;
  if (!known) throw ShapeError(w + "unknown pixel format " + std::to_string(static_cast<int>(f.format)));
  if (f.width <= 0 || f.height <= 0)
    throw ShapeError(w + "expected a non-empty " + pixel_format_name(f.format) + " frame, found width " +
                     std::to_string(f.width) + " and height " + std::to_string(f.height));
  constexpr int64_t kMaxSide = int64_t{1} << 24;
  if (f.width >= kMaxSide || f.height >= kMaxSide)
    throw ShapeError(w + "frame of " + std::to_string(f.width) + "x" + std::to_string(f.height) +
                     " is too large (each side must be below " + std::to_string(kMaxSide) + ")");
  const PlaneGeometry g = plane_geometry(f);
  for (int p = 0; p < 3; ++p) strides[p] = 0;
  for (int p = 0; p < g.n_planes; ++p) {
    if (f.planes[p] == nullptr)
      throw ShapeError(w + pixel_format_name(f.format) + " frame: plane " + std::to_string(p) + " of " +
                       std::to_string(g.n_planes) + " is null");
    const int64_t s = f.strides[p] == 0 ? g.row_bytes[p] : f.strides[p];
    if (s < g.row_bytes[p])
      throw ShapeError(w + pixel_format_name(f.format) + " frame of width " + std::to_string(f.width) + ": plane " +
                       std::to_string(p) + " stride " + std::to_string(f.strides[p]) +
                       " is smaller than its row of " + std::to_string(g.row_bytes[p]) + " bytes");
    strides[p] = s;
  }
  if ((f.format == PixelFormat::NV12 || f.format == PixelFormat::I420) &&
      (static_cast<int>(f.matrix) < 0 || static_cast<int>(f.matrix) > static_cast<int>(ColorMatrix::SMPTE240M) ||
       static_cast<int>(f.range) < 0 || static_cast<int>(f.range) > static_cast<int>(ColorRange::Full) ||
       static_cast<int>(f.chroma_site) < 0 || static_cast<int>(f.chroma_site) > static_cast<int>(ChromaSite::Cosited)))
    throw ShapeError(w + "invalid colorimetry (matrix " + std::to_string(static_cast<int>(f.matrix)) + ", range " +
                     std::to_string(static_cast<int>(f.range)) + ", chroma site " +
                     std::to_string(static_cast<int>(f.chroma_site)) + ")");
}

namespace {

// Byte offsets of R and B within an output pixel of `order`.
void order_offsets(const std::string& order, const char* who, int* r, int* b) {
  if (order == "RGB") {
    *r = 0;
    *b = 2;
  } else if (order == "BGR") {
    *r = 2;
    *b = 0;
  } else {
    throw ShapeError(std::string(who) + ": channel order must be \"RGB\" or \"BGR\", found \"" + order + "\"");
  }
}

// ---------------------------------------------------------------------------------------------
// videoconvert's 8-bit YUV -> RGB arithmetic

struct Mat4 {
  double m[4][4];
};

Mat4 identity() {
  Mat4 r{};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) r.m[i][j] = (i == j) ? 1.0 : 0.0;
  return r;
}

// a * b, summed in k order.
Mat4 multiply(const Mat4& a, const Mat4& b) {
  Mat4 r{};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      double x = 0;
      for (int k = 0; k < 4; ++k) x += a.m[i][k] * b.m[k][j];
      r.m[i][j] = x;
    }
  return r;
}

Mat4 offset_components(const Mat4& m, double a1, double a2, double a3) {
  Mat4 a = identity();
  a.m[0][3] = a1;
  a.m[1][3] = a2;
  a.m[2][3] = a3;
  return multiply(a, m);
}

Mat4 scale_components(const Mat4& m, double a1, double a2, double a3) {
  Mat4 a = identity();
  a.m[0][0] = a1;
  a.m[1][1] = a2;
  a.m[2][2] = a3;
  return multiply(a, m);
}

void kr_kb(ColorMatrix matrix, double* kr, double* kb) {
  switch (matrix) {
    case ColorMatrix::FCC: *kr = 0.30; *kb = 0.11; return;
    case ColorMatrix::BT709: *kr = 0.2126; *kb = 0.0722; return;
    case ColorMatrix::BT601: *kr = 0.2990; *kb = 0.1140; return;
    case ColorMatrix::SMPTE240M: *kr = 0.212; *kb = 0.087; return;
    case ColorMatrix::BT2020: *kr = 0.2627; *kb = 0.0593; return;
  }
  throw Error("unknown colour matrix " + std::to_string(static_cast<int>(matrix)));
}

// Horizontal chroma upsampling of one row of (width + 1) / 2 contiguous samples to `width` samples:
// every sample repeated (videoconvert's unpack), then, between samples a = c[i] and b = c[i + 1],
// pixels 2i + 1 and 2i + 2 become (3a + b + 2) >> 2 and (a + 3b + 2) >> 2, or, co-sited, pixel 2i + 1
// becomes (a + b + 1) >> 1. The first pixel and, for an even width, the last keep their sample.
void upsample_h(const uint8_t* __restrict c, int64_t width, bool cosited, uint8_t* __restrict out) {
  const int64_t n = (width - 1) / 2;  // pairs (a, b) that are interpolated
  out[0] = c[0];
  if (cosited) {
    for (int64_t i = 0; i < n; ++i) {
      out[2 * i + 1] = static_cast<uint8_t>((c[i] + c[i + 1] + 1) >> 1);
      out[2 * i + 2] = c[i + 1];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      out[2 * i + 1] = static_cast<uint8_t>((3 * c[i] + c[i + 1] + 2) >> 2);
      out[2 * i + 2] = static_cast<uint8_t>((c[i] + 3 * c[i + 1] + 2) >> 2);
    }
  }
  if ((width & 1) == 0 && width > 1) out[width - 1] = c[width / 2 - 1];
}

}  // namespace

YuvCoefficients detail::yuv_coefficients(ColorMatrix matrix, ColorRange range) {
  const bool limited = range == ColorRange::Limited;
  const int off[3] = {limited ? 16 : 0, 128, 128};
  const int scale[3] = {limited ? 219 : 255, limited ? 224 : 255, limited ? 224 : 255};
  Mat4 m = identity();
  m = offset_components(m, -off[0], -off[1], -off[2]);
  m = scale_components(m, 1 / static_cast<float>(scale[0]), 1 / static_cast<float>(scale[1]),
                       1 / static_cast<float>(scale[2]));
  double kr = 0, kb = 0;
  kr_kb(matrix, &kr, &kb);
  const double kg = 1.0 - kr - kb;
  Mat4 k{};
  const double rows[4][4] = {{1., 0., 2 * (1 - kr), 0.},
                             {1., -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg, 0.},
                             {1., 2 * (1 - kb), 0., 0.},
                             {0., 0., 0., 1.}};
  std::memcpy(k.m, rows, sizeof(rows));
  m = multiply(k, m);
  m = scale_components(m, static_cast<float>(255), static_cast<float>(255), static_cast<float>(255));
  m = offset_components(m, 0, 0, 0);
  m = scale_components(m, static_cast<float>(256), static_cast<float>(256), static_cast<float>(256));
  auto coefficient = [&m](int i, int j) { return static_cast<int16_t>(std::rint(m.m[i][j])); };
  return {coefficient(0, 0), coefficient(0, 2), coefficient(1, 1), coefficient(1, 2), coefficient(2, 1)};
}

namespace {

// The signed word whose two bytes are both (v - 128) (orc's splatbw after subb 128).
inline int16_t splat(uint8_t v) {
  const uint8_t b = static_cast<uint8_t>(v ^ 0x80);
  return static_cast<int16_t>(static_cast<uint16_t>(b * 257));
}
// (a * p) >> 16 (orc's mulhsw).
inline int16_t mulhs(int16_t a, int16_t p) {
  return static_cast<int16_t>((static_cast<int32_t>(a) * static_cast<int32_t>(p)) >> 16);
}
// 128 + saturate to int8 (convssswb, addb 128).
inline uint8_t sat_u8(int v) { return static_cast<uint8_t>(std::min(std::max(v, -128), 127) + 128); }

// One row of full-width Y, U, V samples to planar R, G, B rows (written to vectorise).
void yuv_to_planar_row(const uint8_t* __restrict y, const uint8_t* __restrict u, const uint8_t* __restrict v,
                       int64_t width, const YuvCoefficients k, uint8_t* __restrict r, uint8_t* __restrict g,
                       uint8_t* __restrict b) {
  for (int64_t x = 0; x < width; ++x) {
    const int16_t wy = mulhs(splat(y[x]), k.y);
    const int16_t wu = splat(u[x]), wv = splat(v[x]);
    r[x] = sat_u8(wy + mulhs(wv, k.rv));
    g[x] = sat_u8(wy + mulhs(wu, k.gu) + mulhs(wv, k.gv));
    b[x] = sat_u8(wy + mulhs(wu, k.bu));
  }
}

// Walks a YUV frame row by row, handing planar R, G, B rows (width bytes each) to `sink(y, r, g, b)`.
class YuvRows {
 public:
  YuvRows(const FrameView& f, const int64_t strides[3])
      : f_(f), k_(yuv_coefficients(f.matrix, f.range)), w_(f.width), ch_((f.height + 1) / 2),
        buf_(static_cast<std::size_t>(f.width + 1) * 9) {
    for (int p = 0; p < 3; ++p) strides_[p] = strides[p];
    h_cosited_ = f.chroma_site == ChromaSite::HCosited || f.chroma_site == ChromaSite::Cosited;
    v_cosited_ = f.chroma_site == ChromaSite::VCosited || f.chroma_site == ChromaSite::Cosited;
    // Rows of width + 1 bytes: I420's doubled chroma fills 2 * ((width + 1) / 2).
    const int64_t n = w_ + 1;
    uint8_t* p = buf_.data();
    hu_[0] = p; hu_[1] = p + n; hv_[0] = p + 2 * n; hv_[1] = p + 3 * n;
    ru_ = p + 4 * n; rv_ = p + 5 * n;
    r_ = p + 6 * n; g_ = p + 7 * n; b_ = p + 8 * n;
  }

  template <typename Sink>
  void run(Sink&& sink) {
    for (int64_t y = 0; y < f_.height; ++y) {
      const uint8_t *u, *v;
      if (f_.format == PixelFormat::I420) {
        // videoconvert's I420 -> RGB fast path: chroma sample x / 2 of row y / 2.
        const uint8_t* us = f_.planes[1] + (y >> 1) * strides_[1];
        const uint8_t* vs = f_.planes[2] + (y >> 1) * strides_[2];
        const int64_t cw = (w_ + 1) / 2;
        for (int64_t i = 0; i < cw; ++i) {  // buffers hold 2 * cw bytes
          ru_[2 * i] = ru_[2 * i + 1] = us[i];
          rv_[2 * i] = rv_[2 * i + 1] = vs[i];
        }
        u = ru_;
        v = rv_;
      } else if (v_cosited_ || y == 0) {
        const int s = chroma_row(y >> 1);
        u = hu_[s];
        v = hv_[s];
      } else {
        // Odd rows sit 1/4 of a chroma row after chroma row (y - 1) / 2, even rows 1/4 before y / 2.
        const bool odd = (y & 1) != 0;
        const int64_t ca = odd ? (y - 1) / 2 : y / 2 - 1;
        const int64_t cb = std::min(ca + 1, ch_ - 1);
        const int sa = chroma_row(ca), sb = chroma_row(cb);
        blend_rows(odd ? hu_[sa] : hu_[sb], odd ? hu_[sb] : hu_[sa], ru_);
        blend_rows(odd ? hv_[sa] : hv_[sb], odd ? hv_[sb] : hv_[sa], rv_);
        u = ru_;
        v = rv_;
      }
      yuv_to_planar_row(f_.planes[0] + y * strides_[0], u, v, w_, k_, r_, g_, b_);
      sink(y, static_cast<const uint8_t*>(r_), static_cast<const uint8_t*>(g_), static_cast<const uint8_t*>(b_));
    }
  }

 private:
  // (3 * near + far + 2) >> 2
  void blend_rows(const uint8_t* __restrict near, const uint8_t* __restrict far, uint8_t* __restrict out) const {
    for (int64_t x = 0; x < w_; ++x) out[x] = static_cast<uint8_t>((3 * near[x] + far[x] + 2) >> 2);
  }

  // Horizontally upsampled U and V of NV12 chroma row `cr`, cached in slot cr & 1.
  int chroma_row(int64_t cr) {
    const int s = static_cast<int>(cr & 1);
    if (in_slot_[s] != cr) {
      const uint8_t* __restrict uv = f_.planes[1] + cr * strides_[1];
      const int64_t cw = (w_ + 1) / 2;
      uint8_t* __restrict u = ru_;  // scratch: deinterleaved samples
      uint8_t* __restrict v = rv_;
      for (int64_t i = 0; i < cw; ++i) {
        u[i] = uv[2 * i];
        v[i] = uv[2 * i + 1];
      }
      upsample_h(u, w_, h_cosited_, hu_[s]);
      upsample_h(v, w_, h_cosited_, hv_[s]);
      in_slot_[s] = cr;
    }
    return s;
  }

  const FrameView& f_;
  YuvCoefficients k_;
  int64_t w_, ch_;
  int64_t strides_[3] = {0, 0, 0};
  bool h_cosited_ = false, v_cosited_ = false;
  std::vector<uint8_t> buf_;
  uint8_t *hu_[2], *hv_[2], *ru_, *rv_, *r_, *g_, *b_;
  int64_t in_slot_[2] = {-1, -1};
};

template <int PS>
void packed_to_rgb8(const uint8_t* src, int64_t stride, int64_t w, int64_t h, int sr, int sg, int sb, int ro, int bo,
                    uint8_t* out) {
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* s = src + y * stride;
    uint8_t* o = out + y * w * 3;
    for (int64_t x = 0; x < w; ++x) {
      o[3 * x + ro] = s[PS * x + sr];
      o[3 * x + 1] = s[PS * x + sg];
      o[3 * x + bo] = s[PS * x + sb];
    }
  }
}

void gray_to_rgb8(const uint8_t* src, int64_t stride, int64_t w, int64_t h, uint8_t* out) {
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* s = src + y * stride;
    uint8_t* o = out + y * w * 3;
    for (int64_t x = 0; x < w; ++x) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = s[x];
  }
}

void to_rgb8_into(const FrameView& f, const int64_t strides[3], int ro, int bo, uint8_t* out) {
  switch (f.format) {
    case PixelFormat::NV12:
    case PixelFormat::I420: {
      const int64_t w = f.width;
      YuvRows rows(f, strides);
      rows.run([&](int64_t y, const uint8_t* r, const uint8_t* g, const uint8_t* b) {
        uint8_t* o = out + y * w * 3;
        for (int64_t x = 0; x < w; ++x) {
          o[3 * x + ro] = r[x];
          o[3 * x + 1] = g[x];
          o[3 * x + bo] = b[x];
        }
      });
      return;
    }
    case PixelFormat::GRAY8: gray_to_rgb8(f.planes[0], strides[0], f.width, f.height, out); return;
    default: break;
  }
  const PackedLayout l = packed_layout(f.format);
  if (l.pixel_stride == 3)
    packed_to_rgb8<3>(f.planes[0], strides[0], f.width, f.height, l.r, l.g, l.b, ro, bo, out);
  else
    packed_to_rgb8<4>(f.planes[0], strides[0], f.width, f.height, l.r, l.g, l.b, ro, bo, out);
}

// ---------------------------------------------------------------------------------------------
// preprocess_frame

}  // namespace

void detail::check_frame_options(const FramePreprocessOptions& o) {
  detail::check_normalization(o.input_format, o.pixel_mean, o.pixel_std);
  switch (o.resize) {
    case ResizeMode::None: break;
    case ResizeMode::ShortestEdge:
      if (o.min_size <= 0 || o.max_size <= 0)
        throw ConfigError("shortest-edge resize needs min_size > 0 and max_size > 0, found min_size " +
                          std::to_string(o.min_size) + " and max_size " + std::to_string(o.max_size));
      break;
    case ResizeMode::Fixed:
      if (o.width <= 0 || o.height <= 0)
        throw ConfigError("fixed resize needs width > 0 and height > 0, found width " + std::to_string(o.width) +
                          " and height " + std::to_string(o.height));
      break;
    default:
      throw ConfigError("unknown resize mode " + std::to_string(static_cast<int>(o.resize)) +
                        " (expected none, shortest-edge or fixed)");
  }
  if (o.size_divisibility < 0)
    throw ConfigError("size_divisibility must be >= 0, found " + std::to_string(o.size_divisibility));
}

std::pair<int64_t, int64_t> detail::frame_resized_size(const FrameView& frame, const FramePreprocessOptions& o) {
  if (o.resize == ResizeMode::ShortestEdge)
    return resize_shortest_edge_shape(frame.height, frame.width, o.min_size, o.max_size);
  if (o.resize == ResizeMode::Fixed) return {o.height, o.width};
  return {frame.height, frame.width};
}

namespace {

// 8-bit source, PS bytes per pixel, model channel c at byte offset off[c]; writes [3, hp, wp].
template <int PS>
void normalize_into(const uint8_t* src, int64_t stride, int64_t h, int64_t w, const int off[3], const float table[3][256],
                    int64_t hp, int64_t wp, float* out) {
  for (int c = 0; c < 3; ++c) {
    const float* t = table[c];
    float* plane = out + c * hp * wp;
    for (int64_t y = 0; y < h; ++y) {
      const uint8_t* row = src + y * stride + off[c];
      float* o = plane + y * wp;
      for (int64_t x = 0; x < w; ++x) o[x] = t[row[PS * x]];
      std::fill(o + w, o + wp, 0.0f);
    }
    std::fill(plane + h * wp, plane + hp * wp, 0.0f);
  }
}

}  // namespace

PixelFormat pixel_format_from_name(const std::string& name) {
  for (const auto& f : kFormatNames)
    if (name == f.name) return f.format;
  throw Error("unknown pixel format \"" + name + "\" (expected one of " + known_format_names() + ")");
}

const char* pixel_format_name(PixelFormat format) {
  for (const auto& f : kFormatNames)
    if (format == f.format) return f.name;
  return "unknown";
}

ChromaSite chroma_site_from_name(const std::string& name) {
  if (name == "jpeg" || name == "none" || name == "unknown" || name.empty()) return ChromaSite::Center;
  if (name == "mpeg2" || name == "h-cosited") return ChromaSite::HCosited;
  if (name == "v-cosited") return ChromaSite::VCosited;
  if (name == "cosited" || name == "dv") return ChromaSite::Cosited;
  throw Error("unknown chroma site \"" + name +
              "\" (expected jpeg, mpeg2, cosited, dv, h-cosited, v-cosited, none or unknown)");
}

Tensor frame_to_rgb8(const FrameView& frame, const std::string& order) {
  int64_t strides[3];
  detail::check_frame(frame, "frame_to_rgb8", strides);
  int ro = 0, bo = 2;
  order_offsets(order, "frame_to_rgb8", &ro, &bo);
  Tensor out = Tensor::empty({frame.height, frame.width, 3}, DType::UInt8);
  to_rgb8_into(frame, strides, ro, bo, out.data_ptr<uint8_t>());
  return out;
}

PreprocessResult preprocess_frame(const FrameView& frame, const FramePreprocessOptions& options, Tensor* output) {
  int64_t strides[3];
  detail::check_frame(frame, "preprocess_frame", strides);
  detail::check_frame_options(options);
  const int64_t h = frame.height, w = frame.width;
  const auto new_size = detail::frame_resized_size(frame, options);
  const int64_t new_h = new_size.first, new_w = new_size.second;
  const bool resize = new_h != h || new_w != w;  // PIL's resize to the same size is a copy
  const bool yuv = frame.format == PixelFormat::NV12 || frame.format == PixelFormat::I420;
  const bool bgr = options.input_format == "BGR";
  const int64_t hp = detail::padded_size(new_h, options.size_divisibility);
  const int64_t wp = detail::padded_size(new_w, options.size_divisibility);
  const Shape shape{1, 3, hp, wp};
  PreprocessResult result;
  result.resized_height = new_h;
  result.resized_width = new_w;
  result.scale_y = static_cast<double>(new_h) / static_cast<double>(h);
  result.scale_x = static_cast<double>(new_w) / static_cast<double>(w);
  if (output != nullptr && output->defined() && output->dtype() == DType::Float32 && output->device().is_cpu() &&
      output->shape() == shape && output->is_contiguous()) {
    result.tensor = *output;
  } else {
    result.tensor = Tensor::empty(shape, DType::Float32);
  }
  float* out = result.tensor.data_ptr<float>();
  float mean[3], std_[3];
  for (int c = 0; c < 3; ++c) {
    mean[c] = static_cast<float>(options.pixel_mean[static_cast<std::size_t>(c)]);
    std_[c] = static_cast<float>(options.pixel_std[static_cast<std::size_t>(c)]);
  }

  if (yuv && !resize) {
    // YUV straight into the normalised planes, row by row, without an interleaved RGB copy.
    YuvRows rows(frame, strides);
    rows.run([&](int64_t y, const uint8_t* r, const uint8_t* g, const uint8_t* b) {
      const uint8_t* src[3] = {bgr ? b : r, g, bgr ? r : b};
      for (int c = 0; c < 3; ++c) {
        const uint8_t* __restrict s = src[c];
        float* __restrict o = out + (c * hp + y) * wp;
        const float m = mean[c], sd = std_[c];
        for (int64_t x = 0; x < w; ++x) o[x] = (static_cast<float>(s[x]) - m) / sd;
        std::fill(o + w, o + wp, 0.0f);
      }
    });
    for (int c = 0; c < 3; ++c) std::fill(out + (c * hp + h) * wp, out + (c + 1) * hp * wp, 0.0f);
    return result;
  }

  // The 8-bit pixels to normalise: `src` with `ps` bytes per pixel, model channel c at byte off[c].
  const uint8_t* src = nullptr;
  int64_t stride = 0;
  int ps = 3;
  int off[3] = {0, 1, 2};
  Tensor rgb, resized;
  if (!resize) {
    // Straight from the frame (packed or GRAY8).
    src = frame.planes[0];
    stride = strides[0];
    if (frame.format == PixelFormat::GRAY8) {
      ps = 1;
      off[0] = off[1] = off[2] = 0;
    } else {
      const PackedLayout l = packed_layout(frame.format);
      ps = l.pixel_stride;
      off[0] = bgr ? l.b : l.r;
      off[1] = l.g;
      off[2] = bgr ? l.r : l.b;
    }
  } else {
    ImageView view;
    if (frame.format == PixelFormat::RGB || frame.format == PixelFormat::BGR) {
      view.data = frame.planes[0];
      view.row_stride = strides[0];
      view.channels = 3;
      view.format = pixel_format_name(frame.format);
    } else if (frame.format == PixelFormat::GRAY8) {
      view.data = frame.planes[0];
      view.row_stride = strides[0];
      view.channels = 1;
      view.format = "L";
    } else {
      rgb = frame_to_rgb8(frame, options.input_format);
      view.data = rgb.data_ptr<uint8_t>();
      view.row_stride = w * 3;
      view.channels = 3;
      view.format = options.input_format;
    }
    view.width = w;
    view.height = h;
    // Resized in the source's channel order (PIL's filter treats channels alike).
    resized = resize_bilinear_pil(view, new_w, new_h);
    src = resized.data_ptr<uint8_t>();
    stride = new_w * view.channels;
    ps = static_cast<int>(view.channels);
    if (view.channels == 1) {
      off[0] = off[1] = off[2] = 0;
    } else if (view.format != options.input_format) {
      off[0] = 2;
      off[2] = 0;
    }
  }

  // (x - mean) / std in float32, as the model's float32 buffers compute it; one table per channel.
  float table[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) table[c][v] = (static_cast<float>(v) - mean[c]) / std_[c];
  switch (ps) {
    case 1: normalize_into<1>(src, stride, new_h, new_w, off, table, hp, wp, out); break;
    case 3: normalize_into<3>(src, stride, new_h, new_w, off, table, hp, wp, out); break;
    default: normalize_into<4>(src, stride, new_h, new_w, off, table, hp, wp, out); break;
  }
  return result;
}

}  // namespace backbone
