// SPDX-License-Identifier: Apache-2.0
#include "backbone/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "backbone/error.h"
#include "backbone/version.h"
#include "cuda/loader.h"

namespace backbone {

const char* version() { return BACKBONE_VERSION_STRING; }

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float32: return 4;
    case DType::Float16: return 2;
    case DType::BFloat16: return 2;
    case DType::Float64: return 8;
    case DType::Int64: return 8;
    case DType::Int32: return 4;
    case DType::Int16: return 2;
    case DType::Int8: return 1;
    case DType::UInt8: return 1;
    case DType::Bool: return 1;
  }
  throw Error("unknown dtype " + std::to_string(static_cast<int>(dtype)));
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
    case DType::Int32: return "int32";
    case DType::Int16: return "int16";
    case DType::Int8: return "int8";
    case DType::UInt8: return "uint8";
    case DType::Bool: return "bool";
  }
  return "unknown";
}

DType dtype_from_name(const std::string& name) {
  for (DType d : {DType::Float32, DType::Float16, DType::BFloat16, DType::Float64, DType::Int64, DType::Int32,
                  DType::Int16, DType::Int8, DType::UInt8, DType::Bool})
    if (name == dtype_name(d)) return d;
  throw Error("unknown dtype '" + name +
              "': expected one of float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool");
}

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5) {
    const std::string n = text.substr(5);
    char* end = nullptr;
    long v = std::strtol(n.c_str(), &end, 10);
    if (end && *end == '\0' && v >= 0 && v < 1024) return cuda(static_cast<int>(v));
  }
  throw Error("invalid device '" + text + "': expected cpu, cuda or cuda:N");
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

std::string shape_str(const Shape& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

int64_t shape_numel(const Shape& shape) {
  // A zero size makes the product 0 whatever follows; otherwise every partial product must fit.
  for (int64_t d : shape)
    if (d == 0) return 0;
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n))
      throw ShapeError("shape " + shape_str(shape) + " has more elements than an int64 counts");
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    // A size of 0 counts as 1, so an empty tensor's other sizes may still multiply past int64.
    if (i > 0 && shape[i] > 1 && __builtin_mul_overflow(s, shape[i], &s))
      throw ShapeError("shape " + shape_str(shape) + " has strides beyond an int64 (its sizes after the first, " +
                       "a 0 counted as 1, multiply past 2^63 - 1)");
  }
  return strides;
}

namespace detail {
void throw_dtype_mismatch(DType expected, DType found) {
  throw ShapeError(std::string("tensor dtype mismatch: expected ") + dtype_name(expected) + ", found " +
                   dtype_name(found));
}
}  // namespace detail

bool cuda_is_available() { return detail::cuda_available(); }
int cuda_device_count() { return detail::cuda_device_count(); }
CudaDeviceInfo cuda_device_info(int index) { return detail::cuda_device_info(index); }

namespace {

// The shape's sizes are >= 0 and its numel() and nbytes() fit their types; returns nbytes().
std::size_t check_shape(const Shape& shape, DType dtype) {
  for (int64_t d : shape)
    if (d < 0) throw ShapeError("negative size in shape " + shape_str(shape));
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<std::size_t>(shape_numel(shape)), dtype_size(dtype), &bytes))
    throw ShapeError("a " + std::string(dtype_name(dtype)) + " tensor of shape " + shape_str(shape) +
                     " has more bytes than a size_t counts");
  return bytes;
}

std::shared_ptr<void> allocate(std::size_t bytes, Device device) {
  if (bytes > static_cast<std::size_t>(INT64_MAX) - 63)
    throw Error("cannot allocate " + std::to_string(bytes) + " bytes");
  if (device.is_cpu()) {
    // 64-byte aligned for vector kernels; at least one byte so the pointer is never null.
    std::size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded ? rounded : 64);
    if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  }
  const int index = device.index;
  void* p = detail::cuda_malloc(index, bytes ? bytes : 1);
  return std::shared_ptr<void>(p, [index](void* q) { detail::cuda_free(index, q); });
}

// Copies a strided CPU tensor's elements into contiguous memory.
void gather_contiguous(const Tensor& src, void* dst) {
  const std::size_t es = dtype_size(src.dtype());
  const int64_t n = src.numel();
  if (n == 0) return;
  const int64_t nd = src.dim();
  std::vector<int64_t> idx(nd, 0);
  const char* base = static_cast<const char*>(src.data());
  char* out = static_cast<char*>(dst);
  // Innermost dimension copied element by element (strides may be anything, even 0).
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int64_t d = 0; d < nd; ++d) off += idx[d] * src.strides()[d];
    std::memcpy(out + i * es, base + off * static_cast<int64_t>(es), es);
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++idx[d] < src.shape()[d]) break;
      idx[d] = 0;
    }
  }
}

double load_as_double(const void* p, DType t) {
  switch (t) {
    case DType::Float32: return *static_cast<const float*>(p);
    case DType::Float16: return half_to_float(*static_cast<const uint16_t*>(p));
    case DType::BFloat16: return bfloat16_to_float(*static_cast<const uint16_t*>(p));
    case DType::Float64: return *static_cast<const double*>(p);
    case DType::Int64: return static_cast<double>(*static_cast<const int64_t*>(p));
    case DType::Int32: return *static_cast<const int32_t*>(p);
    case DType::Int16: return *static_cast<const int16_t*>(p);
    case DType::Int8: return *static_cast<const int8_t*>(p);
    case DType::UInt8: return *static_cast<const uint8_t*>(p);
    case DType::Bool: return *static_cast<const uint8_t*>(p) ? 1.0 : 0.0;
  }
  return 0.0;
}

void store_from_double(void* p, DType t, double v) {
  switch (t) {
    case DType::Float32: *static_cast<float*>(p) = static_cast<float>(v); break;
    case DType::Float16: *static_cast<uint16_t*>(p) = float_to_half(static_cast<float>(v)); break;
    case DType::BFloat16: *static_cast<uint16_t*>(p) = float_to_bfloat16(static_cast<float>(v)); break;
    case DType::Float64: *static_cast<double*>(p) = v; break;
    case DType::Int64: *static_cast<int64_t*>(p) = static_cast<int64_t>(v); break;
    case DType::Int32: *static_cast<int32_t*>(p) = static_cast<int32_t>(v); break;
    case DType::Int16: *static_cast<int16_t*>(p) = static_cast<int16_t>(v); break;
    case DType::Int8: *static_cast<int8_t*>(p) = static_cast<int8_t>(v); break;
    case DType::UInt8: *static_cast<uint8_t*>(p) = static_cast<uint8_t>(v); break;
    case DType::Bool: *static_cast<uint8_t*>(p) = v != 0.0; break;
  }
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  const std::size_t bytes = check_shape(shape, dtype);
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = allocate(bytes, device);
  t.data_ = t.storage_.get();
  t.defined_ = true;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  if (device.is_cpu()) {
    Tensor t = empty(shape, dtype, device);
    std::memset(t.data_, 0, t.nbytes());
    return t;
  }
  Tensor host = zeros(shape, dtype, Device::cpu());
  return host.to(device);
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device, std::shared_ptr<void> owner,
                         const Shape& strides) {
  check_shape(shape, dtype);
  if (!strides.empty() && strides.size() != shape.size())
    throw ShapeError("from_blob: strides " + shape_str(strides) + " do not fit shape " + shape_str(shape));
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.strides_ = strides.empty() ? contiguous_strides(shape) : strides;
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::move(owner);
  t.defined_ = true;
  return t;
}

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  if (d < -n || d >= n)
    throw ShapeError("dimension " + std::to_string(d) + " out of range for a tensor of shape " + shape_str(shape_));
  return shape_[d < 0 ? d + n : d];
}

int64_t Tensor::stride(int64_t d) const {
  const int64_t n = dim();
  if (d < -n || d >= n)
    throw ShapeError("dimension " + std::to_string(d) + " out of range for a tensor of shape " + shape_str(shape_));
  return strides_[d < 0 ? d + n : d];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

Tensor Tensor::contiguous() const {
  if (!defined_ || is_contiguous()) return *this;
  if (device_.is_cuda()) return to(Device::cpu()).contiguous().to(device_);
  Tensor out = empty(shape_, dtype_, device_);
  gather_contiguous(*this, out.data_);
  return out;
}

Tensor Tensor::clone() const {
  if (!defined_) return *this;
  Tensor out = empty(shape_, dtype_, device_);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device device) const {
  if (!defined_ || device == device_) return *this;
  // An engine's output may still be in flight on its stream: wait for its ready event (the copy
  // below may run in another CUDA context than the engine's stream, e.g. GStreamer's).
  if (device_.is_cuda()) cuda_wait_ready(*this);
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype_, device);
  const std::size_t bytes = nbytes();
  if (bytes == 0) return out;
  if (device_.is_cpu() && device.is_cuda())
    detail::cuda_memcpy(out.data_, src.data_, bytes, detail::CopyKind::HostToDevice, device.index);
  else if (device_.is_cuda() && device.is_cpu())
    detail::cuda_memcpy(out.data_, src.data_, bytes, detail::CopyKind::DeviceToHost, device_.index);
  else {  // between two GPUs: through the host
    Tensor host = src.to(Device::cpu());
    detail::cuda_memcpy(out.data_, host.data_, bytes, detail::CopyKind::HostToDevice, device.index);
  }
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (!defined_ || dtype == dtype_) return *this;
  if (device_.is_cuda()) return to(Device::cpu()).to(dtype).to(device_);
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype, device_);
  const int64_t n = numel();
  const char* in = static_cast<const char*>(src.data_);
  char* o = static_cast<char*>(out.data_);
  const std::size_t is = dtype_size(dtype_), os = dtype_size(dtype);
  if (dtype_ == DType::Float32 && dtype == DType::Float16) {
    for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(o)[i] = float_to_half(reinterpret_cast<const float*>(in)[i]);
  } else if (dtype_ == DType::Float16 && dtype == DType::Float32) {
    for (int64_t i = 0; i < n; ++i) reinterpret_cast<float*>(o)[i] = half_to_float(reinterpret_cast<const uint16_t*>(in)[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) store_from_double(o + i * os, dtype, load_as_double(in + i * is, dtype_));
  }
  return out;
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (!is_contiguous()) throw ShapeError("reshape needs a contiguous tensor, found strides " + shape_str(strides_));
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) throw ShapeError("reshape: only one size may be -1 in " + shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else if (__builtin_mul_overflow(known, s[i], &known)) {
      throw ShapeError("reshape: shape " + shape_str(shape) + " has more elements than an int64 counts");
    }
  }
  if (infer >= 0) s[infer] = known ? numel() / known : 0;
  if (shape_numel(s) != numel())
    throw ShapeError("reshape: cannot view a tensor of shape " + shape_str(shape_) + " as " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

void Tensor::copy_(const Tensor& src) {
  if (src.shape_ != shape_)
    throw ShapeError("copy_: source shape " + shape_str(src.shape_) + " differs from " + shape_str(shape_));
  Tensor s = src.dtype_ == dtype_ ? src : src.to(dtype_);
  if (device_.is_cpu() && s.device_.is_cpu()) {
    if (is_contiguous()) {
      if (s.is_contiguous())
        std::memcpy(data_, s.data_, nbytes());
      else
        gather_contiguous(s, data_);
      return;
    }
    // Strided destination: gather the source, then scatter element by element.
    Tensor c = s.contiguous();
    const std::size_t es = dtype_size(dtype_);
    std::vector<int64_t> idx(dim(), 0);
    for (int64_t i = 0; i < numel(); ++i) {
      int64_t off = 0;
      for (int64_t d = 0; d < dim(); ++d) off += idx[d] * strides_[d];
      std::memcpy(static_cast<char*>(data_) + off * static_cast<int64_t>(es), static_cast<const char*>(c.data_) + i * es, es);
      for (int64_t d = dim() - 1; d >= 0; --d) {
        if (++idx[d] < shape_[d]) break;
        idx[d] = 0;
      }
    }
    return;
  }
  if (!is_contiguous()) throw ShapeError("copy_ into a strided CUDA tensor is not supported");
  if (s.device_.is_cuda()) cuda_wait_ready(s);  // an engine's output may still be in flight
  Tensor c = s.contiguous();
  const std::size_t bytes = nbytes();
  if (bytes == 0) return;
  if (device_.is_cuda() && c.device_.is_cpu())
    detail::cuda_memcpy(data_, c.data_, bytes, detail::CopyKind::HostToDevice, device_.index);
  else if (device_.is_cpu() && c.device_.is_cuda())
    detail::cuda_memcpy(data_, c.data_, bytes, detail::CopyKind::DeviceToHost, c.device_.index);
  else if (device_ == c.device_)
    detail::cuda_memcpy(data_, c.data_, bytes, detail::CopyKind::DeviceToDevice, device_.index);
  else
    copy_(c.to(Device::cpu()));
}

// IEEE half and bfloat16 conversions with round-to-nearest-even.
uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflows to inf after rounding
  if (abs < 0x38800000u) {                                               // subnormal half or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
    uint32_t h = mant >> (shift);
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      x = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t float_to_bfloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float bfloat16_to_float(uint16_t b) {
  uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

}  // namespace backbone
