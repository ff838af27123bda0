// SPDX-License-Identifier: Apache-2.0
// backbone::Tensor: the library's own small tensor view (dtype, shape, strides, device, shared
// ownership of the storage). No engine type (torch::Tensor, cv::Mat, CUDA) appears here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace backbone {

enum class DType : int { Float32, Float16, BFloat16, Float64, Int64, Int32, Int16, Int8, UInt8, Bool };

// Size of one element in bytes.
std::size_t dtype_size(DType dtype);
// numpy-style name: "float32", "float16", "bfloat16", "float64", "int64", ... "bool".
const char* dtype_name(DType dtype);
// Inverse of dtype_name; throws backbone::Error naming the unknown dtype.
DType dtype_from_name(const std::string& name);

struct Device {
  enum class Type : int { CPU, CUDA };
  Type type = Type::CPU;
  int index = 0;  // the N of cuda:N; 0 for the CPU

  static Device cpu() { return {Type::CPU, 0}; }
  static Device cuda(int index = 0) { return {Type::CUDA, index}; }
  // "cpu", "cuda" (= cuda:0) or "cuda:N"; throws backbone::Error naming what was found.
  static Device parse(const std::string& text);

  bool is_cpu() const { return type == Type::CPU; }
  bool is_cuda() const { return type == Type::CUDA; }
  std::string str() const;  // "cpu" or "cuda:N"
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

using Shape = std::vector<int64_t>;

// "[1, 3, 224, 224]"
std::string shape_str(const Shape& shape);
// Product of the sizes (1 for a scalar); throws ShapeError when it does not fit an int64.
int64_t shape_numel(const Shape& shape);
// Row-major (C-contiguous) strides in elements; throws ShapeError when they do not fit an int64
// (only an empty shape can do that, e.g. [0, 2^62, 4]: a size of 0 counts as 1 in the strides).
Shape contiguous_strides(const Shape& shape);

// A strided view of typed memory on one device. Copies of a Tensor share the storage; the
// storage lives as long as any Tensor (or anything holding storage()) refers to it.
class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // New uninitialised contiguous storage on `device` (CUDA storage through the CUDA module).
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  // Wraps memory owned by someone else. `owner` keeps it alive (may be null for memory that
  // outlives the tensor). Empty `strides` means contiguous.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device = Device::cpu(),
                          std::shared_ptr<void> owner = nullptr, const Shape& strides = {});

  bool defined() const { return defined_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }  // in elements
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  // size(-1) is the last dimension, as in PyTorch; throws on an out-of-range dimension.
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;

  void* data() { return data_; }
  const void* data() const { return data_; }
  // Typed pointer; throws backbone::ShapeError when T does not match dtype().
  template <typename T>
  T* data_ptr();
  template <typename T>
  const T* data_ptr() const;

  // The owner of the memory (shared ownership); holding it keeps data() valid.
  const std::shared_ptr<void>& storage() const { return storage_; }

  // A contiguous tensor with the same values (this one when already contiguous).
  Tensor contiguous() const;
  // A new contiguous copy with its own storage.
  Tensor clone() const;
  // Same values on another device (this one when already there).
  Tensor to(Device device) const;
  // Same values converted to another dtype (float32/float16/bfloat16/float64 and integers).
  Tensor to(DType dtype) const;
  // A view with a new shape over the same storage; the tensor must be contiguous. One size may be -1.
  Tensor reshape(const Shape& shape) const;
  // Copies the values of `src` (same shape, any strides, any device) into this tensor.
  void copy_(const Tensor& src);

 private:
  void* data_ = nullptr;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::Float32;
  Device device_;
  std::shared_ptr<void> storage_;
  bool defined_ = false;
};

// Element type <-> DType.
template <typename T>
struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::Int32; };
template <> struct dtype_of<int16_t> { static constexpr DType value = DType::Int16; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::Int8; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::UInt8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };

namespace detail {
[[noreturn]] void throw_dtype_mismatch(DType expected, DType found);
}

template <typename T>
T* Tensor::data_ptr() {
  if (dtype_of<T>::value != dtype_) detail::throw_dtype_mismatch(dtype_of<T>::value, dtype_);
  return static_cast<T*>(data_);
}
template <typename T>
const T* Tensor::data_ptr() const {
  if (dtype_of<T>::value != dtype_) detail::throw_dtype_mismatch(dtype_of<T>::value, dtype_);
  return static_cast<const T*>(data_);
}

// Whether the CUDA module loads and sees at least one device (never throws).
bool cuda_is_available();
// Number of CUDA devices the CUDA module sees; 0 when it is not built, not found or has no device.
int cuda_device_count();

// What the CUDA module reports about cuda:N (for logs and backbone-bench's peak figures).
struct CudaDeviceInfo {
  std::string name;              // "NVIDIA H100 80GB HBM3"
  int major = 0, minor = 0;      // compute capability
  int sm_count = 0;
  int clock_khz = 0;             // peak SM clock
  int memory_clock_khz = 0, memory_bus_width = 0;
  int64_t total_memory = 0;      // bytes
  int cudnn_version = 0;         // e.g. 91900
  int driver_version = 0;        // e.g. 13000
  std::string module;            // "libbackbone-cuda 0.x, CUDA runtime 13.0, SMs 75,80,86,89,90"
};
// Throws DeviceError naming why when cuda:index cannot be used.
CudaDeviceInfo cuda_device_info(int index);

// The CUDA event (a cudaEvent_t / CUevent, as void*) that the engine which produced `t` recorded on
// its stream once t's data was complete, or nullptr when there is none (CPU tensors, tensors not
// returned by an engine; views share their source's event through storage()). Valid while any copy
// of t or of its storage is held. A consumer on another stream waits on it (cudaStreamWaitEvent)
// instead of synchronising.
void* cuda_ready_event(const Tensor& t);
// Blocks the calling thread until cuda_ready_event(t) has completed (no-op without one).
void cuda_wait_ready(const Tensor& t);

// float <-> half / bfloat16 bit patterns (round to nearest even), for CPU conversions.
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
uint16_t float_to_bfloat16(float f);
float bfloat16_to_float(uint16_t b);

}  // namespace backbone
