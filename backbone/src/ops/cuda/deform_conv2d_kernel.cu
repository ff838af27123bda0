// SPDX-License-Identifier: Apache-2.0
// CUDA kernel of ops::deform_conv2d, following torchvision's csrc/ops/cuda/deform_conv2d_kernel.cu:
// a deformable im2col kernel (grid-stride loop, one thread per input channel and output pixel,
// looping over the kernel taps) writes the columns [C * kh * kw, Ho * Wo] of one image, then cuBLAS
// runs one SGEMM per convolution group (strided-batched over the groups). All on one explicit
// stream; 32-bit indexing when every index fits, 64-bit otherwise.
#include "ops/cuda/deform_conv2d_kernel.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

namespace backbone::cuda_module {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = 4096;

inline int64_t ceil_div(int64_t n, int64_t m) { return (n + m - 1) / m; }

inline unsigned int grid_size(int64_t n) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(ceil_div(n, kThreadsPerBlock), kMaxBlocks)));
}

// torchvision's bilinear_interpolate: 0 outside (-1, height) x (-1, width), corners outside the
// image count as 0.
template <typename index_t>
__device__ __forceinline__ float bilinear_interpolate(const float* in, index_t height, index_t width, float h,
                                                      float w) {
  if (h <= -1 || static_cast<float>(height) <= h || w <= -1 || static_cast<float>(width) <= w) return 0;
  const index_t h_low = static_cast<index_t>(floorf(h));
  const index_t w_low = static_cast<index_t>(floorf(w));
  const index_t h_high = h_low + 1;
  const index_t w_high = w_low + 1;
  const float lh = h - static_cast<float>(h_low);
  const float lw = w - static_cast<float>(w_low);
  const float hh = 1 - lh, hw = 1 - lw;
  float v1 = 0;
  if (h_low >= 0 && w_low >= 0) v1 = in[h_low * width + w_low];
  float v2 = 0;
  if (h_low >= 0 && w_high <= width - 1) v2 = in[h_low * width + w_high];
  float v3 = 0;
  if (h_high <= height - 1 && w_low >= 0) v3 = in[h_high * width + w_low];
  float v4 = 0;
  if (h_high <= height - 1 && w_high <= width - 1) v4 = in[h_high * width + w_high];
  const float w1 = hh * hw, w2 = hh * lw, w3 = lh * hw, w4 = lh * lw;
  return w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
}

// One image: n = channels * out_h * out_w work items.
template <typename index_t>
__global__ void deformable_im2col_kernel(index_t n, const float* __restrict__ input, const float* __restrict__ offset,
                                         const float* __restrict__ mask, index_t height, index_t width,
                                         index_t kernel_h, index_t kernel_w, index_t pad_h, index_t pad_w,
                                         index_t stride_h, index_t stride_w, index_t dilation_h, index_t dilation_w,
                                         index_t channels_per_group, index_t out_h, index_t out_w,
                                         float* __restrict__ columns) {
  const index_t plane = out_h * out_w;
  const index_t taps = kernel_h * kernel_w;
  const index_t step = static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x);
  for (index_t index = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < n; index += step) {
    const index_t pixel = index % plane;
    const index_t out_x = pixel % out_w;
    const index_t out_y = pixel / out_w;
    const index_t c = index / plane;
    const index_t g = c / channels_per_group;
    const float* in = input + c * height * width;
    const float* off = offset + g * 2 * taps * plane + pixel;
    const float* msk = mask ? mask + g * taps * plane + pixel : nullptr;
    float* col = columns + c * taps * plane + pixel;
    for (index_t i = 0; i < kernel_h; ++i) {
      for (index_t j = 0; j < kernel_w; ++j) {
        const index_t tap = i * kernel_w + j;
        const float m = msk ? msk[tap * plane] : 1.0f;
        const float dy = off[(2 * tap) * plane];
        const float dx = off[(2 * tap + 1) * plane];
        const float y = static_cast<float>(out_y * stride_h - pad_h + i * dilation_h) + dy;
        const float x = static_cast<float>(out_x * stride_w - pad_w + j * dilation_w) + dx;
        *col = m * bilinear_interpolate<index_t>(in, height, width, y, x);
        col += plane;
      }
    }
  }
}

// out[b, o, p] = bias[o] for the whole output (n = N * O * plane).
template <typename index_t>
__global__ void fill_bias_kernel(index_t n, index_t plane, index_t out_channels, const float* __restrict__ bias,
                                 float* __restrict__ out) {
  const index_t step = static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x);
  for (index_t index = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < n; index += step)
    out[index] = bias[(index / plane) % out_channels];
}

template <typename index_t>
void launch_im2col(const BackboneDeformConv2dArgs& a, const float* input, const float* offset, const float* mask,
                   float* columns, cudaStream_t stream) {
  const int64_t n = a.channels * a.out_h * a.out_w;
  deformable_im2col_kernel<index_t><<<grid_size(n), kThreadsPerBlock, 0, stream>>>(
      static_cast<index_t>(n), input, offset, mask, static_cast<index_t>(a.height), static_cast<index_t>(a.width),
      static_cast<index_t>(a.kernel_h), static_cast<index_t>(a.kernel_w), static_cast<index_t>(a.pad_h),
      static_cast<index_t>(a.pad_w), static_cast<index_t>(a.stride_h), static_cast<index_t>(a.stride_w),
      static_cast<index_t>(a.dilation_h), static_cast<index_t>(a.dilation_w),
      static_cast<index_t>(a.channels / a.deformable_groups), static_cast<index_t>(a.out_h),
      static_cast<index_t>(a.out_w), columns);
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

template <typename index_t>
void launch_fill_bias(const BackboneDeformConv2dArgs& a, cudaStream_t stream) {
  const int64_t n = a.n * a.out_channels * a.out_h * a.out_w;
  fill_bias_kernel<index_t><<<grid_size(n), kThreadsPerBlock, 0, stream>>>(
      static_cast<index_t>(n), static_cast<index_t>(a.out_h * a.out_w), static_cast<index_t>(a.out_channels),
      a.bias, a.out);
  BACKBONE_CUDA_CHECK(cudaGetLastError());
}

void check_fits_int(int64_t value, const char* what) {
  if (value > INT_MAX)
    throw_argument_error(std::string("deform_conv2d (CUDA): ") + what + " = " + std::to_string(value) +
                         " exceeds cuBLAS's int range");
}

}  // namespace

void deform_conv2d(const BackboneDeformConv2dArgs& a, cudaStream_t stream, cublasHandle_t handle,
                   DeviceBuffer& workspace) {
  const int64_t plane = a.out_h * a.out_w;
  const int64_t taps = a.kernel_h * a.kernel_w;
  const int64_t column_rows = a.channels * taps;
  const int64_t out_per_group = a.out_channels / a.groups;
  const int64_t k_per_group = column_rows / a.groups;
  const int64_t image_in = a.channels * a.height * a.width;
  const int64_t image_offset = 2 * a.deformable_groups * taps * plane;
  const int64_t image_mask = a.deformable_groups * taps * plane;
  const int64_t image_out = a.out_channels * plane;
  check_fits_int(plane, "out_h * out_w");
  check_fits_int(out_per_group, "out_channels / groups");
  check_fits_int(k_per_group, "channels / groups * kh * kw");
  check_fits_int(a.groups, "groups");

  // Largest index any kernel computes (plus a grid-stride step of slack): 32-bit when it fits.
  const int64_t largest = std::max({column_rows * plane, image_in, image_offset, a.n * image_out});
  const bool index32 = largest + kMaxBlocks * kThreadsPerBlock < INT_MAX;

  workspace.reserve(static_cast<std::size_t>(column_rows * plane) * sizeof(float));
  float* columns = static_cast<float*>(workspace.get());

  const bool has_bias = a.bias != nullptr;
  if (has_bias) {
    if (index32)
      launch_fill_bias<int32_t>(a, stream);
    else
      launch_fill_bias<int64_t>(a, stream);
  }
  const float alpha = 1.0f;
  const float beta = has_bias ? 1.0f : 0.0f;
  for (int64_t b = 0; b < a.n; ++b) {
    const float* input = a.input + b * image_in;
    const float* offset = a.offset + b * image_offset;
    const float* mask = a.mask ? a.mask + b * image_mask : nullptr;
    if (column_rows > 0) {
      if (index32)
        launch_im2col<int32_t>(a, input, offset, mask, columns, stream);
      else
        launch_im2col<int64_t>(a, input, offset, mask, columns, stream);
    }
    // Row-major out_g[Og, P] = W_g[Og, Kg] * cols_g[Kg, P] is column-major out_g^T = cols_g^T * W_g^T.
    const int m = static_cast<int>(plane);
    const int n = static_cast<int>(out_per_group);
    const int k = static_cast<int>(k_per_group);
    BACKBONE_CUBLAS_CHECK(cublasSgemmStridedBatched(
        handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, columns, m, static_cast<long long>(k_per_group * plane),
        a.weight, std::max(k, 1), static_cast<long long>(out_per_group * k_per_group), &beta,
        a.out + b * image_out, m, static_cast<long long>(out_per_group * plane), static_cast<int>(a.groups)));
  }
}

}  // namespace backbone::cuda_module
