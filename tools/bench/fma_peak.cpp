// SPDX-License-Identifier: Apache-2.0
// The FP32 peak of the machine as a program reaches it: a loop of fused multiply-adds on 16
// independent accumulators per thread (enough to cover the FMA latency on every current x86 core:
// 4 cycles x 2 ports = 8 in flight per core), zmm registers with AVX-512, ymm with AVX2/FMA,
// chosen at run time. acc = acc * m + c with m < 1 converges to c / (1 - m): no overflow, no
// denormals, and the result is used, so nothing is optimised away.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "bench_core.h"

namespace backbone::bench {
namespace {

#define BB_REP16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

__attribute__((target("avx512f"))) float fma_avx512(int64_t iters) {
  const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
#define BB_DECL(i) __m512 a##i = _mm512_set1_ps(0.01f * (i + 1));
  BB_REP16(BB_DECL)
#undef BB_DECL
  for (int64_t k = 0; k < iters; ++k) {
#define BB_STEP(i) a##i = _mm512_fmadd_ps(a##i, m, c);
    BB_REP16(BB_STEP)
#undef BB_STEP
  }
  __m512 s = _mm512_setzero_ps();
#define BB_SUM(i) s = _mm512_add_ps(s, a##i);
  BB_REP16(BB_SUM)
#undef BB_SUM
  alignas(64) float v[16];
  _mm512_store_ps(v, s);
  float r = 0;
  for (float x : v) r += x;
  return r;
}

__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iters) {
  const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
#define BB_DECL(i) __m256 a##i = _mm256_set1_ps(0.01f * (i + 1));
  BB_REP16(BB_DECL)
#undef BB_DECL
  for (int64_t k = 0; k < iters; ++k) {
#define BB_STEP(i) a##i = _mm256_fmadd_ps(a##i, m, c);
    BB_REP16(BB_STEP)
#undef BB_STEP
  }
  __m256 s = _mm256_setzero_ps();
#define BB_SUM(i) s = _mm256_add_ps(s, a##i);
  BB_REP16(BB_SUM)
#undef BB_SUM
  alignas(32) float v[8];
  _mm256_store_ps(v, s);
  float r = 0;
  for (float x : v) r += x;
  return r;
}

// No FMA: a multiply and an add per lane (2 FLOPs), 4 lanes.
float mul_add_sse(int64_t iters) {
  const __m128 m = _mm_set1_ps(0.9999f), c = _mm_set1_ps(1e-4f);
#define BB_DECL(i) __m128 a##i = _mm_set1_ps(0.01f * (i + 1));
  BB_REP16(BB_DECL)
#undef BB_DECL
  for (int64_t k = 0; k < iters; ++k) {
#define BB_STEP(i) a##i = _mm_add_ps(_mm_mul_ps(a##i, m), c);
    BB_REP16(BB_STEP)
#undef BB_STEP
  }
  __m128 s = _mm_setzero_ps();
#define BB_SUM(i) s = _mm_add_ps(s, a##i);
  BB_REP16(BB_SUM)
#undef BB_SUM
  alignas(16) float v[4];
  _mm_store_ps(v, s);
  return v[0] + v[1] + v[2] + v[3];
}

#undef BB_REP16

struct Kernel {
  float (*fn)(int64_t);
  double flops_per_iter;
  const char* isa;
};

Kernel pick_kernel() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {fma_avx512, 16.0 * 16 * 2, "avx512f"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {fma_avx2, 16.0 * 8 * 2, "avx2+fma"};
  return {mul_add_sse, 16.0 * 4 * 2, "sse"};
}

std::atomic<float> g_sink{0};

}  // namespace

PeakResult measure_fp32_peak(int threads, double seconds) {
  threads = std::max(1, threads);
  const Kernel k = pick_kernel();
  // Calibrate the iteration count on one thread.
  int64_t iters = 1 << 20;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    g_sink = g_sink + k.fn(iters);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0.02) {
      iters = std::max<int64_t>(1, static_cast<int64_t>(iters * seconds / s));
      break;
    }
    iters *= 4;
  }
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<float> sums(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
        sums[t] = k.fn(iters);
      });
    while (ready.load() < threads) std::this_thread::yield();
    const auto t0 = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (float v : sums) g_sink = g_sink + v;
    best = std::max(best, k.flops_per_iter * static_cast<double>(iters) * threads / s / 1e9);
  }
  return {best, threads, k.isa};
}

}  // namespace backbone::bench
