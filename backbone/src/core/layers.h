// SPDX-License-Identifier: Apache-2.0
// Internal: detectron2.layers' Conv2d and get_norm as resnet.cpp and fpn.cpp build them.
#pragma once

#include <string>

#include "backbone/resnet.h"

namespace backbone::detail {

// get_norm(kind, channels) with identity parameters (FrozenBN: running_var 1 - eps). ConfigError
// for an unknown kind or GN channels not divisible by 32.
Norm make_norm(const std::string& kind, int64_t channels);

// detectron2.layers.Conv2d with zero weights, every size checked (ConfigError naming it).
Conv2d make_conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, int64_t dilation, int64_t groups,
                 bool bias, const std::string& norm);

// Visits a convolution's state_dict slots: prefix.weight, prefix.bias, prefix.norm.{weight, bias,
// running_mean, running_var} (running_* for the BN family).
template <typename F>
void for_each_conv_slot(const std::string& prefix, Conv2d& c, F&& f) {
  f(prefix + ".weight", c.weight);
  if (c.bias.defined()) f(prefix + ".bias", c.bias);
  if (!c.norm.empty()) {
    f(prefix + ".norm.weight", c.norm.weight);
    f(prefix + ".norm.bias", c.norm.bias);
    if (c.norm.is_batch_norm()) {
      f(prefix + ".norm.running_mean", c.norm.running_mean);
      f(prefix + ".norm.running_var", c.norm.running_var);
    }
  }
}

}  // namespace backbone::detail
