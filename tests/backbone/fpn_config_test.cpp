// SPDX-License-Identifier: Apache-2.0
// FPN configs that detectron2 refuses (and the ones this project refuses at load where detectron2
// would fail later), out-feature selection, the FPN's size_divisibility in load_model, unpadded
// input, and the FPN's checkpoint names (Caffe2 fpn_inner/fpn_res blobs, detectron2 model and FPN
// module prefixes). Messages are checked for what they must name.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "checkpoint/reader.h"

using namespace backbone;

namespace {

// A tiny R-50 (channels 4/4/8/16/32) under an FPN on res2..res5 (detectron2's default
// MODEL.FPN.IN_FEATURES is empty); `extra` overrides on top.
Config tiny_cfg(const std::string& name, const std::vector<std::string>& extra = {}) {
  Config cfg;
  cfg.merge_from_list({"MODEL.BACKBONE.NAME", name, "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "4",
                       "MODEL.RESNETS.RES2_OUT_CHANNELS", "4", "MODEL.RESNETS.WIDTH_PER_GROUP", "1",
                       "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']", "MODEL.FPN.OUT_CHANNELS", "8",
                       "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']"});
  if (!extra.empty()) cfg.merge_from_list(extra);
  return cfg;
}
const std::string kFpn = "build_resnet_fpn_backbone", kRetina = "build_retinanet_resnet_fpn_backbone";

FPN build(const Config& cfg) {
  return cfg.get_string("MODEL.BACKBONE.NAME") == kRetina ? build_retinanet_resnet_fpn_backbone(cfg)
                                                          : build_resnet_fpn_backbone(cfg);
}

// The message of the ConfigError that building `cfg` throws ("" and a failure when none).
std::string build_error(const Config& cfg) {
  try {
    build(cfg);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError";
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The spec load_model gets for a tiny FPN config: overrides instead of a file, seeded weights.
ModelSpec tiny_spec(const std::string& name, const std::vector<std::string>& extra = {}) {
  ModelSpec spec;
  spec.config_overrides = {"MODEL.BACKBONE.NAME", name, "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "4",
                           "MODEL.RESNETS.RES2_OUT_CHANNELS", "4", "MODEL.RESNETS.WIDTH_PER_GROUP", "1",
                           "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
                           "MODEL.FPN.OUT_CHANNELS", "8", "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']"};
  spec.config_overrides.insert(spec.config_overrides.end(), extra.begin(), extra.end());
  spec.engine = "libtorch";
  spec.device = "cpu";
  return spec;
}

bool has_libtorch() {
  const auto e = available_engines();
  return std::find(e.begin(), e.end(), "libtorch") != e.end();
}

// ---- builders --------------------------------------------------------------------------------

TEST(FpnConfig, UnknownBackboneNameIsNamedWithTheSupportedOnes) {
  Config cfg = tiny_cfg("build_resnet_bifpn_backbone");
  try {
    build_resnet_backbone(cfg);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(has(e.what(), "build_resnet_bifpn_backbone")) << e.what();
    EXPECT_TRUE(has(e.what(), supported_backbone_names())) << e.what();
  }
  EXPECT_TRUE(has(supported_backbone_names(), "build_resnet_backbone"));
  EXPECT_TRUE(has(supported_backbone_names(), kFpn));
  EXPECT_TRUE(has(supported_backbone_names(), kRetina));
  EXPECT_TRUE(is_fpn_backbone_name(kFpn) && is_fpn_backbone_name(kRetina));
  EXPECT_FALSE(is_fpn_backbone_name("build_resnet_backbone") || is_fpn_backbone_name("build_resnet_bifpn_backbone"));
  if (!has_libtorch()) GTEST_SKIP() << "load_model part: the LibTorch engine is not built";
  // Never a silent fallback to the ResNet alone: load_model refuses it at its build step.
  try {
    load_model(tiny_spec("build_resnet_bifpn_backbone"));
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_EQ(e.step(), ModelStep::Build) << e.what();
    EXPECT_TRUE(has(e.what(), "build_resnet_bifpn_backbone")) << e.what();
    EXPECT_TRUE(has(e.what(), supported_backbone_names())) << e.what();
  }
}

TEST(FpnConfig, InFeaturesNotLog2ContiguousUseDetectron2sMessage) {
  // detectron2: assert stride == 2 * strides[i - 1], "Strides {} {} are not log2 contiguous".format(stride, strides[i - 1])
  EXPECT_TRUE(has(build_error(tiny_cfg(kFpn, {"MODEL.FPN.IN_FEATURES", "['res2', 'res4', 'res5']"})),
                  "Strides 16 4 are not log2 contiguous"));
  EXPECT_TRUE(has(build_error(tiny_cfg(kFpn, {"MODEL.FPN.IN_FEATURES", "['res3', 'res2', 'res4', 'res5']"})),
                  "Strides 4 8 are not log2 contiguous"));
  EXPECT_TRUE(has(build_error(tiny_cfg(kRetina, {"MODEL.FPN.IN_FEATURES", "['res3', 'res5']"})),
                  "Strides 32 8 are not log2 contiguous"));
  EXPECT_TRUE(has(build_error(tiny_cfg(kFpn, {"MODEL.FPN.IN_FEATURES", "[]"})), "in_features is empty"));
  const std::string twice = build_error(tiny_cfg(kFpn, {"MODEL.FPN.IN_FEATURES", "['res5', 'res5']"}));
  EXPECT_TRUE(has(twice, "res5")) << twice;
}

TEST(FpnConfig, LastLevelMaxPoolMustEndAtRes5) {
  const std::string m = build_error(tiny_cfg(kFpn, {"MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4']"}));
  EXPECT_TRUE(has(m, "LastLevelMaxPool")) << m;
  EXPECT_TRUE(has(m, "res5")) << m;
  EXPECT_TRUE(has(m, "MODEL.FPN.IN_FEATURES")) << m;
  // RetinaNet's top block reads res5 from the bottom-up: in-features ending at res4 are detectron2-valid.
  EXPECT_NO_THROW(build(tiny_cfg(kRetina, {"MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']"})));
}

TEST(FpnConfig, InFeaturesMustBeBottomUpOutputs) {
  const std::string m = build_error(tiny_cfg(kFpn, {"MODEL.RESNETS.OUT_FEATURES", "['res3', 'res4']",
                                                    "MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']"}));
  EXPECT_TRUE(has(m, "\"res5\"")) << m;
  EXPECT_TRUE(has(m, "MODEL.RESNETS.OUT_FEATURES")) << m;
  const std::string stem = build_error(tiny_cfg(kFpn, {"MODEL.RESNETS.OUT_FEATURES", "['stem', 'res2', 'res3', 'res4', 'res5']",
                                                       "MODEL.FPN.IN_FEATURES", "['stem', 'res2', 'res3', 'res4', 'res5']"}));
  EXPECT_TRUE(has(stem, "\"stem\"")) << stem;
}

TEST(FpnConfig, RetinaNetNeedsRes5FromTheBottomUp) {
  const std::string m = build_error(tiny_cfg(kRetina, {"MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4']",
                                                       "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4']"}));
  EXPECT_TRUE(has(m, "LastLevelP6P7")) << m;
  EXPECT_TRUE(has(m, "res5")) << m;
  EXPECT_TRUE(has(m, "MODEL.RESNETS.OUT_FEATURES")) << m;
}

TEST(FpnConfig, FuseTypeNormAndGroupNormChannels) {
  const std::string fuse = build_error(tiny_cfg(kFpn, {"MODEL.FPN.IN_FEATURES", "['res4', 'res5']",
                                                       "MODEL.FPN.FUSE_TYPE", "max"}));
  EXPECT_TRUE(has(fuse, "\"max\"") && has(fuse, "sum") && has(fuse, "avg") && has(fuse, "MODEL.FPN.FUSE_TYPE")) << fuse;
  const std::string norm = build_error(tiny_cfg(kFpn, {"MODEL.FPN.NORM", "InstanceNorm"}));
  EXPECT_TRUE(has(norm, "\"InstanceNorm\"") && has(norm, "GN") && has(norm, "FrozenBN")) << norm;
  const std::string gn = build_error(tiny_cfg(kFpn, {"MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "48"}));
  EXPECT_TRUE(has(gn, "GroupNorm(32, 48)")) << gn;
  EXPECT_NO_THROW(build(tiny_cfg(kRetina, {"MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "64",
                                           "MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']"})));
  const std::string channels = build_error(tiny_cfg(kFpn, {"MODEL.FPN.OUT_CHANNELS", "0"}));
  EXPECT_TRUE(has(channels, "MODEL.FPN.OUT_CHANNELS")) << channels;
}

TEST(FpnConfig, OutputShapeAndSizeDivisibilityFollowTheInFeatures) {
  const FPN a = build(tiny_cfg(kFpn, {"MODEL.FPN.IN_FEATURES", "['res4', 'res5']"}));
  ASSERT_EQ(a.output_shape().size(), 3u);
  EXPECT_EQ(a.output_shape()[0].first, "p4");
  EXPECT_EQ(a.output_shape()[2].first, "p6");
  EXPECT_EQ(a.output_shape()[2].second.stride.value(), 64);
  EXPECT_EQ(a.size_divisibility(), 32);
  const FPN r = build(tiny_cfg(kRetina, {"MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']"}));
  ASSERT_EQ(r.output_shape().size(), 5u);
  EXPECT_EQ(r.output_shape()[4].first, "p7");
  EXPECT_EQ(r.output_shape()[4].second.stride.value(), 128);
  EXPECT_EQ(r.output_shape()[4].second.channels.value(), 8);
  EXPECT_EQ(r.top_block.kind, TopBlockKind::LastLevelP6P7);
  EXPECT_EQ(r.top_block.in_feature, "res5");
}

// ---- out features ------------------------------------------------------------------------------

TEST(FpnConfig, OutFeaturesSelection) {
  FPN f = build(tiny_cfg(kFpn, {"MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']"}));
  EXPECT_EQ(f.out_features(), (std::vector<std::string>{"p3", "p4", "p5", "p6"}));
  f.set_out_features({"p6", "res5", "p3"});  // any order, bottom-up outputs included
  EXPECT_EQ(f.out_features(), (std::vector<std::string>{"p6", "res5", "p3"}));
  const auto shapes = f.out_feature_shapes();
  ASSERT_EQ(shapes.size(), 3u);
  EXPECT_EQ(shapes[1].first, "res5");
  EXPECT_EQ(shapes[1].second.channels.value(), 32);
  EXPECT_EQ(shapes[1].second.stride.value(), 32);
  EXPECT_EQ(shapes[0].second.stride.value(), 64);
  try {
    f.set_out_features({"p2"});  // res2 is not an in-feature here
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(has(e.what(), "\"p2\"") && has(e.what(), "p3") && has(e.what(), "p6") && has(e.what(), "res5")) << e.what();
  }
  EXPECT_THROW(f.set_out_features({"p7"}), ConfigError);
  EXPECT_THROW(f.set_out_features({"stem"}), ConfigError);  // not an output of this bottom-up
  EXPECT_THROW(f.set_out_features({"p4", "p4"}), ConfigError);
  EXPECT_EQ(f.out_features(), (std::vector<std::string>{"p6", "res5", "p3"})) << "a refused selection changes nothing";
  f.set_out_features({});
  EXPECT_EQ(f.out_features(), (std::vector<std::string>{"p3", "p4", "p5", "p6"})) << "empty: every p-level";

  if (!has_libtorch()) GTEST_SKIP() << "load_model part: the LibTorch engine is not built";
  ModelSpec spec = tiny_spec(kRetina, {"MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']"});
  spec.out_features = {"p7", "p3"};
  Model m = load_model(spec);
  ASSERT_EQ(m.output_shape.size(), 2u);
  EXPECT_EQ(m.output_shape[0].first, "p7");
  EXPECT_EQ(m.output_shape[0].second.stride.value(), 128);
  spec.out_features = {"p2"};
  try {
    load_model(spec);
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_EQ(e.step(), ModelStep::Config) << e.what();
    EXPECT_TRUE(has(e.what(), "\"p2\"") && has(e.what(), "p7")) << e.what();
  }
}

// ---- load_model: padding and seeded FPN ----------------------------------------------------------

TEST(FpnConfig, LoadModelPadsToTheFpnsSizeDivisibility) {
  if (!has_libtorch()) GTEST_SKIP() << "the LibTorch engine is not built";
  ModelSpec spec = tiny_spec(kFpn);
  Model m = load_model(spec);
  EXPECT_EQ(m.preprocess.size_divisibility, 32) << "detectron2 pads to backbone.size_divisibility";
  EXPECT_TRUE(std::any_of(m.warnings.begin(), m.warnings.end(),
                          [](const ModelWarning& w) { return w.kind == ModelWarning::Kind::SeededWeights; }));
  spec.preprocess.size_divisibility = 64;
  EXPECT_EQ(load_model(spec).preprocess.size_divisibility, 64);
  spec.preprocess.size_divisibility = 48;
  try {
    load_model(spec);
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_EQ(e.step(), ModelStep::Preprocess) << e.what();
    EXPECT_TRUE(has(e.what(), "48") && has(e.what(), "32")) << e.what();
  }
  spec.preprocess.size_divisibility = 16;
  EXPECT_THROW(load_model(spec), PreprocessSettingsError);
  // The ResNet alone keeps "no padding" by default.
  ModelSpec plain = tiny_spec("build_resnet_backbone");
  EXPECT_EQ(load_model(plain).preprocess.size_divisibility, 0);
}

// Every CPU engine: a tensor not padded to 32 (so the top-down 2x upsampled level does not meet its
// lateral) is a ShapeError, as detectron2's forward fails on it; padded, the levels have the
// expected sizes. The FPN's own layers are seeded (ImageNet-style initialisation).
std::vector<std::string> cpu_engines() {
  std::vector<std::string> out;
  for (const auto& e : available_engines())
    if (e != "cuda") out.push_back(e);
  return out;
}

class FpnEngineInput : public ::testing::TestWithParam<std::string> {};

TEST_P(FpnEngineInput, UnpaddedInputIsAShapeError) {
  FPN f = build(tiny_cfg(kFpn));
  f.init_weights(3);
  EngineOptions options;
  options.engine = GetParam();
  auto e = create_engine(f, options);
  for (const Shape& shape : {Shape{1, 3, 40, 64}, Shape{1, 3, 64, 72}, Shape{2, 3, 33, 45}}) {
    try {
      e->forward(Tensor::zeros(shape));
      ADD_FAILURE() << "no ShapeError for " << shape[2] << "x" << shape[3];
    } catch (const ShapeError& err) {
      SUCCEED() << err.what();
    }
  }
  const FeatureMaps out = e->forward(Tensor::zeros({1, 3, 64, 96}));
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0].first, "p2");
  EXPECT_EQ(out[0].second.shape(), (Shape{1, 8, 16, 24}));
  EXPECT_EQ(out[4].first, "p6");
  EXPECT_EQ(out[4].second.shape(), (Shape{1, 8, 1, 2}));
}

INSTANTIATE_TEST_SUITE_P(CpuEngines, FpnEngineInput, ::testing::ValuesIn(cpu_engines()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FpnEngineInput);

// ---- checkpoint names --------------------------------------------------------------------------

// detectron2's convert_c2_detectron_names on these blobs (checked by running it) gives these names;
// convert_c2_name is its convert_basic_c2_names + fpn_map part.
TEST(FpnCheckpointNames, Caffe2FpnBlobsAsDetectron2ConvertsThem) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"fpn_inner_res2_2_sum_lateral_w", "fpn_lateral2.weight"},
      {"fpn_inner_res3_3_sum_lateral_gn_b", "fpn_lateral3.norm.bias"},
      {"fpn_inner_res3_3_sum_lateral_gn_s", "fpn_lateral3.norm.weight"},
      {"fpn_inner_res4_5_sum_lateral_b", "fpn_lateral4.bias"},
      {"fpn_inner_res4_5_sum_lateral_w", "fpn_lateral4.weight"},
      {"fpn_inner_res5_2_sum_b", "fpn_lateral5.bias"},
      {"fpn_inner_res5_2_sum_w", "fpn_lateral5.weight"},
      {"fpn_res2_2_sum_gn_b", "fpn_output2.norm.bias"},
      {"fpn_res3_3_sum_gn_s", "fpn_output3.norm.weight"},
      {"fpn_res4_22_sum_w", "fpn_output4.weight"},
      {"fpn_res4_5_sum_b", "fpn_output4.bias"},
      {"fpn_res5_2_sum_w", "fpn_output5.weight"},
      {"res4_22_branch2b_w", "res4.22.conv2.weight"},
      // Detectron1 RetinaNet's p6/p7 blobs: detectron2 does not map them (they stay fpn.6 / fpn.7).
      {"fpn_6_w", "fpn.6.weight"},
      {"fpn_7_b", "fpn.7.bias"},
  };
  for (const auto& [c2, d2] : cases) EXPECT_EQ(detail::convert_c2_name(c2), d2) << c2;
}

std::vector<std::string> kept_names(const detail::NamePlan& plan) {
  std::vector<std::string> out;
  for (const auto& kv : plan.kept) out.push_back(kv.first);
  return out;
}

TEST(FpnCheckpointNames, PlanForAnFpnModel) {
  // A detectron2 model file and the FPN module's own state dict: the FPN module's names.
  const detail::NamePlan d2 = detail::plan_detectron2_names(
      {"backbone.bottom_up.res2.0.conv1.weight", "backbone.fpn_lateral2.weight", "backbone.fpn_output2.norm.weight",
       "backbone.top_block.p6.bias", "backbone.top_block.p7.weight", "bottom_up.stem.conv1.norm.running_var",
       "fpn_output3.bias", "proposal_generator.rpn_head.conv.weight", "roi_heads.box_head.fc1.weight", "pixel_mean",
       "backbone.bottom_up.res2.0.conv1.norm.num_batches_tracked"},
      "", /*fpn=*/true);
  EXPECT_EQ(kept_names(d2), (std::vector<std::string>{"bottom_up.res2.0.conv1.weight", "fpn_lateral2.weight",
                                                       "fpn_output2.norm.weight", "top_block.p6.bias",
                                                       "top_block.p7.weight", "bottom_up.stem.conv1.norm.running_var",
                                                       "fpn_output3.bias"}));
  EXPECT_EQ(d2.skipped, (std::vector<std::string>{"proposal_generator.rpn_head.conv.weight",
                                                   "roi_heads.box_head.fc1.weight", "pixel_mean"}));
  EXPECT_EQ(d2.ignored, (std::vector<std::string>{"backbone.bottom_up.res2.0.conv1.norm.num_batches_tracked"}));

  // Caffe2 blobs: FPN blobs through fpn_map, ResNet blobs under bottom_up, RPN / RetinaNet heads skipped.
  const detail::NamePlan c2 = detail::plan_detectron2_names(
      {"conv1_w", "res_conv1_bn_s", "res2_0_branch2a_w", "res5_2_branch2c_bn_riv", "fpn_inner_res5_2_sum_w",
       "fpn_inner_res4_5_sum_lateral_gn_s", "fpn_res4_5_sum_w", "conv_rpn_fpn2_w", "fpn_6_w",
       "res2_0_branch2a_w_momentum", "fc1000_w"},
      "Caffe2", /*fpn=*/true);
  EXPECT_EQ(kept_names(c2), (std::vector<std::string>{"bottom_up.stem.conv1.weight", "bottom_up.stem.conv1.norm.weight",
                                                       "bottom_up.res2.0.conv1.weight",
                                                       "bottom_up.res5.2.conv3.norm.running_var",
                                                       "fpn_lateral5.weight", "fpn_lateral4.norm.weight",
                                                       "fpn_output4.weight"}));
  EXPECT_EQ(c2.skipped, (std::vector<std::string>{"conv_rpn_fpn2_w", "fpn_6_w"}));
  EXPECT_EQ(c2.ignored, (std::vector<std::string>{"res2_0_branch2a_w_momentum", "fc1000_w"}));

  // The same names for a ResNet model: the FPN's entries are skipped, the bottom-up's unprefixed.
  const detail::NamePlan resnet =
      detail::plan_detectron2_names({"backbone.bottom_up.res2.0.conv1.weight", "backbone.fpn_lateral2.weight",
                                     "fpn_inner_res5_2_sum_w", "backbone.top_block.p6.weight"},
                                    "", /*fpn=*/false);
  EXPECT_EQ(kept_names(resnet), (std::vector<std::string>{"res2.0.conv1.weight"}));
  EXPECT_EQ(resnet.skipped.size(), 3u);

  // Two spellings of one entry are refused, naming both.
  try {
    detail::plan_detectron2_names({"backbone.fpn_lateral2.weight", "fpn_lateral2.weight"}, "", true);
    FAIL() << "no error";
  } catch (const CheckpointError& e) {
    EXPECT_TRUE(has(e.what(), "backbone.fpn_lateral2.weight") && has(e.what(), "'fpn_lateral2.weight'")) << e.what();
  }
}

}  // namespace
