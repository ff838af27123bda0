// SPDX-License-Identifier: Apache-2.0
// Internal: what frame preprocessing on the CPU (frame.cpp, preprocess.cpp) shares with its GPU
// counterpart's host side (cuda_frame.cpp): frame checks and plane layout, videoconvert's fixed-point
// YUV coefficients, Pillow's bilinear resize coefficients and the output geometry. Defined in
// frame.cpp (frames) and preprocess/preprocess.cpp (resize coefficients); no CUDA header.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "backbone/frame.h"

namespace backbone::detail {

// Bytes per pixel and byte offsets of R, G and B in one pixel of a packed RGB format (RGB, BGR,
// RGBx, ..., ABGR); throws Error for other formats.
struct PackedLayout {
  int pixel_stride;  // bytes per pixel
  int r, g, b;       // byte offsets of the colour channels
};
PackedLayout packed_layout(PixelFormat f);

// Planes of a frame and the bytes of one row / the rows each holds (chroma planes of odd sizes
// round up, as GStreamer lays them out).
struct PlaneGeometry {
  int n_planes = 1;
  int64_t row_bytes[3] = {0, 0, 0};
  int64_t rows[3] = {0, 0, 0};
};
PlaneGeometry plane_geometry(const FrameView& f);

// Checks the frame as preprocess_frame does (format, size, planes, strides, colorimetry; `who` starts
// the messages) and returns its strides with 0 replaced by the tight row size. Throws ShapeError.
void check_frame(const FrameView& f, const char* who, int64_t strides[3]);

// Checks FramePreprocessOptions as preprocess_frame does. Throws ConfigError.
void check_frame_options(const FramePreprocessOptions& o);

// The size preprocess_frame resizes `frame` to (before padding): {height, width}. Options checked.
std::pair<int64_t, int64_t> frame_resized_size(const FrameView& frame, const FramePreprocessOptions& o);

// The five coefficients videoconvert's orc code uses for 8-bit YUV -> RGB: Y (same for R, G, B),
// V -> R, U -> G, V -> G, U -> B.
struct YuvCoefficients {
  int16_t y, rv, gu, gv, bu;
};
YuvCoefficients yuv_coefficients(ColorMatrix matrix, ColorRange range);

// Pillow's fixed-point bilinear weights (PRECISION_BITS fractional bits) for resizing one axis of
// in_size samples to out_size: output i sums inputs bounds[2i] .. bounds[2i] + bounds[2i + 1] - 1 with
// weights kk[i * ksize + k]; the sum starts at 1 << (PRECISION_BITS - 1) and is shifted right and
// clipped to 0..255.
constexpr int kPilPrecisionBits = 32 - 8 - 2;
constexpr int64_t kMaxPilSize = int64_t{1} << 24;  // Pillow keeps the box in float: exact below 2^24
struct PilCoefficients {
  int ksize = 0;
  std::vector<int> bounds;  // per output index: first input index, number of inputs
  std::vector<int32_t> kk;  // per output index: ksize fixed-point weights
};
PilCoefficients pil_bilinear_coefficients(int in_size, int out_size);

}  // namespace backbone::detail
