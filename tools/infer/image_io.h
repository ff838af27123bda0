// SPDX-License-Identifier: Apache-2.0
// backbone-infer's image reading: the size is read from the file's header and checked against a
// limit before any pixel is decoded, so that a small file cannot ask for gigabytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace infer {

// The default of --max-image-pixels: 2^26 pixels (e.g. 8192 x 8192, 192 MiB decoded as BGR).
constexpr int64_t kDefaultMaxImagePixels = int64_t{1} << 26;

struct ImageSize {
  int64_t width = 0, height = 0;
  std::string format;  // "PNG", "JPEG", "BMP", "TIFF", "WebP", "PNM", "PFM", "Sun raster", "Radiance HDR"
};

// Width and height from the header of `path`, without decoding it. Throws std::runtime_error
// naming the file when it cannot be read, is not one of the formats above, or its header is
// truncated or malformed.
ImageSize read_image_size(const std::string& path);

// read_image_size, then both sides positive and width * height <= max_pixels; throws
// std::runtime_error naming the file, the size found and the limit.
ImageSize check_image_size(const std::string& path, int64_t max_pixels);

struct BgrImage {
  std::vector<uint8_t> pixels;  // rows of width * 3 bytes, B, G, R
  int64_t width = 0, height = 0;
};

// check_image_size, then decodes the image as 8-bit BGR with OpenCV. Throws std::runtime_error
// naming the file (and the size found and the limit).
BgrImage read_image_bgr(const std::string& path, int64_t max_pixels);

}  // namespace infer
