// SPDX-License-Identifier: Apache-2.0
// launch_deform_conv_nhwc: the tiled implicit-GEMM deformable convolution of
// deform_conv_nhwc_tile.cuh (which a CPU test also runs block by block), one thread block per
// 64 output pixels x 64 output channels of one convolution group, float32 accumulation for every
// storage type, bias + residual + ReLU fused into the store.
#include <string>

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
};

// One thread's view of the block: its accumulator, and a barrier after each phase.
struct DeviceExec {
  deform_tile::Accumulator acc;
  template <typename Fn>
  __device__ __forceinline__ void each(Fn&& fn) {
    fn(static_cast<int>(threadIdx.x), acc);
    __syncthreads();
  }
};

template <typename T>
__global__ void __launch_bounds__(deform_tile::kThreads)
    deform_conv_nhwc_kernel(deform_tile::Params p, const T* __restrict__ input, const T* __restrict__ offset,
                            const T* __restrict__ weight, const float* __restrict__ bias,
                            const T* residual, T* out) {
  __shared__ deform_tile::Shared shared;
  DeviceExec exec;
  deform_tile::run_block<T, DeviceIo<T>>(p, shared, exec, blockIdx.x, blockIdx.y, input, offset, weight, bias,
                                         residual, out);
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
    deform_conv_nhwc_kernel<T><<<grid, deform_tile::kThreads, 0, stream>>>(
        p, static_cast<const T*>(a.input), static_cast<const T*>(a.offset), static_cast<const T*>(a.weight), a.bias,
        static_cast<const T*>(a.residual), static_cast<T*>(a.out));
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace backbone::cuda_module
