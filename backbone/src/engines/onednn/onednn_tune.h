// SPDX-License-Identifier: Apache-2.0
// Internal to the oneDNN engine: choices made by measuring on the machine at hand, kept in the
// tuning cache (core/tuning_cache.h) so that later processes make the same ones without measuring.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <utility>

#include "engines/onednn/onednn_plan.h"

namespace backbone::detail::onednn {

// oneDNN's name of the ISA it dispatches to ("avx512_core_bf16", ...; "generic" for others).
const char* isa_name(dnnl::cpu_isa isa);
bool has_avx512(dnnl::cpu_isa isa);

// max |out - ref| / max |ref| over n values (max |out - ref| where ref is all zero; infinity where
// a difference is NaN).
double relative_max_diff(const float* ref, const float* out, size_t n);

// Times `a` and `b` (each returns its own time) in alternated rounds, `a` first in even rounds and
// `b` first in odd ones: at least 3 rounds, more (up to 10) while the rounds together took less
// than `budget` (in the functions' unit). The best time of each, {a, b}.
std::pair<double, double> best_of_alternated(const std::function<double()>& a, const std::function<double()>& b,
                                             double budget);

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
};

// Direct or Winograd for this convolution (src_md -> dst_md with `w`'s weights, sum/ReLU post-ops
// as the plan runs it): from the cache under `machine`, else measured (both primitives run on the
// same input, alternately, the best of 3 to 10 rounds each after a warm-up) and recorded.
WinogradChoice choose_winograd(const dnnl::engine& eng, const std::string& machine, const ConvW& w,
                               const dnnl::convolution_forward::primitive_desc& direct,
                               const dnnl::convolution_forward::primitive_desc& winograd, bool sum, bool relu);

}  // namespace backbone::detail::onednn
