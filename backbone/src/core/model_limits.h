// SPDX-License-Identifier: Apache-2.0
// Internal: the bounds every ResNet respects, whether a config or the ResNet API describes it
// (README.md, "Limits"). They keep a hostile config from asking for memory the host does not
// have, and every product of them within int64.
#pragma once

#include <cstdint>

namespace backbone::detail {

// Channels of any layer (input, output, bottleneck, offsets). detectron2's widest is 2048.
constexpr int64_t kMaxChannels = 65536;
// Stride, dilation and padding of any convolution.
constexpr int64_t kMaxConvGeometry = 1024;
// Parameters (weights, biases, norm parameters and statistics) of one layer and of the whole
// model: 2^28, 1 GiB in float32. detectron2's largest ResNet (X-152-32x8d) has about 0.12 G.
constexpr int64_t kMaxModelParameters = int64_t{1} << 28;

}  // namespace backbone::detail
