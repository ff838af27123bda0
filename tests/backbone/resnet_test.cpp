// SPDX-License-Identifier: Apache-2.0
// The ResNet description: structure, names, output_shape, make_stage and every check of
// build_resnet_backbone. Numbers against detectron2 are in golden_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "backbone/config.h"
#include "backbone/error.h"
#include "backbone/resnet.h"

using namespace backbone;

namespace {

Config config_with(const std::vector<std::string>& overrides) {
  Config cfg;
  cfg.merge_from_list(overrides);
  return cfg;
}

std::map<std::string, std::pair<int, int>> shapes(const ResNet& m) {
  std::map<std::string, std::pair<int, int>> out;
  for (const auto& [n, s] : m.output_shape()) out[n] = {s.channels.value(), s.stride.value()};
  return out;
}

// Expects a ConfigError whose message contains `needle`.
void expect_config_error(const std::vector<std::string>& overrides, const std::string& needle) {
  try {
    build_resnet_backbone(config_with(overrides));
    ADD_FAILURE() << "no error for overrides containing " << overrides[0] << " (expected: " << needle << ")";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

int64_t count_params(const ResNet& m, bool with_running_stats) {
  int64_t n = 0;
  for (const auto& [name, t] : m.state_dict()) {
    const bool running = name.find("running_") != std::string::npos;
    if (!running || with_running_stats) n += t.numel();
  }
  return n;
}

}  // namespace

TEST(BuildResNet, DefaultR50OutputShape) {
  ResNet m = build_resnet_backbone(config_with({"MODEL.RESNETS.OUT_FEATURES", "['stem','res2','res3','res4','res5']"}));
  auto s = shapes(m);
  EXPECT_EQ(s["stem"], std::make_pair(64, 4));
  EXPECT_EQ(s["res2"], std::make_pair(256, 4));
  EXPECT_EQ(s["res3"], std::make_pair(512, 8));
  EXPECT_EQ(s["res4"], std::make_pair(1024, 16));
  EXPECT_EQ(s["res5"], std::make_pair(2048, 32));
  // torchvision's resnet50 has 25,557,032 parameters, of which the fc layer holds 2,049,000.
  EXPECT_EQ(count_params(m, false), 25557032 - 2049000);
  EXPECT_EQ(m.stage_names(), (std::vector<std::string>{"res2", "res3", "res4", "res5"}));
}

TEST(BuildResNet, ParameterCountsOfEveryDepth) {
  // torchvision parameter counts minus the fc layer (512*1000+1000 or 2048*1000+1000).
  const std::map<int, int64_t> expected = {{18, 11689512 - 513000},
                                           {34, 21797672 - 513000},
                                           {50, 25557032 - 2049000},
                                           {101, 44549160 - 2049000},
                                           {152, 60192808 - 2049000}};
  for (const auto& [depth, n] : expected) {
    ResNet m = build_resnet_backbone(config_with({"MODEL.RESNETS.DEPTH", std::to_string(depth), "MODEL.RESNETS.RES2_OUT_CHANNELS",
                                                  depth < 50 ? "64" : "256", "MODEL.RESNETS.OUT_FEATURES", "['res5']"}));
    EXPECT_EQ(count_params(m, false), n) << "R-" << depth;
  }
  // ResNeXt-101 32x8d: torchvision's resnext101_32x8d has 88,791,336 parameters.
  ResNet x = build_resnet_backbone(config_with({"MODEL.RESNETS.DEPTH", "101", "MODEL.RESNETS.NUM_GROUPS", "32",
                                                "MODEL.RESNETS.WIDTH_PER_GROUP", "8", "MODEL.RESNETS.OUT_FEATURES", "['res5']"}));
  EXPECT_EQ(count_params(x, false), 88791336 - 2049000);
}

TEST(BuildResNet, Res5DilationKeepsStride16) {
  ResNet m = build_resnet_backbone(config_with({"MODEL.RESNETS.RES5_DILATION", "2", "MODEL.RESNETS.OUT_FEATURES", "['res4','res5']"}));
  auto s = shapes(m);
  EXPECT_EQ(s["res4"].second, 16);
  EXPECT_EQ(s["res5"].second, 16);
  const auto& first = static_cast<const BottleneckBlock&>(*m.stages()[3][0]);
  EXPECT_EQ(first.stride(), 1);
  EXPECT_EQ(first.conv2.dilation, 2);
  EXPECT_EQ(first.conv2.padding, 2);
  // res4 is not dilated.
  EXPECT_EQ(static_cast<const BottleneckBlock&>(*m.stages()[2][0]).conv2.dilation, 1);
}

TEST(BuildResNet, StrideIn1x1MovesTheStride) {
  for (bool in_1x1 : {true, false}) {
    ResNet m = build_resnet_backbone(
        config_with({"MODEL.RESNETS.STRIDE_IN_1X1", in_1x1 ? "True" : "False", "MODEL.RESNETS.OUT_FEATURES", "['res3']"}));
    const auto& b = static_cast<const BottleneckBlock&>(*m.stages()[1][0]);
    EXPECT_EQ(b.conv1.stride, in_1x1 ? 2 : 1);
    EXPECT_EQ(b.conv2.stride, in_1x1 ? 1 : 2);
    EXPECT_EQ(b.shortcut->stride, 2);
  }
}

TEST(BuildResNet, StagesAfterTheLastOutFeatureAreNotBuilt) {
  ResNet m = build_resnet_backbone(config_with({"MODEL.RESNETS.OUT_FEATURES", "['res3']"}));
  EXPECT_EQ(m.stage_names(), (std::vector<std::string>{"res2", "res3"}));
  for (const auto& [name, t] : m.state_dict()) {
    EXPECT_EQ(name.rfind("res4", 0), std::string::npos) << name;
    EXPECT_EQ(name.rfind("res5", 0), std::string::npos) << name;
  }
  ResNet stem_only = build_resnet_backbone(config_with({"MODEL.RESNETS.OUT_FEATURES", "['stem']"}));
  EXPECT_TRUE(stem_only.stages().empty());
}

TEST(BuildResNet, StateDictUsesDetectron2Names) {
  ResNet m = build_resnet_backbone(config_with({"MODEL.RESNETS.OUT_FEATURES", "['res3']", "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
                                                "[False, True, False, False]", "MODEL.RESNETS.DEFORM_MODULATED", "True",
                                                "MODEL.RESNETS.DEFORM_NUM_GROUPS", "2"}));
  std::vector<std::string> names;
  std::map<std::string, Shape> shape_of;
  for (const auto& [n, t] : m.state_dict()) {
    names.push_back(n);
    shape_of[n] = t.shape();
  }
  const std::vector<std::string> head = {"stem.conv1.weight", "stem.conv1.norm.weight", "stem.conv1.norm.bias",
                                         "stem.conv1.norm.running_mean", "stem.conv1.norm.running_var",
                                         "res2.0.shortcut.weight"};
  for (size_t i = 0; i < head.size(); ++i) EXPECT_EQ(names[i], head[i]);
  EXPECT_EQ(shape_of["stem.conv1.weight"], (Shape{64, 3, 7, 7}));
  // DeformBottleneckBlock: conv2_offset (27 * G channels, with bias, no norm) registered before conv2.
  EXPECT_EQ(shape_of["res3.0.conv2_offset.weight"], (Shape{54, 128, 3, 3}));
  EXPECT_EQ(shape_of["res3.0.conv2_offset.bias"], (Shape{54}));
  EXPECT_EQ(shape_of.count("res3.0.conv2_offset.norm.weight"), 0u);
  auto pos = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  EXPECT_LT(pos("res3.0.conv2_offset.weight"), pos("res3.0.conv2.weight"));
  EXPECT_EQ(shape_of["res3.0.conv2.weight"], (Shape{128, 128, 3, 3}));
  EXPECT_EQ(shape_of.count("res2.0.conv2_offset.weight"), 0u);
}

TEST(BuildResNet, ResNeXtGroups) {
  ResNet m = build_resnet_backbone(
      config_with({"MODEL.RESNETS.NUM_GROUPS", "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "8", "MODEL.RESNETS.OUT_FEATURES", "['res2']"}));
  const auto& b = static_cast<const BottleneckBlock&>(*m.stages()[0][0]);
  EXPECT_EQ(b.conv2.groups, 32);
  EXPECT_EQ(b.conv2.weight.shape(), (Shape{256, 8, 3, 3}));
}

TEST(BuildResNet, Detectron2Checks) {
  expect_config_error({"MODEL.RESNETS.RES5_DILATION", "3"}, "res5_dilation cannot be 3.");
  expect_config_error({"MODEL.RESNETS.DEPTH", "18"}, "Must set MODEL.RESNETS.RES2_OUT_CHANNELS = 64 for R18/R34");
  expect_config_error({"MODEL.RESNETS.DEPTH", "34", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
                       "[False, True, True, True]"},
                      "MODEL.RESNETS.DEFORM_ON_PER_STAGE unsupported for R18/R34");
  expect_config_error({"MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.RES5_DILATION", "2"},
                      "Must set MODEL.RESNETS.RES5_DILATION = 1 for R18/R34");
  expect_config_error({"MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NUM_GROUPS", "2"},
                      "Must set MODEL.RESNETS.NUM_GROUPS = 1 for R18/R34");
  expect_config_error({"MODEL.RESNETS.DEPTH", "42"}, "MODEL.RESNETS.DEPTH must be one of 18, 34, 50, 101, 152; got 42");
  expect_config_error({"MODEL.RESNETS.NORM", "XN"}, "MODEL.RESNETS.NORM: unknown norm \"XN\"");
  expect_config_error({"MODEL.RESNETS.OUT_FEATURES", "['res6']"}, "unknown out_feature \"res6\": Available children: stem");
  expect_config_error({"MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.STEM_OUT_CHANNELS", "48"},
                      "num_channels must be divisible by num_groups");
  expect_config_error({"MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[True, False]"},
                      "MODEL.RESNETS.DEFORM_ON_PER_STAGE must have 4 entries");
  expect_config_error({"MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]", "MODEL.RESNETS.DEFORM_NUM_GROUPS", "3"},
                      "must be divisible by deform_num_groups (3)");
  expect_config_error({"MODEL.BACKBONE.NAME", "build_vit_backbone"}, "MODEL.BACKBONE.NAME is \"build_vit_backbone\"");
}

TEST(BuildResNet, NormsAsGetNormBuildsThem) {
  for (const std::string norm : {"", "BN", "SyncBN", "FrozenBN", "GN", "LN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N"}) {
    ResNet m = build_resnet_backbone(config_with({"MODEL.RESNETS.NORM", "'" + norm + "'", "MODEL.RESNETS.OUT_FEATURES", "['res2']"}));
    const Conv2d& c = m.stem().conv1;
    EXPECT_EQ(c.norm.kind, norm);
    const bool bn = norm == "BN" || norm == "FrozenBN" || norm.find("SyncBN") != std::string::npos;
    EXPECT_EQ(c.norm.is_batch_norm(), bn) << norm;
    EXPECT_EQ(c.norm.running_mean.defined(), bn) << norm;
    EXPECT_EQ(c.norm.weight.defined(), !norm.empty()) << norm;
    EXPECT_DOUBLE_EQ(c.norm.eps(), norm == "LN" ? 1e-6 : 1e-5);
  }
  ResNet gn = build_resnet_backbone(config_with({"MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.OUT_FEATURES", "['res2']"}));
  EXPECT_EQ(gn.stem().conv1.norm.num_groups(), 32);
}

TEST(ResNet, MakeStagePerBlockArguments) {
  StageArgs a;
  a.block_class = BlockKind::BottleneckBlock;
  a.num_blocks = 3;
  a.in_channels = 16;
  a.out_channels = 64;
  a.block.bottleneck_channels = 16;
  a.stride_per_block = {2, 1, 1};
  a.dilation_per_block = {1, 1, 2};
  Stage s = ResNet::make_stage(a);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0]->stride(), 2);
  EXPECT_EQ(s[0]->in_channels(), 16);
  EXPECT_EQ(s[1]->in_channels(), 64);
  EXPECT_EQ(static_cast<const BottleneckBlock&>(*s[2]).conv2.dilation, 2);
  EXPECT_TRUE(static_cast<const BottleneckBlock&>(*s[0]).shortcut.has_value());
  EXPECT_FALSE(static_cast<const BottleneckBlock&>(*s[1]).shortcut.has_value());

  StageArgs bad = a;
  bad.stride_per_block = {2, 1};
  try {
    ResNet::make_stage(bad);
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "Argument 'stride_per_block' of make_stage should have the same length as num_blocks=3.");
  }
  StageArgs both = a;
  both.stride_given = true;
  EXPECT_THROW(ResNet::make_stage(both), ConfigError);
}

TEST(ResNet, MakeDefaultStages) {
  auto stages = ResNet::make_default_stages(50);
  ASSERT_EQ(stages.size(), 4u);
  EXPECT_EQ(stages[2].size(), 6u);
  EXPECT_EQ(static_cast<const BottleneckBlock&>(*stages[3][0]).conv1.out_channels, 512);
  auto r18 = ResNet::make_default_stages(18);
  EXPECT_EQ(r18[0][0]->kind(), BlockKind::BasicBlock);
  EXPECT_THROW(ResNet::make_default_stages(20), ConfigError);
  ResNet m(std::make_unique<BasicStem>(3, 64, "BN"), ResNet::make_default_stages(101), 1000);
  EXPECT_EQ(m.out_features(), std::vector<std::string>{"linear"});
  EXPECT_EQ(m.linear_weight.shape(), (Shape{1000, 2048}));
  EXPECT_EQ(shapes(m)["linear"].first, 1000);
}

TEST(ResNet, FreezeMarksStemAndStages) {
  ResNet m(std::make_unique<BasicStem>(3, 8, "FrozenBN"), ResNet::make_default_stages(18), std::nullopt, {"res3"}, 2);
  EXPECT_TRUE(m.stem().frozen());
  EXPECT_TRUE(m.stages()[0][0]->frozen());
  EXPECT_FALSE(m.stages()[1][0]->frozen());
  m.freeze(0);
  EXPECT_EQ(m.freeze_at(), 0);
}

TEST(ResNet, InitWeightsAsDetectron2) {
  ResNet m = build_resnet_backbone(config_with({"MODEL.RESNETS.OUT_FEATURES", "['res3']", "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
                                                "[False, True, False, False]"}));
  m.init_weights(7);
  std::map<std::string, Tensor> sd;
  for (const auto& [n, t] : m.state_dict()) sd[n] = t;
  // c2_msra_fill: std = sqrt(2 / fan_out), fan_out = out_channels * k * k
  const Tensor& w = sd["res2.0.conv2.weight"];
  double sq = 0;
  for (int64_t i = 0; i < w.numel(); ++i) sq += double(w.data_ptr<float>()[i]) * w.data_ptr<float>()[i];
  EXPECT_NEAR(std::sqrt(sq / w.numel()), std::sqrt(2.0 / (64 * 9)), 0.01);
  for (const char* zero : {"res3.0.conv2_offset.weight", "res3.0.conv2_offset.bias", "stem.conv1.norm.bias"}) {
    const Tensor& t = sd[zero];
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.data_ptr<float>()[i], 0.f) << zero;
  }
  // FrozenBatchNorm2d: running_var = 1 - eps, so that it starts as the identity.
  EXPECT_FLOAT_EQ(sd["stem.conv1.norm.running_var"].data_ptr<float>()[0], 1.f - 1e-5f);
  EXPECT_EQ(sd["stem.conv1.norm.weight"].data_ptr<float>()[0], 1.f);
}

TEST(ResNet, LoadStateDictChecksShapesAndReports) {
  ResNet m(std::make_unique<BasicStem>(3, 4, "FrozenBN"), {}, std::nullopt, {"stem"});
  StateDict sd = m.state_dict();
  ASSERT_EQ(sd.size(), 5u);
  Tensor w = Tensor::zeros({4, 3, 7, 7});
  w.data_ptr<float>()[0] = 3.f;
  auto r = m.load_state_dict({{"stem.conv1.weight", w}, {"res9.extra", Tensor::zeros({1})}});
  EXPECT_EQ(m.stem().conv1.weight.data_ptr<float>()[0], 3.f);
  EXPECT_EQ(r.unexpected, std::vector<std::string>{"res9.extra"});
  EXPECT_EQ(r.missing.size(), 4u);
  try {
    m.load_state_dict({{"stem.conv1.weight", Tensor::zeros({4, 3, 3, 3})}});
    ADD_FAILURE();
  } catch (const CheckpointError& e) {
    EXPECT_STREQ(e.what(), "shape mismatch for stem.conv1.weight: the model has [4, 3, 7, 7], the state dict has [4, 3, 3, 3]");
  }
}
