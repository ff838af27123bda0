// SPDX-License-Identifier: Apache-2.0
// The GPU frame preprocessing kernel (ops/cuda/preprocess_kernel.h: FramePreprocessor) against its
// CPU twin (frame/cuda_frame.h: preprocess_frame_twin, itself tested bit-exact against
// preprocess_frame in cuda_frame_test): every pixel format, host frames (pinned staging) and device
// frames (pitched device planes read in place), fp32 bit for bit, fp16 / bf16 equal to the twin
// rounded to nearest in that type; staging and table reuse across geometries and streams; argument
// errors. Skipped, with the reason, where no CUDA device is present.
#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backbone/error.h"
#include "backbone/frame.h"
#include "cuda/module_api.h"
#include "cuda/module_common.h"
#include "cuda_frame_cases.h"
#include "frame/cuda_frame.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/preprocess_kernel.h"

namespace backbone {
namespace {

using cuda_module::DeviceBuffer;
using cuda_module::FramePreprocessor;
using cuda_module::ModuleError;
using cuda_module::StorageType;
using cuda_module::Stream;

#define SKIP_WITHOUT_GPU()                                                                \
  do {                                                                                    \
    int count_ = 0;                                                                       \
    const cudaError_t e_ = cudaGetDeviceCount(&count_);                                   \
    if (e_ != cudaSuccess || count_ == 0) {                                               \
      cudaGetLastError();                                                                 \
      GTEST_SKIP() << "no CUDA device: "                                                  \
                   << (e_ != cudaSuccess ? cudaGetErrorString(e_) : "cudaGetDeviceCount returned 0"); \
    }                                                                                     \
  } while (0)

// The planes of a host frame copied into pitched device memory (cudaMallocPitch, as GstCudaMemory
// lays them out); the view points at them (device cuda:0).
struct DeviceFrame {
  explicit DeviceFrame(const test::TestFrame& t) : view(t.view) {
    view.device = Device::cuda(0);
    for (int p = 0; p < t.n_planes; ++p) {
      BACKBONE_CUDA_CHECK(cudaMallocPitch(&ptr[p], &pitch[p], static_cast<std::size_t>(t.row_bytes[p]),
                                          static_cast<std::size_t>(t.rows[p])));
      const std::size_t src_pitch =
          static_cast<std::size_t>(t.view.strides[p] == 0 ? t.row_bytes[p] : t.view.strides[p]);
      BACKBONE_CUDA_CHECK(cudaMemcpy2D(ptr[p], pitch[p], t.planes[p].data(), src_pitch,
                                       static_cast<std::size_t>(t.row_bytes[p]), static_cast<std::size_t>(t.rows[p]),
                                       cudaMemcpyHostToDevice));
      view.planes[p] = static_cast<const uint8_t*>(ptr[p]);
      view.strides[p] = static_cast<int64_t>(pitch[p]);
    }
  }
  ~DeviceFrame() {
    for (void* p : ptr)
      if (p) cudaFree(p);
  }
  DeviceFrame(const DeviceFrame&) = delete;
  DeviceFrame& operator=(const DeviceFrame&) = delete;
  void* ptr[3] = {nullptr, nullptr, nullptr};
  std::size_t pitch[3] = {0, 0, 0};
  FrameView view;
};

std::size_t element_size(StorageType t) { return t == StorageType::Float32 ? 4 : 2; }
const char* type_name(StorageType t) {
  return t == StorageType::Float32 ? "fp32" : (t == StorageType::Float16 ? "fp16" : "bf16");
}

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
uint16_t half_bits(float f) {
  const __half h = __float2half_rn(f);
  uint16_t u;
  std::memcpy(&u, &h, sizeof u);
  return u;
}
uint16_t bf16_bits(float f) {
  const __nv_bfloat16 h = __float2bfloat16_rn(f);
  uint16_t u;
  std::memcpy(&u, &h, sizeof u);
  return u;
}

// Runs the kernel for `args` and compares its output with the twin's values, rounded to the
// storage type, bit for bit.
::testing::AssertionResult kernel_matches_twin(FramePreprocessor& pre, const BackboneCudaFrameArgs& args,
                                               const std::vector<float>& twin, StorageType t, int64_t c_padded,
                                               cudaStream_t stream) {
  const std::size_t n = static_cast<std::size_t>(args.padded_height * args.padded_width * c_padded);
  if (twin.size() != n) return ::testing::AssertionFailure() << "twin of " << twin.size() << " values, expected " << n;
  const std::size_t elem = element_size(t);
  DeviceBuffer out(n * elem);
  // Garbage first: every element must be written.
  BACKBONE_CUDA_CHECK(cudaMemsetAsync(out.get(), 0x7f, n * elem, stream));
  pre.run(args, t, out.get(), c_padded, stream);
  std::vector<uint8_t> host(n * elem);
  BACKBONE_CUDA_CHECK(cudaMemcpyAsync(host.data(), out.get(), n * elem, cudaMemcpyDeviceToHost, stream));
  BACKBONE_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::size_t bad = 0, first = 0;
  uint32_t want_first = 0, got_first = 0;
  for (std::size_t i = 0; i < n; ++i) {
    uint32_t want = 0, got = 0;
    if (t == StorageType::Float32) {
      want = float_bits(twin[i]);
      std::memcpy(&got, host.data() + 4 * i, 4);
    } else {
      want = t == StorageType::Float16 ? half_bits(twin[i]) : bf16_bits(twin[i]);
      uint16_t g;
      std::memcpy(&g, host.data() + 2 * i, 2);
      got = g;
    }
    if (want != got && bad++ == 0) {
      first = i;
      want_first = want;
      got_first = got;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  const std::size_t c = first % static_cast<std::size_t>(c_padded);
  const std::size_t px = first / static_cast<std::size_t>(c_padded);
  return ::testing::AssertionFailure() << type_name(t) << ": " << bad << " of " << n
                                       << " values differ, first at (y " << px / args.padded_width << ", x "
                                       << px % args.padded_width << ", c " << c << "): expected bits 0x" << std::hex
                                       << want_first << ", found 0x" << got_first << " (twin value " << std::dec
                                       << twin[first] << ")";
}

std::string name_of(PixelFormat f, int64_t w, int64_t h, const std::string& c) {
  return std::string(pixel_format_name(f)) + " " + std::to_string(w) + "x" + std::to_string(h) + " " + c;
}

TEST(CudaFrameKernel, EveryFormatHostAndDeviceFramesMatchTheTwin) {
  SKIP_WITHOUT_GPU();
  BACKBONE_CUDA_CHECK(cudaSetDevice(0));
  Stream stream(cudaStreamNonBlocking);
  FramePreprocessor pre;  // one for all: staging grows, tables are cached and evicted
  const std::pair<int64_t, int64_t> sizes[] = {{1, 1}, {7, 5}, {33, 17}, {97, 61}};
  uint32_t seed = 11;
  for (PixelFormat f : test::kAllFormats)
    for (const auto& s : sizes) {
      test::TestFrame t = test::make_test_frame(f, s.first, s.second, 3, seed++);
      t.view.matrix = ColorMatrix::BT709;
      t.view.chroma_site = (seed & 1) ? ChromaSite::Center : ChromaSite::HCosited;
      DeviceFrame dev(t);
      for (const auto& c : test::option_cases(s.first, s.second)) {
        SCOPED_TRACE(name_of(f, s.first, s.second, c.name));
        const detail::CudaFrameArgs host_args = detail::make_cuda_frame_args(t.view, c.options);
        const detail::CudaFrameArgs dev_args = detail::make_cuda_frame_args(dev.view, c.options);
        ASSERT_EQ(dev_args.args.on_device, 1);
        for (int64_t c_padded : {int64_t{3}, int64_t{4}}) {
          const std::vector<float> twin = detail::preprocess_frame_twin(host_args.args, c_padded);
          for (StorageType st : {StorageType::Float32, StorageType::Float16, StorageType::BFloat16}) {
            EXPECT_TRUE(kernel_matches_twin(pre, host_args.args, twin, st, c_padded, stream.get()))
                << "host frame, c_padded " << c_padded;
            EXPECT_TRUE(kernel_matches_twin(pre, dev_args.args, twin, st, c_padded, stream.get()))
                << "device frame, c_padded " << c_padded;
          }
        }
      }
    }
}

TEST(CudaFrameKernel, YuvColorimetryMatchesTheTwin) {
  SKIP_WITHOUT_GPU();
  BACKBONE_CUDA_CHECK(cudaSetDevice(0));
  Stream stream(cudaStreamNonBlocking);
  FramePreprocessor pre;
  uint32_t seed = 500;
  for (PixelFormat f : {PixelFormat::NV12, PixelFormat::I420})
    for (ColorMatrix m : {ColorMatrix::BT601, ColorMatrix::BT709, ColorMatrix::BT2020, ColorMatrix::FCC,
                          ColorMatrix::SMPTE240M})
      for (ColorRange r : {ColorRange::Limited, ColorRange::Full})
        for (ChromaSite site : {ChromaSite::Center, ChromaSite::HCosited, ChromaSite::VCosited, ChromaSite::Cosited}) {
          test::TestFrame t = test::make_test_frame(f, 11, 7, 1, seed++);
          t.view.matrix = m;
          t.view.range = r;
          t.view.chroma_site = site;
          DeviceFrame dev(t);
          const auto cases = test::option_cases(11, 7);
          for (std::size_t i : {std::size_t{0}, std::size_t{4}, std::size_t{7}}) {
            SCOPED_TRACE(name_of(f, 11, 7, cases[i].name) + " matrix " + std::to_string(static_cast<int>(m)) +
                         " range " + std::to_string(static_cast<int>(r)) + " site " +
                         std::to_string(static_cast<int>(site)));
            const detail::CudaFrameArgs h = detail::make_cuda_frame_args(t.view, cases[i].options);
            const detail::CudaFrameArgs d = detail::make_cuda_frame_args(dev.view, cases[i].options);
            const std::vector<float> twin = detail::preprocess_frame_twin(h.args, 4);
            EXPECT_TRUE(kernel_matches_twin(pre, h.args, twin, StorageType::Float32, 4, stream.get()));
            EXPECT_TRUE(kernel_matches_twin(pre, d.args, twin, StorageType::Float32, 4, stream.get()));
          }
        }
}

TEST(CudaFrameKernel, Detectron2SizedFramesOnAlternatingStreams) {
  SKIP_WITHOUT_GPU();
  BACKBONE_CUDA_CHECK(cudaSetDevice(0));
  Stream a(cudaStreamNonBlocking), b(cudaStreamNonBlocking);
  FramePreprocessor pre;
  FramePreprocessOptions o;
  o.resize = ResizeMode::ShortestEdge;
  o.min_size = 800;
  o.max_size = 1333;
  o.size_divisibility = 32;
  // Growing frames (staging reallocated), the same geometry twice (tables reused), two streams.
  const std::pair<int64_t, int64_t> sizes[] = {{640, 480}, {1280, 720}, {1280, 720}, {1920, 1080}, {640, 480}};
  uint32_t seed = 900;
  int k = 0;
  for (const auto& s : sizes) {
    for (PixelFormat f : {PixelFormat::NV12, PixelFormat::BGRx}) {
      SCOPED_TRACE(name_of(f, s.first, s.second, "800/1333"));
      const test::TestFrame t = test::make_test_frame(f, s.first, s.second, 64, seed++);
      const detail::CudaFrameArgs args = detail::make_cuda_frame_args(t.view, o);
      const std::vector<float> twin = detail::preprocess_frame_twin(args.args, 4);
      EXPECT_TRUE(kernel_matches_twin(pre, args.args, twin, StorageType::Float16, 4, (k++ & 1) ? a.get() : b.get()));
    }
  }
}

TEST(CudaFrameKernel, BackToBackHostFramesDoNotOverwriteStagingInFlight) {
  SKIP_WITHOUT_GPU();
  BACKBONE_CUDA_CHECK(cudaSetDevice(0));
  Stream stream(cudaStreamNonBlocking);
  FramePreprocessor pre;
  FramePreprocessOptions o;
  o.resize = ResizeMode::Fixed;
  o.width = 400;
  o.height = 300;
  // Several frames enqueued without synchronising in between; each output must be its own frame's.
  constexpr int kFrames = 6;
  std::vector<test::TestFrame> frames;
  std::vector<detail::CudaFrameArgs> args;
  std::vector<DeviceBuffer> outs;
  for (int i = 0; i < kFrames; ++i) frames.push_back(test::make_test_frame(PixelFormat::NV12, 1024, 768, 0, 70 + i));
  for (int i = 0; i < kFrames; ++i) {
    args.push_back(detail::make_cuda_frame_args(frames[static_cast<std::size_t>(i)].view, o));
    outs.emplace_back(static_cast<std::size_t>(args.back().args.padded_height * args.back().args.padded_width * 3 * 4));
    pre.run(args.back().args, StorageType::Float32, outs.back().get(), 3, stream.get());
  }
  BACKBONE_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  for (int i = 0; i < kFrames; ++i) {
    const std::vector<float> twin = detail::preprocess_frame_twin(args[static_cast<std::size_t>(i)].args, 3);
    std::vector<float> got(twin.size());
    BACKBONE_CUDA_CHECK(cudaMemcpy(got.data(), outs[static_cast<std::size_t>(i)].get(), got.size() * 4,
                                   cudaMemcpyDeviceToHost));
    EXPECT_TRUE(std::memcmp(got.data(), twin.data(), got.size() * 4) == 0) << "frame " << i;
  }
}

std::string run_error(FramePreprocessor& pre, const BackboneCudaFrameArgs& args, void* dst, int64_t c_padded,
                      cudaStream_t stream, int* status) {
  try {
    pre.run(args, StorageType::Float32, dst, c_padded, stream);
  } catch (const ModuleError& e) {
    *status = e.status();
    return e.what();
  }
  return "(no error)";
}

TEST(CudaFrameKernel, RefusesBadArgumentsNamingThem) {
  SKIP_WITHOUT_GPU();
  BACKBONE_CUDA_CHECK(cudaSetDevice(0));
  Stream stream(cudaStreamNonBlocking);
  FramePreprocessor pre;
  test::TestFrame t = test::make_test_frame(PixelFormat::RGBA, 16, 8, 0, 3);
  const detail::CudaFrameArgs host = detail::make_cuda_frame_args(t.view, FramePreprocessOptions{});
  DeviceBuffer out(16 * 8 * 4 * 4);
  int status = 0;

  std::string m = run_error(pre, host.args, out.get(), 2, stream.get(), &status);
  EXPECT_EQ(status, BACKBONE_CUDA_ERROR_ARGUMENT);
  EXPECT_NE(m.find("channels: expected 3 to 1024, found 2"), std::string::npos) << m;

  BackboneCudaFrameArgs bad = host.args;
  bad.format = 20;
  status = 0;
  m = run_error(pre, bad, out.get(), 4, stream.get(), &status);
  EXPECT_EQ(status, BACKBONE_CUDA_ERROR_ARGUMENT);
  EXPECT_NE(m.find("found 20"), std::string::npos) << m;

  // Host planes announced as device planes.
  bad = host.args;
  bad.on_device = 1;
  status = 0;
  m = run_error(pre, bad, out.get(), 4, stream.get(), &status);
  EXPECT_EQ(status, BACKBONE_CUDA_ERROR_ARGUMENT);
  EXPECT_NE(m.find("expected device memory"), std::string::npos) << m;

  status = 0;
  m = run_error(pre, host.args, nullptr, 4, stream.get(), &status);
  EXPECT_EQ(status, BACKBONE_CUDA_ERROR_ARGUMENT);
  EXPECT_NE(m.find("output: expected device memory, found null"), std::string::npos) << m;

  // A capturing stream is refused (and the capture can still be ended cleanly).
  BACKBONE_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  status = 0;
  m = run_error(pre, host.args, out.get(), 4, stream.get(), &status);
  cudaGraph_t graph = nullptr;
  BACKBONE_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &graph));
  if (graph) cudaGraphDestroy(graph);
  EXPECT_EQ(status, BACKBONE_CUDA_ERROR_ARGUMENT);
  EXPECT_NE(m.find("capturing"), std::string::npos) << m;

  // Still usable afterwards.
  const std::vector<float> twin = detail::preprocess_frame_twin(host.args, 4);
  EXPECT_TRUE(kernel_matches_twin(pre, host.args, twin, StorageType::Float32, 4, stream.get()));
}

}  // namespace
}  // namespace backbone
