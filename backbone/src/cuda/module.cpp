// SPDX-License-Identifier: Apache-2.0
// The CUDA module libbackbone-cuda.so: exports BACKBONE_CUDA_ENTRY_POINT, the table of C functions
// declared in module_api.h. Everything behind it is C++ with exceptions; every entry point catches
// them and returns a status code and a message instead. Per device, a pool of (stream, cuBLAS
// handle, workspace) slots lets several host threads run kernels at once.
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <cudnn.h>

#include "cuda/engine/engine.h"
#include "cuda/module_api.h"
#include "cuda/module_common.h"
#include "ops/cuda/deform_conv2d_kernel.h"

#ifndef BACKBONE_VERSION_STRING
#define BACKBONE_VERSION_STRING "unknown"
#endif
#ifndef BACKBONE_CUDA_ARCHS
#define BACKBONE_CUDA_ARCHS "unknown"
#endif

namespace backbone::cuda_module {

// throw_cuda_error, throw_cublas_error and throw_argument_error live in module_errors.cpp (part of
// backbone-cuda-kernels); the cuDNN one here, with the engine that needs it.
void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file, int line) {
  std::string message = std::string(expr) + " failed: " + cudnnGetErrorString(status);
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));  // cuDNN 9: what it logged for the failure, if anything
  if (detail[0]) message += std::string(": ") + detail;
  if (status == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
      status == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
      message += " (out of memory; device memory: " + std::to_string(free_bytes >> 20) + " MiB free of " +
                 std::to_string(total_bytes >> 20) + " MiB)";
    cudaGetLastError();
    throw CudnnError(BACKBONE_CUDA_ERROR_OUT_OF_MEMORY, status, message + error_location(file, line));
  }
  throw CudnnError(BACKBONE_CUDA_ERROR_CUDNN, status, message + error_location(file, line));
}

namespace {

// What one deform_conv2d call needs besides its tensors.
struct Slot {
  Stream stream;
  CublasHandle handle;
  DeviceBuffer workspace;
  Slot() { BACKBONE_CUBLAS_CHECK(cublasSetStream(handle.get(), stream.get())); }
};

class SlotPool {
 public:
  // The calling thread's current device must be `device`.
  std::unique_ptr<Slot> acquire(int device) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto& free = free_[device];
      if (!free.empty()) {
        std::unique_ptr<Slot> slot = std::move(free.back());
        free.pop_back();
        return slot;
      }
    }
    return std::make_unique<Slot>();
  }
  void release(int device, std::unique_ptr<Slot> slot) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_[device].push_back(std::move(slot));
  }

 private:
  std::mutex mutex_;
  std::map<int, std::vector<std::unique_ptr<Slot>>> free_;
};

// Never destroyed on purpose: destroying streams and cuBLAS handles from a static destructor at
// process exit races with the CUDA runtime's own teardown.
SlotPool& slot_pool() {
  static SlotPool* pool = new SlotPool;
  return *pool;
}

// Borrows a slot for the lifetime of the lease.
class SlotLease {
 public:
  explicit SlotLease(int device) : device_(device), slot_(slot_pool().acquire(device)) {}
  ~SlotLease() { slot_pool().release(device_, std::move(slot_)); }
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  Slot& operator*() const { return *slot_; }

 private:
  int device_;
  std::unique_ptr<Slot> slot_;
};

void write_message(char* msg, size_t msg_size, const char* text) {
  if (!msg || msg_size == 0) return;
  std::snprintf(msg, msg_size, "%s", text);
}

// Runs fn, turning every exception into a status code and a message.
template <typename Fn>
int guarded(char* msg, size_t msg_size, const Fn& fn) noexcept {
  try {
    fn();
    write_message(msg, msg_size, "");
    return BACKBONE_CUDA_OK;
  } catch (const ModuleError& e) {
    write_message(msg, msg_size, e.what());
    return e.status();
  } catch (const std::exception& e) {
    write_message(msg, msg_size, (std::string("internal error in the CUDA module: ") + e.what()).c_str());
    return BACKBONE_CUDA_ERROR_INTERNAL;
  } catch (...) {
    write_message(msg, msg_size, "internal error in the CUDA module: unknown exception");
    return BACKBONE_CUDA_ERROR_INTERNAL;
  }
}

const char* api_build_info() {
  static const std::string info = std::string("libbackbone-cuda ") + BACKBONE_VERSION_STRING + ", CUDA runtime " +
                                  std::to_string(CUDART_VERSION / 1000) + "." +
                                  std::to_string(CUDART_VERSION % 1000 / 10) + ", SMs " + BACKBONE_CUDA_ARCHS;
  return info.c_str();
}

int api_device_count(int* count, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    *count = 0;
    int n = 0;
    BACKBONE_CUDA_CHECK(cudaGetDeviceCount(&n));
    *count = n;
  });
}

int api_malloc(int device, size_t bytes, void** ptr, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    *ptr = nullptr;
    set_device(device);
    if (bytes > 0) BACKBONE_CUDA_CHECK(cudaMalloc(ptr, bytes));
  });
}

int api_free(int device, void* ptr, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    if (!ptr) return;
    set_device(device);
    BACKBONE_CUDA_CHECK(cudaFree(ptr));
  });
}

int api_memcpy(void* dst, const void* src, size_t bytes, int kind, int device, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    cudaMemcpyKind cuda_kind;
    switch (kind) {
      case BACKBONE_CUDA_HOST_TO_DEVICE: cuda_kind = cudaMemcpyHostToDevice; break;
      case BACKBONE_CUDA_DEVICE_TO_HOST: cuda_kind = cudaMemcpyDeviceToHost; break;
      case BACKBONE_CUDA_DEVICE_TO_DEVICE: cuda_kind = cudaMemcpyDefault; break;  // also between devices
      default: throw_argument_error("memcpy: unknown copy kind " + std::to_string(kind));
    }
    if (bytes == 0) return;
    set_device(device);
    BACKBONE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cuda_kind));
  });
}

int api_deform_conv2d(const BackboneDeformConv2dArgs* args, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    if (!args) throw_argument_error("deform_conv2d: null arguments");
    set_device(args->device);
    SlotLease lease(args->device);
    Slot& slot = *lease;
    deform_conv2d(*args, slot.stream.get(), slot.handle.get(), slot.workspace);
    BACKBONE_CUDA_CHECK(cudaStreamSynchronize(slot.stream.get()));
  });
}

int api_device_properties(int device, BackboneCudaDeviceProperties* out, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    if (!out) throw_argument_error("device_properties: null output");
    *out = BackboneCudaDeviceProperties{};
    set_device(device);
    cudaDeviceProp prop{};
    BACKBONE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    std::snprintf(out->name, sizeof(out->name), "%s", prop.name);
    out->major = prop.major;
    out->minor = prop.minor;
    out->sm_count = prop.multiProcessorCount;
    out->total_memory = static_cast<int64_t>(prop.totalGlobalMem);
    int value = 0;
    BACKBONE_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrClockRate, device));
    out->clock_khz = value;
    BACKBONE_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMemoryClockRate, device));
    out->memory_clock_khz = value;
    BACKBONE_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrGlobalMemoryBusWidth, device));
    out->memory_bus_width = value;
    out->cudnn_version = static_cast<int32_t>(cudnnGetVersion());
    BACKBONE_CUDA_CHECK(cudaDriverGetVersion(&value));
    out->driver_version = value;
  });
}

int api_event_synchronize(int device, void* event, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    if (!event) return;
    set_device(device);
    BACKBONE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  });
}

// The engine (cuda/engine/engine.cpp).
int api_engine_create(const BackboneCudaNetDesc* net, const BackboneCudaEngineOptions* options,
                      BackboneCudaEngine** engine, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    if (!net || !options || !engine) throw_argument_error("engine_create: null argument");
    *engine = nullptr;
    *engine = engine_create(*net, *options);
  });
}

void api_engine_destroy(BackboneCudaEngine* engine) { engine_destroy(engine); }

const char* api_engine_describe(BackboneCudaEngine* engine) { return engine_describe(engine); }

int api_engine_forward(BackboneCudaEngine* engine, const float* images, int32_t on_device, int64_t n, int64_t h,
                       int64_t w, BackboneCudaOutput* outputs, int32_t num_outputs, char* msg, size_t msg_size) {
  return guarded(msg, msg_size,
                 [&] { engine_forward(engine, images, on_device != 0, n, h, w, outputs, num_outputs); });
}

int api_engine_forward_frame(BackboneCudaEngine* engine, const BackboneCudaFrameArgs* frame,
                             BackboneCudaOutput* outputs, int32_t num_outputs, char* msg, size_t msg_size) {
  return guarded(msg, msg_size, [&] {
    if (!frame) throw_argument_error("engine_forward_frame: null frame");
    engine_forward_frame(engine, *frame, outputs, num_outputs);
  });
}

void api_engine_release_output(BackboneCudaEngine* engine, uint64_t token) { engine_release_output(engine, token); }

const BackboneCudaApi kApi = {
    BACKBONE_CUDA_API_VERSION,
    static_cast<uint32_t>(sizeof(BackboneCudaApi)),
    &api_build_info,
    &api_device_count,
    &api_malloc,
    &api_free,
    &api_memcpy,
    &api_deform_conv2d,
    &api_device_properties,
    &api_event_synchronize,
    &api_engine_create,
    &api_engine_destroy,
    &api_engine_describe,
    &api_engine_forward,
    &api_engine_forward_frame,
    &api_engine_release_output,
};

}  // namespace
}  // namespace backbone::cuda_module

// The module's only exported symbol (its name is BACKBONE_CUDA_ENTRY_POINT).
extern "C" __attribute__((visibility("default"))) const BackboneCudaApi* backbone_cuda_module_api(void) {
  return &backbone::cuda_module::kApi;
}
