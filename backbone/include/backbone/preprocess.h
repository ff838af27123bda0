// SPDX-License-Identifier: Apache-2.0
// Test-time preprocessing as detectron2 does it (DefaultPredictor + GeneralizedRCNN.preprocess_image):
// channel order from INPUT.FORMAT, ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST) with PIL's
// bilinear resize (which smooths when it shrinks), (x - PIXEL_MEAN) / PIXEL_STD, then zero padding
// at the bottom and right to a multiple of size_divisibility.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backbone/tensor.h"

namespace backbone {

class Config;

// An 8-bit interleaved image in host memory, rows `row_stride` bytes apart.
struct ImageView {
  const uint8_t* data = nullptr;
  int64_t width = 0, height = 0, channels = 3;  // 1 (gray) or 3
  int64_t row_stride = 0;                       // bytes; 0 means width * channels
  std::string format = "BGR";                   // channel order of the data: "BGR", "RGB" or "L"
};

struct PreprocessOptions {
  std::string input_format = "BGR";                 // INPUT.FORMAT: the order the model wants
  std::vector<double> pixel_mean{103.530, 116.280, 123.675};  // MODEL.PIXEL_MEAN, in input_format order
  std::vector<double> pixel_std{1.0, 1.0, 1.0};               // MODEL.PIXEL_STD
  int64_t min_size_test = 800;                      // INPUT.MIN_SIZE_TEST; 0 disables resizing
  int64_t max_size_test = 1333;                     // INPUT.MAX_SIZE_TEST
  int64_t size_divisibility = 0;                    // pad H and W up to a multiple (0: no padding)

  // INPUT.FORMAT, MODEL.PIXEL_MEAN/STD, INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST of a detectron2 config.
  static PreprocessOptions from_config(const Config& cfg);
};

// ResizeShortestEdge.get_output_shape(oldh, oldw, short_edge_length, max_size) -> (newh, neww).
std::pair<int64_t, int64_t> resize_shortest_edge_shape(int64_t oldh, int64_t oldw, int64_t short_edge_length,
                                                       int64_t max_size);

// PIL's Image.resize((new_w, new_h), Image.BILINEAR) on 8-bit data, bit-exact (PIL's separable
// fixed-point filter with support scaled by the reduction factor). Returns HWC uint8, contiguous.
Tensor resize_bilinear_pil(const ImageView& image, int64_t new_width, int64_t new_height);

struct PreprocessResult {
  Tensor tensor;                    // [1, C, H_pad, W_pad] float32 on the CPU
  int64_t resized_height = 0, resized_width = 0;  // the image size before padding
  double scale_y = 1.0, scale_x = 1.0;            // resized / original
};

// The whole test-time pipeline for one image.
PreprocessResult preprocess(const ImageView& image, const PreprocessOptions& options);

// Normalise [N, C, H, W] float32 (x - mean) / std and zero-pad bottom/right to size_divisibility
// (ImageList.from_tensors). Returns a new tensor.
Tensor normalize_and_pad(const Tensor& images, const std::vector<double>& pixel_mean,
                         const std::vector<double>& pixel_std, int64_t size_divisibility);

}  // namespace backbone
