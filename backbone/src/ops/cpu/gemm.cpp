// SPDX-License-Identifier: Apache-2.0
// Blocked, packed SGEMM (the GotoBLAS/BLIS loop structure, much simplified): for each block of NC
// columns and KC inner indices, B is packed into NR-wide panels, A into MR-row panels, and a
// register-blocked MR x NR micro-kernel accumulates the tile. Edges are zero-padded in the packs.
#include "ops/cpu/gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/cpu/parallel.h"

namespace backbone::detail {
namespace {

constexpr int64_t kMR = 4;    // rows of C per micro-tile
constexpr int64_t kNR = 8;    // columns of C per micro-tile (two 4-float vectors)
constexpr int64_t kKC = 256;  // inner-dimension block: a packed A panel (4 KiB) and B panel (8 KiB) stay in L1
constexpr int64_t kNC = 256;  // column block: the packed B block (256 KiB) stays in L2

// GCC/Clang generic vectors: SSE on x86-64, NEON on AArch64, wider when the target allows.
typedef float v4sf __attribute__((vector_size(16)));

inline v4sf load4(const float* p) {  // unaligned load
  v4sf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Packs rows [0, kc) x columns [0, nc) of B into ceil(nc / NR) panels of kc x NR, zero-padded.
void pack_b(const float* B, int64_t ldb, int64_t kc, int64_t nc, float* packed) {
  for (int64_t j0 = 0; j0 < nc; j0 += kNR) {
    const int64_t nr = std::min(kNR, nc - j0);
    float* dst = packed + j0 * kc;
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = B + k * ldb + j0;
      int64_t j = 0;
      for (; j < nr; ++j) dst[k * kNR + j] = src[j];
      for (; j < kNR; ++j) dst[k * kNR + j] = 0.0f;
    }
  }
}

// Packs rows [0, mr) x columns [0, kc) of A as kc groups of MR values, zero-padded to MR rows.
void pack_a(const float* A, int64_t lda, int64_t mr, int64_t kc, float* packed) {
  for (int64_t r = 0; r < kMR; ++r) {
    if (r < mr) {
      const float* src = A + r * lda;
      for (int64_t k = 0; k < kc; ++k) packed[k * kMR + r] = src[k];
    } else {
      for (int64_t k = 0; k < kc; ++k) packed[k * kMR + r] = 0.0f;
    }
  }
}

// C[mr, nr] (+)= packed A [kc x MR] * packed B [kc x NR].
void micro_kernel(int64_t kc, const float* __restrict__ a, const float* __restrict__ b, float* c, int64_t ldc,
                  int64_t mr, int64_t nr, bool load_c) {
  v4sf acc[kMR][2];
  for (int64_t r = 0; r < kMR; ++r) acc[r][0] = acc[r][1] = v4sf{0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t k = 0; k < kc; ++k) {
    const v4sf b0 = load4(b + k * kNR);
    const v4sf b1 = load4(b + k * kNR + 4);
    const float* ak = a + k * kMR;
#pragma GCC unroll 4
    for (int64_t r = 0; r < kMR; ++r) {
      const float av = ak[r];
      const v4sf a4 = {av, av, av, av};
      acc[r][0] += a4 * b0;
      acc[r][1] += a4 * b1;
    }
  }
  for (int64_t r = 0; r < mr; ++r) {
    float tile[kNR];
    std::memcpy(tile, &acc[r][0], sizeof(tile));
    float* crow = c + r * ldc;
    if (load_c) {
      for (int64_t j = 0; j < nr; ++j) crow[j] += tile[j];
    } else {
      for (int64_t j = 0; j < nr; ++j) crow[j] = tile[j];
    }
  }
}

// The whole GEMM on columns [n_begin, n_end) of B and C.
void sgemm_columns(int64_t M, int64_t n_begin, int64_t n_end, int64_t K, const float* A, int64_t lda, const float* B,
                   int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  std::vector<float> b_store(static_cast<std::size_t>(kKC * kNC));
  std::vector<float> a_store(static_cast<std::size_t>(kKC * kMR));
  float* b_packed = b_store.data();
  float* a_packed = a_store.data();
  for (int64_t jc = n_begin; jc < n_end; jc += kNC) {
    const int64_t nc = std::min(kNC, n_end - jc);
    for (int64_t pc = 0; pc < K; pc += kKC) {
      const int64_t kc = std::min(kKC, K - pc);
      const bool load_c = accumulate || pc > 0;
      pack_b(B + pc * ldb + jc, ldb, kc, nc, b_packed);
      for (int64_t i = 0; i < M; i += kMR) {
        const int64_t mr = std::min(kMR, M - i);
        pack_a(A + i * lda + pc, lda, mr, kc, a_packed);
        for (int64_t j0 = 0; j0 < nc; j0 += kNR) {
          micro_kernel(kc, a_packed, b_packed + j0 * kc, C + i * ldc + jc + j0, ldc, mr, std::min(kNR, nc - j0),
                       load_c);
        }
      }
    }
  }
}

}  // namespace

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
           int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  // About 2^18 multiply-adds per thread at least, so small products do not pay for threads.
  const int64_t grain = std::max<int64_t>(kNR, (int64_t{1} << 18) / std::max<int64_t>(1, M * K));
  parallel_for(N, grain, kNR, [&](int64_t begin, int64_t end) {
    sgemm_columns(M, begin, end, K, A, lda, B, ldb, C, ldc, accumulate);
  });
}

}  // namespace backbone::detail
