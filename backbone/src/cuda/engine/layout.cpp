// SPDX-License-Identifier: Apache-2.0
#include "cuda/engine/layout.h"

#include <algorithm>
#include <climits>

namespace backbone::cuda_module {
namespace {

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

}  // namespace

std::vector<int32_t> last_reads(const BackboneCudaNetDesc& net) {
  std::vector<int32_t> last(static_cast<size_t>(net.num_values), -1);
  for (int32_t i = 0; i < net.num_layers; ++i) {
    const BackboneCudaLayer& l = net.layers[i];
    for (int32_t v : {l.input, l.residual, l.aux})
      if (v >= 0) last[static_cast<size_t>(v)] = i;
  }
  for (int32_t i = 0; i < net.num_outputs; ++i) last[static_cast<size_t>(net.outputs[i])] = INT32_MAX;
  return last;
}

std::vector<int64_t> stored_channels(const BackboneCudaNetDesc& net, const std::vector<int64_t>& channels,
                                     int64_t align) {
  const size_t nv = static_cast<size_t>(net.num_values);
  std::vector<int64_t> stored = channels;
  std::vector<bool> plain_read(nv, false), aux_read(nv, false), pad_input_ok(nv, true);
  for (int32_t i = 0; i < net.num_layers; ++i) {
    const BackboneCudaLayer& l = net.layers[i];
    plain_read[static_cast<size_t>(l.input)] = true;
    if (l.residual >= 0) plain_read[static_cast<size_t>(l.residual)] = true;
    // Only a deformable convolution reads its aux (the offsets) with extra channels ignored; the FPN's
    // UPSAMPLE_ADD reads the coarser level channel for channel with its input.
    if (l.aux >= 0) {
      const bool offsets = l.kind == BACKBONE_CUDA_LAYER_DEFORM_CONV;
      (offsets ? aux_read : plain_read)[static_cast<size_t>(l.aux)] = true;
      if (!offsets) pad_input_ok[static_cast<size_t>(l.aux)] = false;
    }
    // Zero channels added to an input are harmless only for an ungrouped convolution (zero weights).
    if (!(l.kind == BACKBONE_CUDA_LAYER_CONV && l.groups == 1) || l.residual == l.input)
      pad_input_ok[static_cast<size_t>(l.input)] = false;
    // A residual operand is read with the output's (unpadded) channels.
    if (l.residual >= 0) pad_input_ok[static_cast<size_t>(l.residual)] = false;
  }
  for (int32_t i = 0; i < net.num_outputs; ++i) plain_read[static_cast<size_t>(net.outputs[i])] = true;
  if (pad_input_ok[0]) stored[0] = round_up(channels[0], align);
  for (int32_t i = 0; i < net.num_layers; ++i) {
    const BackboneCudaLayer& l = net.layers[i];
    const size_t v = static_cast<size_t>(l.output);
    // Not with a residual: z has the output's shape in cuDNN's fused call, the residual does not.
    if (l.kind == BACKBONE_CUDA_LAYER_CONV && l.residual < 0 && aux_read[v] && !plain_read[v])
      stored[v] = round_up(channels[v], align);
  }
  return stored;
}

std::vector<float> filter_to_nhwc(const float* weight, int64_t out, int64_t in, int64_t groups, int64_t kernel,
                                  int64_t out_stored, int64_t in_stored) {
  const int64_t k = kernel, in_g = in / groups, in_sg = in_stored / groups;
  std::vector<float> w(static_cast<size_t>(out_stored * k * k * in_sg), 0.0f);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < in_g; ++c)
      for (int64_t y = 0; y < k; ++y)
        for (int64_t x = 0; x < k; ++x)
          w[static_cast<size_t>(((o * k + y) * k + x) * in_sg + c)] = weight[((o * in_g + c) * k + y) * k + x];
  return w;
}

BufferPlan assign_buffers(const BackboneCudaNetDesc& net, const std::vector<std::size_t>& bytes,
                          const std::vector<int32_t>& last_read) {
  BufferPlan p;
  p.slot_of.assign(static_cast<size_t>(net.num_values), -1);
  std::vector<bool> slot_free;
  auto take = [&](size_t v) {
    const std::size_t need = std::max<std::size_t>(bytes[v], 256);
    int best = -1;
    for (size_t s = 0; s < p.slot_bytes.size(); ++s) {
      if (!slot_free[s]) continue;
      if (best < 0) {
        best = static_cast<int>(s);
        continue;
      }
      const std::size_t b = p.slot_bytes[static_cast<size_t>(best)], c = p.slot_bytes[s];
      const bool s_fits = c >= need, best_fits = b >= need;
      if ((s_fits && (!best_fits || c < b)) || (!s_fits && !best_fits && c > b)) best = static_cast<int>(s);
    }
    if (best < 0) {
      p.slot_bytes.push_back(need);
      slot_free.push_back(false);
      best = static_cast<int>(p.slot_bytes.size() - 1);
    }
    p.slot_bytes[static_cast<size_t>(best)] = std::max(p.slot_bytes[static_cast<size_t>(best)], need);
    slot_free[static_cast<size_t>(best)] = false;
    p.slot_of[v] = best;
  };
  take(0);
  for (int32_t i = 0; i < net.num_layers; ++i) {
    const BackboneCudaLayer& l = net.layers[i];
    take(static_cast<size_t>(l.output));
    for (int32_t v : {l.input, l.residual, l.aux})
      if (v >= 0 && last_read[static_cast<size_t>(v)] == i) slot_free[static_cast<size_t>(p.slot_of[static_cast<size_t>(v)])] = true;
    // A value no layer reads and no output names (never in a valid ResNet) frees at once.
    if (last_read[static_cast<size_t>(l.output)] < 0)
      slot_free[static_cast<size_t>(p.slot_of[static_cast<size_t>(l.output)])] = true;
  }
  return p;
}

}  // namespace backbone::cuda_module
