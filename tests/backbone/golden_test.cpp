// SPDX-License-Identifier: Apache-2.0
// The whole network against detectron2's own modules (and torchvision's ResNets): each case of
// tests/data/resnet/manifest.json (made by tests/data/make_goldens.py) is rebuilt with the C++ API
// from its config or stage list, loaded from the same checkpoint, run by every engine of this build
// (onednn, libtorch, opencv) and compared per feature: max |out - ref| <= tolerance * max |ref|.
// The oneDNN engine's bf16 is compared with its own fp32 on the same cases: max |bf16 - fp32| <=
// 2e-2 * max |fp32| per level (the bf16 bound).
// The cuda engine runs every case on cuda:0 (fp32, TF32 off) where a CUDA device is present, and is
// skipped with the loader's reason elsewhere; its fp16/bf16 are compared with its fp32.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "backbone/backbone.h"
#include "backbone/golden_cases.h"
#include "cuda/loader.h"
#include "test_util.h"

using namespace backbone;
using namespace backbone::test::golden;
using nlohmann::json;

namespace {

struct GoldenCase {
  json c;
  std::string engine;
};

// The engines of this build, and "cuda" also where it cannot run (listed, then skipped with the reason).
std::vector<std::string> golden_engines() {
  std::vector<std::string> engines = available_engines();
  if (std::find(engines.begin(), engines.end(), "cuda") == engines.end()) engines.emplace_back("cuda");
  return engines;
}

std::vector<GoldenCase> engine_cases() {
  std::vector<GoldenCase> all;
  for (const auto& engine : golden_engines())
    for (const auto& c : load_cases()) all.push_back({c, engine});
  return all;
}

// Why the cuda engine cannot run here ("" when it can).
std::string cuda_unavailable() {
  std::string why;
  return detail::cuda_available(&why) ? std::string() : (why.empty() ? std::string("no CUDA device") : why);
}

class Golden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(Golden, MatchesDetectron2) {
  const json& c = GetParam().c;
  const bool cuda = GetParam().engine == "cuda";
  if (cuda && !cuda_unavailable().empty()) GTEST_SKIP() << "engine cuda: " << cuda_unavailable();
  SCOPED_TRACE("engine " + GetParam().engine);
  SCOPED_TRACE(c.value("description", ""));
  ResNet model = build_case(c);

  // output_shape() as detectron2 reports it.
  // (detectron2's output_shape() raises KeyError for "linear"; ours reports num_classes channels.)
  auto spec = model.output_shape();
  size_t compared = 0;
  for (const auto& [name, s] : spec) {
    if (name == "linear") continue;
    ++compared;
    ASSERT_TRUE(c["output_shape"].contains(name)) << name;
    EXPECT_EQ(s.channels.value(), c["output_shape"][name]["channels"].get<int>()) << name;
    EXPECT_EQ(s.stride.value(), c["output_shape"][name]["stride"].get<int>()) << name;
  }
  EXPECT_EQ(compared, c["output_shape"].size());

  // The checkpoint holds exactly what the model has (strict: nothing missing).
  LoadReport report = load_checkpoint(model, kDir + c["weights"].get<std::string>(), /*strict=*/true);
  EXPECT_TRUE(report.missing.empty()) << report.summary();

  Tensor input = load_npy(kDir + c["input"].get<std::string>());
  EngineOptions options;
  options.engine = GetParam().engine;
  if (cuda) {
    options.device = Device::cuda(0);
    options.allow_tf32 = false;  // fp32 as detectron2 computes it
  }
  auto engine = create_engine(model, options);
  EXPECT_EQ(engine->name(), options.engine);
  FeatureMaps out = engine->forward(input);
  ASSERT_EQ(out.size(), c["outputs"].size());
  const double tol = c["tolerance"].get<double>();
  for (const auto& [name, device_t] : out) {
    EXPECT_EQ(device_t.device(), options.device) << name;
    const Tensor t = device_t.to(Device::cpu());
    ASSERT_TRUE(c["outputs"].contains(name)) << name;
    Tensor ref = load_npy(kDir + c["outputs"][name].get<std::string>());
    ASSERT_EQ(t.shape(), ref.shape()) << name;
    const double max_ref = test::max_abs(ref), max_err = test::max_abs_diff(t, ref);
    EXPECT_GT(max_ref, 0.0) << name << ": an all-zero reference tests nothing";
    EXPECT_LE(max_err, tol * max_ref) << name << ": max |out - ref| = " << max_err << ", max |ref| = " << max_ref
                                      << ", tolerance " << tol;
  }
}

// bf16 against fp32 of the same engine on the same case (the bf16 bound).
class GoldenBf16 : public ::testing::TestWithParam<json> {};

TEST_P(GoldenBf16, WithinBoundOfFp32) {
  const json& c = GetParam();
  const auto engines = available_engines();
  if (std::find(engines.begin(), engines.end(), "onednn") == engines.end())
    GTEST_SKIP() << "the oneDNN engine is not built";
  ResNet model = build_case(c);
  load_checkpoint(model, kDir + c["weights"].get<std::string>(), /*strict=*/true);
  Tensor input = load_npy(kDir + c["input"].get<std::string>());
  EngineOptions options;
  options.engine = "onednn";
  FeatureMaps f32 = create_engine(model, options)->forward(input);
  options.precision = Precision::BFloat16;
  if (c.value("deformable", false)) {
    // Refused, with the reason: bf16 moves deformable sampling points beyond the bound.
    EXPECT_THROW(create_engine(model, options), UnsupportedError);
    return;
  }
  std::unique_ptr<Engine> engine;
  try {
    engine = create_engine(model, options);
  } catch (const UnsupportedError& e) {
    GTEST_SKIP() << "this CPU has no bf16 route: " << e.what();
  }
  FeatureMaps bf16 = engine->forward(input);
  ASSERT_EQ(bf16.size(), f32.size());
  for (size_t i = 0; i < f32.size(); ++i) {
    ASSERT_EQ(bf16[i].first, f32[i].first);
    ASSERT_EQ(bf16[i].second.shape(), f32[i].second.shape()) << f32[i].first;
    ASSERT_EQ(bf16[i].second.dtype(), DType::Float32) << "features are float32 whatever the precision";
    const double max_ref = test::max_abs(f32[i].second), err = test::max_abs_diff(bf16[i].second, f32[i].second);
    EXPECT_GT(err, 0.0) << f32[i].first << ": bf16 identical to fp32, bf16 did not run";
    EXPECT_LE(err, 2e-2 * max_ref) << f32[i].first << ": max |bf16 - fp32| = " << err << ", max |fp32| = " << max_ref;
  }
}

// The cuda engine's fp16 and bf16 against its fp32 (TF32 off) on the same case and GPU. Bounds per
// level, relative to max |fp32|: fp16 1e-2, bf16 6e-2 (the CPU executor of the same description,
// cuda_engine_test's CudaEngineNet.ReducedPrecisionExecutorWithinBound, measures what rounding every
// activation to these types costs); deformable cases are included (the kernel keeps the sampling in
// float32).
class GoldenCudaPrecision : public ::testing::TestWithParam<json> {};

TEST_P(GoldenCudaPrecision, WithinBoundOfFp32) {
  if (!cuda_unavailable().empty()) GTEST_SKIP() << "engine cuda: " << cuda_unavailable();
  const json& c = GetParam();
  ResNet model = build_case(c);
  load_checkpoint(model, kDir + c["weights"].get<std::string>(), /*strict=*/true);
  Tensor input = load_npy(kDir + c["input"].get<std::string>());
  EngineOptions options;
  options.engine = "cuda";
  options.device = Device::cuda(0);
  FeatureMaps f32 = create_engine(model, options)->forward(input);
  for (const Precision p : {Precision::Float16, Precision::BFloat16}) {
    SCOPED_TRACE(precision_name(p));
    options.precision = p;
    FeatureMaps low = create_engine(model, options)->forward(input);
    ASSERT_EQ(low.size(), f32.size());
    const double bound = p == Precision::Float16 ? 1e-2 : 6e-2;
    for (size_t i = 0; i < f32.size(); ++i) {
      ASSERT_EQ(low[i].first, f32[i].first);
      const Tensor a = low[i].second.to(Device::cpu()), b = f32[i].second.to(Device::cpu());
      ASSERT_EQ(a.shape(), b.shape()) << f32[i].first;
      const double max_ref = test::max_abs(b), err = test::max_abs_diff(a, b);
      EXPECT_GT(err, 0.0) << f32[i].first << ": identical to fp32, the reduced precision did not run";
      EXPECT_LE(err, bound * max_ref) << f32[i].first << ": max |low - fp32| = " << err << ", max |fp32| = " << max_ref;
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<GoldenCase>& info) {
  std::string n = info.param.engine + "_" + info.param.c["name"].get<std::string>();
  std::replace_if(n.begin(), n.end(), [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)); }, '_');
  return n;
}

INSTANTIATE_TEST_SUITE_P(Detectron2, Golden, ::testing::ValuesIn(engine_cases()), case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Golden);
INSTANTIATE_TEST_SUITE_P(Detectron2, GoldenBf16, ::testing::ValuesIn(load_cases()),
                         [](const ::testing::TestParamInfo<json>& info) {
                           std::string n = info.param["name"].get<std::string>();
                           std::replace_if(n.begin(), n.end(),
                                           [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)); }, '_');
                           return n;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenBf16);
INSTANTIATE_TEST_SUITE_P(Detectron2, GoldenCudaPrecision, ::testing::ValuesIn(load_cases()),
                         [](const ::testing::TestParamInfo<json>& info) {
                           std::string n = info.param["name"].get<std::string>();
                           std::replace_if(n.begin(), n.end(),
                                           [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)); }, '_');
                           return n;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenCudaPrecision);

TEST(GoldenData, ManifestIsPresent) { EXPECT_GE(load_cases().size(), 10u) << "tests/data/resnet/manifest.json"; }

}  // namespace
