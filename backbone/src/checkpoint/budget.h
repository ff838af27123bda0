// SPDX-License-Identifier: Apache-2.0
// What reading a checkpoint allocates beyond the file itself, and the bound on it. Tensors are
// views of the file's bytes wherever they can be (contiguous, aligned, little-endian data);
// everything else the readers allocate for tensor data -- copies of misaligned, strided,
// Fortran-order or big-endian data, and latin-1 text decoded to bytes -- is charged here, once
// per distinct object (never per reference), and a charge past the limit is a CheckpointError.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

namespace backbone::detail {

struct MemoryBudget {
  uint64_t limit = std::numeric_limits<uint64_t>::max();
  std::string limit_reason;  // what the limit is, for messages ("the model's tensors (N bytes) + 10% + 1 MiB")
  std::string what;          // the file, for messages
  uint64_t used = 0;         // bytes charged so far

  // Adds `n` bytes for `purpose` ("a copy of entry 'x'"); CheckpointError when past the limit.
  void charge(uint64_t n, const std::string& purpose);
  // Whether `n` more bytes would still fit.
  bool fits(uint64_t n) const { return n <= limit && used <= limit - n; }
};

// The limits (documented in backbone/checkpoint.h).
// Loading into a model: the model's tensors, in the dtypes the file stores them, + 10% + 1 MiB.
constexpr uint64_t kBudgetSlack = uint64_t{1} << 20;
// Reading a whole file (read_checkpoint_file): the file's size + 64 MiB.
constexpr uint64_t kRawReadSlack = uint64_t{64} << 20;

}  // namespace backbone::detail
