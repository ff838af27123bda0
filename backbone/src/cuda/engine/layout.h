// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module's engine, host only (no CUDA header, no CUDA call): how a network
// description is laid out on the device. Which values are stored with padded channels, the filter
// layout cuDNN reads, and which activation buffer each value of a plan lives in. Compiled into the
// module and into cuda_engine_test, which checks it on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cuda/module_api.h"

namespace backbone::cuda_module {

// Per value, the last layer reading it (input, residual or aux); INT32_MAX for the net's outputs
// (read after the layers), -1 for a value nothing reads.
std::vector<int32_t> last_reads(const BackboneCudaNetDesc& net);

// Per value, the channels as stored: `channels` (per value, logical), except value 0 (the network
// input) rounded up to `align` when only ungrouped convolutions read it and never as a residual (the
// stem: 3 -> 4 or 8, zero weights on the extra channels), and the output of a convolution without a
// residual read only as a deformable convolution's offsets (its extra channels are zero: zero weights
// and bias; the kernel ignores them). Values an UPSAMPLE_ADD reads (input and coarser level) keep
// their channels.
std::vector<int64_t> stored_channels(const BackboneCudaNetDesc& net, const std::vector<int64_t>& channels,
                                     int64_t align);

// OIHW float32 [out][in / groups][k][k] -> cuDNN's NHWC filter [out_stored][k][k][in_stored / groups]
// (out_stored >= out, in_stored >= in, extra entries zero; padding the input needs groups == 1).
std::vector<float> filter_to_nhwc(const float* weight, int64_t out, int64_t in, int64_t groups, int64_t kernel,
                                  int64_t out_stored, int64_t in_stored);

// Activation buffers of a plan: value v (bytes[v]) lives in slot_of[v]. Values are placed in order
// (value 0, then each layer's output); a value takes a free slot (the smallest big enough, else the
// largest free one, grown) and frees it after the layer that reads it last; a layer's output never
// shares a slot with what the layer reads, and outputs (last read INT32_MAX) keep theirs.
struct BufferPlan {
  std::vector<int> slot_of;             // per value
  std::vector<std::size_t> slot_bytes;  // per slot
};
BufferPlan assign_buffers(const BackboneCudaNetDesc& net, const std::vector<std::size_t>& bytes,
                          const std::vector<int32_t>& last_read);

}  // namespace backbone::cuda_module
