// SPDX-License-Identifier: Apache-2.0
// The oneDNN engine on full-width networks, where its fast kernels run (Winograd and the blocked
// AVX-512 convolutions need channel counts that are multiples of 16, which the narrow goldens of
// golden_test do not all have): against the LibTorch engine on the same model, fp32 within the
// golden tolerance and bf16 within its bound; then what the engine promises about its outputs
// (buffers recycled only once the caller drops them) and its description.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "backbone/backbone.h"
#include "seeded_model.h"
#include "test_util.h"

using namespace backbone;

namespace {

bool built(const std::string& engine) {
  const auto e = available_engines();
  return std::find(e.begin(), e.end(), engine) != e.end();
}

// A full-width network from a shipped config with seeded weights and BatchNorm statistics far from
// the identity, so that folding them into the convolutions matters.
ResNet make_model(const std::string& config, const std::vector<std::string>& overrides = {}) {
  return test::make_seeded_model(config, "['res2', 'res3', 'res4', 'res5']", overrides);
}

Tensor make_input(int64_t n, int64_t h, int64_t w) {
  Tensor x = Tensor::empty({n, 3, h, w});
  float* p = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = 60.0f * std::sin(0.37f * static_cast<float>(i % 9973));
  return x;
}

void expect_close(const FeatureMaps& out, const FeatureMaps& ref, double tol, const std::string& what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_EQ(out[i].first, ref[i].first) << what;
    ASSERT_EQ(out[i].second.shape(), ref[i].second.shape()) << what << " " << ref[i].first;
    const double max_ref = test::max_abs(ref[i].second), err = test::max_abs_diff(out[i].second, ref[i].second);
    EXPECT_GT(max_ref, 0.0) << what << " " << ref[i].first;
    EXPECT_LE(err, tol * max_ref) << what << " " << ref[i].first << ": max |out - ref| = " << err
                                  << ", max |ref| = " << max_ref;
  }
}

class OneDnnEngine : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!built("onednn")) GTEST_SKIP() << "the oneDNN engine is not built";
    if (!built("libtorch")) GTEST_SKIP() << "the LibTorch engine (the reference here) is not built";
  }
  static std::unique_ptr<Engine> engine(const ResNet& m, const std::string& name, Precision p = Precision::Float32,
                                        int threads = 2) {
    EngineOptions o;
    o.engine = name;
    o.precision = p;
    o.num_threads = threads;
    return create_engine(m, o);
  }
};

TEST_F(OneDnnEngine, FullWidthR50MatchesLibTorch) {
  ResNet m = make_model("R-50.yaml", {"MODEL.RESNETS.STRIDE_IN_1X1", "False"});
  auto ref = engine(m, "libtorch");
  auto one = engine(m, "onednn");
  auto one_t1 = engine(m, "onednn", Precision::Float32, 1);
  EngineOptions wo;
  wo.engine = "onednn";
  wo.conv_algorithm = ConvAlgorithm::Winograd;
  auto wino = create_engine(m, wo);
  // Sizes that are and are not multiples of 32, batch 1 and 2; each twice (the second replays the plan).
  for (auto [n, h, w] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 96}, {2, 72, 88}, {1, 61, 83}, {1, 64, 96}}) {
    const Tensor x = make_input(n, h, w);
    const std::string what = std::to_string(n) + "x" + std::to_string(h) + "x" + std::to_string(w);
    const FeatureMaps r = ref->forward(x);
    expect_close(one->forward(x), r, 1e-4, "fp32 " + what);
    expect_close(one_t1->forward(x), r, 1e-4, "fp32 one thread " + what);
    expect_close(wino->forward(x), r, 1e-4, "fp32 Winograd " + what);
  }
  // The kernels it ran are named; with winograd on AVX-512 machines the 3x3 convolutions are
  // Winograd's with oneDNN 2.x (3.x has no CPU Winograd left: direct, and the description says so).
  const std::string d = one->describe();
  EXPECT_NE(d.find("2 threads"), std::string::npos) << d;
  EXPECT_NE(d.find("convolution kernels:"), std::string::npos) << d;
  // The default (conv algorithm auto) says how many 3x3 layers it measured Winograd faster on, or
  // that this oneDNN has no Winograd kernel for them; direct runs none.
  EXPECT_TRUE(d.find("Winograd 3x3 on ") != std::string::npos || d.find("no Winograd kernel") != std::string::npos)
      << d;
  EngineOptions dopt;
  dopt.engine = "onednn";
  dopt.conv_algorithm = ConvAlgorithm::Direct;
  auto direct = create_engine(m, dopt);
  expect_close(direct->forward(make_input(1, 64, 96)), ref->forward(make_input(1, 64, 96)), 1e-4, "fp32 direct");
  EXPECT_EQ(direct->describe().find("wino"), std::string::npos) << direct->describe();
  const std::string dw = wino->describe();
  if (dw.find("oneDNN 2.") != std::string::npos && dw.find("avx512") != std::string::npos) {
    EXPECT_NE(dw.find("wino"), std::string::npos) << dw;
  } else if (dw.find("wino") == std::string::npos) {
    EXPECT_NE(dw.find("Winograd 3x3 requested (no Winograd kernel"), std::string::npos) << dw;
  }
}

TEST_F(OneDnnEngine, ResNeXtAndDilationMatchLibTorch) {
  ResNet x = make_model("X-101-32x8d.yaml", {"MODEL.RESNETS.DEPTH", "50"});
  expect_close(engine(x, "onednn")->forward(make_input(1, 64, 64)), engine(x, "libtorch")->forward(make_input(1, 64, 64)),
               1e-4, "X-50-32x8d");
  ResNet dc5 = make_model("R-50-DC5.yaml");
  expect_close(engine(dc5, "onednn")->forward(make_input(1, 64, 80)),
               engine(dc5, "libtorch")->forward(make_input(1, 64, 80)), 1e-4, "R-50-DC5");
}

TEST_F(OneDnnEngine, Bf16WithinBoundOfFp32) {
  ResNet m = make_model("R-50.yaml");
  std::unique_ptr<Engine> bf16;
  try {
    bf16 = engine(m, "onednn", Precision::BFloat16);
  } catch (const UnsupportedError& e) {
    GTEST_SKIP() << e.what();
  }
  const Tensor x = make_input(1, 96, 128);
  const FeatureMaps f32 = engine(m, "onednn")->forward(x), b = bf16->forward(x);
  expect_close(b, f32, 2e-2, "bf16");
  for (size_t i = 0; i < f32.size(); ++i)
    EXPECT_GT(test::max_abs_diff(b[i].second, f32[i].second), 0.0) << "bf16 gave fp32's exact numbers: it did not run";
  EXPECT_NE(bf16->describe().find("bf16"), std::string::npos) << bf16->describe();
}

TEST_F(OneDnnEngine, OutputsAreRecycledOnlyWhenDropped) {
  ResNet m = make_model("R-18.yaml");
  auto e = engine(m, "onednn");
  const Tensor x1 = make_input(1, 64, 64);
  Tensor x2 = make_input(1, 64, 64);
  float* p = x2.data_ptr<float>();
  for (int64_t i = 0; i < x2.numel(); ++i) p[i] = -p[i];

  FeatureMaps held = e->forward(x1);
  const Tensor copy = held[0].second.clone();
  const void* held_ptr = held[0].second.data();
  FeatureMaps next = e->forward(x2);
  // A caller's features are never overwritten by a later frame...
  EXPECT_NE(next[0].second.data(), held_ptr);
  EXPECT_EQ(test::max_abs_diff(held[0].second, copy), 0.0);
  // ...and once dropped, their storage is reused instead of allocating again.
  std::set<const void*> seen = {held_ptr, next[0].second.data()};
  held.clear();
  next.clear();
  for (int i = 0; i < 3; ++i) {
    FeatureMaps f = e->forward(x1);
    EXPECT_TRUE(seen.count(f[0].second.data())) << "frame " << i << " allocated a new output buffer";
  }
}

TEST_F(OneDnnEngine, RefusesWhatItDoesNotRun) {
  ResNet m = make_model("R-18.yaml");
  EXPECT_THROW(engine(m, "onednn", Precision::Float16), UnsupportedError);
  EngineOptions o;
  o.engine = "onednn";
  o.device = Device::cuda(0);
  EXPECT_THROW(create_engine(m, o), DeviceError);
  auto e = engine(m, "onednn");
  EXPECT_THROW(e->forward(Tensor::empty({1, 4, 32, 32})), ShapeError);
  EXPECT_THROW(e->forward(Tensor::empty({3, 32, 32})), ShapeError);
}

// A layer whose fields were changed after the ResNet API checked them: an error, never a division
// by zero in the BN folding.
TEST_F(OneDnnEngine, InconsistentLayerIsAnErrorNotACrash) {
  ResNet m = make_model("R-18.yaml");
  m.stem().conv1.out_channels = 0;
  EXPECT_THROW(engine(m, "onednn"), ShapeError);
  m.stem().conv1.out_channels = 65;
  EXPECT_THROW(engine(m, "onednn"), ShapeError);
}

TEST(EngineSelection, AutoPicksTheFirstThatRuns) {
  const auto engines = available_engines();
  ASSERT_FALSE(engines.empty());
  ResNet m = make_model("R-18.yaml");
  EngineOptions o;  // engine "auto" on the CPU: the first engine that runs there ("cuda", listed first where a
                    // CUDA device is present, refuses a CPU device)
  const auto first_cpu = std::find_if(engines.begin(), engines.end(), [](const std::string& e) { return e != "cuda"; });
  ASSERT_NE(first_cpu, engines.end());
  EXPECT_EQ(create_engine(m, o)->name(), *first_cpu);
  EXPECT_THROW(
      {
        o.engine = "no-such-engine";
        create_engine(m, o);
      },
      Error);
  // fp16 on the CPU: no engine of this project runs it; the message names each refusal.
  o.engine = "auto";
  o.precision = Precision::Float16;
  try {
    create_engine(m, o);
    ADD_FAILURE() << "fp16 on the CPU was accepted";
  } catch (const Error& e) {
    for (const auto& name : engines) EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

}  // namespace
