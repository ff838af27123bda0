// SPDX-License-Identifier: Apache-2.0
// The statistics of launch_group_norm_nhwc (nhwc_kernels.cu) as __host__ __device__ functions, so
// that a CPU test runs the same arithmetic: how a group's elements are split over blocks, each
// thread's Welford moments over its strided elements, the combination of moments (Chan et al.), and
// the final (mean, 1 / sqrt(biased variance + eps)). Without nvcc this header includes no CUDA header.
#pragma once

#include <math.h>

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define BACKBONE_NORM_HD __host__ __device__ __forceinline__
#define BACKBONE_NORM_HD_TEMPLATE __host__ __device__
#else
#define BACKBONE_NORM_HD inline
#define BACKBONE_NORM_HD_TEMPLATE inline
#endif

namespace backbone::cuda_module::norm_stats {

constexpr int kThreads = 256;                        // threads of a statistics block
constexpr int64_t kSliceElements = 16384;            // elements per statistics block, at least
constexpr int64_t kMaxSplits = 64;                   // statistics blocks per (image, group), at most

// Element count, mean and sum of squared deviations of a set of values.
struct Moments {
  float count, mean, m2;
};

// (mean, rstd) of one (image, group); 8-byte aligned for one load.
struct alignas(8) MeanRstd {
  float mean, rstd;
};

BACKBONE_NORM_HD Moments add(Moments m, float x) {
  m.count += 1.0f;
  const float d = x - m.mean;
  m.mean += d / m.count;
  m.m2 += d * (x - m.mean);
  return m;
}

BACKBONE_NORM_HD Moments combine(Moments a, Moments b) {
  const float n = a.count + b.count;
  if (n == 0.0f) return a;
  const float d = b.mean - a.mean;
  const float fb = b.count / n;
  return Moments{n, a.mean + d * fb, a.m2 + b.m2 + d * d * a.count * fb};
}

BACKBONE_NORM_HD MeanRstd finish(Moments m, float eps) {
  const float var = m.count > 0.0f ? m.m2 / m.count : 0.0f;
  return MeanRstd{m.mean, 1.0f / sqrtf(var + eps)};
}

// Statistics blocks per (image, group) for `elements` = h * w * channels per group.
inline int64_t splits_for(int64_t elements) {
  const int64_t s = (elements + kSliceElements - 1) / kSliceElements;
  return s < 1 ? 1 : (s > kMaxSplits ? kMaxSplits : s);
}

// Elements [begin, end) of the group (pixel-major, channel-minor) that block `split` reduces.
BACKBONE_NORM_HD void slice(int64_t elements, int64_t splits, int64_t split, int64_t& begin, int64_t& end) {
  const int64_t chunk = (elements + splits - 1) / splits;
  begin = split * chunk;
  end = begin + chunk < elements ? begin + chunk : elements;
}

// Workspace layout: `partials` Moments, then the MeanRstd array at this offset.
inline std::size_t stats_offset(int64_t partials) {
  return (static_cast<std::size_t>(partials) * sizeof(Moments) + alignof(MeanRstd) - 1) / alignof(MeanRstd) *
         alignof(MeanRstd);
}

// Thread `tid`'s moments over elements begin + tid, + kThreads, ... < end of a group whose first
// element is `base` (pixel p, channel k of the group at base[p * c + k]).
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <typename T, typename Io>
BACKBONE_NORM_HD_TEMPLATE Moments thread_moments(const T* base, int64_t c, int64_t cg, int64_t begin, int64_t end,
                                                 int tid) {
  Moments m{0.0f, 0.0f, 0.0f};
  for (int64_t e = begin + tid; e < end; e += kThreads) m = add(m, Io::load(base, (e / cg) * c + e % cg));
  return m;
}

}  // namespace backbone::cuda_module::norm_stats
