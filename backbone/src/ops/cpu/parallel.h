// SPDX-License-Identifier: Apache-2.0
// Internal: a minimal std::thread parallel_for for the CPU reference kernels. The range is split in
// contiguous chunks, at most one per hardware thread, so the work each index gets (and therefore
// every floating-point result) does not depend on the number of threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace backbone::detail {

// Number of worker threads the CPU kernels use: std::thread::hardware_concurrency(), at least 1.
inline int64_t cpu_thread_count() {
  static const int64_t count = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  return count;
}

// Calls fn(begin, end) on disjoint chunks covering [0, n). `grain` is the smallest chunk worth a
// thread of its own; small ranges run inline on the calling thread. Chunk boundaries are multiples
// of `align` (except the last end). The first exception thrown by fn is rethrown after all joined.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, int64_t align, const Fn& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  align = std::max<int64_t>(align, 1);
  int64_t chunks = std::min(cpu_thread_count(), (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  int64_t chunk = (n + chunks - 1) / chunks;
  chunk = (chunk + align - 1) / align * align;
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(chunks));
  threads.reserve(static_cast<std::size_t>(chunks));
  for (int64_t t = 1; t < chunks; ++t) {
    const int64_t begin = t * chunk;
    const int64_t end = std::min(n, begin + chunk);
    if (begin >= end) break;
    threads.emplace_back([&fn, &errors, t, begin, end] {
      try {
        fn(begin, end);
      } catch (...) {
        errors[static_cast<std::size_t>(t)] = std::current_exception();
      }
    });
  }
  try {
    fn(int64_t{0}, std::min(n, chunk));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& thread : threads) thread.join();
  for (auto& error : errors)
    if (error) std::rethrow_exception(error);
}

}  // namespace backbone::detail
