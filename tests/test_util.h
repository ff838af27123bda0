// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the tests: comparisons of float32 CPU tensors, running a command.
#pragma once

#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

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

// What a command printed (stdout and stderr) and its exit status (-1 when it did not exit).
struct CommandResult {
  int status = -1;
  std::string output;
};

// Runs `command_line` through the shell with stderr merged into stdout.
inline CommandResult run_command(const std::string& command_line) {
  CommandResult r;
  FILE* p = popen((command_line + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace backbone::test
