// SPDX-License-Identifier: Apache-2.0
// The NHWC kernels of kernels.h other than the deformable convolution (deform_conv_nhwc.cu): max
// pooling, GroupNorm / LayerNorm, bias + residual + ReLU, layout conversions, avgpool + linear, and
// the host-side storage helpers. Each kernel is a grid-stride loop (64-bit indices) computing in
// float32 and rounding once to the storage type on store; ops/cpu/nhwc_ops.cpp holds the CPU twins.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstring>
#include <string>

#include "ops/cuda/group_norm_stats.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/nhwc_common.cuh"

namespace backbone::cuda_module {

using namespace nhwc_detail;

std::size_t storage_size(StorageType t) {
  switch (t) {
    case StorageType::Float32: return 4;
    case StorageType::Float16: return 2;
    case StorageType::BFloat16: return 2;
  }
  throw_argument_error("storage_size: unknown storage type " + std::to_string(static_cast<int>(t)));
}

const char* storage_name(StorageType t) {
  switch (t) {
    case StorageType::Float32: return "fp32";
    case StorageType::Float16: return "fp16";
    case StorageType::BFloat16: return "bf16";
  }
  throw_argument_error("storage_name: unknown storage type " + std::to_string(static_cast<int>(t)));
}

void convert_from_float(StorageType t, const float* src, std::size_t count, void* dst) {
  require(count == 0 || (src && dst), "convert_from_float: expected non-null source and destination");
  switch (t) {
    case StorageType::Float32:
      if (count) std::memcpy(dst, src, count * sizeof(float));
      return;
    case StorageType::Float16: {
      __half* d = static_cast<__half*>(dst);
      for (std::size_t i = 0; i < count; ++i) d[i] = __float2half_rn(src[i]);
      return;
    }
    case StorageType::BFloat16: {
      __nv_bfloat16* d = static_cast<__nv_bfloat16*>(dst);
      for (std::size_t i = 0; i < count; ++i) d[i] = __float2bfloat16_rn(src[i]);
      return;
    }
  }
  throw_argument_error("convert_from_float: unknown storage type " + std::to_string(static_cast<int>(t)));
}

namespace {

// ---- max pooling -------------------------------------------------------------------------------

template <typename T>
__global__ void max_pool_kernel(const T* __restrict__ in, int64_t h, int64_t w, int64_t c, T* __restrict__ out,
                                int64_t out_h, int64_t out_w, int kernel, int stride, int padding, int64_t total) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t ch = idx % c;
    int64_t t = idx / c;
    const int64_t ox = t % out_w;
    t /= out_w;
    const int64_t oy = t % out_h;
    const int64_t b = t / out_h;
    const int64_t y0 = oy * stride - padding, x0 = ox * stride - padding;
    float m = -INFINITY;
    for (int i = 0; i < kernel; ++i) {
      const int64_t y = y0 + i;
      if (y < 0 || y >= h) continue;
      for (int j = 0; j < kernel; ++j) {
        const int64_t x = x0 + j;
        if (x < 0 || x >= w) continue;
        const float v = to_float(in[((b * h + y) * w + x) * c + ch]);
        if (v > m || isnan(v)) m = v;  // PyTorch: NaN propagates
      }
    }
    out[idx] = from_float<T>(m);
  }
}

// ---- bias + residual + ReLU ---------------------------------------------------------------------

template <typename T>
__global__ void bias_residual_act_kernel(const T* x, int64_t c, const float* __restrict__ bias, const T* residual,
                                         bool relu, T* out, int64_t total) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    float v = to_float(x[idx]);
    if (bias) v += bias[idx % c];
    if (residual) v += to_float(residual[idx]);
    if (relu && v < 0.0f) v = 0.0f;
    out[idx] = from_float<T>(v);
  }
}

// ---- GroupNorm ----------------------------------------------------------------------------------

using norm_stats::MeanRstd;
using norm_stats::Moments;

template <typename T>
struct NormIo {
  __device__ __forceinline__ static float load(const T* p, int64_t i) { return to_float(p[i]); }
};

int64_t group_norm_splits(NhwcShape s, int64_t num_groups) {
  return norm_stats::splits_for(s.h * s.w * (s.c / num_groups));
}

// grid (splits, n * num_groups): block (s, b * G + g) reduces its slice of the group's elements
// into partial[(b * G + g) * splits + s] (Welford per thread, then a tree of combinations).
template <typename T>
__global__ void __launch_bounds__(norm_stats::kThreads)
    group_norm_stats_kernel(const T* __restrict__ in, int64_t hw, int64_t c, int64_t num_groups, int64_t splits,
                            Moments* __restrict__ partial) {
  const int64_t bg = blockIdx.y;
  const int64_t b = bg / num_groups, g = bg % num_groups;
  const int64_t cg = c / num_groups;
  int64_t begin, end;
  norm_stats::slice(hw * cg, splits, blockIdx.x, begin, end);
  __shared__ Moments shared[norm_stats::kThreads];
  shared[threadIdx.x] =
      norm_stats::thread_moments<T, NormIo<T>>(in + b * hw * c + g * cg, c, cg, begin, end, threadIdx.x);
  __syncthreads();
  for (int s = norm_stats::kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s)
      shared[threadIdx.x] = norm_stats::combine(shared[threadIdx.x], shared[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[bg * splits + blockIdx.x] = shared[0];
}

// One thread per (image, group): combines the partial moments in split order into (mean, rstd).
__global__ void group_norm_finalize_kernel(const Moments* __restrict__ partial, int64_t groups_total, int64_t splits,
                                           float eps, MeanRstd* __restrict__ stats) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t bg = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; bg < groups_total; bg += step) {
    Moments m = partial[bg * splits];
    for (int64_t s = 1; s < splits; ++s) m = norm_stats::combine(m, partial[bg * splits + s]);
    stats[bg] = norm_stats::finish(m, eps);
  }
}

// y = (x - mean) * rstd * gamma + beta (+ residual), ReLU. stats[(b * groups + c / cg)]: per-image
// group statistics (GroupNorm) or, with cg == c and hw == 1, per-pixel ones.
template <typename T>
__global__ void norm_apply_kernel(const T* in, int64_t hw, int64_t c, int64_t cg, const MeanRstd* __restrict__ stats,
                                  const float* __restrict__ gamma, const float* __restrict__ beta, const T* residual,
                                  bool relu, T* out, int64_t total) {
  const int64_t groups = c / cg;
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t ch = idx % c;
    const int64_t b = idx / (hw * c);
    const MeanRstd st = stats[b * groups + ch / cg];
    float v = (to_float(in[idx]) - st.mean) * st.rstd;
    v = v * (gamma ? gamma[ch] : 1.0f) + (beta ? beta[ch] : 0.0f);
    if (residual) v += to_float(residual[idx]);
    if (relu && v < 0.0f) v = 0.0f;
    out[idx] = from_float<T>(v);
  }
}

// ---- LayerNorm over channels: one warp per pixel, two passes for the statistics ----------------

template <typename T>
__global__ void layer_norm_kernel(const T* in, int64_t pixels, int64_t c, float eps, const float* __restrict__ gamma,
                                  const float* __restrict__ beta, const T* residual, bool relu, T* out) {
  const int lane = threadIdx.x % 32;
  const int64_t warps_per_block = blockDim.x / 32;
  const int64_t step = warps_per_block * gridDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32; p < pixels; p += step) {
    const T* x = in + p * c;
    float sum = 0.0f;
    for (int64_t k = lane; k < c; k += 32) sum += to_float(x[k]);
    const float mean = warp_sum(sum) / static_cast<float>(c);
    float sq = 0.0f;
    for (int64_t k = lane; k < c; k += 32) {
      const float d = to_float(x[k]) - mean;
      sq += d * d;
    }
    const float var = warp_sum(sq) / static_cast<float>(c);
    const float rstd = 1.0f / sqrtf(var + eps);
    // Every lane has read all its inputs before any lane writes (in place allowed).
    __syncwarp();
    for (int64_t k = lane; k < c; k += 32) {
      float v = (to_float(x[k]) - mean) * rstd;
      v = v * (gamma ? gamma[k] : 1.0f) + (beta ? beta[k] : 0.0f);
      if (residual) v += to_float(residual[p * c + k]);
      if (relu && v < 0.0f) v = 0.0f;
      out[p * c + k] = from_float<T>(v);
    }
  }
}

// ---- layout conversions -------------------------------------------------------------------------

template <typename T>
__global__ void nchw_f32_to_nhwc_kernel(const float* __restrict__ in, int64_t c, int64_t h, int64_t w,
                                        int64_t c_padded, T* __restrict__ out, int64_t total) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t k = idx % c_padded;
    int64_t t = idx / c_padded;
    const int64_t x = t % w;
    t /= w;
    const int64_t y = t % h;
    const int64_t b = t / h;
    out[idx] = from_float<T>(k < c ? in[((b * c + k) * h + y) * w + x] : 0.0f);
  }
}

template <typename T>
__global__ void nhwc_to_nchw_f32_kernel(const T* __restrict__ in, int64_t h, int64_t w, int64_t c_stored, int64_t c,
                                        float* __restrict__ out, int64_t total) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t x = idx % w;
    int64_t t = idx / w;
    const int64_t y = t % h;
    t /= h;
    const int64_t k = t % c;
    const int64_t b = t / c;
    out[idx] = to_float(in[((b * h + y) * w + x) * c_stored + k]);
  }
}

// ---- avgpool + linear: one block per image (grid-stride over images), channel means in shared
// memory, then one warp per class ------------------------------------------------------------------

template <typename T>
__global__ void avgpool_linear_kernel(const T* __restrict__ in, int64_t n, int64_t hw, int64_t c,
                                      const float* __restrict__ weight, const float* __restrict__ bias,
                                      int64_t classes, float* __restrict__ out) {
  extern __shared__ float mean[];
  const int lane = threadIdx.x % 32;
  const int64_t warps = blockDim.x / 32;
  for (int64_t b = blockIdx.x; b < n; b += gridDim.x) {
    for (int64_t k = threadIdx.x; k < c; k += blockDim.x) {
      float sum = 0.0f;
      for (int64_t p = 0; p < hw; ++p) sum += to_float(in[(b * hw + p) * c + k]);
      mean[k] = sum / static_cast<float>(hw);
    }
    __syncthreads();
    for (int64_t j = threadIdx.x / 32; j < classes; j += warps) {
      float acc = 0.0f;
      for (int64_t k = lane; k < c; k += 32) acc += weight[j * c + k] * mean[k];
      acc = warp_sum(acc);
      if (lane == 0) out[b * classes + j] = acc + (bias ? bias[j] : 0.0f);
    }
    __syncthreads();  // mean[] is rewritten for the next image
  }
}

void check_shape(NhwcShape s, const char* op) {
  require(s.n >= 0 && s.h >= 0 && s.w >= 0 && s.c > 0,
          std::string(op) + ": expected a shape with n, h, w >= 0 and c > 0, found [" + std::to_string(s.n) + ", " +
              std::to_string(s.h) + ", " + std::to_string(s.w) + ", " + std::to_string(s.c) + "]");
}

}  // namespace

void launch_max_pool_nhwc(StorageType t, const void* in, NhwcShape in_shape, void* out, int64_t out_h, int64_t out_w,
                          int kernel, int stride, int padding, cudaStream_t stream) {
  check_shape(in_shape, "max_pool_nhwc");
  require(kernel > 0 && stride > 0 && padding >= 0 && 2 * padding <= kernel,
          "max_pool_nhwc: expected kernel, stride > 0 and 0 <= padding <= kernel / 2, found kernel " +
              std::to_string(kernel) + ", stride " + std::to_string(stride) + ", padding " + std::to_string(padding));
  const int64_t eh = (in_shape.h + 2 * padding - kernel) / stride + 1;
  const int64_t ew = (in_shape.w + 2 * padding - kernel) / stride + 1;
  require(out_h == eh && out_w == ew, "max_pool_nhwc: expected output " + std::to_string(eh) + "x" +
                                          std::to_string(ew) + ", found " + std::to_string(out_h) + "x" +
                                          std::to_string(out_w));
  const int64_t total = in_shape.n * out_h * out_w * in_shape.c;
  if (total <= 0) return;
  require(in && out, "max_pool_nhwc: expected non-null input and output");
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    max_pool_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(static_cast<const T*>(in), in_shape.h, in_shape.w,
                                                                 in_shape.c, static_cast<T*>(out), out_h, out_w,
                                                                 kernel, stride, padding, total);
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

void launch_bias_residual_act_nhwc(StorageType t, const void* x, NhwcShape shape, const float* bias,
                                   const void* residual, bool relu, void* out, cudaStream_t stream) {
  check_shape(shape, "bias_residual_act_nhwc");
  const int64_t total = shape.numel();
  if (total <= 0) return;
  require(x && out, "bias_residual_act_nhwc: expected non-null input and output");
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    bias_residual_act_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(x), shape.c, bias, static_cast<const T*>(residual), relu, static_cast<T*>(out), total);
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

std::size_t group_norm_workspace_bytes(NhwcShape shape, int64_t num_groups) {
  if (num_groups <= 0 || shape.c <= 0 || shape.c % num_groups != 0 || shape.n <= 0) return 0;
  const int64_t groups_total = shape.n * num_groups;
  return norm_stats::stats_offset(groups_total * group_norm_splits(shape, num_groups)) +
         static_cast<std::size_t>(groups_total) * sizeof(MeanRstd);
}

void launch_group_norm_nhwc(StorageType t, const void* in, NhwcShape shape, int64_t num_groups, double eps,
                            const float* gamma, const float* beta, const void* residual, bool relu, void* out,
                            void* workspace, cudaStream_t stream) {
  check_shape(shape, "group_norm_nhwc");
  require(num_groups > 0 && shape.c % num_groups == 0,
          "group_norm_nhwc: expected channels (" + std::to_string(shape.c) + ") divisible by num_groups (" +
              std::to_string(num_groups) + ")");
  require(eps >= 0, "group_norm_nhwc: expected eps >= 0");
  const int64_t total = shape.numel();
  if (total <= 0) return;
  require(in && out, "group_norm_nhwc: expected non-null input and output");
  require(workspace != nullptr, "group_norm_nhwc: expected a workspace of group_norm_workspace_bytes() bytes");
  require(shape.n * num_groups <= 65535, "group_norm_nhwc: expected n * num_groups <= 65535, found " +
                                             std::to_string(shape.n * num_groups));
  const int64_t splits = group_norm_splits(shape, num_groups);
  const int64_t groups_total = shape.n * num_groups;
  Moments* partial = static_cast<Moments*>(workspace);
  MeanRstd* stats =
      reinterpret_cast<MeanRstd*>(static_cast<char*>(workspace) + norm_stats::stats_offset(groups_total * splits));
  const int64_t hw = shape.h * shape.w;
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    group_norm_stats_kernel<T><<<dim3(static_cast<unsigned int>(splits), static_cast<unsigned int>(groups_total)),
                                 norm_stats::kThreads, 0, stream>>>(static_cast<const T*>(in), hw, shape.c, num_groups, splits,
                                                        partial);
    BACKBONE_CUDA_CHECK(cudaGetLastError());
    group_norm_finalize_kernel<<<grid_for(groups_total), kThreads, 0, stream>>>(partial, groups_total, splits,
                                                                               static_cast<float>(eps), stats);
    BACKBONE_CUDA_CHECK(cudaGetLastError());
    norm_apply_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(in), hw, shape.c, shape.c / num_groups, stats, gamma, beta,
        static_cast<const T*>(residual), relu, static_cast<T*>(out), total);
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

void launch_layer_norm_nhwc(StorageType t, const void* in, NhwcShape shape, double eps, const float* gamma,
                            const float* beta, const void* residual, bool relu, void* out, cudaStream_t stream) {
  check_shape(shape, "layer_norm_nhwc");
  require(eps >= 0, "layer_norm_nhwc: expected eps >= 0");
  const int64_t pixels = shape.n * shape.h * shape.w;
  if (pixels <= 0) return;
  require(in && out, "layer_norm_nhwc: expected non-null input and output");
  constexpr int64_t warps_per_block = kThreads / 32;
  const unsigned int blocks =
      static_cast<unsigned int>(std::min<int64_t>((pixels + warps_per_block - 1) / warps_per_block, kMaxGrid));
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    layer_norm_kernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(in), pixels, shape.c,
                                                          static_cast<float>(eps), gamma, beta,
                                                          static_cast<const T*>(residual), relu, static_cast<T*>(out));
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

void launch_nchw_f32_to_nhwc(StorageType t, const float* in, int64_t n, int64_t c, int64_t h, int64_t w,
                             int64_t c_padded, void* out, cudaStream_t stream) {
  require(n >= 0 && c > 0 && h >= 0 && w >= 0 && c_padded >= c,
          "nchw_f32_to_nhwc: expected n, h, w >= 0, c > 0 and c_padded >= c, found c " + std::to_string(c) +
              ", c_padded " + std::to_string(c_padded));
  const int64_t total = n * h * w * c_padded;
  if (total <= 0) return;
  require(in && out, "nchw_f32_to_nhwc: expected non-null input and output");
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    nchw_f32_to_nhwc_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(in, c, h, w, c_padded, static_cast<T*>(out),
                                                                          total);
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

void launch_nhwc_to_nchw_f32(StorageType t, const void* in, int64_t n, int64_t h, int64_t w, int64_t c_stored,
                             int64_t c, float* out, cudaStream_t stream) {
  require(n >= 0 && c > 0 && h >= 0 && w >= 0 && c_stored >= c,
          "nhwc_to_nchw_f32: expected n, h, w >= 0, c > 0 and c_stored >= c, found c " + std::to_string(c) +
              ", c_stored " + std::to_string(c_stored));
  const int64_t total = n * c * h * w;
  if (total <= 0) return;
  require(in && out, "nhwc_to_nchw_f32: expected non-null input and output");
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    nhwc_to_nchw_f32_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(static_cast<const T*>(in), h, w, c_stored, c,
                                                                          out, total);
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

void launch_avgpool_linear_nhwc(StorageType t, const void* in, NhwcShape shape, const float* weight,
                                const float* bias, int64_t classes, float* out, cudaStream_t stream) {
  check_shape(shape, "avgpool_linear_nhwc");
  require(shape.h * shape.w > 0, "avgpool_linear_nhwc: expected a non-empty image");
  require(classes > 0, "avgpool_linear_nhwc: expected classes > 0, found " + std::to_string(classes));
  constexpr int64_t kMaxChannels = 12288;  // the channel means in 48 KiB of shared memory
  require(shape.c <= kMaxChannels, "avgpool_linear_nhwc: expected at most " + std::to_string(kMaxChannels) +
                                       " channels, found " + std::to_string(shape.c));
  if (shape.n <= 0) return;
  require(in && weight && out, "avgpool_linear_nhwc: expected non-null input, weight and output");
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(shape.n, kMaxGrid));
  const std::size_t smem = static_cast<std::size_t>(shape.c) * sizeof(float);
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    avgpool_linear_kernel<T><<<blocks, kThreads, smem, stream>>>(static_cast<const T*>(in), shape.n,
                                                                 shape.h * shape.w, shape.c, weight, bias, classes,
                                                                 out);
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace backbone::cuda_module
