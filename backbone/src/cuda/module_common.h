// SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA module (libbackbone-cuda.so) only: error checking and RAII for CUDA/cuBLAS
// objects. Includes CUDA headers, so never include it from libbackbone's own sources.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

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

// A stream that synchronises with the legacy default stream (cudaMemcpy of the inputs).
class Stream {
 public:
  Stream() { BACKBONE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamDefault)); }
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

}  // namespace backbone::cuda_module
