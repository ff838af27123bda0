// SPDX-License-Identifier: Apache-2.0
// Internal: one output pixel of frame preprocessing on the GPU, as a function that both the CUDA
// kernel (ops/cuda/preprocess_kernel.cu, __host__ __device__ under nvcc) and its CPU twin
// (frame/cuda_frame.cpp: detail::preprocess_frame_twin) call, so that they compute the same thing
// in the same integer and float steps. No CUDA header: libbackbone includes it too.
//
// The steps are those of preprocess_frame (frame.cpp, preprocess.cpp), one pixel at a time:
//  * a source pixel to 8-bit R, G, B: packed formats pick bytes, GRAY8 repeats its byte, YUV goes
//    through videoconvert's fixed-point matrix (splat / mulhs / saturate), I420 with chroma sample
//    (x / 2, y / 2), NV12 with its chroma interpolated as frame_to_rgb8 does (horizontal 3:1 or
//    co-sited taps within each chroma row, then 3:1 between rows or the nearest row when co-sited);
//  * PIL's bilinear resize: when both axes change, each vertical tap is a horizontal pass over the
//    source row, rounded and clipped to 8 bits (Pillow's intermediate image), then the vertical sum
//    is rounded and clipped; an axis that keeps its size has no pass;
//  * (x - mean) / std in float32 (correctly rounded subtraction and division, as the CPU's table);
//  * zero outside the resized image (padding).
// Whether the CPU twin equals preprocess_frame is tested independently (tests/backbone/cuda_frame_test.cpp).
#pragma once

#include <stdint.h>

#include <string>

#include "cuda/frame_api.h"

#if defined(__CUDACC__)
#define BACKBONE_FRAME_HD __host__ __device__ __forceinline__
#else
#define BACKBONE_FRAME_HD inline
#endif

namespace backbone::frame_pixel {

// Everything one output pixel needs. Plane and table pointers are in the memory of whoever computes
// (host for the twin, device for the kernel).
struct Params {
  int32_t format = 0;
  int64_t width = 0, height = 0;
  const uint8_t* planes[3] = {nullptr, nullptr, nullptr};
  int64_t strides[3] = {0, 0, 0};
  int64_t resized_width = 0, resized_height = 0;
  int64_t padded_width = 0, padded_height = 0;
  BackboneCudaFrameDetail d{};  // table pointers as the planes
};

constexpr int kPrecisionBits = 22;  // Pillow's PRECISION_BITS (32 - 8 - 2)

// The signed word whose two bytes are both (v - 128) (orc's splatbw after subb 128).
BACKBONE_FRAME_HD int32_t splat(int32_t v) {
  const uint32_t b = static_cast<uint32_t>(v ^ 0x80) & 0xffu;
  return static_cast<int32_t>(static_cast<int16_t>(static_cast<uint16_t>(b * 257u)));
}
// (a * p) >> 16 (orc's mulhsw), a and p in int16 range: the product fits in int32, the result in int16.
// The shift is arithmetic (floor), as on the CPU path.
BACKBONE_FRAME_HD int32_t mulhs(int32_t a, int32_t p) { return (a * p) >> 16; }
// 128 + saturate to int8 (convssswb, addb 128).
BACKBONE_FRAME_HD int32_t sat_u8(int32_t v) { return (v < -128 ? -128 : (v > 127 ? 127 : v)) + 128; }
// Pillow's clip8: the fixed-point sum to 0..255.
BACKBONE_FRAME_HD int32_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;
  return v < 0 ? 0 : (v > 255 ? 255 : v);
}

// Sample i of component `comp` (0: U, 1: V) of NV12's interleaved chroma row, upsampled horizontally
// to luma column x as frame.cpp's upsample_h does: pixel 0 keeps sample 0; between samples a = c[i] and
// b = c[i + 1], pixels 2i + 1 and 2i + 2 are (3a + b + 2) >> 2 and (a + 3b + 2) >> 2, or co-sited
// (a + b + 1) >> 1 and b; for an even width the last pixel keeps sample width / 2 - 1.
BACKBONE_FRAME_HD int32_t nv12_chroma_h(const Params& p, int64_t chroma_row, int64_t x, int comp) {
  const uint8_t* row = p.planes[1] + chroma_row * p.strides[1] + comp;
  if (x == 0) return row[0];
  const int64_t n = (p.width - 1) / 2;  // interpolated pairs
  if (x & 1) {
    const int64_t i = (x - 1) / 2;
    const int32_t a = row[2 * i];
    if (i >= n) return a;  // x == width - 1 of an even width
    const int32_t b = row[2 * i + 2];
    return p.d.h_cosited ? (a + b + 1) >> 1 : (3 * a + b + 2) >> 2;
  }
  const int64_t i = x / 2 - 1;  // < n for every even x >= 2 inside the row
  const int32_t a = row[2 * i], b = row[2 * i + 2];
  return p.d.h_cosited ? b : (a + 3 * b + 2) >> 2;
}

// NV12 chroma at luma pixel (x, y): the nearest chroma row when co-sited vertically (and on row 0),
// else (3 * near + far + 2) >> 2 of the horizontally upsampled rows around it (odd rows: 1/4 after
// row (y - 1) / 2, even rows: 1/4 before row y / 2; the last row repeats).
BACKBONE_FRAME_HD int32_t nv12_chroma(const Params& p, int64_t x, int64_t y, int comp) {
  if (p.d.v_cosited || y == 0) return nv12_chroma_h(p, y >> 1, x, comp);
  const int64_t chroma_rows = (p.height + 1) / 2;
  const bool odd = (y & 1) != 0;
  const int64_t ca = odd ? (y - 1) / 2 : y / 2 - 1;
  const int64_t cb = ca + 1 < chroma_rows ? ca + 1 : chroma_rows - 1;
  const int32_t near = nv12_chroma_h(p, odd ? ca : cb, x, comp);
  const int32_t far = nv12_chroma_h(p, odd ? cb : ca, x, comp);
  return (3 * near + far + 2) >> 2;
}

// Source pixel (x, y) as 8-bit values in the model's channel order.
BACKBONE_FRAME_HD void load_pixel(const Params& p, int64_t x, int64_t y, int32_t out[3]) {
  int32_t r, g, b;
  if (p.format == BACKBONE_CUDA_FRAME_NV12 || p.format == BACKBONE_CUDA_FRAME_I420) {
    const int32_t luma = p.planes[0][y * p.strides[0] + x];
    int32_t u, v;
    if (p.format == BACKBONE_CUDA_FRAME_I420) {
      u = p.planes[1][(y >> 1) * p.strides[1] + (x >> 1)];
      v = p.planes[2][(y >> 1) * p.strides[2] + (x >> 1)];
    } else {
      u = nv12_chroma(p, x, y, 0);
      v = nv12_chroma(p, x, y, 1);
    }
    const int32_t wy = mulhs(splat(luma), p.d.yuv_y);
    const int32_t wu = splat(u), wv = splat(v);
    r = sat_u8(wy + mulhs(wv, p.d.yuv_rv));
    g = sat_u8(wy + mulhs(wu, p.d.yuv_gu) + mulhs(wv, p.d.yuv_gv));
    b = sat_u8(wy + mulhs(wu, p.d.yuv_bu));
  } else {
    const uint8_t* px = p.planes[0] + y * p.strides[0] + x * p.d.pixel_stride;
    r = px[p.d.offset_r];
    g = px[p.d.offset_g];
    b = px[p.d.offset_b];
  }
  out[0] = p.d.bgr ? b : r;
  out[1] = g;
  out[2] = p.d.bgr ? r : b;
}

// Pillow's horizontal pass at output column ox over source row y (8-bit result).
BACKBONE_FRAME_HD void horizontal_pass(const Params& p, int64_t ox, int64_t y, int32_t out[3]) {
  const int32_t xmin = p.d.h_bounds[2 * ox], nx = p.d.h_bounds[2 * ox + 1];
  const int32_t* k = p.d.h_weights + ox * p.d.h_ksize;
  int32_t acc[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
  for (int32_t i = 0; i < nx; ++i) {
    int32_t v[3];
    load_pixel(p, xmin + i, y, v);
    for (int c = 0; c < 3; ++c) acc[c] += v[c] * k[i];
  }
  for (int c = 0; c < 3; ++c) out[c] = clip8(acc[c]);
}

// The resized image's pixel (ox, oy), 8-bit, model channel order (ox < resized_width, oy < resized_height).
BACKBONE_FRAME_HD void resized_pixel(const Params& p, int64_t ox, int64_t oy, int32_t out[3]) {
  if (!p.d.resize_v) {
    if (p.d.resize_h)
      horizontal_pass(p, ox, oy, out);
    else
      load_pixel(p, ox, oy, out);
    return;
  }
  const int32_t ymin = p.d.v_bounds[2 * oy], ny = p.d.v_bounds[2 * oy + 1];
  const int32_t* k = p.d.v_weights + oy * p.d.v_ksize;
  int32_t acc[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
  for (int32_t i = 0; i < ny; ++i) {
    int32_t v[3];
    if (p.d.resize_h)
      horizontal_pass(p, ox, ymin + i, v);  // Pillow's intermediate 8-bit image
    else
      load_pixel(p, ox, ymin + i, v);
    for (int c = 0; c < 3; ++c) acc[c] += v[c] * k[i];
  }
  for (int c = 0; c < 3; ++c) out[c] = clip8(acc[c]);
}

// (v - mean) / std in float32, each operation correctly rounded (the CPU's float table).
BACKBONE_FRAME_HD float normalize(int32_t v, float mean, float std) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(__fsub_rn(static_cast<float>(v), mean), std);
#else
  return (static_cast<float>(v) - mean) / std;
#endif
}

// Output pixel (ox, oy) of the padded network input, model channel order: the normalised resized
// pixel, or zeros in the padding.
BACKBONE_FRAME_HD void output_pixel(const Params& p, int64_t ox, int64_t oy, float out[3]) {
  if (ox >= p.resized_width || oy >= p.resized_height) {
    out[0] = out[1] = out[2] = 0.0f;
    return;
  }
  int32_t v[3];
  resized_pixel(p, ox, oy, v);
  for (int c = 0; c < 3; ++c) out[c] = normalize(v[c], p.d.mean[c], p.d.std[c]);
}

// ---------------------------------------------------------------------------------------------
// Host-side checks shared by the twin and the module (which gets the arguments through a C API).

inline const char* frame_format_name(int32_t format) {
  static const char* const names[] = {"RGB",  "BGR",  "RGBx", "BGRx", "xRGB", "xBGR", "RGBA",
                                      "BGRA", "ARGB", "ABGR", "NV12", "I420", "GRAY8"};
  return format >= 0 && format <= BACKBONE_CUDA_FRAME_GRAY8 ? names[format] : "unknown";
}

// "" when the kernel can run `a` with c_padded output channels, else "<field>: expected ..., found
// ..." for the first thing that is wrong. Reads the detail struct but neither the planes nor the
// resize tables (check_resize_tables).
inline std::string check_frame_args(const BackboneCudaFrameArgs& a, int64_t c_padded) {
  using std::to_string;
  constexpr int64_t kMaxSide = int64_t{1} << 24;
  if (a.detail == nullptr || a.detail_size != sizeof(BackboneCudaFrameDetail))
    return "detail: expected a BackboneCudaFrameDetail of " + to_string(sizeof(BackboneCudaFrameDetail)) +
           " bytes, found " + (a.detail == nullptr ? std::string("null") : to_string(a.detail_size) + " bytes");
  const BackboneCudaFrameDetail& d = *static_cast<const BackboneCudaFrameDetail*>(a.detail);
  if (a.format < 0 || a.format > BACKBONE_CUDA_FRAME_GRAY8)
    return "format: expected one of RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR, NV12, I420, GRAY8 "
           "(0 to 12), found " + to_string(a.format);
  const std::string fmt = std::string(frame_format_name(a.format)) + " frame: ";
  if (a.on_device != 0 && a.on_device != 1) return "on_device: expected 0 or 1, found " + to_string(a.on_device);
  if (a.width <= 0 || a.height <= 0 || a.width >= kMaxSide || a.height >= kMaxSide)
    return fmt + "size: expected width and height in [1, 2^24), found " + to_string(a.width) + "x" + to_string(a.height);
  if (a.resized_width <= 0 || a.resized_height <= 0 || a.resized_width >= kMaxSide || a.resized_height >= kMaxSide)
    return "resized size: expected width and height in [1, 2^24), found " + to_string(a.resized_width) + "x" +
           to_string(a.resized_height);
  if (a.padded_width < a.resized_width || a.padded_height < a.resized_height || a.padded_width >= 2 * kMaxSide ||
      a.padded_height >= 2 * kMaxSide)
    return "padded size: expected at least the resized size " + to_string(a.resized_width) + "x" +
           to_string(a.resized_height) + " (each side below 2^25), found " + to_string(a.padded_width) + "x" +
           to_string(a.padded_height);
  if (c_padded < 3 || c_padded > 1024) return "channels: expected 3 to 1024, found " + to_string(c_padded);

  const bool nv12 = a.format == BACKBONE_CUDA_FRAME_NV12, i420 = a.format == BACKBONE_CUDA_FRAME_I420;
  const bool gray = a.format == BACKBONE_CUDA_FRAME_GRAY8;
  const int32_t ps = (nv12 || i420 || gray) ? 1 : (a.format <= BACKBONE_CUDA_FRAME_BGR ? 3 : 4);
  const int expected_planes = nv12 ? 2 : (i420 ? 3 : 1);
  if (d.n_planes != expected_planes)
    return fmt + "planes: expected " + to_string(expected_planes) + ", found " + to_string(d.n_planes);
  const int64_t cw = (a.width + 1) / 2, ch = (a.height + 1) / 2;
  for (int p = 0; p < expected_planes; ++p) {
    const int64_t row_bytes = p == 0 ? a.width * ps : (nv12 ? 2 * cw : cw);
    const int64_t rows = p == 0 ? a.height : ch;
    if (a.planes[p] == nullptr) return fmt + "plane " + to_string(p) + ": expected a pointer, found null";
    if (d.plane_row_bytes[p] != row_bytes || d.plane_rows[p] != rows)
      return fmt + "plane " + to_string(p) + ": expected " + to_string(rows) + " rows of " + to_string(row_bytes) +
             " bytes, found " + to_string(d.plane_rows[p]) + " rows of " + to_string(d.plane_row_bytes[p]) + " bytes";
    if (a.strides[p] < row_bytes)
      return fmt + "plane " + to_string(p) + " stride: expected at least " + to_string(row_bytes) + " bytes, found " +
             to_string(a.strides[p]);
  }
  if (nv12 || i420) {
    const int32_t k[5] = {d.yuv_y, d.yuv_rv, d.yuv_gu, d.yuv_gv, d.yuv_bu};
    for (int i = 0; i < 5; ++i)
      if (k[i] < -32768 || k[i] > 32767)
        return fmt + "YUV coefficient " + to_string(i) + ": expected an int16, found " + to_string(k[i]);
  } else {
    const int32_t off[3] = {d.offset_r, d.offset_g, d.offset_b};
    if (d.pixel_stride != ps)
      return fmt + "pixel stride: expected " + to_string(ps) + ", found " + to_string(d.pixel_stride);
    for (int i = 0; i < 3; ++i)
      if (off[i] < 0 || off[i] >= ps)
        return fmt + "channel offset " + to_string(i) + ": expected 0 to " + to_string(ps - 1) + ", found " +
               to_string(off[i]);
  }
  const int32_t resize_h = a.resized_width != a.width, resize_v = a.resized_height != a.height;
  if (d.resize_h != resize_h || d.resize_v != resize_v)
    return "resize passes: expected horizontal " + to_string(resize_h) + " and vertical " + to_string(resize_v) +
           " for " + to_string(a.width) + "x" + to_string(a.height) + " -> " + to_string(a.resized_width) + "x" +
           to_string(a.resized_height) + ", found " + to_string(d.resize_h) + " and " + to_string(d.resize_v);
  if (resize_h && (d.h_ksize < 1 || d.h_bounds == nullptr || d.h_weights == nullptr))
    return "horizontal resize: expected tables and a kernel size >= 1, found size " + to_string(d.h_ksize) +
           (d.h_bounds == nullptr || d.h_weights == nullptr ? " and a null table" : "");
  if (resize_v && (d.v_ksize < 1 || d.v_bounds == nullptr || d.v_weights == nullptr))
    return "vertical resize: expected tables and a kernel size >= 1, found size " + to_string(d.v_ksize) +
           (d.v_bounds == nullptr || d.v_weights == nullptr ? " and a null table" : "");
  return "";
}

// "" when the resize tables of `a` (host memory; check_frame_args passed) read only inside the
// frame: every output index sums 0 to ksize inputs within [0, size). Else what is wrong.
inline std::string check_resize_tables(const BackboneCudaFrameArgs& a) {
  using std::to_string;
  const BackboneCudaFrameDetail& d = *static_cast<const BackboneCudaFrameDetail*>(a.detail);
  for (int axis = 0; axis < 2; ++axis) {
    if (!(axis == 0 ? d.resize_h : d.resize_v)) continue;
    const int32_t* bounds = axis == 0 ? d.h_bounds : d.v_bounds;
    const int64_t in = axis == 0 ? a.width : a.height, out = axis == 0 ? a.resized_width : a.resized_height;
    const int32_t ksize = axis == 0 ? d.h_ksize : d.v_ksize;
    for (int64_t i = 0; i < out; ++i) {
      const int64_t first = bounds[2 * i], n = bounds[2 * i + 1];
      if (first < 0 || n < 0 || n > ksize || first + n > in)
        return std::string(axis == 0 ? "horizontal" : "vertical") + " resize table, output " + to_string(i) +
               ": expected at most " + to_string(ksize) + " inputs within [0, " + to_string(in) + "), found " +
               to_string(n) + " from " + to_string(first);
    }
  }
  return "";
}

// The Params of `a` (check_frame_args passed): its planes, strides, sizes and detail struct as they
// are (the kernel's launcher then points planes and tables at device copies where it made them).
inline Params params_from_args(const BackboneCudaFrameArgs& a) {
  Params p;
  p.format = a.format;
  p.width = a.width;
  p.height = a.height;
  for (int i = 0; i < 3; ++i) {
    p.planes[i] = a.planes[i];
    p.strides[i] = a.strides[i];
  }
  p.resized_width = a.resized_width;
  p.resized_height = a.resized_height;
  p.padded_width = a.padded_width;
  p.padded_height = a.padded_height;
  p.d = *static_cast<const BackboneCudaFrameDetail*>(a.detail);
  return p;
}

}  // namespace backbone::frame_pixel
