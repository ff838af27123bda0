// SPDX-License-Identifier: Apache-2.0
// engine=cuda on a GPU (label gpu; every test skips with the loader's reason where there is no CUDA
// device): CUDA graphs against eager runs, the output pool (outputs held across later forwards keep
// their values), plans beyond max_plans, host and device inputs, frames preprocessed on the device,
// out-of-memory, two threads on one engine, and the engine's features against its CPU executor;
// detectron2's FPN (both builders, sum/avg, norms) against the LibTorch engine on the CPU and
// against detectron2's FPN goldens (tests/data/fpn).
// detectron2's goldens on the GPU are golden_test's Golden/GoldenCudaPrecision cases.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>

#include "backbone/backbone.h"
#include "build_config.h"
#include "cuda/loader.h"
#include "engines/cuda/cuda_net.h"
#include "fpn_golden_manifest.h"
#include "seeded_model.h"
#include "test_util.h"

using namespace backbone;

namespace {

#define SKIP_WITHOUT_CUDA()                                                   \
  do {                                                                        \
    std::string why_;                                                         \
    if (!detail::cuda_available(&why_)) GTEST_SKIP() << "no CUDA: " << why_; \
  } while (0)

// A full-width network with seeded weights and BatchNorm statistics far from the identity.
ResNet make_model(const std::string& config, const std::vector<std::string>& overrides = {}) {
  return test::make_seeded_model(config, "['stem', 'res2', 'res3', 'res4', 'res5']", overrides);
}

Tensor make_input(int64_t n, int64_t h, int64_t w, float phase = 0.0f) {
  Tensor x = Tensor::empty({n, 3, h, w});
  float* p = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = 60.0f * std::sin(0.37f * static_cast<float>(i % 9973) + phase);
  return x;
}

EngineOptions cuda_options(Precision p, bool graphs) {
  EngineOptions o;
  o.engine = "cuda";
  o.device = Device::cuda(0);
  o.precision = p;
  o.cuda_graphs = graphs;
  return o;  // allow_tf32 stays off
}

std::unique_ptr<Engine> cuda_engine(const ResNet& m, Precision p = Precision::Float32, bool graphs = true) {
  return create_engine(m, cuda_options(p, graphs));
}

std::unique_ptr<Engine> cuda_engine(const FPN& m, Precision p = Precision::Float32, bool graphs = true) {
  return create_engine(m, cuda_options(p, graphs));
}

FeatureMaps to_cpu(const FeatureMaps& f) {
  FeatureMaps r;
  for (const auto& [name, t] : f) r.emplace_back(name, t.to(Device::cpu()));
  return r;
}

void expect_identical(const FeatureMaps& a, const FeatureMaps& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].first, b[i].first) << what;
    EXPECT_EQ(test::max_abs_diff(a[i].second.to(Device::cpu()), b[i].second.to(Device::cpu())), 0.0)
        << what << ": " << a[i].first;
  }
}

void expect_close(const FeatureMaps& out, const FeatureMaps& ref, double rel, const std::string& what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  for (size_t i = 0; i < out.size(); ++i) {
    const Tensor a = out[i].second.to(Device::cpu()), b = ref[i].second.to(Device::cpu());
    ASSERT_EQ(a.shape(), b.shape()) << what << ": " << out[i].first;
    const double m = test::max_abs(b), err = test::max_abs_diff(a, b);
    EXPECT_LE(err, rel * m) << what << ": " << out[i].first << ": max |out - ref| = " << err << ", max |ref| = " << m;
  }
}

TEST(CudaEngineGpu, MatchesItsCpuExecutor) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-50.yaml");
  const detail::CudaNet net = detail::build_cuda_net(m);
  const Tensor x = make_input(2, 96, 128);
  const FeatureMaps ref = detail::run_cuda_net_on_cpu(net, x, Precision::Float32);
  auto e = cuda_engine(m);
  const FeatureMaps out = e->forward(x);
  for (const auto& [name, t] : out) {
    EXPECT_EQ(t.device(), Device::cuda(0)) << name;
    EXPECT_NE(cuda_ready_event(t), nullptr) << name;
  }
  expect_close(out, ref, 1e-4, "fp32 (TF32 off)");
  const std::string d = e->describe();
  EXPECT_NE(d.find("cuda fp32"), std::string::npos) << d;
  EXPECT_NE(d.find("TF32 off"), std::string::npos) << d;
  EXPECT_NE(d.find(" fused"), std::string::npos) << d;
  std::printf("[ describe ] %s\n", d.c_str());
}

TEST(CudaEngineGpu, ReducedPrecisionsFollowTheExecutor) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-50.yaml");
  const Tensor x = make_input(1, 96, 128);
  const FeatureMaps f32 = to_cpu(cuda_engine(m)->forward(x));
  for (const Precision p : {Precision::Float16, Precision::BFloat16}) {
    SCOPED_TRACE(precision_name(p));
    std::unique_ptr<Engine> e;
    try {
      e = cuda_engine(m, p);
    } catch (const UnsupportedError& err) {
      GTEST_SKIP() << err.what();  // bf16 before sm_80
    }
    expect_close(e->forward(x), f32, p == Precision::Float16 ? 1e-2 : 6e-2, precision_name(p));
  }
}

// A replayed graph computes what the eager run computes, bit for bit.
TEST(CudaEngineGpu, GraphsOnEqualGraphsOff) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-50-mdconv-c3-c5.yaml");
  const Tensor x = make_input(1, 96, 160);
  auto eager = cuda_engine(m, Precision::Float32, false);
  auto graphed = cuda_engine(m, Precision::Float32, true);
  const FeatureMaps ref = to_cpu(eager->forward(x));
  expect_identical(to_cpu(eager->forward(x)), ref, "eager twice");
  expect_identical(to_cpu(graphed->forward(x)), ref, "graphs: first (eager) run");
  expect_identical(to_cpu(graphed->forward(x)), ref, "graphs: replay");
  expect_identical(to_cpu(graphed->forward(x)), ref, "graphs: second replay");
  const std::string d = graphed->describe();
  EXPECT_NE(d.find("CUDA graphs on (1 shape captured"), std::string::npos) << d;
  EXPECT_EQ(d.find("capture failed"), std::string::npos) << d;
  EXPECT_NE(eager->describe().find("CUDA graphs off"), std::string::npos) << eager->describe();
}

// The output pool: features held while later forwards (replays of the same graph) run keep their values.
TEST(CudaEngineGpu, HeldOutputsKeepTheirValues) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-50.yaml");
  const Tensor a = make_input(1, 64, 96, 0.0f), b = make_input(1, 64, 96, 1.0f);
  auto e = cuda_engine(m);
  const FeatureMaps ref_a = to_cpu(e->forward(a));
  const FeatureMaps held = e->forward(a);  // replayed graph; not read yet
  std::vector<const void*> held_ptrs;
  for (const auto& [name, t] : held) held_ptrs.push_back(t.data());
  for (int i = 0; i < 4; ++i) {
    const FeatureMaps other = e->forward(b);
    for (size_t k = 0; k < other.size(); ++k)
      for (const void* p : held_ptrs) EXPECT_NE(other[k].second.data(), p) << "a held output's storage was reused";
  }
  expect_identical(held, ref_a, "held across four forwards");
  // Released storage is recycled: a steady stream of frames does not grow the pool.
  const void* first = nullptr;
  { first = e->forward(b)[0].second.data(); }
  EXPECT_EQ(e->forward(b)[0].second.data(), first);
}

// The module engine lives until its last output is released.
TEST(CudaEngineGpu, OutputsOutliveTheEngine) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-50.yaml");
  const Tensor x = make_input(1, 64, 64);
  auto e = cuda_engine(m);
  const FeatureMaps ref = to_cpu(e->forward(x));
  FeatureMaps held = e->forward(x);
  e.reset();
  expect_identical(held, ref, "after the engine was destroyed");
  cuda_wait_ready(held[0].second);
}

TEST(CudaEngineGpu, ShapesBeyondMaxPlans) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-18.yaml");
  const detail::CudaNet net = detail::build_cuda_net(m);
  auto e = cuda_engine(m);
  // Six shapes through an engine that keeps four plans, then the first ones again (rebuilt).
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{64, 64}, {64, 96}, {96, 64}, {32, 160}, {128, 64}, {48, 48},
                                                          {64, 64}, {64, 96}};
  int64_t n = 1;
  for (const auto& [h, w] : sizes) {
    const Tensor x = make_input(n, h, w);
    n = n == 1 ? 2 : 1;
    expect_close(e->forward(x), detail::run_cuda_net_on_cpu(net, x, Precision::Float32), 1e-4,
                 std::to_string(h) + "x" + std::to_string(w));
  }
}

TEST(CudaEngineGpu, HostAndDeviceInputs) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-50.yaml");
  auto e = cuda_engine(m);
  const Tensor x = make_input(2, 64, 80);
  const FeatureMaps host = to_cpu(e->forward(x));
  expect_identical(e->forward(x.to(Device::cuda(0))), host, "device input");
  EXPECT_THROW(e->forward(Tensor::zeros({1, 4, 32, 32})), ShapeError);
  EXPECT_THROW(e->forward(Tensor::zeros({1, 3, 32, 32}, DType::Float16)), ShapeError);
}

// forward_frame (one kernel on the device) against preprocess_frame on the CPU + forward.
TEST(CudaEngineGpu, ForwardFrameMatchesCpuPreprocessing) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-50.yaml");
  auto e = cuda_engine(m);
  const int64_t w = 100, h = 76;
  std::vector<uint8_t> rgba(static_cast<size_t>(w * h * 4)), nv12(static_cast<size_t>(w * h * 3 / 2));
  for (size_t i = 0; i < rgba.size(); ++i) rgba[i] = static_cast<uint8_t>((i * 37 + i / 7) % 251);
  for (size_t i = 0; i < nv12.size(); ++i) nv12[i] = static_cast<uint8_t>((i * 13 + i / 5) % 241 + 8);
  FramePreprocessOptions opts;
  opts.resize = ResizeMode::ShortestEdge;
  opts.min_size = 64;
  opts.max_size = 120;
  opts.size_divisibility = 32;
  for (const bool yuv : {false, true}) {
    FrameView f;
    f.width = w;
    f.height = h;
    if (yuv) {
      f.format = PixelFormat::NV12;
      f.planes[0] = nv12.data();
      f.planes[1] = nv12.data() + w * h;
      f.strides[0] = w;
      f.strides[1] = w;
    } else {
      f.format = PixelFormat::RGBA;
      f.planes[0] = rgba.data();
      f.strides[0] = w * 4;
    }
    SCOPED_TRACE(pixel_format_name(f.format));
    const PreprocessResult pre = preprocess_frame(f, opts);
    const FeatureMaps ref = to_cpu(e->forward(pre.tensor));
    PreprocessResult info;
    expect_close(e->forward_frame(f, opts, &info), ref, 1e-5, "host frame");
    EXPECT_EQ(info.resized_height, pre.resized_height);
    EXPECT_EQ(info.resized_width, pre.resized_width);
    // The same frame in device memory.
    const size_t bytes = yuv ? nv12.size() : rgba.size();
    Tensor dev = Tensor::empty({static_cast<int64_t>(bytes)}, DType::UInt8, Device::cuda(0));
    detail::cuda_memcpy(dev.data(), yuv ? nv12.data() : rgba.data(), bytes, detail::CopyKind::HostToDevice, 0);
    FrameView fd = f;
    fd.device = Device::cuda(0);
    fd.planes[0] = static_cast<const uint8_t*>(dev.data());
    if (yuv) fd.planes[1] = fd.planes[0] + w * h;
    expect_close(e->forward_frame(fd, opts, nullptr), ref, 1e-5, "device frame");
  }
}

TEST(CudaEngineGpu, OutOfMemoryIsAnErrorAndTheEngineGoesOn) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-50.yaml");
  auto e = cuda_engine(m);
  const Tensor small = make_input(1, 64, 64);
  const FeatureMaps ref = to_cpu(e->forward(small));
  // 64 x 3 x 4096 x 4096 float32: the stem's output alone is 64 GiB in fp32.
  const Tensor huge = Tensor::zeros({64, 3, 4096, 4096});
  try {
    e->forward(huge);
    FAIL() << "a forward of " << shape_str(huge.shape()) << " did not fail";
  } catch (const DeviceError& err) {
    EXPECT_NE(std::string(err.what()).find("out of memory"), std::string::npos) << err.what();
  }
  expect_identical(e->forward(small), ref, "after the out-of-memory error");
}

TEST(CudaEngineGpu, TwoThreadsOnOneEngine) {
  SKIP_WITHOUT_CUDA();
  const ResNet m = make_model("R-18.yaml");
  auto e = cuda_engine(m);
  const Tensor a = make_input(1, 64, 96, 0.0f), b = make_input(2, 96, 64, 2.0f);
  const FeatureMaps ref_a = to_cpu(e->forward(a)), ref_b = to_cpu(e->forward(b));
  std::vector<FeatureMaps> got_a, got_b;
  std::thread ta([&] {
    for (int i = 0; i < 6; ++i) got_a.push_back(to_cpu(e->forward(a)));
  });
  std::thread tb([&] {
    for (int i = 0; i < 6; ++i) got_b.push_back(to_cpu(e->forward(b)));
  });
  ta.join();
  tb.join();
  for (const auto& f : got_a) expect_identical(f, ref_a, "thread a");
  for (const auto& f : got_b) expect_identical(f, ref_b, "thread b");
}

// ---------------------------------------------------------------------------------------------
// detectron2's FPN: seeded R-50 FPNs at full width (OUT_CHANNELS 256).

struct FpnCase {
  bool retinanet;
  const char* norm;
  const char* fuse;
};

std::string fpn_case_name(const FpnCase& c) {
  return std::string(c.retinanet ? "retinanet" : "resnet_fpn") + " norm '" + c.norm + "' " + c.fuse;
}

FPN make_fpn(const FpnCase& c) { return test::make_seeded_fpn("R-50.yaml", c.retinanet, c.norm, c.fuse, 256); }

// The CPU reference: the LibTorch engine's FPN (checked against detectron2) where this build has it,
// else the description through the kernels' CPU twins.
FeatureMaps cpu_reference(const FPN& m, const Tensor& x, const char** which) {
#if BACKBONE_HAVE_LIBTORCH
  EngineOptions o;
  o.engine = "libtorch";
  *which = "libtorch engine";
  return create_engine(m, o)->forward(x);
#else
  *which = "cuda engine's CPU executor";
  return detail::run_cuda_net_on_cpu(detail::build_cuda_net(m.bottom_up(), &m), x, Precision::Float32);
#endif
}

// fp32 with TF32 off against the CPU: 1e-4 of max |ref| per level, every builder, fuse type and norm.
TEST(CudaEngineGpuFpn, MatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  const FpnCase cases[] = {{false, "", "sum"}, {false, "BN", "avg"}, {false, "GN", "sum"}, {false, "FrozenBN", "avg"},
                           {true, "", "sum"},  {true, "LN", "avg"},  {true, "GN", "avg"}};
  const Tensor x = make_input(2, 128, 160);
  for (const FpnCase& c : cases) {
    SCOPED_TRACE(fpn_case_name(c));
    const FPN m = make_fpn(c);
    const char* which = "";
    const FeatureMaps ref = cpu_reference(m, x, &which);
    auto e = cuda_engine(m);
    const FeatureMaps out = e->forward(x);
    ASSERT_EQ(out.size(), m.out_features().size());
    for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].first, m.out_features()[i]);
    expect_close(out, ref, 1e-4, std::string("fp32 (TF32 off) against the ") + which);
    expect_close(e->forward(x), ref, 1e-4, "replayed graph");  // the graph includes the FPN
    const std::string d = e->describe();
    EXPECT_NE(d.find(c.retinanet ? "FPN: 2 top-down sums" : "FPN: 3 top-down sums"), std::string::npos) << d;
    EXPECT_EQ(d.find("capture failed"), std::string::npos) << d;
  }
  // The description through the CPU twins agrees as well (one case: the executor is slow).
  const FPN m = make_fpn({false, "GN", "avg"});
  expect_close(cuda_engine(m)->forward(x),
               detail::run_cuda_net_on_cpu(detail::build_cuda_net(m.bottom_up(), &m), x, Precision::Float32), 1e-4,
               "against the CPU executor");
}

// The selection may name bottom-up outputs, in any order.
TEST(CudaEngineGpuFpn, OutFeaturesWithBottomUpOutputs) {
  SKIP_WITHOUT_CUDA();
  FPN m = make_fpn({true, "", "sum"});
  m.set_out_features({"p7", "res5", "p3", "res2"});
  const Tensor x = make_input(1, 96, 128);
  const char* which = "";
  const FeatureMaps ref = cpu_reference(m, x, &which);
  const FeatureMaps out = cuda_engine(m)->forward(x);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[1].first, "res5");
  expect_close(out, ref, 1e-4, which);
}

// A replayed graph of the FPN computes what the eager run computes, bit for bit.
TEST(CudaEngineGpuFpn, GraphsOnEqualGraphsOff) {
  SKIP_WITHOUT_CUDA();
  const FPN m = make_fpn({false, "GN", "avg"});
  const Tensor x = make_input(1, 96, 160);
  auto eager = cuda_engine(m, Precision::Float32, false);
  auto graphed = cuda_engine(m, Precision::Float32, true);
  const FeatureMaps ref = to_cpu(eager->forward(x));
  expect_identical(to_cpu(graphed->forward(x)), ref, "graphs: first (eager) run");
  expect_identical(to_cpu(graphed->forward(x)), ref, "graphs: replay");
  EXPECT_NE(graphed->describe().find("CUDA graphs on (1 shape captured"), std::string::npos) << graphed->describe();
}

TEST(CudaEngineGpuFpn, ReducedPrecisions) {
  SKIP_WITHOUT_CUDA();
  const FPN m = make_fpn({true, "", "avg"});
  const Tensor x = make_input(1, 96, 128);
  const FeatureMaps f32 = to_cpu(cuda_engine(m)->forward(x));
  for (const Precision p : {Precision::Float16, Precision::BFloat16}) {
    SCOPED_TRACE(precision_name(p));
    std::unique_ptr<Engine> e;
    try {
      e = cuda_engine(m, p);
    } catch (const UnsupportedError& err) {
      GTEST_SKIP() << err.what();  // bf16 before sm_80
    }
    expect_close(e->forward(x), f32, p == Precision::Float16 ? 1e-2 : 6e-2, precision_name(p));
  }
}

// An input not padded to size_divisibility is refused before any launch, and the engine goes on.
TEST(CudaEngineGpuFpn, UnpaddedInputIsAShapeError) {
  SKIP_WITHOUT_CUDA();
  const FPN m = make_fpn({false, "", "sum"});
  auto e = cuda_engine(m);
  const Tensor x = make_input(1, 64, 64);
  const FeatureMaps ref = to_cpu(e->forward(x));
  try {
    e->forward(make_input(1, 70, 64));
    FAIL() << "an input of 70x64 ran";
  } catch (const ShapeError& err) {
    EXPECT_NE(std::string(err.what()).find("size_divisibility (32)"), std::string::npos) << err.what();
  }
  expect_identical(e->forward(x), ref, "after the refused input");
}

// detectron2's FPN goldens on the GPU (fp32, TF32 off): every case of the manifest within its
// tolerance, eager and replayed.
TEST(CudaEngineGpuFpn, MatchesDetectron2Goldens) {
  SKIP_WITHOUT_CUDA();
  const auto cases = test::fpn_golden::load_cases();
  if (cases.empty()) GTEST_SKIP() << "no " << test::fpn_golden::dir() << "manifest.json";
  for (const auto& c : cases) {
    const FPN model = test::fpn_golden::build_case(c);
    auto e = cuda_engine(model);
    const Tensor x = test::fpn_golden::input_of(c);
    test::fpn_golden::expect_matches(e->forward(x), c);
    test::fpn_golden::expect_matches(e->forward(x), c);
  }
}

}  // namespace
