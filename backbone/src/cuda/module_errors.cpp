// SPDX-License-Identifier: Apache-2.0
// The module's error reporting (module_common.h): every failed CUDA / cuBLAS call becomes a
// ModuleError naming the call, the error and where it happened. Part of backbone-cuda-kernels, so
// that the GPU tests linking the kernels without the module get it too.
#include <cstring>
#include <string>

#include "cuda/module_api.h"
#include "cuda/module_common.h"

namespace backbone::cuda_module {
namespace {

// "/abs/path/backbone/src/cuda/module.cpp" -> "backbone/src/cuda/module.cpp"
const char* short_path(const char* file) {
  const char* p = std::strstr(file, "backbone/src/");
  return p ? p : file;
}

}  // namespace

std::string error_location(const char* file, int line) {
  return std::string(" (at ") + short_path(file) + ":" + std::to_string(line) + ")";
}

void throw_cuda_error(cudaError_t error, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so that it is not reported twice
  std::string message = std::string(expr) + " failed: " + cudaGetErrorName(error) + ": " + cudaGetErrorString(error);
  if (error == cudaErrorMemoryAllocation) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
      message += " (device memory: " + std::to_string(free_bytes >> 20) + " MiB free of " +
                 std::to_string(total_bytes >> 20) + " MiB)";
    cudaGetLastError();
    throw ModuleError(BACKBONE_CUDA_ERROR_OUT_OF_MEMORY, message + error_location(file, line));
  }
  throw ModuleError(BACKBONE_CUDA_ERROR_RUNTIME, message + error_location(file, line));
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
  throw ModuleError(BACKBONE_CUDA_ERROR_CUBLAS, std::string(expr) + " failed: " + cublasGetStatusName(status) + ": " +
                                                    cublasGetStatusString(status) + error_location(file, line));
}

void throw_argument_error(const std::string& message) { throw ModuleError(BACKBONE_CUDA_ERROR_ARGUMENT, message); }

}  // namespace backbone::cuda_module
