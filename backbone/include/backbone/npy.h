// SPDX-License-Identifier: Apache-2.0
// numpy .npy files (format 1.0-3.0, little-endian, C or Fortran order) for tensors on the CPU.
#pragma once

#include <string>

#include "backbone/tensor.h"

namespace backbone {

// Reads float16/32/64, bfloat16 (as '<V2' is not standard: not supported), integer and bool arrays.
// Throws Error naming the file and what is wrong with it (bad magic, truncated, unsupported dtype).
Tensor load_npy(const std::string& path);
// Writes a C-order .npy (format 1.0) of any CPU tensor with a numpy dtype.
void save_npy(const std::string& path, const Tensor& tensor);

}  // namespace backbone
