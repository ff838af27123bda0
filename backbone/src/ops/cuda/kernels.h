// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module: the kernels of this project that the cuda engine runs besides cuDNN's
// convolutions, on NHWC activations ([n][h][w][c], c fastest, contiguous) of one storage type.
// Every launch_* enqueues on `stream` and returns without synchronising; launch errors are checked
// with BACKBONE_CUDA_CHECK(cudaGetLastError()) naming the kernel. Each kernel has a CPU twin in
// ops/cpu/nhwc_ops.h computing the same thing on float32 NHWC arrays, and tests/cuda compares them.
// Accumulation is float32 for every storage type; results are rounded to the storage type once.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace backbone::cuda_module {

enum class StorageType { Float32, Float16, BFloat16 };
std::size_t storage_size(StorageType t);   // 4, 2, 2
const char* storage_name(StorageType t);   // "fp32", "fp16", "bf16"

struct NhwcShape {
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t numel() const { return n * h * w * c; }
};

// max_pool2d(kernel, stride, padding) as PyTorch (padding never wins: -inf), floor output size.
void launch_max_pool_nhwc(StorageType t, const void* in, NhwcShape in_shape, void* out, int64_t out_h, int64_t out_w,
                          int kernel, int stride, int padding, cudaStream_t stream);

// Deformable convolution (torchvision's deform_conv2d semantics: bilinear sampling with zero outside,
// per-tap (dy, dx) offsets per deformable group, optional mask) that samples the input directly
// (no im2col buffer in global memory), then out = act(conv + bias + residual).
struct DeformConvNhwcArgs {
  const void* input = nullptr;    // NHWC [n, h, w, in_channels]
  const void* offset = nullptr;   // NHWC [n, out_h, out_w, offset_channels]: channel 2*(g*k*k + tap) = dy, +1 = dx;
                                  // modulated: channel 2*G*k*k + g*k*k + tap = mask logit (sigmoid applied here)
  int64_t offset_channels = 0;    // 2*G*k*k (v1) or 3*G*k*k (v2) (>= those: extra channels ignored)
  const void* weight = nullptr;   // [out_channels][kernel][kernel][in_channels / groups] (storage type)
  const float* bias = nullptr;    // [out_channels] float32 or nullptr
  const void* residual = nullptr; // NHWC [n, out_h, out_w, out_channels] or nullptr
  void* out = nullptr;            // NHWC [n, out_h, out_w, out_channels]
  int64_t n = 0, h = 0, w = 0, in_channels = 0, out_channels = 0, out_h = 0, out_w = 0;
  int64_t kernel = 3, stride = 1, padding = 1, dilation = 1, groups = 1, deformable_groups = 1;
  bool modulated = false;
  bool relu = true;
};
void launch_deform_conv_nhwc(StorageType t, const DeformConvNhwcArgs& args, cudaStream_t stream);

// GroupNorm (num_groups over channels; statistics over h, w and the group's channels, biased
// variance, float32) or detectron2's channel LayerNorm (statistics over c per pixel), then
// gamma/beta (float32 [c]), + residual (same shape, or nullptr), ReLU when relu. `workspace`:
// device memory of group_norm_workspace_bytes(shape, num_groups) bytes (unused by layer norm).
std::size_t group_norm_workspace_bytes(NhwcShape shape, int64_t num_groups);
void launch_group_norm_nhwc(StorageType t, const void* in, NhwcShape shape, int64_t num_groups, double eps,
                            const float* gamma, const float* beta, const void* residual, bool relu, void* out,
                            void* workspace, cudaStream_t stream);
void launch_layer_norm_nhwc(StorageType t, const void* in, NhwcShape shape, double eps, const float* gamma,
                            const float* beta, const void* residual, bool relu, void* out, cudaStream_t stream);

// out = act(x + bias[c] + residual), elementwise over NHWC (in place allowed: out == x). For
// convolutions cuDNN cannot fuse.
void launch_bias_residual_act_nhwc(StorageType t, const void* x, NhwcShape shape, const float* bias,
                                   const void* residual, bool relu, void* out, cudaStream_t stream);

// detectron2's FPN top-down step: out = (x + nearest_upsample_2x(coarse)) * scale over NHWC, with
// coarse [n, shape.h / 2, shape.w / 2, c] (shape.h and shape.w even) and scale 1 (fuse_type sum) or
// 0.5 (avg); the sum and the product in float32, rounded once. out must not alias x or coarse.
// CPU twin: nhwc::upsample2x_add. (LastLevelMaxPool is launch_max_pool_nhwc with kernel 1, stride 2,
// padding 0; LastLevelP6P7's ReLU is launch_bias_residual_act_nhwc without bias and residual.)
void launch_upsample2x_add_nhwc(StorageType t, const void* x, NhwcShape shape, const void* coarse, float scale,
                                void* out, cudaStream_t stream);

// float32 NCHW [n, c, h, w] (host-visible layout, e.g. Engine::forward's input) -> NHWC storage type
// with c_padded >= c channels (the extra ones zero).
void launch_nchw_f32_to_nhwc(StorageType t, const float* in, int64_t n, int64_t c, int64_t h, int64_t w,
                             int64_t c_padded, void* out, cudaStream_t stream);
// NHWC storage type [n, h, w, c_stored] -> float32 NCHW [n, c, h, w] (first c channels): the
// engine's outputs.
void launch_nhwc_to_nchw_f32(StorageType t, const void* in, int64_t n, int64_t h, int64_t w, int64_t c_stored,
                             int64_t c, float* out, cudaStream_t stream);

// adaptive_avg_pool2d(1) + flatten + linear: out[n][k] = bias[k] + sum_c weight[k][c] * mean_hw(in[n,:,:,c]).
// weight float32 [classes][c], bias float32 [classes] or nullptr, out float32 [n][classes].
void launch_avgpool_linear_nhwc(StorageType t, const void* in, NhwcShape shape, const float* weight,
                                const float* bias, int64_t classes, float* out, cudaStream_t stream);

// Host -> storage-type conversion of a float32 array (weights): dst has count * storage_size(t) bytes.
void convert_from_float(StorageType t, const float* src, std::size_t count, void* dst);

}  // namespace backbone::cuda_module
