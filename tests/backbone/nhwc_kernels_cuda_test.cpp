// SPDX-License-Identifier: Apache-2.0
// The CUDA module's NHWC kernels (ops/cuda/kernels.h) against their CPU twins (ops/cpu/nhwc_ops.h)
// in fp32, fp16 and bf16: inputs are rounded to the storage type first, so both sides see the same
// values; the twin computes in float32 and the kernel rounds its result once, so the tolerance per
// type is relative to max |reference| (fp32 1e-5, fp16 2e-3, bf16 1.6e-2). Shapes include sizes
// that are not multiples of the kernels' tiles. Kernel tests skip, with the reason, where no CUDA
// device is present; the host-side helpers (storage sizes and names, convert_from_float) and the
// argument checks, which touch no device, always run.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "backbone/tensor.h"
#include "cuda/module_api.h"
#include "cuda/module_common.h"
#include "ops/cpu/nhwc_ops.h"
#include "ops/cuda/kernels.h"

namespace backbone {
namespace {

namespace nhwc = backbone::detail::nhwc;
using cuda_module::ModuleError;
using cuda_module::NhwcShape;
using cuda_module::StorageType;
using Vec = std::vector<float>;

const StorageType kTypes[] = {StorageType::Float32, StorageType::Float16, StorageType::BFloat16};

// Why there is no usable device, or "" when there is one.
std::string no_device_reason() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
  }
  if (count == 0) return "cudaGetDeviceCount found no device";
  return "";
}

class NhwcKernelsCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = no_device_reason();
    if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why;
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    // A blocking stream: it waits for the uploads and poisoning done on the legacy default stream.
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamDefault), cudaSuccess);
  }
  void TearDown() override {
    if (stream_) {
      EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
      cudaStreamDestroy(stream_);
    }
  }
  void sync() { ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << cudaGetErrorString(cudaGetLastError()); }
  cudaStream_t stream_ = nullptr;
};

// ---- helpers -----------------------------------------------------------------------------------

Vec random_vec(int64_t n, std::mt19937& rng, float scale = 1.0f, float shift = 0.0f) {
  std::normal_distribution<float> dist(shift, scale);
  Vec v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// The values as stored in type t (rounded to nearest even).
void round_to(StorageType t, Vec& v) {
  if (t == StorageType::Float16) nhwc::round_to_half(v.data(), static_cast<int64_t>(v.size()));
  if (t == StorageType::BFloat16) nhwc::round_to_bfloat16(v.data(), static_cast<int64_t>(v.size()));
}

double tolerance(StorageType t) {
  switch (t) {
    case StorageType::Float32: return 1e-5;
    case StorageType::Float16: return 2e-3;
    case StorageType::BFloat16: return 1.6e-2;
  }
  return 0;
}

double max_abs_of(const Vec& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// Max |a - b|; a NaN on either side counts as infinite.
double max_abs_diff_of(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    m = std::max(m, std::isnan(d) ? std::numeric_limits<double>::infinity() : d);
  }
  return m;
}

void expect_close(StorageType t, const Vec& out, const Vec& ref, const std::string& what) {
  const double err = max_abs_diff_of(out, ref);
  const double scale = max_abs_of(ref);
  EXPECT_LE(err, tolerance(t) * scale + 1e-6) << what << " (" << cuda_module::storage_name(t) << "): max abs error "
                                               << err << ", max |ref| " << scale;
}

// Device memory for the tests (freed on scope exit).
class DeviceMemory {
 public:
  explicit DeviceMemory(std::size_t bytes) {
    if (bytes) {
    EXPECT_EQ(cudaMalloc(&ptr_, bytes), cudaSuccess);
  }
    bytes_ = bytes;
  }
  ~DeviceMemory() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// float values -> device memory in storage type t.
std::unique_ptr<DeviceMemory> upload(StorageType t, const Vec& v) {
  const std::size_t bytes = v.size() * cuda_module::storage_size(t);
  auto d = std::make_unique<DeviceMemory>(bytes);
  std::vector<unsigned char> host(bytes);
  cuda_module::convert_from_float(t, v.data(), v.size(), host.data());
  if (bytes) {
    EXPECT_EQ(cudaMemcpy(d->get(), host.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // pageable copies may still be in flight otherwise
  return d;
}

std::unique_ptr<DeviceMemory> upload_f32(const Vec& v) { return upload(StorageType::Float32, v); }

// Device memory in storage type t -> float values (after the stream's work is done).
Vec download(StorageType t, const void* d, std::size_t count) {
  const std::size_t bytes = count * cuda_module::storage_size(t);
  std::vector<unsigned char> host(bytes);
  if (bytes) {
    EXPECT_EQ(cudaMemcpy(host.data(), d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  }
  Vec v(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (t == StorageType::Float32) {
      std::memcpy(&v[i], host.data() + 4 * i, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, host.data() + 2 * i, 2);
      v[i] = t == StorageType::Float16 ? half_to_float(bits) : bfloat16_to_float(bits);
    }
  }
  return v;
}

// Output memory filled with NaN (0xff bytes) so that an element the kernel skips shows up.
std::unique_ptr<DeviceMemory> poisoned(StorageType t, std::size_t count) {
  auto d = std::make_unique<DeviceMemory>(count * cuda_module::storage_size(t));
  if (count) {
    EXPECT_EQ(cudaMemset(d->get(), 0xff, d->bytes()), cudaSuccess);
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // cudaMemset is asynchronous
  return d;
}

nhwc::Shape twin_shape(NhwcShape s) { return nhwc::Shape{s.n, s.h, s.w, s.c}; }

// ---- host-side helpers (no device needed) --------------------------------------------------------

TEST(NhwcKernelsHost, StorageSizesAndNames) {
  EXPECT_EQ(cuda_module::storage_size(StorageType::Float32), 4u);
  EXPECT_EQ(cuda_module::storage_size(StorageType::Float16), 2u);
  EXPECT_EQ(cuda_module::storage_size(StorageType::BFloat16), 2u);
  EXPECT_STREQ(cuda_module::storage_name(StorageType::Float32), "fp32");
  EXPECT_STREQ(cuda_module::storage_name(StorageType::Float16), "fp16");
  EXPECT_STREQ(cuda_module::storage_name(StorageType::BFloat16), "bf16");
  EXPECT_THROW(cuda_module::storage_size(static_cast<StorageType>(7)), ModuleError);
}

TEST(NhwcKernelsHost, ConvertFromFloatMatchesTensorConversions) {
  std::mt19937 rng(21);
  Vec v = random_vec(1000, rng, 300.0f);
  v.insert(v.end(), {0.0f, -0.0f, 1.0f + 1.0f / 2048.0f, 65520.0f, 1e-8f, 1.0f + 1.0f / 256.0f,
                     std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()});
  std::vector<float> f(v.size());
  cuda_module::convert_from_float(StorageType::Float32, v.data(), v.size(), f.data());
  EXPECT_EQ(f, v);
  std::vector<uint16_t> h(v.size()), b(v.size());
  cuda_module::convert_from_float(StorageType::Float16, v.data(), v.size(), h.data());
  cuda_module::convert_from_float(StorageType::BFloat16, v.data(), v.size(), b.data());
  for (std::size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(h[i], float_to_half(v[i])) << v[i];
    EXPECT_EQ(b[i], float_to_bfloat16(v[i])) << v[i];
  }
  uint16_t nan_bits = 0;
  const float nan = std::nanf("");
  cuda_module::convert_from_float(StorageType::Float16, &nan, 1, &nan_bits);
  EXPECT_TRUE(std::isnan(half_to_float(nan_bits)));
  cuda_module::convert_from_float(StorageType::BFloat16, &nan, 1, &nan_bits);
  EXPECT_TRUE(std::isnan(bfloat16_to_float(nan_bits)));
}

// Argument errors are found on the host before anything is enqueued; empty work enqueues nothing.
TEST(NhwcKernelsHost, RejectsBadArgumentsWithoutTouchingTheDevice) {
  float dummy[64] = {};
  void* p = dummy;
  const cudaStream_t s = nullptr;
  EXPECT_THROW(cuda_module::launch_max_pool_nhwc(StorageType::Float32, p, {1, 8, 8, 4}, p, 3, 4, 3, 2, 1, s),
               ModuleError);  // 8x8, k3 s2 p1 gives 4x4
  EXPECT_THROW(cuda_module::launch_max_pool_nhwc(StorageType::Float32, p, {1, 8, 8, 4}, p, 4, 4, 3, 2, 2, s),
               ModuleError);  // padding > kernel / 2
  try {
    cuda_module::launch_max_pool_nhwc(StorageType::Float32, p, {1, 8, 8, 4}, p, 3, 4, 3, 2, 1, s);
  } catch (const ModuleError& e) {
    EXPECT_EQ(e.status(), BACKBONE_CUDA_ERROR_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("expected output 4x4, found 3x4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda_module::launch_max_pool_nhwc(static_cast<StorageType>(9), p, {1, 8, 8, 4}, p, 4, 4, 3, 2, 1, s),
               ModuleError);
  EXPECT_THROW(cuda_module::launch_group_norm_nhwc(StorageType::Float16, p, {1, 4, 4, 6}, 4, 1e-5, nullptr, nullptr,
                                                   nullptr, false, p, p, s),
               ModuleError);  // 6 channels in 4 groups
  EXPECT_THROW(cuda_module::launch_group_norm_nhwc(StorageType::Float16, p, {1, 4, 4, 8}, 4, 1e-5, nullptr, nullptr,
                                                   nullptr, false, p, nullptr, s),
               ModuleError);  // no workspace
  EXPECT_THROW(cuda_module::launch_nchw_f32_to_nhwc(StorageType::BFloat16, dummy, 1, 4, 2, 2, 3, p, s), ModuleError);
  EXPECT_THROW(cuda_module::launch_nhwc_to_nchw_f32(StorageType::BFloat16, p, 1, 2, 2, 3, 4, dummy, s), ModuleError);
  EXPECT_THROW(cuda_module::launch_avgpool_linear_nhwc(StorageType::Float32, p, {1, 2, 2, 4}, dummy, nullptr, 0,
                                                       dummy, s),
               ModuleError);
  EXPECT_THROW(cuda_module::launch_avgpool_linear_nhwc(StorageType::Float32, p, {1, 2, 2, 20000}, dummy, nullptr, 3,
                                                       dummy, s),
               ModuleError);
  cuda_module::DeformConvNhwcArgs a;
  a.input = a.offset = a.weight = p;
  a.out = dummy + 32;
  a.n = 1, a.h = 4, a.w = 4, a.in_channels = 4, a.out_channels = 4, a.out_h = 4, a.out_w = 4, a.offset_channels = 18;
  a.groups = 3;
  EXPECT_THROW(cuda_module::launch_deform_conv_nhwc(StorageType::Float32, a, s), ModuleError);
  a.groups = 1;
  a.modulated = true;
  EXPECT_THROW(cuda_module::launch_deform_conv_nhwc(StorageType::Float32, a, s), ModuleError);  // 18 < 27
  a.modulated = false;
  a.out_w = 5;
  EXPECT_THROW(cuda_module::launch_deform_conv_nhwc(StorageType::Float32, a, s), ModuleError);
  a.out_w = 4;
  a.input = nullptr;
  EXPECT_THROW(cuda_module::launch_deform_conv_nhwc(StorageType::Float32, a, s), ModuleError);
  // The FPN's upsample + add: even sizes (twice the coarser level's), no aliasing, non-null arrays.
  try {
    cuda_module::launch_upsample2x_add_nhwc(StorageType::Float32, p, {1, 3, 4, 2}, p, 1.0f, dummy + 32, s);
    ADD_FAILURE() << "an odd height was accepted";
  } catch (const ModuleError& e) {
    EXPECT_EQ(e.status(), BACKBONE_CUDA_ERROR_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("expected an even height and width"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda_module::launch_upsample2x_add_nhwc(StorageType::Float16, p, {1, 4, 4, 2}, dummy + 32, 1.0f, p, s),
               ModuleError);  // out aliases x
  EXPECT_THROW(cuda_module::launch_upsample2x_add_nhwc(StorageType::Float16, p, {1, 4, 4, 2}, nullptr, 1.0f,
                                                       dummy + 32, s),
               ModuleError);
  EXPECT_NO_THROW(cuda_module::launch_upsample2x_add_nhwc(StorageType::BFloat16, nullptr, {0, 4, 4, 2}, nullptr, 0.5f,
                                                          nullptr, s));
  // Nothing to do: returns without a launch (and without a device).
  a.n = 0;
  EXPECT_NO_THROW(cuda_module::launch_deform_conv_nhwc(StorageType::Float32, a, s));
  EXPECT_NO_THROW(cuda_module::launch_max_pool_nhwc(StorageType::Float16, nullptr, {0, 8, 8, 4}, nullptr, 4, 4, 3, 2,
                                                    1, s));
  EXPECT_NO_THROW(cuda_module::launch_bias_residual_act_nhwc(StorageType::Float16, nullptr, {0, 8, 8, 4}, nullptr,
                                                             nullptr, true, nullptr, s));
  EXPECT_EQ(cuda_module::group_norm_workspace_bytes({1, 4, 4, 6}, 4), 0u);
  EXPECT_GT(cuda_module::group_norm_workspace_bytes({2, 64, 64, 32}, 8), 0u);
}

// ---- kernels against twins ---------------------------------------------------------------------

TEST_F(NhwcKernelsCuda, MaxPool) {
  struct Case {
    NhwcShape s;
    int k, stride, pad;
  };
  // The stem's 3/2/1, others, and LastLevelMaxPool's 1/2/0 (p6 = p5[:, :, ::2, ::2]) on odd and even sizes.
  const Case cases[] = {{{2, 9, 11, 5}, 3, 2, 1}, {{1, 7, 8, 67}, 2, 2, 0}, {{1, 6, 5, 3}, 3, 1, 1},
                        {{1, 65, 33, 64}, 3, 2, 1}, {{2, 25, 38, 64}, 1, 2, 0}, {{1, 4, 7, 256}, 1, 2, 0}};
  for (StorageType t : kTypes)
    for (const Case& c : cases) {
      std::mt19937 rng(1);
      Vec in = random_vec(c.s.numel(), rng);
      round_to(t, in);
      const int64_t oh = (c.s.h + 2 * c.pad - c.k) / c.stride + 1, ow = (c.s.w + 2 * c.pad - c.k) / c.stride + 1;
      Vec ref(static_cast<std::size_t>(c.s.n * oh * ow * c.s.c));
      nhwc::max_pool(in.data(), twin_shape(c.s), ref.data(), oh, ow, c.k, c.stride, c.pad);
      auto d_in = upload(t, in);
      auto d_out = poisoned(t, ref.size());
      cuda_module::launch_max_pool_nhwc(t, d_in->get(), c.s, d_out->get(), oh, ow, c.k, c.stride, c.pad, stream_);
      sync();
      // Max pooling only selects stored values: exact in every type.
      EXPECT_EQ(max_abs_diff_of(download(t, d_out->get(), ref.size()), ref), 0.0)
          << cuda_module::storage_name(t) << " c " << c.s.c << " k " << c.k;
    }
}

// The FPN's top-down step: the same float32 sum and product as the twin, rounded once: identical
// to the twin's result rounded to the storage type.
TEST_F(NhwcKernelsCuda, Upsample2xAdd) {
  const NhwcShape shapes[] = {{2, 8, 10, 19}, {1, 2, 2, 64}, {1, 50, 76, 256}, {3, 14, 6, 5}};
  for (StorageType t : kTypes)
    for (const NhwcShape& s : shapes)
      for (const float scale : {1.0f, 0.5f}) {
        std::mt19937 rng(static_cast<unsigned>(s.h * 7 + s.c));
        const NhwcShape cs{s.n, s.h / 2, s.w / 2, s.c};
        Vec x = random_vec(s.numel(), rng, 3.0f), coarse = random_vec(cs.numel(), rng, 3.0f);
        round_to(t, x);
        round_to(t, coarse);
        Vec ref(x.size());
        nhwc::upsample2x_add(x.data(), twin_shape(s), coarse.data(), scale, ref.data());
        round_to(t, ref);
        auto d_x = upload(t, x), d_coarse = upload(t, coarse);
        auto d_out = poisoned(t, x.size());
        cuda_module::launch_upsample2x_add_nhwc(t, d_x->get(), s, d_coarse->get(), scale, d_out->get(), stream_);
        sync();
        EXPECT_EQ(max_abs_diff_of(download(t, d_out->get(), ref.size()), ref), 0.0)
            << cuda_module::storage_name(t) << " " << s.n << "x" << s.h << "x" << s.w << "x" << s.c << " scale " << scale;
      }
}

TEST_F(NhwcKernelsCuda, BiasResidualAct) {
  const NhwcShape s{2, 5, 7, 19};
  for (StorageType t : kTypes)
    for (int variant = 0; variant < 4; ++variant) {
      const bool use_bias = variant & 1, use_residual = variant & 2, relu = variant != 1;
      std::mt19937 rng(2 + variant);
      Vec x = random_vec(s.numel(), rng), residual = random_vec(s.numel(), rng);
      const Vec bias = random_vec(s.c, rng);
      round_to(t, x);
      round_to(t, residual);
      Vec ref(x.size());
      nhwc::bias_residual_act(x.data(), twin_shape(s), use_bias ? bias.data() : nullptr,
                              use_residual ? residual.data() : nullptr, relu, ref.data());
      auto d_x = upload(t, x), d_res = upload(t, residual), d_bias = upload_f32(bias);
      auto d_out = poisoned(t, x.size());
      cuda_module::launch_bias_residual_act_nhwc(t, d_x->get(), s, use_bias ? static_cast<float*>(d_bias->get()) : nullptr,
                                                 use_residual ? d_res->get() : nullptr, relu, d_out->get(), stream_);
      // In place as well.
      cuda_module::launch_bias_residual_act_nhwc(t, d_x->get(), s, use_bias ? static_cast<float*>(d_bias->get()) : nullptr,
                                                 use_residual ? d_res->get() : nullptr, relu, d_x->get(), stream_);
      sync();
      expect_close(t, download(t, d_out->get(), x.size()), ref, "bias_residual_act " + std::to_string(variant));
      expect_close(t, download(t, d_x->get(), x.size()), ref, "bias_residual_act in place " + std::to_string(variant));
    }
}

TEST_F(NhwcKernelsCuda, GroupNorm) {
  struct Case {
    NhwcShape s;
    int64_t groups;
    bool residual, relu;
    float shift;
  };
  // The last ones have more than one statistics block per group (16384 elements each).
  const Case cases[] = {{{2, 5, 6, 8}, 4, false, false, 0.0f},
                        {{1, 37, 29, 64}, 32, true, true, 1.0f},
                        {{1, 64, 64, 32}, 1, false, true, 3.0f},
                        {{2, 45, 50, 96}, 3, true, false, -2.0f}};
  for (StorageType t : kTypes)
    for (const Case& c : cases) {
      std::mt19937 rng(3);
      Vec in = random_vec(c.s.numel(), rng, 2.0f, c.shift), residual = random_vec(c.s.numel(), rng);
      const Vec gamma = random_vec(c.s.c, rng), beta = random_vec(c.s.c, rng);
      round_to(t, in);
      round_to(t, residual);
      Vec ref(in.size());
      nhwc::group_norm(in.data(), twin_shape(c.s), c.groups, 1e-5, gamma.data(), beta.data(),
                       c.residual ? residual.data() : nullptr, c.relu, ref.data());
      auto d_in = upload(t, in), d_res = upload(t, residual), d_gamma = upload_f32(gamma), d_beta = upload_f32(beta);
      auto d_out = poisoned(t, in.size());
      DeviceMemory workspace(cuda_module::group_norm_workspace_bytes(c.s, c.groups));
      cuda_module::launch_group_norm_nhwc(t, d_in->get(), c.s, c.groups, 1e-5, static_cast<float*>(d_gamma->get()),
                                          static_cast<float*>(d_beta->get()), c.residual ? d_res->get() : nullptr,
                                          c.relu, d_out->get(), workspace.get(), stream_);
      sync();
      expect_close(t, download(t, d_out->get(), in.size()), ref,
                   "group_norm c " + std::to_string(c.s.c) + " groups " + std::to_string(c.groups));
    }
}

TEST_F(NhwcKernelsCuda, LayerNorm) {
  struct Case {
    NhwcShape s;
    bool residual, relu;
  };
  const Case cases[] = {{{2, 4, 5, 6}, false, false}, {{1, 3, 7, 100}, true, true}, {{1, 33, 17, 768}, false, true}};
  for (StorageType t : kTypes)
    for (const Case& c : cases) {
      std::mt19937 rng(4);
      Vec in = random_vec(c.s.numel(), rng, 1.5f, 0.5f), residual = random_vec(c.s.numel(), rng);
      const Vec gamma = random_vec(c.s.c, rng), beta = random_vec(c.s.c, rng);
      round_to(t, in);
      round_to(t, residual);
      Vec ref(in.size());
      nhwc::layer_norm(in.data(), twin_shape(c.s), 1e-6, gamma.data(), beta.data(),
                       c.residual ? residual.data() : nullptr, c.relu, ref.data());
      auto d_in = upload(t, in), d_res = upload(t, residual), d_gamma = upload_f32(gamma), d_beta = upload_f32(beta);
      auto d_out = poisoned(t, in.size());
      cuda_module::launch_layer_norm_nhwc(t, d_in->get(), c.s, 1e-6, static_cast<float*>(d_gamma->get()),
                                          static_cast<float*>(d_beta->get()), c.residual ? d_res->get() : nullptr,
                                          c.relu, d_out->get(), stream_);
      sync();
      expect_close(t, download(t, d_out->get(), in.size()), ref, "layer_norm c " + std::to_string(c.s.c));
    }
}

TEST_F(NhwcKernelsCuda, LayoutConversions) {
  const int64_t n = 2, c = 3, h = 13, w = 17, cp = 8;
  for (StorageType t : kTypes) {
    std::mt19937 rng(5);
    const Vec nchw = random_vec(n * c * h * w, rng);
    Vec ref(static_cast<std::size_t>(n * h * w * cp));
    nhwc::nchw_to_nhwc(nchw.data(), n, c, h, w, cp, ref.data());
    round_to(t, ref);  // the kernel rounds each value once when storing it
    auto d_in = upload_f32(nchw);
    auto d_nhwc = poisoned(t, ref.size());
    cuda_module::launch_nchw_f32_to_nhwc(t, static_cast<const float*>(d_in->get()), n, c, h, w, cp, d_nhwc->get(),
                                         stream_);
    sync();
    EXPECT_EQ(max_abs_diff_of(download(t, d_nhwc->get(), ref.size()), ref), 0.0) << cuda_module::storage_name(t);
    // Back to NCHW float32 (first c of the cp stored channels): the stored values, exactly.
    Vec back_ref(nchw.size());
    nhwc::nhwc_to_nchw(ref.data(), n, h, w, cp, c, back_ref.data());
    auto d_back = poisoned(StorageType::Float32, nchw.size());
    cuda_module::launch_nhwc_to_nchw_f32(t, d_nhwc->get(), n, h, w, cp, c, static_cast<float*>(d_back->get()),
                                         stream_);
    sync();
    EXPECT_EQ(max_abs_diff_of(download(StorageType::Float32, d_back->get(), nchw.size()), back_ref), 0.0)
        << cuda_module::storage_name(t);
  }
}

TEST_F(NhwcKernelsCuda, AvgPoolLinear) {
  struct Case {
    NhwcShape s;
    int64_t classes;
    bool bias;
  };
  const Case cases[] = {{{2, 5, 7, 16}, 10, true}, {{3, 7, 7, 300}, 37, false}, {{1, 1, 1, 2048}, 1000, true}};
  for (StorageType t : kTypes)
    for (const Case& c : cases) {
      std::mt19937 rng(6);
      Vec in = random_vec(c.s.numel(), rng);
      const Vec weight = random_vec(c.classes * c.s.c, rng, 0.1f), bias = random_vec(c.classes, rng);
      round_to(t, in);
      Vec ref(static_cast<std::size_t>(c.s.n * c.classes));
      nhwc::avgpool_linear(in.data(), twin_shape(c.s), weight.data(), c.bias ? bias.data() : nullptr, c.classes,
                           ref.data());
      auto d_in = upload(t, in), d_w = upload_f32(weight), d_b = upload_f32(bias);
      auto d_out = poisoned(StorageType::Float32, ref.size());
      cuda_module::launch_avgpool_linear_nhwc(t, d_in->get(), c.s, static_cast<float*>(d_w->get()),
                                              c.bias ? static_cast<float*>(d_b->get()) : nullptr, c.classes,
                                              static_cast<float*>(d_out->get()), stream_);
      sync();
      // float32 output from float32 accumulation on values both sides share: fp32 tolerance.
      expect_close(StorageType::Float32, download(StorageType::Float32, d_out->get(), ref.size()), ref,
                   std::string("avgpool_linear ") + cuda_module::storage_name(t) + " c " + std::to_string(c.s.c));
    }
}

struct DeformConfig {
  std::string name;
  int64_t n, cin, h, w, cout, kernel, stride, padding, dilation, groups, dgs;
  bool modulated, bias, residual, relu;
  float offset_scale;
};

void PrintTo(const DeformConfig& c, std::ostream* os) { *os << c.name; }

class NhwcDeformCuda : public NhwcKernelsCuda, public ::testing::WithParamInterface<DeformConfig> {};

TEST_P(NhwcDeformCuda, MatchesTwin) {
  const DeformConfig& c = GetParam();
  const int64_t out_h = (c.h + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
  const int64_t out_w = (c.w + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
  const int64_t taps = c.kernel * c.kernel;
  const int64_t off_ch = (c.modulated ? 3 : 2) * c.dgs * taps;
  const int64_t pixels = c.n * out_h * out_w;
  for (StorageType t : kTypes) {
    std::mt19937 rng(7);
    Vec input = random_vec(c.n * c.h * c.w * c.cin, rng);
    Vec offset = random_vec(pixels * off_ch, rng, c.offset_scale);
    Vec weight = random_vec(c.cout * taps * (c.cin / c.groups), rng, 1.0f / std::sqrt(static_cast<float>(c.cin * taps / c.groups)));
    Vec residual = random_vec(pixels * c.cout, rng);
    const Vec bias = random_vec(c.cout, rng);
    for (Vec* v : {&input, &offset, &weight, &residual}) round_to(t, *v);

    Vec ref(static_cast<std::size_t>(pixels * c.cout));
    nhwc::DeformConvArgs ta;
    ta.input = input.data(), ta.offset = offset.data(), ta.offset_channels = off_ch, ta.weight = weight.data();
    ta.bias = c.bias ? bias.data() : nullptr, ta.residual = c.residual ? residual.data() : nullptr;
    ta.out = ref.data();
    ta.n = c.n, ta.h = c.h, ta.w = c.w, ta.in_channels = c.cin, ta.out_channels = c.cout, ta.out_h = out_h;
    ta.out_w = out_w, ta.kernel = c.kernel, ta.stride = c.stride, ta.padding = c.padding, ta.dilation = c.dilation;
    ta.groups = c.groups, ta.deformable_groups = c.dgs, ta.modulated = c.modulated, ta.relu = c.relu;
    nhwc::deform_conv(ta);

    auto d_in = upload(t, input), d_off = upload(t, offset), d_w = upload(t, weight), d_res = upload(t, residual);
    auto d_bias = upload_f32(bias);
    auto d_out = poisoned(t, ref.size());
    cuda_module::DeformConvNhwcArgs a;
    a.input = d_in->get(), a.offset = d_off->get(), a.offset_channels = off_ch, a.weight = d_w->get();
    a.bias = c.bias ? static_cast<const float*>(d_bias->get()) : nullptr;
    a.residual = c.residual ? d_res->get() : nullptr;
    a.out = d_out->get();
    a.n = c.n, a.h = c.h, a.w = c.w, a.in_channels = c.cin, a.out_channels = c.cout, a.out_h = out_h, a.out_w = out_w;
    a.kernel = c.kernel, a.stride = c.stride, a.padding = c.padding, a.dilation = c.dilation;
    a.groups = c.groups, a.deformable_groups = c.dgs, a.modulated = c.modulated, a.relu = c.relu;
    cuda_module::launch_deform_conv_nhwc(t, a, stream_);
    sync();
    expect_close(t, download(t, d_out->get(), ref.size()), ref, c.name);
  }
}

// Tiles are 64 pixels x 64 output channels with K steps of 16 channels: most shapes below leave
// partial tiles and steps.
INSTANTIATE_TEST_SUITE_P(
    Configs, NhwcDeformCuda,
    ::testing::Values(
        DeformConfig{"v1_basic", 1, 4, 7, 9, 5, 3, 1, 1, 1, 1, 1, false, false, false, false, 1.0f},
        DeformConfig{"v2_bias_relu", 2, 20, 9, 8, 70, 3, 1, 1, 1, 1, 1, true, true, false, true, 1.5f},
        DeformConfig{"v2_stride2_residual", 1, 17, 15, 13, 33, 3, 2, 1, 1, 1, 1, true, false, true, true, 2.0f},
        DeformConfig{"v1_dilation2_bias", 1, 16, 11, 10, 64, 3, 1, 2, 2, 1, 1, false, true, false, false, 1.0f},
        DeformConfig{"v2_groups2_dg4", 2, 24, 8, 7, 10, 3, 1, 1, 1, 2, 4, true, true, true, true, 2.0f},
        DeformConfig{"v1_groups4_dg2", 1, 32, 10, 9, 132, 3, 2, 1, 1, 4, 2, false, true, true, true, 1.0f},
        DeformConfig{"v2_large_offsets", 1, 3, 6, 7, 2, 3, 1, 0, 1, 1, 1, true, false, false, false, 6.0f},
        DeformConfig{"v2_pointwise", 3, 5, 4, 6, 7, 1, 1, 0, 1, 1, 1, true, false, true, false, 1.0f},
        DeformConfig{"v2_res3_like", 1, 128, 25, 38, 128, 3, 1, 1, 1, 1, 1, true, false, false, true, 1.0f},
        DeformConfig{"v1_res5_stride2_like", 2, 256, 13, 19, 256, 3, 2, 1, 1, 1, 1, false, false, false, true,
                     1.0f}),
    [](const ::testing::TestParamInfo<DeformConfig>& info) { return info.param.name; });

}  // namespace
}  // namespace backbone
