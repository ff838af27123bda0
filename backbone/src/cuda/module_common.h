// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module (libbackbone-cuda.so) only: error checking and RAII for CUDA/cuBLAS
// objects. Includes CUDA headers, so never include it from libbackbone's own sources.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace backbone::cuda_module {

// Thrown inside the module and turned into a status code + message at the C boundary.
class ModuleError : public std::runtime_error {
 public:
  ModuleError(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// "<expr> failed: <cudaErrorName>: <description> (at <file>:<line>)"; clears the (non-sticky)
// error so that later cudaGetLastError() checks do not report it again.
[[noreturn]] void throw_cuda_error(cudaError_t error, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line);
[[noreturn]] void throw_argument_error(const std::string& message);
// " (at backbone/src/<file>:<line>)", for the messages above (module_errors.cpp).
std::string error_location(const char* file, int line);
// "<expr> failed: <cudnnGetErrorString>[: <cudnnGetLastErrorString>] (at <file>:<line>)"; allocation
// failures (CUDNN_STATUS_INTERNAL_ERROR_HOST/DEVICE_ALLOCATION_FAILED, the old ALLOC_FAILED) are
// BACKBONE_CUDA_ERROR_OUT_OF_MEMORY with the device's free/total memory, the rest
// BACKBONE_CUDA_ERROR_CUDNN. Thrown as CudnnError, which keeps the cuDNN status.
[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* expr, const char* file, int line);
// cudaErrorMemoryAllocation is reported as BACKBONE_CUDA_ERROR_OUT_OF_MEMORY with the free/total
// memory of the device in the message.

}  // namespace backbone::cuda_module

// Every CUDA runtime call goes through this macro: it names the call, file and line on failure.
#define BACKBONE_CUDA_CHECK(expr)                                                       \
  do {                                                                                  \
    const cudaError_t backbone_cuda_error_ = (expr);                                    \
    if (backbone_cuda_error_ != cudaSuccess)                                            \
      ::backbone::cuda_module::throw_cuda_error(backbone_cuda_error_, #expr, __FILE__, __LINE__); \
  } while (0)

// A failed cuDNN call (status() is BACKBONE_CUDA_ERROR_CUDNN or _OUT_OF_MEMORY).
namespace backbone::cuda_module {
class CudnnError : public ModuleError {
 public:
  CudnnError(int status, cudnnStatus_t cudnn_status, const std::string& message)
      : ModuleError(status, message), cudnn_status_(cudnn_status) {}
  cudnnStatus_t cudnn_status() const { return cudnn_status_; }
  // cuDNN refuses the configuration (CUDNN_STATUS_NOT_SUPPORTED*), rather than failing to run it.
  bool not_supported() const { return CUDNN_STATUS_CATEGORY(cudnn_status_) == CUDNN_STATUS_NOT_SUPPORTED; }
  bool bad_param() const { return CUDNN_STATUS_CATEGORY(cudnn_status_) == CUDNN_STATUS_BAD_PARAM; }

 private:
  cudnnStatus_t cudnn_status_;
};
}  // namespace backbone::cuda_module

// Every cuDNN call goes through this one: it names the call, file and line on failure.
#define BACKBONE_CUDNN_CHECK(expr)                                                        \
  do {                                                                                    \
    const cudnnStatus_t backbone_cudnn_status_ = (expr);                                  \
    if (backbone_cudnn_status_ != CUDNN_STATUS_SUCCESS)                                   \
      ::backbone::cuda_module::throw_cudnn_error(backbone_cudnn_status_, #expr, __FILE__, __LINE__); \
  } while (0)

// Every cuBLAS call goes through this one.
#define BACKBONE_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                     \
    const cublasStatus_t backbone_cublas_status_ = (expr);                                 \
    if (backbone_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                  \
      ::backbone::cuda_module::throw_cublas_error(backbone_cublas_status_, #expr, __FILE__, __LINE__); \
  } while (0)

namespace backbone::cuda_module {

// Makes `device` current for the calling thread, unless a context of that device already is (a
// context GStreamer's CUDA elements share and push, which cudaSetDevice would replace by the
// device's primary context).
inline void set_device(int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
  BACKBONE_CUDA_CHECK(cudaSetDevice(device));
}

// Device memory owned by one object (cudaMalloc / cudaFree on the device that was current).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) {
    if (bytes > 0) BACKBONE_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
    bytes_ = bytes;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);  // nothing to report from a destructor
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) cudaFree(ptr_);
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  // Makes the buffer at least `bytes` large (contents are not kept).
  void reserve(std::size_t bytes) {
    if (bytes > bytes_) *this = DeviceBuffer(bytes);
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// A stream that synchronises with the legacy default stream (cudaMemcpy of the inputs), or with
// cudaStreamNonBlocking one that does not.
class Stream {
 public:
  explicit Stream(unsigned int flags = cudaStreamDefault) {
    BACKBONE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, flags));
  }
  ~Stream() {
    if (stream_) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class CublasHandle {
 public:
  CublasHandle() { BACKBONE_CUBLAS_CHECK(cublasCreate(&handle_)); }
  ~CublasHandle() {
    if (handle_) cublasDestroy(handle_);
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

// cuDNN's legacy convolution API (descriptors, cudnnConvolutionBiasActivationForward) is marked
// deprecated in cuDNN 9 but supported; the RAII wrappers below name its types.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

// A cuDNN handle, bound to a stream with set_stream.
class CudnnHandle {
 public:
  CudnnHandle() { BACKBONE_CUDNN_CHECK(cudnnCreate(&handle_)); }
  ~CudnnHandle() {
    if (handle_) cudnnDestroy(handle_);
  }
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
  cudnnHandle_t get() const { return handle_; }

 private:
  cudnnHandle_t handle_ = nullptr;
};

// One cuDNN descriptor (tensor, filter, convolution, activation), created and destroyed with it.
template <typename T, cudnnStatus_t (*Create)(T*), cudnnStatus_t (*Destroy)(T)>
class CudnnDescriptor {
 public:
  CudnnDescriptor() { BACKBONE_CUDNN_CHECK(Create(&desc_)); }
  ~CudnnDescriptor() {
    if (desc_) Destroy(desc_);
  }
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;
  T get() const { return desc_; }

 private:
  T desc_ = nullptr;
};
using TensorDescriptor =
    CudnnDescriptor<cudnnTensorDescriptor_t, &cudnnCreateTensorDescriptor, &cudnnDestroyTensorDescriptor>;
using FilterDescriptor =
    CudnnDescriptor<cudnnFilterDescriptor_t, &cudnnCreateFilterDescriptor, &cudnnDestroyFilterDescriptor>;
using ConvolutionDescriptor = CudnnDescriptor<cudnnConvolutionDescriptor_t, &cudnnCreateConvolutionDescriptor,
                                              &cudnnDestroyConvolutionDescriptor>;
using ActivationDescriptor = CudnnDescriptor<cudnnActivationDescriptor_t, &cudnnCreateActivationDescriptor,
                                             &cudnnDestroyActivationDescriptor>;

#pragma GCC diagnostic pop

// A CUDA event without timing (cudaEventDisableTiming): the ready events of the engine's outputs.
class Event {
 public:
  Event() { BACKBONE_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Event() {
    if (event_) cudaEventDestroy(event_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// An instantiated CUDA graph (cudaGraphExec_t).
class GraphExec {
 public:
  GraphExec() = default;
  explicit GraphExec(cudaGraphExec_t exec) : exec_(exec) {}
  ~GraphExec() {
    if (exec_) cudaGraphExecDestroy(exec_);
  }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  GraphExec(GraphExec&& o) noexcept : exec_(o.exec_) { o.exec_ = nullptr; }
  GraphExec& operator=(GraphExec&& o) noexcept {
    if (this != &o) {
      if (exec_) cudaGraphExecDestroy(exec_);
      exec_ = o.exec_;
      o.exec_ = nullptr;
    }
    return *this;
  }
  cudaGraphExec_t get() const { return exec_; }
  explicit operator bool() const { return exec_ != nullptr; }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

// A captured CUDA graph (cudaGraph_t), destroyed once instantiated.
class Graph {
 public:
  Graph() = default;
  ~Graph() {
    if (graph_) cudaGraphDestroy(graph_);
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  cudaGraph_t* out() { return &graph_; }
  cudaGraph_t get() const { return graph_; }

 private:
  cudaGraph_t graph_ = nullptr;
};

}  // namespace backbone::cuda_module
