// SPDX-License-Identifier: Apache-2.0
// Internal to the oneDNN engine: choices made by measuring on the machine at hand, kept in the
// tuning cache (core/tuning_cache.h) so that later processes make the same ones without measuring.
#pragma once

#include <string>

#include "engines/onednn/onednn_plan.h"

namespace backbone::detail::onednn {

// The machine part of every key: CPU model, oneDNN version and ISA, thread count.
std::string machine_key(int threads);

// Per layer: a Winograd kernel is used where it ran faster than the direct one by at least this
// fraction, and only where its output stayed within kWinogradLayerBound * max |direct output| on
// the measurement's input (seeded N(0, 1) values, the layer's own weights).
constexpr double kWinogradMinGain = 0.05;
constexpr double kWinogradLayerBound = 1e-5;

struct WinogradChoice {
  bool winograd = false;
  double direct_us = 0, winograd_us = 0, rel_err = 0;
  bool measured = false;  // measured now (false: read from the cache)
};

// Direct or Winograd for this convolution (src_md -> dst_md with `w`'s weights, sum/ReLU post-ops
// as the plan runs it): from the cache under `machine`, else measured (both primitives run on the
// same input, alternately, the best of 3 to 10 rounds each after a warm-up) and recorded.
WinogradChoice choose_winograd(const dnnl::engine& eng, const std::string& machine, const ConvW& w,
                               const dnnl::convolution_forward::primitive_desc& direct,
                               const dnnl::convolution_forward::primitive_desc& winograd, bool sum, bool relu);

}  // namespace backbone::detail::onednn
