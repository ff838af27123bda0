// SPDX-License-Identifier: Apache-2.0
// Internal: libbackbone's side of the separately loaded CUDA module (libbackbone-cuda.so).
// The module is dlopen()ed on first use, from $BACKBONE_CUDA_MODULE when set, else from
// BACKBONE_MODULE_DIR_NAME/ next to libbackbone. Nothing here includes CUDA headers, so
// libbackbone loads and runs on machines without CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backbone/ops.h"
#include "backbone/tensor.h"
#include "cuda/module_api.h"

namespace backbone::detail {

// True when the module loaded and reports at least one device. `why`, when given, receives the
// reason it is not available (module not built, not found, no driver, no device).
bool cuda_available(std::string* why = nullptr) noexcept;
int cuda_device_count() noexcept;

// Throws DeviceError naming the call and the CUDA error, or the reason the module is unavailable.
void* cuda_malloc(int device, std::size_t bytes);
void cuda_free(int device, void* ptr) noexcept;
enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
void cuda_memcpy(void* dst, const void* src, std::size_t bytes, CopyKind kind, int device);

// The CUDA kernel of ops::deform_conv2d (arguments already checked by the front end; every tensor
// contiguous float32 on cuda:`device`; `out` allocated [N, O, Ho, Wo]).
void cuda_deform_conv2d(const Tensor& input, const Tensor& offset, const Tensor& weight, const Tensor& mask,
                        const Tensor& bias, const ops::DeformConv2dParams& params, Tensor& out);

CudaDeviceInfo cuda_device_info(int device);

// Blocks until `event` (a cudaEvent_t recorded on cuda:`device`) has completed.
void cuda_event_synchronize(int device, void* event);

// The ready events behind cuda_ready_event(): an engine registers the event of each output it hands
// out under the address of the output's storage owner (Tensor::storage().get()) and unregisters it
// in the storage's deleter, before the storage goes back to its pool.
void register_ready_event(const void* storage_owner, int device, void* event);
void unregister_ready_event(const void* storage_owner) noexcept;

// The module's engine (engine=cuda). A handle owns one module engine and destroys it
// (engine_destroy) when the last reference goes: the library side keeps a reference in every output
// it hands out, so the engine outlives the outputs of its pool. Errors are DeviceError carrying the
// module's message (the failed CUDA/cuDNN call); out-of-memory says "out of memory" first;
// BACKBONE_CUDA_ERROR_UNSUPPORTED becomes UnsupportedError.
class CudaEngineHandle {
 public:
  CudaEngineHandle(const BackboneCudaApi* api, BackboneCudaEngine* engine, int device)
      : api_(api), engine_(engine), device_(device) {}
  ~CudaEngineHandle();
  CudaEngineHandle(const CudaEngineHandle&) = delete;
  CudaEngineHandle& operator=(const CudaEngineHandle&) = delete;

  int device() const { return device_; }
  std::string describe() const;
  // images: float32 NCHW [n, c, h, w] in host memory or on the device; fills one output per net output.
  void forward(const float* images, bool on_device, int64_t n, int64_t h, int64_t w,
               std::vector<BackboneCudaOutput>& outputs);
  void forward_frame(const BackboneCudaFrameArgs& frame, std::vector<BackboneCudaOutput>& outputs);
  void release_output(uint64_t token) noexcept;

 private:
  const BackboneCudaApi* api_;
  BackboneCudaEngine* engine_;
  int device_;
};
std::shared_ptr<CudaEngineHandle> cuda_engine_create(const BackboneCudaNetDesc& net,
                                                     const BackboneCudaEngineOptions& options);

}  // namespace backbone::detail
