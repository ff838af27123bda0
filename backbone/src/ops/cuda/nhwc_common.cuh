// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module's kernels (nhwc_kernels.cu, deform_conv_nhwc.cu, preprocess_kernel.cu): storage-type loads and stores
// (float32 arithmetic on float, __half, __nv_bfloat16 storage), the StorageType -> C++ type dispatch
// and grid sizing for grid-stride loops.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/module_common.h"
#include "ops/cuda/kernels.h"

namespace backbone::cuda_module::nhwc_detail {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<T>{}) with T the C++ type of `t`.
template <typename Fn>
void dispatch_storage(StorageType t, Fn&& fn) {
  switch (t) {
    case StorageType::Float32:
      fn(TypeTag<float>{});
      return;
    case StorageType::Float16:
      fn(TypeTag<__half>{});
      return;
    case StorageType::BFloat16:
      fn(TypeTag<__nv_bfloat16>{});
      return;
  }
  throw_argument_error("NHWC kernels: expected storage type fp32, fp16 or bf16, found value " +
                       std::to_string(static_cast<int>(t)));
}

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 65535;

// Blocks of kThreads for a grid-stride loop over `n` items.
inline unsigned int grid_for(int64_t n) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxGrid)));
}

inline void require(bool ok, const std::string& message) {
  if (!ok) throw_argument_error(message);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace backbone::cuda_module::nhwc_detail
