// SPDX-License-Identifier: Apache-2.0
// The FPN's own NHWC kernel (kernels.h): the top-down nearest 2x upsample + lateral add (+ the avg
// fuse's scale) in one pass, a grid-stride loop computing in float32 and rounding once on store.
// CPU twin: ops/cpu/nhwc_ops.cpp's upsample2x_add.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "ops/cuda/kernels.h"
#include "ops/cuda/nhwc_common.cuh"

namespace backbone::cuda_module {

using namespace nhwc_detail;

namespace {

// One thread per output element; the coarse element it adds is read by four neighbouring pixels
// (cached), the lateral element once.
template <typename T>
__global__ void upsample2x_add_kernel(const T* __restrict__ x, int64_t h, int64_t w, int64_t c,
                                      const T* __restrict__ coarse, float scale, T* __restrict__ out, int64_t total) {
  const int64_t step = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t ch = h / 2, cw = w / 2;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t k = idx % c;
    int64_t t = idx / c;
    const int64_t xx = t % w;
    t /= w;
    const int64_t y = t % h;
    const int64_t b = t / h;
    const float up = to_float(coarse[((b * ch + y / 2) * cw + xx / 2) * c + k]);
    out[idx] = from_float<T>((to_float(x[idx]) + up) * scale);
  }
}

}  // namespace

void launch_upsample2x_add_nhwc(StorageType t, const void* x, NhwcShape shape, const void* coarse, float scale,
                                void* out, cudaStream_t stream) {
  require(shape.n >= 0 && shape.h >= 0 && shape.w >= 0 && shape.c > 0,
          "upsample2x_add_nhwc: expected a shape with n, h, w >= 0 and c > 0, found [" + std::to_string(shape.n) +
              ", " + std::to_string(shape.h) + ", " + std::to_string(shape.w) + ", " + std::to_string(shape.c) + "]");
  require(shape.h % 2 == 0 && shape.w % 2 == 0,
          "upsample2x_add_nhwc: expected an even height and width (twice the coarser level's), found " +
              std::to_string(shape.h) + "x" + std::to_string(shape.w));
  const int64_t total = shape.numel();
  if (total <= 0) return;
  require(x && coarse && out, "upsample2x_add_nhwc: expected non-null lateral, coarse and output arrays");
  require(out != x && out != coarse, "upsample2x_add_nhwc: the output must not alias an input");
  dispatch_storage(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    upsample2x_add_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(static_cast<const T*>(x), shape.h, shape.w,
                                                                       shape.c, static_cast<const T*>(coarse), scale,
                                                                       static_cast<T*>(out), total);
  });
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace backbone::cuda_module
