// SPDX-License-Identifier: Apache-2.0
// Internal: detectron2.layers' Conv2d and get_norm as resnet.cpp and fpn.cpp build them.
#pragma once

#include <string>

#include "backbone/error.h"
#include "backbone/resnet.h"

namespace backbone::detail {

// get_norm(kind, channels) with identity parameters (FrozenBN: running_var 1 - eps). ConfigError
// for an unknown kind or GN channels not divisible by 32.
Norm make_norm(const std::string& kind, int64_t channels);

// detectron2.layers.Conv2d with zero weights, every size checked (ConfigError naming it).
Conv2d make_conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, int64_t dilation, int64_t groups,
                 bool bias, const std::string& norm);

// A state dict entry fits its slot: the same shape (CheckpointError naming the entry and both shapes)
// and in host memory.
inline void check_state_entry(const std::string& name, const Tensor& slot, const Tensor& src) {
  if (src.shape() != slot.shape())
    throw CheckpointError("shape mismatch for " + name + ": the model has " + shape_str(slot.shape()) +
                          ", the state dict has " + shape_str(src.shape()));
  if (src.device() != Device::cpu())
    throw CheckpointError("state dict entry " + name + " is on " + src.device().str() + ", expected cpu");
}

// A float32 copy of `src` with storage of its own (what a loaded parameter holds).
inline Tensor float32_copy(const Tensor& src) {
  Tensor t = Tensor::empty(src.shape());
  t.copy_(src.dtype() == DType::Float32 ? src : src.to(DType::Float32));
  return t;
}

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
