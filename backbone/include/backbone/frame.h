// SPDX-License-Identifier: Apache-2.0
// Video frames to network input, without GStreamer: packed RGB/BGR with or without alpha/padding,
// NV12, I420 and GRAY8 in host memory, with the colorimetry (matrix, range) of YUV formats,
// converted to the model's channel order, resized (none / detectron2's ResizeShortestEdge with
// PIL's bilinear filter / fixed size), normalised and zero-padded to a size divisibility.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backbone/preprocess.h"
#include "backbone/tensor.h"

namespace backbone {

enum class PixelFormat { RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, ARGB, ABGR, NV12, I420, GRAY8 };

// "RGB", "BGRx", "NV12", ... as GStreamer names them; throws Error for an unknown name.
PixelFormat pixel_format_from_name(const std::string& name);
const char* pixel_format_name(PixelFormat format);

// YUV -> RGB matrix (GstVideoColorMatrix's BT601, BT709, BT2020; FCC and SMPTE240M as their own).
enum class ColorMatrix { BT601, BT709, BT2020, FCC, SMPTE240M };
// Limited: Y in 16..235, UV in 16..240. Full: 0..255.
enum class ColorRange { Limited, Full };

// Where the chroma samples of NV12 sit relative to the luma samples (GstVideoChromaSite), which
// decides how videoconvert interpolates them: Center for "jpeg", "none" or no chroma-site in the
// caps (GST_VIDEO_CHROMA_SITE_UNKNOWN/NONE), HCosited for "mpeg2", VCosited for "v-cosited",
// Cosited for "cosited" and "dv". I420 ignores it (see frame_to_rgb8).
enum class ChromaSite { Center, HCosited, VCosited, Cosited };

// "jpeg", "mpeg2", "cosited", ... as gst_video_chroma_site_to_string() names them (also "unknown",
// "none", "h-cosited", "v-cosited", "dv"); throws Error for an unknown name.
ChromaSite chroma_site_from_name(const std::string& name);

// One frame in host memory, or in CUDA memory (device cuda:N; only Engine::forward_frame of the cuda
// engine reads those). planes/strides as GstVideoFrame gives them (bytes).
struct FrameView {
  PixelFormat format = PixelFormat::RGB;
  Device device = Device::cpu();  // where planes point
  int64_t width = 0, height = 0;
  const uint8_t* planes[3] = {nullptr, nullptr, nullptr};
  int64_t strides[3] = {0, 0, 0};
  ColorMatrix matrix = ColorMatrix::BT601;  // YUV formats only
  ColorRange range = ColorRange::Limited;   // YUV formats only
  ChromaSite chroma_site = ChromaSite::Center;  // NV12 only
};
// A stride of 0 means tightly packed rows (width * bytes per pixel; NV12's UV plane 2 * ((width + 1) / 2),
// I420's U and V planes (width + 1) / 2). Chroma planes of odd sizes have (width + 1) / 2 columns and
// (height + 1) / 2 rows, as GStreamer lays them out.

enum class ResizeMode {
  None,          // keep the frame size
  ShortestEdge,  // detectron2's test-time ResizeShortestEdge(min_size, max_size), PIL bilinear
  Fixed,         // exactly width x height, PIL bilinear
};

struct FramePreprocessOptions {
  std::string input_format = "BGR";                           // INPUT.FORMAT: the order the model wants
  std::vector<double> pixel_mean{103.530, 116.280, 123.675};  // in input_format order
  std::vector<double> pixel_std{1.0, 1.0, 1.0};
  ResizeMode resize = ResizeMode::None;
  int64_t min_size = 800, max_size = 1333;  // ShortestEdge
  int64_t width = 0, height = 0;            // Fixed
  int64_t size_divisibility = 0;
};

// Converts `frame` to 8-bit interleaved pixels in `order` ("RGB" or "BGR"): YUV through the frame's
// matrix and range (as GStreamer's videoconvert does, rounded to nearest), GRAY8 as three equal
// channels, alpha and padding bytes dropped. Returns [H, W, 3] uint8.
// YUV is bit-exact with GStreamer 1.22's `videoconvert ! video/x-raw,format=RGB` (its 8-bit fixed-point
// matrix): I420 through videoconvert's I420 -> RGB fast path, which repeats each chroma sample over its
// 2x2 block; NV12 through its generic path, which interpolates chroma linearly (3:1 taps, horizontal
// pass first) as `chroma_site` places it.
Tensor frame_to_rgb8(const FrameView& frame, const std::string& order);

// The whole path for one frame: frame_to_rgb8 -> resize -> (x - mean) / std -> zero padding.
// `output`, when given and of the right shape (float32 [1, 3, H, W] on the CPU), is written in place
// and returned (so a caller can recycle storage); otherwise a new tensor is allocated (`*output` is
// left untouched). Throws ConfigError for invalid options, ShapeError for an invalid frame.
PreprocessResult preprocess_frame(const FrameView& frame, const FramePreprocessOptions& options,
                                  Tensor* output = nullptr);

}  // namespace backbone
