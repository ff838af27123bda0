// SPDX-License-Identifier: Apache-2.0
// The CUDA module: how the loader behaves where there is no GPU (always runs), and the CUDA
// kernel of ops::deform_conv2d against the CPU kernel and torchvision's references (skipped,
// with the reason, when CUDA is not available).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backbone/error.h"
#include "backbone/npy.h"
#include "backbone/ops.h"
#include "backbone/tensor.h"
#include "deform_cases.h"
#include "test_util.h"
#include "build_config.h"
#include "cuda/loader.h"

namespace backbone {
namespace {

using namespace backbone::test;


std::string module_path() {
  return std::string(BACKBONE_BINARY_DIR) + "/lib/" BACKBONE_MODULE_DIR_NAME "/" BACKBONE_CUDA_MODULE_NAME;
}

bool module_overridden() {
  const char* env = std::getenv("BACKBONE_CUDA_MODULE");
  return env && *env;
}

// ---- the loader, with or without a GPU ---------------------------------------------------------

TEST(CudaLoader, AvailabilityIsConsistent) {
  std::string why;
  const bool available = detail::cuda_available(&why);
  EXPECT_EQ(cuda_is_available(), available);
  EXPECT_EQ(cuda_device_count(), detail::cuda_device_count());
  if (available) {
    EXPECT_TRUE(why.empty()) << why;
    EXPECT_GT(detail::cuda_device_count(), 0);
    const CudaDeviceInfo info = cuda_device_info(0);
    std::cout << "cuda:0: " << info.name << ", sm_" << info.major << info.minor << ", " << info.sm_count << " SMs, "
              << info.clock_khz / 1000 << " MHz, cuDNN " << info.cudnn_version << ", " << info.module << "\n";
    EXPECT_FALSE(info.name.empty());
    EXPECT_GE(info.major, 7);
    EXPECT_GT(info.sm_count, 0);
    EXPECT_GT(info.clock_khz, 0);
    EXPECT_GE(info.cudnn_version, 90000);
    EXPECT_THROW(cuda_device_info(detail::cuda_device_count()), DeviceError);
    return;
  }
  std::cout << "CUDA is not available here: " << why << "\n";
  EXPECT_FALSE(why.empty());
  EXPECT_EQ(detail::cuda_device_count(), 0);
  // Every entry point throws DeviceError carrying the reason.
  try {
    detail::cuda_malloc(0, 256);
    ADD_FAILURE() << "cuda_malloc did not throw";
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda_malloc on cuda:0"), std::string::npos) << e.what();
  }
  try {
    cuda_device_info(0);
    ADD_FAILURE() << "cuda_device_info did not throw";
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
  float host[4] = {0};
  EXPECT_THROW(detail::cuda_memcpy(host, host, sizeof(host), detail::CopyKind::HostToDevice, 0), DeviceError);
  detail::cuda_free(0, nullptr);  // noexcept, nothing to do
  EXPECT_THROW(Tensor::zeros({2, 3}).to(Device::cuda(0)), DeviceError);
  EXPECT_THROW(Tensor::empty({2, 3}, DType::Float32, Device::cuda(0)), DeviceError);
  // The front end accepts CUDA tensors and dispatches to the CUDA kernel, which throws. The
  // tensors are only tagged cuda:0 (host memory the front end never touches).
  static float dummy[1024];
  const auto on_cuda = [](const Shape& s) { return Tensor::from_blob(dummy, s, DType::Float32, Device::cuda(0)); };
  EXPECT_THROW(ops::deform_conv2d(on_cuda({1, 2, 5, 5}), on_cuda({1, 18, 5, 5}), on_cuda({3, 2, 3, 3}),
                                  on_cuda({1, 9, 5, 5}), on_cuda({3}),
                                  [] {
                                    ops::DeformConv2dParams p;
                                    p.pad_h = p.pad_w = 1;
                                    return p;
                                  }()),
               DeviceError);
}

// Where the module is looked for by default: lib/BACKBONE_MODULE_DIR_NAME/ next to libbackbone.
TEST(CudaLoader, FindsTheModuleItWasBuiltWith) {
  if (module_overridden()) GTEST_SKIP() << "BACKBONE_CUDA_MODULE is set: the default lookup is not used";
  std::string why;
  const bool available = detail::cuda_available(&why);
#if BACKBONE_HAVE_CUDA
  EXPECT_TRUE(file_exists(module_path())) << "BACKBONE_HAVE_CUDA but no module at " << module_path();
  if (!available) {
    // Found and loaded; what is missing is the driver or a device.
    EXPECT_NE(why.find("the CUDA module " + module_path() + " loaded but"), std::string::npos) << why;
    EXPECT_NE(why.find("cudaGetDeviceCount"), std::string::npos) << why;
  }
#else
  EXPECT_FALSE(available);
  EXPECT_FALSE(file_exists(module_path()));
  EXPECT_NE(why.find("built without its CUDA module"), std::string::npos) << why;
#endif
}

// BACKBONE_CUDA_MODULE overrides the lookup. Each check runs in a fresh process (the module is
// loaded once per process), printing the reason and exiting 0 when CUDA is unavailable.
void report_with_module(const std::string& path) {
  setenv("BACKBONE_CUDA_MODULE", path.c_str(), 1);
  std::string why;
  const bool available = detail::cuda_available(&why);
  std::fprintf(stderr, "why: %s\n", why.c_str());
  std::exit(available ? 1 : 0);
}

TEST(CudaLoaderDeathTest, MissingModuleFile) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(report_with_module("/nonexistent/libbackbone-cuda.so"), ::testing::ExitedWithCode(0),
              "why: cannot load the CUDA module /nonexistent/libbackbone-cuda.so: .*No such file");
}

TEST(CudaLoaderDeathTest, NotAModule) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // libbackbone itself is a shared library without the entry point.
  const std::string lib = std::string(BACKBONE_BINARY_DIR) + "/lib/libbackbone.so";
  ASSERT_TRUE(file_exists(lib)) << lib;
  EXPECT_EXIT(report_with_module(lib), ::testing::ExitedWithCode(0),
              "is not a backbone CUDA module: it does not export backbone_cuda_module_api");
}

#if BACKBONE_HAVE_CUDA
TEST(CudaLoaderDeathTest, ExplicitModulePath) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  if (detail::cuda_available()) GTEST_SKIP() << "CUDA is available: nothing to report";
  EXPECT_EXIT(report_with_module(module_path()), ::testing::ExitedWithCode(0),
              "the CUDA module .*libbackbone-cuda.so loaded but finds no usable CUDA driver or device");
}
#endif

// ---- the CUDA kernel (needs a GPU) -----------------------------------------------------------

#define SKIP_WITHOUT_CUDA()                                                   \
  do {                                                                        \
    std::string why_;                                                         \
    if (!detail::cuda_available(&why_)) GTEST_SKIP() << "no CUDA: " << why_;  \
  } while (0)

Tensor to_cuda(const Tensor& t) { return t.defined() ? t.to(Device::cuda(0)) : Tensor(); }

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape);
  std::normal_distribution<float> dist(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_ptr<float>()[i] = dist(rng);
  return t;
}

Tensor sigmoid(const Tensor& t) {
  Tensor s = t.clone();
  for (int64_t i = 0; i < s.numel(); ++i) s.data_ptr<float>()[i] = 1.0f / (1.0f + std::exp(-s.data_ptr<float>()[i]));
  return s;
}

class DeformConvCuda : public ::testing::TestWithParam<std::string> {};

TEST_P(DeformConvCuda, MatchesCpuAndTorchvision) {
  SKIP_WITHOUT_CUDA();
  const DeformCase c = load_deform_case(GetParam());
  const Tensor cpu = ops::deform_conv2d(c.input, c.offset, c.weight, c.mask, c.bias, c.params);
  const Tensor gpu = ops::deform_conv2d(to_cuda(c.input), to_cuda(c.offset), to_cuda(c.weight), to_cuda(c.mask),
                                        to_cuda(c.bias), c.params);
  ASSERT_TRUE(gpu.device().is_cuda());
  const Tensor back = gpu.to(Device::cpu());
  const double tol = 1e-5 * max_abs(c.out) + 1e-6;
  EXPECT_LE(max_abs_diff(back, cpu), tol) << "CUDA vs CPU";
  EXPECT_LE(max_abs_diff(back, c.out), tol) << "CUDA vs torchvision";
}

INSTANTIATE_TEST_SUITE_P(Cases, DeformConvCuda, ::testing::ValuesIn(kDeformCases),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// A ResNeXt-sized layer (several im2col grid-stride rounds, groups and deformable groups), and
// the same call from several host threads at once (the module's per-call stream/handle pool).
TEST(DeformConvCudaLarge, MatchesCpuFromSeveralThreads) {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(11);
  const int64_t n = 2, c = 64, h = 38, w = 45, o = 96, k = 3;
  ops::DeformConv2dParams p;
  p.pad_h = p.pad_w = 1;
  p.stride_h = p.stride_w = 2;
  p.groups = 4;
  p.deformable_groups = 2;
  const int64_t ho = ops::conv_output_size(h, k, 2, 1, 1), wo = ops::conv_output_size(w, k, 2, 1, 1);
  const Tensor input = random_tensor({n, c, h, w}, rng);
  const Tensor offset = random_tensor({n, 2 * 2 * k * k, ho, wo}, rng, 3.0f);
  const Tensor weight = random_tensor({o, c / 4, k, k}, rng, 0.1f);
  const Tensor mask = sigmoid(random_tensor({n, 2 * k * k, ho, wo}, rng));
  const Tensor bias = random_tensor({o}, rng);
  const Tensor cpu = ops::deform_conv2d(input, offset, weight, mask, bias, p);
  const double tol = 1e-5 * max_abs(cpu) + 1e-6;
  const Tensor gi = to_cuda(input), go = to_cuda(offset), gw = to_cuda(weight), gm = to_cuda(mask),
               gb = to_cuda(bias);
  std::vector<double> errors(4, -1.0);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < errors.size(); ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) {
        const Tensor out = ops::deform_conv2d(gi, go, gw, gm, gb, p).to(Device::cpu());
        errors[t] = std::max(errors[t], max_abs_diff(out, cpu));
      }
    });
  for (auto& t : threads) t.join();
  for (double e : errors) EXPECT_LE(e, tol);
}

TEST(CudaMemory, RoundTrip) {
  SKIP_WITHOUT_CUDA();
  std::vector<float> host(1000), back(1000, 0.0f);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.5f;
  void* a = detail::cuda_malloc(0, host.size() * sizeof(float));
  void* b = detail::cuda_malloc(0, host.size() * sizeof(float));
  detail::cuda_memcpy(a, host.data(), host.size() * sizeof(float), detail::CopyKind::HostToDevice, 0);
  detail::cuda_memcpy(b, a, host.size() * sizeof(float), detail::CopyKind::DeviceToDevice, 0);
  detail::cuda_memcpy(back.data(), b, host.size() * sizeof(float), detail::CopyKind::DeviceToHost, 0);
  detail::cuda_free(0, a);
  detail::cuda_free(0, b);
  EXPECT_EQ(back, host);
  try {
    detail::cuda_malloc(detail::cuda_device_count(), 16);
    ADD_FAILURE() << "no error for a device index past the last one";
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace backbone
