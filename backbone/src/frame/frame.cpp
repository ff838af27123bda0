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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backbone/error.h"

namespace backbone {
namespace {

// ---------------------------------------------------------------------------------------------
// Formats

struct PackedLayout {
  int pixel_stride;  // bytes per pixel
  int r, g, b;       // byte offsets of the colour channels
};

PackedLayout packed_layout(PixelFormat f) {
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

// Minimal row sizes in bytes, per plane.
struct PlaneGeometry {
  int n_planes = 1;
  int64_t row_bytes[3] = {0, 0, 0};
  int64_t rows[3] = {0, 0, 0};
};

PlaneGeometry plane_geometry(const FrameView& f) {
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
void check_frame(const FrameView& f, const char* who, int64_t strides[3]) {
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

// Per-sample contributions: pixel = 128 + sat8(y[Y] + rv[V]), sat8(y[Y] + gu[U] + gv[V]), sat8(y[Y] + bu[U]).
struct YuvTables {
  int16_t y[256], rv[256], gu[256], gv[256], bu[256];
};

YuvTables make_yuv_tables(ColorMatrix matrix, ColorRange range) {
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
  int im[3][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) im[i][j] = static_cast<int>(std::rint(m.m[i][j]));
  const int16_t p_y = static_cast<int16_t>(im[0][0]), p_rv = static_cast<int16_t>(im[0][2]),
                p_bu = static_cast<int16_t>(im[2][1]), p_gu = static_cast<int16_t>(im[1][1]),
                p_gv = static_cast<int16_t>(im[1][2]);
  YuvTables t;
  for (int v = 0; v < 256; ++v) {
    const uint8_t b = static_cast<uint8_t>(v ^ 0x80);  // (v - 128) as a byte
    const int32_t word = static_cast<int16_t>(static_cast<uint16_t>((b << 8) | b));
    auto mulhs = [word](int16_t p) { return static_cast<int16_t>((word * static_cast<int32_t>(p)) >> 16); };
    t.y[v] = mulhs(p_y);
    t.rv[v] = mulhs(p_rv);
    t.gu[v] = mulhs(p_gu);
    t.gv[v] = mulhs(p_gv);
    t.bu[v] = mulhs(p_bu);
  }
  return t;
}

inline uint8_t sat_u8(int v) { return static_cast<uint8_t>(std::min(std::max(v, -128), 127) + 128); }

// One output row from a Y row and full-width U and V rows (already upsampled); `cstep` 0 or 1: chroma
// index x >> cstep.
template <int CShift>
void yuv_row(const YuvTables& t, const uint8_t* y, const uint8_t* u, const uint8_t* v, int64_t width, int ro, int bo,
             uint8_t* out) {
  for (int64_t x = 0; x < width; ++x) {
    const int yy = t.y[y[x]];
    const int uu = u[x >> CShift], vv = v[x >> CShift];
    uint8_t* o = out + 3 * x;
    o[ro] = sat_u8(yy + t.rv[vv]);
    o[1] = sat_u8(yy + t.gu[uu] + t.gv[vv]);
    o[bo] = sat_u8(yy + t.bu[uu]);
  }
}

// Horizontal chroma upsampling of one row of `cw` samples (every `step` bytes) to `width` samples.
void upsample_h(const uint8_t* c, int step, int64_t width, bool cosited, uint8_t* out) {
  for (int64_t x = 0; x < width; ++x) out[x] = c[(x >> 1) * step];  // unpack: repeat each sample
  if (cosited) {
    for (int64_t x = 1; x < width - 1; x += 2) {
      const int a = c[((x - 1) >> 1) * step], b = c[((x + 1) >> 1) * step];
      out[x] = static_cast<uint8_t>((a + b + 1) >> 1);
    }
  } else {
    for (int64_t x = 1; x < width - 1; x += 2) {
      const int a = c[((x - 1) >> 1) * step], b = c[((x + 1) >> 1) * step];
      out[x] = static_cast<uint8_t>((3 * a + b + 2) >> 2);
      out[x + 1] = static_cast<uint8_t>((a + 3 * b + 2) >> 2);
    }
  }
}

void nv12_to_rgb8(const FrameView& f, const int64_t strides[3], int ro, int bo, uint8_t* out) {
  const YuvTables t = make_yuv_tables(f.matrix, f.range);
  const int64_t w = f.width, h = f.height, ch = (h + 1) / 2;
  const bool h_cosited = f.chroma_site == ChromaSite::HCosited || f.chroma_site == ChromaSite::Cosited;
  const bool v_cosited = f.chroma_site == ChromaSite::VCosited || f.chroma_site == ChromaSite::Cosited;
  // Horizontally upsampled U and V rows for two chroma rows (slot = chroma row & 1).
  std::vector<uint8_t> buf(static_cast<std::size_t>(w) * 6);
  uint8_t* hu[2] = {buf.data(), buf.data() + w};
  uint8_t* hv[2] = {buf.data() + 2 * w, buf.data() + 3 * w};
  uint8_t* ru = buf.data() + 4 * w;
  uint8_t* rv = buf.data() + 5 * w;
  int64_t in_slot[2] = {-1, -1};
  auto chroma_row = [&](int64_t cr) {
    const int s = static_cast<int>(cr & 1);
    if (in_slot[s] != cr) {
      const uint8_t* uv = f.planes[1] + cr * strides[1];
      upsample_h(uv, 2, w, h_cosited, hu[s]);
      upsample_h(uv + 1, 2, w, h_cosited, hv[s]);
      in_slot[s] = cr;
    }
    return s;
  };
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* yrow = f.planes[0] + y * strides[0];
    const uint8_t *u, *v;
    if (v_cosited || y == 0) {
      const int s = chroma_row(y >> 1);
      u = hu[s];
      v = hv[s];
    } else {
      // Odd rows sit 1/4 of a chroma row after chroma row (y - 1) / 2, even rows 1/4 before y / 2.
      const bool odd = (y & 1) != 0;
      const int64_t ca = odd ? (y - 1) / 2 : y / 2 - 1;
      const int64_t cb = std::min(ca + 1, ch - 1);
      const int sa = chroma_row(ca), sb = chroma_row(cb);
      const uint8_t *ua = hu[sa], *ub = hu[sb], *va = hv[sa], *vb = hv[sb];
      if (odd) {
        for (int64_t x = 0; x < w; ++x) {
          ru[x] = static_cast<uint8_t>((3 * ua[x] + ub[x] + 2) >> 2);
          rv[x] = static_cast<uint8_t>((3 * va[x] + vb[x] + 2) >> 2);
        }
      } else {
        for (int64_t x = 0; x < w; ++x) {
          ru[x] = static_cast<uint8_t>((ua[x] + 3 * ub[x] + 2) >> 2);
          rv[x] = static_cast<uint8_t>((va[x] + 3 * vb[x] + 2) >> 2);
        }
      }
      u = ru;
      v = rv;
    }
    yuv_row<0>(t, yrow, u, v, w, ro, bo, out + y * w * 3);
  }
}

void i420_to_rgb8(const FrameView& f, const int64_t strides[3], int ro, int bo, uint8_t* out) {
  const YuvTables t = make_yuv_tables(f.matrix, f.range);
  const int64_t w = f.width, h = f.height;
  for (int64_t y = 0; y < h; ++y) {
    yuv_row<1>(t, f.planes[0] + y * strides[0], f.planes[1] + (y >> 1) * strides[1],
               f.planes[2] + (y >> 1) * strides[2], w, ro, bo, out + y * w * 3);
  }
}

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
    case PixelFormat::NV12: nv12_to_rgb8(f, strides, ro, bo, out); return;
    case PixelFormat::I420: i420_to_rgb8(f, strides, ro, bo, out); return;
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

void check_options(const FramePreprocessOptions& o) {
  if (o.input_format != "BGR" && o.input_format != "RGB")
    throw ConfigError("INPUT.FORMAT must be \"RGB\" or \"BGR\" for inference (DefaultPredictor asserts "
                      "input_format in [\"RGB\", \"BGR\"]), found \"" + o.input_format + "\"");
  if (o.pixel_mean.size() != o.pixel_std.size())
    throw ConfigError("MODEL.PIXEL_MEAN and MODEL.PIXEL_STD have different shapes! (" +
                      std::to_string(o.pixel_mean.size()) + " vs " + std::to_string(o.pixel_std.size()) +
                      " values)");
  if (o.pixel_mean.size() != 3)
    throw ConfigError("MODEL.PIXEL_MEAN must have one value per channel of INPUT.FORMAT \"" + o.input_format +
                      "\" (3), found " + std::to_string(o.pixel_mean.size()));
  for (std::size_t i = 0; i < 3; ++i) {
    if (o.pixel_std[i] == 0.0 || !std::isfinite(o.pixel_std[i]))
      throw ConfigError("MODEL.PIXEL_STD[" + std::to_string(i) + "] must be a non-zero finite number, found " +
                        std::to_string(o.pixel_std[i]));
    if (!std::isfinite(o.pixel_mean[i]))
      throw ConfigError("MODEL.PIXEL_MEAN[" + std::to_string(i) + "] must be finite, found " +
                        std::to_string(o.pixel_mean[i]));
  }
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

int64_t padded(int64_t size, int64_t divisibility) {
  if (divisibility <= 1) return size;
  return (size + divisibility - 1) / divisibility * divisibility;
}

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
  check_frame(frame, "frame_to_rgb8", strides);
  int ro = 0, bo = 2;
  order_offsets(order, "frame_to_rgb8", &ro, &bo);
  Tensor out = Tensor::empty({frame.height, frame.width, 3}, DType::UInt8);
  to_rgb8_into(frame, strides, ro, bo, out.data_ptr<uint8_t>());
  return out;
}

PreprocessResult preprocess_frame(const FrameView& frame, const FramePreprocessOptions& options, Tensor* output) {
  int64_t strides[3];
  check_frame(frame, "preprocess_frame", strides);
  check_options(options);
  const int64_t h = frame.height, w = frame.width;

  int64_t new_h = h, new_w = w;
  if (options.resize == ResizeMode::ShortestEdge) {
    const auto shape = resize_shortest_edge_shape(h, w, options.min_size, options.max_size);
    new_h = shape.first;
    new_w = shape.second;
  } else if (options.resize == ResizeMode::Fixed) {
    new_h = options.height;
    new_w = options.width;
  }
  const bool resize = new_h != h || new_w != w;  // PIL's resize to the same size is a copy

  // The 8-bit pixels to normalise: `src` with `ps` bytes per pixel, model channel c at byte off[c].
  const bool bgr = options.input_format == "BGR";
  const uint8_t* src = nullptr;
  int64_t stride = 0;
  int ps = 3;
  int off[3] = {0, 1, 2};
  Tensor rgb, resized;
  if (!resize && frame.format != PixelFormat::NV12 && frame.format != PixelFormat::I420) {
    // Straight from the frame.
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
    if (resize) {
      resized = resize_bilinear_pil(view, new_w, new_h);
      src = resized.data_ptr<uint8_t>();
      stride = new_w * view.channels;
    } else {
      src = view.data;
      stride = view.row_stride;
    }
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
  for (int c = 0; c < 3; ++c) {
    const float m = static_cast<float>(options.pixel_mean[static_cast<std::size_t>(c)]);
    const float s = static_cast<float>(options.pixel_std[static_cast<std::size_t>(c)]);
    for (int v = 0; v < 256; ++v) table[c][v] = (static_cast<float>(v) - m) / s;
  }

  const int64_t hp = padded(new_h, options.size_divisibility);
  const int64_t wp = padded(new_w, options.size_divisibility);
  const Shape shape{1, 3, hp, wp};
  PreprocessResult result;
  if (output != nullptr && output->defined() && output->dtype() == DType::Float32 && output->device().is_cpu() &&
      output->shape() == shape && output->is_contiguous()) {
    result.tensor = *output;
  } else {
    result.tensor = Tensor::empty(shape, DType::Float32);
  }
  float* out = result.tensor.data_ptr<float>();
  switch (ps) {
    case 1: normalize_into<1>(src, stride, new_h, new_w, off, table, hp, wp, out); break;
    case 3: normalize_into<3>(src, stride, new_h, new_w, off, table, hp, wp, out); break;
    default: normalize_into<4>(src, stride, new_h, new_w, off, table, hp, wp, out); break;
  }
  result.resized_height = new_h;
  result.resized_width = new_w;
  result.scale_y = static_cast<double>(new_h) / static_cast<double>(h);
  result.scale_x = static_cast<double>(new_w) / static_cast<double>(w);
  return result;
}

}  // namespace backbone
