// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the tests: comparisons of float32 CPU tensors.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "backbone/tensor.h"

namespace backbone::test {

// max |t| over a float32 tensor (any strides).
inline double max_abs(const Tensor& t) {
  const Tensor c = t.contiguous();
  const float* p = c.data_ptr<float>();
  double m = 0;
  for (int64_t i = 0; i < c.numel(); ++i) m = std::max(m, std::abs(static_cast<double>(p[i])));
  return m;
}

// max |a - b| over two float32 tensors of one shape (a differing shape is a test failure).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(shape_str(a.shape()), shape_str(b.shape()));
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  const float* pa = ac.data_ptr<float>();
  const float* pb = bc.data_ptr<float>();
  double m = 0;
  for (int64_t i = 0; i < std::min(ac.numel(), bc.numel()); ++i)
    m = std::max(m, std::abs(static_cast<double>(pa[i]) - static_cast<double>(pb[i])));
  return m;
}

}  // namespace backbone::test
