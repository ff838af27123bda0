// SPDX-License-Identifier: Apache-2.0
// Internal: the single-precision GEMM of the CPU reference kernels (no BLAS dependency).
#pragma once

#include <cstdint>

namespace backbone::detail {

// Row-major C[M, N] = A[M, K] * B[K, N], or C += A * B when `accumulate`. lda, ldb, ldc are the
// row strides in elements. Blocked and packed for the caches, vectorised with the compiler's
// generic vector types, and split over columns across threads (parallel_for), so results do
// not depend on the number of threads. K == 0 gives C = 0 (or leaves C when accumulating).
void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
           int64_t ldc, bool accumulate);

}  // namespace backbone::detail
