// SPDX-License-Identifier: Apache-2.0
// launch_deform_conv_nhwc: the tiled implicit-GEMM deformable convolution of
// deform_conv_nhwc_tile.cuh (which a CPU test also runs block by block), one thread block per
// 64 output pixels x 64 output channels of one convolution group, float32 accumulation for every
// storage type, bias + residual + ReLU fused into the store; fp16 / bf16 on sm_80+ multiply the
// tiles on tensor cores (WMMA 16x16x16, float accumulators), elsewhere with float FMAs.
#include <mma.h>

#include <string>
#include <type_traits>

#include "ops/cuda/deform_conv_nhwc_tile.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/nhwc_common.cuh"

namespace backbone::cuda_module {
namespace {

using namespace nhwc_detail;

template <typename T>
struct DeviceIo {
  __device__ __forceinline__ static float load(const T* p, int64_t i) { return to_float(p[i]); }
  __device__ __forceinline__ static void store(T* p, int64_t i, float v) { p[i] = from_float<T>(v); }
  __device__ __forceinline__ static T convert(float v) { return from_float<T>(v); }
};

// One thread's view of the block: its own state (accumulators), and a barrier after each phase.
template <typename StateT>
struct DeviceExec {
  using State = StateT;
  State state;
  template <typename Fn>
  __device__ __forceinline__ void each(Fn&& fn) {
    fn(static_cast<int>(threadIdx.x), state);
    __syncthreads();
  }
};

// FMA path: every storage type, every architecture.
template <typename T>
__global__ void __launch_bounds__(deform_tile::kThreads)
    deform_conv_nhwc_kernel(deform_tile::Params p, const T* __restrict__ input, const T* __restrict__ offset,
                            const T* __restrict__ weight, const float* __restrict__ bias, const T* residual, T* out) {
  __shared__ deform_tile::Shared shared;
  DeviceExec<deform_tile::Accumulator> exec;
  deform_tile::run_block<T, DeviceIo<T>>(p, shared, exec, blockIdx.x, blockIdx.y, input, offset, weight, bias,
                                         residual, out);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// Tensor cores (sm_80+, fp16 / bf16): each warp's two 16x16 float accumulator fragments.
template <typename T>
struct WmmaOps {
  struct State {
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> c[2];
  };
  __device__ __forceinline__ static void zero(deform_tile::SharedMma<T>&, State& st, int) {
    nvcuda::wmma::fill_fragment(st.c[0], 0.0f);
    nvcuda::wmma::fill_fragment(st.c[1], 0.0f);
  }
  __device__ __forceinline__ static void step(deform_tile::SharedMma<T>& s, State& st, int tid) {
    int row, col;
    deform_tile::warp_origin(tid / 32, row, col);
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, T, nvcuda::wmma::row_major> a;
    nvcuda::wmma::load_matrix_sync(a, &s.a[row][0], deform_tile::kLdA);
    for (int j = 0; j < 2; ++j) {
      nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, T, nvcuda::wmma::row_major> b;
      nvcuda::wmma::load_matrix_sync(b, &s.b[0][col + 16 * j], deform_tile::kLdB);
      nvcuda::wmma::mma_sync(st.c[j], a, b, st.c[j]);
    }
  }
  __device__ __forceinline__ static void finish(deform_tile::SharedMma<T>& s, State& st, int tid) {
    int row, col;
    deform_tile::warp_origin(tid / 32, row, col);
    for (int j = 0; j < 2; ++j)
      nvcuda::wmma::store_matrix_sync(&s.c[row][col + 16 * j], st.c[j], deform_tile::kLdC,
                                      nvcuda::wmma::mem_row_major);
  }
};
#endif

// fp16 / bf16: tensor cores where the architecture has them for the type (sm_80+), the FMA path
// otherwise (the same kernel compiled for sm_75).
template <typename T>
__global__ void __launch_bounds__(deform_tile::kThreads)
    deform_conv_nhwc_16bit_kernel(deform_tile::Params p, const T* __restrict__ input, const T* __restrict__ offset,
                                  const T* __restrict__ weight, const float* __restrict__ bias, const T* residual,
                                  T* out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __shared__ deform_tile::SharedMma<T> shared;
  DeviceExec<typename WmmaOps<T>::State> exec;
  deform_tile::run_block_mma<T, DeviceIo<T>, WmmaOps<T>>(p, shared, exec, blockIdx.x, blockIdx.y, input, offset,
                                                         weight, bias, residual, out);
#else
  __shared__ deform_tile::Shared shared;
  DeviceExec<deform_tile::Accumulator> exec;
  deform_tile::run_block<T, DeviceIo<T>>(p, shared, exec, blockIdx.x, blockIdx.y, input, offset, weight, bias,
                                         residual, out);
#endif
}

}  // namespace

void launch_deform_conv_nhwc(StorageType t, const DeformConvNhwcArgs& a, cudaStream_t stream) {
  deform_tile::Problem pr;
  pr.n = a.n, pr.h = a.h, pr.w = a.w, pr.in_channels = a.in_channels, pr.out_channels = a.out_channels;
  pr.out_h = a.out_h, pr.out_w = a.out_w, pr.kernel = a.kernel, pr.stride = a.stride, pr.padding = a.padding;
  pr.dilation = a.dilation, pr.groups = a.groups, pr.deformable_groups = a.deformable_groups;
  pr.offset_channels = a.offset_channels, pr.modulated = a.modulated, pr.relu = a.relu;
  const std::string problem = deform_tile::validate(pr);
  require(problem.empty(), "deform_conv_nhwc: " + problem);
  const deform_tile::Params p = deform_tile::make_params(pr);
  if (p.pixels == 0) return;
  require(a.input && a.offset && a.weight && a.out, "deform_conv_nhwc: expected non-null input, offset, weight, out");
  require(a.out != a.input && a.out != a.offset, "deform_conv_nhwc: the output must not alias the input or offsets");
  const dim3 grid(static_cast<unsigned int>(p.m_tiles), static_cast<unsigned int>(p.groups * p.oc_tiles));
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* input = static_cast<const T*>(a.input);
    const T* offset = static_cast<const T*>(a.offset);
    const T* weight = static_cast<const T*>(a.weight);
    const T* residual = static_cast<const T*>(a.residual);
    T* out = static_cast<T*>(a.out);
    if constexpr (std::is_same_v<T, float>) {
      deform_conv_nhwc_kernel<T><<<grid, deform_tile::kThreads, 0, stream>>>(p, input, offset, weight, a.bias,
                                                                               residual, out);
    } else {
      deform_conv_nhwc_16bit_kernel<T><<<grid, deform_tile::kThreads, 0, stream>>>(p, input, offset, weight, a.bias,
                                                                                     residual, out);
    }
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace backbone::cuda_module
