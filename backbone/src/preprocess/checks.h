// SPDX-License-Identifier: Apache-2.0
// Internal: what image preprocessing and frame preprocessing share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace backbone::detail {

// INPUT.FORMAT must be BGR or RGB (DefaultPredictor's assert) and MODEL.PIXEL_MEAN / PIXEL_STD
// three finite values each, the std non-zero. Throws ConfigError saying what was found.
void check_normalization(const std::string& input_format, const std::vector<double>& pixel_mean,
                         const std::vector<double>& pixel_std);

// ImageList.from_tensors: `size` rounded up to a multiple of `divisibility` (<= 1: unchanged).
int64_t padded_size(int64_t size, int64_t divisibility);

}  // namespace backbone::detail
