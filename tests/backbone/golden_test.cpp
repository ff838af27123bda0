// SPDX-License-Identifier: Apache-2.0
// The whole network against detectron2's own modules (and torchvision's ResNets): each case of
// tests/data/resnet/manifest.json (made by tests/data/make_goldens.py) is rebuilt with the C++ API
// from its config or stage list, loaded from the same checkpoint, run by every engine of this build
// (onednn, libtorch, opencv) and compared per feature: max |out - ref| <= tolerance * max |ref|.
// The oneDNN engine's bf16 is compared with its own fp32 on the same cases: max |bf16 - fp32| <=
// 2e-2 * max |fp32| per level (the bound of the speed issue).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "backbone/backbone.h"
#include "test_util.h"

using namespace backbone;
using nlohmann::json;

namespace {

const std::string kDir = std::string(BACKBONE_TEST_DATA_DIR) + "/resnet/";

std::vector<json> load_cases() {
  std::ifstream f(kDir + "manifest.json");
  if (!f) return {};
  json m = json::parse(f);
  return m["cases"].get<std::vector<json>>();
}

BlockKind block_kind(const std::string& s) {
  if (s == "BasicBlock") return BlockKind::BasicBlock;
  if (s == "BottleneckBlock") return BlockKind::BottleneckBlock;
  if (s == "DeformBottleneckBlock") return BlockKind::DeformBottleneckBlock;
  throw std::runtime_error("unknown block_class " + s);
}

ResNet build_from_stages(const json& c) {
  const json& st = c["stem"];
  auto stem = std::make_unique<BasicStem>(st["in_channels"].get<int64_t>(), st["out_channels"].get<int64_t>(),
                                          st["norm"].get<std::string>());
  std::vector<Stage> stages;
  for (const json& s : c["stages"]) {
    StageArgs a;
    a.block_class = block_kind(s["block_class"]);
    a.num_blocks = s["num_blocks"];
    a.in_channels = s["in_channels"];
    a.out_channels = s["out_channels"];
    a.block.norm = s.value("norm", "BN");
    a.block.bottleneck_channels = s.value("bottleneck_channels", int64_t{0});
    a.block.num_groups = s.value("num_groups", int64_t{1});
    a.block.stride_in_1x1 = s.value("stride_in_1x1", false);
    a.block.dilation = s.value("dilation", int64_t{1});
    a.block.stride = s.value("stride", int64_t{1});
    a.block.deform_modulated = s.value("deform_modulated", false);
    a.block.deform_num_groups = s.value("deform_num_groups", int64_t{1});
    if (s.contains("stride_per_block")) a.stride_per_block = s["stride_per_block"].get<std::vector<int64_t>>();
    if (s.contains("dilation_per_block")) a.dilation_per_block = s["dilation_per_block"].get<std::vector<int64_t>>();
    stages.push_back(ResNet::make_stage(a));
  }
  std::optional<int64_t> num_classes;
  if (c.contains("num_classes") && !c["num_classes"].is_null()) num_classes = c["num_classes"].get<int64_t>();
  return ResNet(std::move(stem), std::move(stages), num_classes, c["out_features"].get<std::vector<std::string>>(),
                c.value("freeze_at", 0));
}

ResNet build_case(const json& c) {
  if (c["model"] == "config") {
    Config cfg;
    cfg.merge_from_file(kDir + c["config"].get<std::string>());
    return build_resnet_backbone(cfg, ShapeSpec{3});
  }
  return build_from_stages(c);
}

struct GoldenCase {
  json c;
  std::string engine;
};

std::vector<GoldenCase> engine_cases() {
  std::vector<GoldenCase> all;
  for (const auto& engine : available_engines())
    for (const auto& c : load_cases()) all.push_back({c, engine});
  return all;
}

class Golden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(Golden, MatchesDetectron2) {
  const json& c = GetParam().c;
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
  auto engine = create_engine(model, options);
  EXPECT_EQ(engine->name(), options.engine);
  FeatureMaps out = engine->forward(input);
  ASSERT_EQ(out.size(), c["outputs"].size());
  const double tol = c["tolerance"].get<double>();
  for (const auto& [name, t] : out) {
    ASSERT_TRUE(c["outputs"].contains(name)) << name;
    Tensor ref = load_npy(kDir + c["outputs"][name].get<std::string>());
    ASSERT_EQ(t.shape(), ref.shape()) << name;
    const double max_ref = test::max_abs(ref), max_err = test::max_abs_diff(t, ref);
    EXPECT_GT(max_ref, 0.0) << name << ": an all-zero reference tests nothing";
    EXPECT_LE(max_err, tol * max_ref) << name << ": max |out - ref| = " << max_err << ", max |ref| = " << max_ref
                                      << ", tolerance " << tol;
  }
}

// bf16 against fp32 of the same engine on the same case (the bound of the speed issue).
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

TEST(GoldenData, ManifestIsPresent) { EXPECT_GE(load_cases().size(), 10u) << "tests/data/resnet/manifest.json"; }

}  // namespace
