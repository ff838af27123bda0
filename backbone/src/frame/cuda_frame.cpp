// SPDX-License-Identifier: Apache-2.0
// libbackbone's side of frame preprocessing on the GPU: the kernel's arguments, precomputed as
// preprocess_frame computes them (frame.cpp, preprocess.cpp, shared through frame_internal.h), and
// the kernel's CPU twin (the same per-pixel function, frame_pixel.h, in a host loop).
#include "frame/cuda_frame.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "backbone/error.h"
#include "frame/frame_internal.h"
#include "frame/frame_pixel.h"
#include "preprocess/checks.h"

namespace backbone::detail {
namespace {

static_assert(static_cast<int>(PixelFormat::RGB) == BACKBONE_CUDA_FRAME_RGB &&
                  static_cast<int>(PixelFormat::BGR) == BACKBONE_CUDA_FRAME_BGR &&
                  static_cast<int>(PixelFormat::RGBx) == BACKBONE_CUDA_FRAME_RGBX &&
                  static_cast<int>(PixelFormat::BGRx) == BACKBONE_CUDA_FRAME_BGRX &&
                  static_cast<int>(PixelFormat::xRGB) == BACKBONE_CUDA_FRAME_XRGB &&
                  static_cast<int>(PixelFormat::xBGR) == BACKBONE_CUDA_FRAME_XBGR &&
                  static_cast<int>(PixelFormat::RGBA) == BACKBONE_CUDA_FRAME_RGBA &&
                  static_cast<int>(PixelFormat::BGRA) == BACKBONE_CUDA_FRAME_BGRA &&
                  static_cast<int>(PixelFormat::ARGB) == BACKBONE_CUDA_FRAME_ARGB &&
                  static_cast<int>(PixelFormat::ABGR) == BACKBONE_CUDA_FRAME_ABGR &&
                  static_cast<int>(PixelFormat::NV12) == BACKBONE_CUDA_FRAME_NV12 &&
                  static_cast<int>(PixelFormat::I420) == BACKBONE_CUDA_FRAME_I420 &&
                  static_cast<int>(PixelFormat::GRAY8) == BACKBONE_CUDA_FRAME_GRAY8,
              "cuda/frame_api.h's format codes are backbone::PixelFormat's values");

}  // namespace

CudaFrameArgs make_cuda_frame_args(const FrameView& frame, const FramePreprocessOptions& options) {
  int64_t strides[3];
  check_frame(frame, "make_cuda_frame_args", strides);
  check_frame_options(options);
  if (!frame.device.is_cpu() && !frame.device.is_cuda())
    throw DeviceError("make_cuda_frame_args: expected a frame in host memory or on a cuda device, found one on " +
                      frame.device.str());
  const auto new_size = frame_resized_size(frame, options);
  const int64_t h = frame.height, w = frame.width, new_h = new_size.first, new_w = new_size.second;
  const bool resize_h = new_w != w, resize_v = new_h != h;
  if ((resize_h || resize_v) && (new_w < 1 || new_h < 1 || new_w >= kMaxPilSize || new_h >= kMaxPilSize))
    throw ShapeError("make_cuda_frame_args: resized size " + std::to_string(new_w) + "x" + std::to_string(new_h) +
                     " is out of range (each side must be in [1, 2^24))");

  CudaFrameArgs out;
  out.detail = std::make_unique<BackboneCudaFrameDetail>();
  BackboneCudaFrameDetail& d = *out.detail;
  std::memset(&d, 0, sizeof d);

  const PlaneGeometry g = plane_geometry(frame);
  d.n_planes = g.n_planes;
  for (int p = 0; p < 3; ++p) {
    d.plane_row_bytes[p] = g.row_bytes[p];
    d.plane_rows[p] = g.rows[p];
  }
  const bool yuv = frame.format == PixelFormat::NV12 || frame.format == PixelFormat::I420;
  if (yuv) {
    const YuvCoefficients k = yuv_coefficients(frame.matrix, frame.range);
    d.yuv_y = k.y;
    d.yuv_rv = k.rv;
    d.yuv_gu = k.gu;
    d.yuv_gv = k.gv;
    d.yuv_bu = k.bu;
    d.h_cosited = frame.chroma_site == ChromaSite::HCosited || frame.chroma_site == ChromaSite::Cosited;
    d.v_cosited = frame.chroma_site == ChromaSite::VCosited || frame.chroma_site == ChromaSite::Cosited;
    d.pixel_stride = 1;
  } else if (frame.format == PixelFormat::GRAY8) {
    d.pixel_stride = 1;  // offsets 0: three equal channels
  } else {
    const PackedLayout l = packed_layout(frame.format);
    d.pixel_stride = l.pixel_stride;
    d.offset_r = l.r;
    d.offset_g = l.g;
    d.offset_b = l.b;
  }
  d.bgr = options.input_format == "BGR";
  for (int c = 0; c < 3; ++c) {
    d.mean[c] = static_cast<float>(options.pixel_mean[static_cast<std::size_t>(c)]);
    d.std[c] = static_cast<float>(options.pixel_std[static_cast<std::size_t>(c)]);
  }

  // Pillow's tables for the axes that change, in one int32 array: bounds then weights, per axis.
  d.resize_h = resize_h;
  d.resize_v = resize_v;
  PilCoefficients ch, cv;
  if (resize_h) ch = pil_bilinear_coefficients(static_cast<int>(w), static_cast<int>(new_w));
  if (resize_v) cv = pil_bilinear_coefficients(static_cast<int>(h), static_cast<int>(new_h));
  const std::size_t total = ch.bounds.size() + ch.kk.size() + cv.bounds.size() + cv.kk.size();
  out.tables.reset(new int32_t[std::max<std::size_t>(total, 1)]);
  int32_t* t = out.tables.get();
  auto put = [&t](const auto& v) {
    const int32_t* start = t;
    t = std::copy(v.begin(), v.end(), t);
    return start;
  };
  if (resize_h) {
    d.h_ksize = ch.ksize;
    d.h_bounds = put(ch.bounds);
    d.h_weights = put(ch.kk);
  }
  if (resize_v) {
    d.v_ksize = cv.ksize;
    d.v_bounds = put(cv.bounds);
    d.v_weights = put(cv.kk);
  }

  BackboneCudaFrameArgs& a = out.args;
  a.format = static_cast<int32_t>(frame.format);
  a.on_device = frame.device.is_cuda() ? 1 : 0;
  a.width = w;
  a.height = h;
  for (int p = 0; p < 3; ++p) {
    a.planes[p] = p < g.n_planes ? frame.planes[p] : nullptr;
    a.strides[p] = p < g.n_planes ? strides[p] : 0;
  }
  a.resized_width = new_w;
  a.resized_height = new_h;
  a.padded_width = padded_size(new_w, options.size_divisibility);
  a.padded_height = padded_size(new_h, options.size_divisibility);
  a.detail = out.detail.get();
  a.detail_size = sizeof(BackboneCudaFrameDetail);

  out.geometry.resized_height = new_h;
  out.geometry.resized_width = new_w;
  out.geometry.scale_y = static_cast<double>(new_h) / static_cast<double>(h);
  out.geometry.scale_x = static_cast<double>(new_w) / static_cast<double>(w);
  return out;
}

std::vector<float> preprocess_frame_twin(const BackboneCudaFrameArgs& args, int64_t c_padded) {
  std::string problem = frame_pixel::check_frame_args(args, c_padded);
  if (problem.empty() && args.on_device != 0)
    problem = "on_device: expected 0 (the twin reads host planes), found " + std::to_string(args.on_device);
  if (problem.empty()) problem = frame_pixel::check_resize_tables(args);
  if (!problem.empty()) throw Error("preprocess_frame_twin: " + problem);

  const frame_pixel::Params p = frame_pixel::params_from_args(args);

  std::vector<float> out(static_cast<std::size_t>(p.padded_height * p.padded_width * c_padded), 0.0f);
  for (int64_t y = 0; y < p.padded_height; ++y)
    for (int64_t x = 0; x < p.padded_width; ++x) {
      float v[3];
      frame_pixel::output_pixel(p, x, y, v);
      float* o = out.data() + (y * p.padded_width + x) * c_padded;
      o[0] = v[0];
      o[1] = v[1];
      o[2] = v[2];
    }
  return out;
}

}  // namespace backbone::detail
