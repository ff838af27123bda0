// SPDX-License-Identifier: Apache-2.0
// backbone::Config against detectron2's own config code: the reference dumps, values and error
// messages under tests/data/config/ were made by detectron2/yacs/fvcore with
// tests/data/make_config.py (see its docstring).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "backbone/config.h"
#include "backbone/error.h"
#include "backbone/fpn.h"
#include "backbone/model.h"
#include "config/defaults_generated.h"
#include "config/py_value.h"

namespace fs = std::filesystem;
using backbone::Config;
using backbone::ConfigError;

namespace {

const std::string kDataDir = std::string(BACKBONE_TEST_DATA_DIR) + "/config";
const std::string kConfigsDir = std::string(BACKBONE_SOURCE_DIR) + "/configs";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const nlohmann::json& expected() {
  static const nlohmann::json j = nlohmann::json::parse(read_text(kDataDir + "/expected.json"));
  return j;
}

// Runs the test body with tests/data/config as the working directory, as make_config.py did
// (the reference messages name files relative to it).
class ConfigInDataDir : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = fs::current_path();
    fs::current_path(kDataDir);
  }
  void TearDown() override { fs::current_path(saved_); }

 private:
  fs::path saved_;
};

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no ConfigError>";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Defaults

TEST(ConfigDefaults, SpotValuesOfDetectron2GetCfg) {
  // Values of detectron2/config/defaults.py.
  const Config cfg;
  EXPECT_EQ(cfg.get_int("VERSION"), 2);
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.DEPTH"), 50);
  EXPECT_EQ(cfg.get_string_list("MODEL.RESNETS.OUT_FEATURES"), std::vector<std::string>{"res4"});
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.NUM_GROUPS"), 1);
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.WIDTH_PER_GROUP"), 64);
  EXPECT_TRUE(cfg.get_bool("MODEL.RESNETS.STRIDE_IN_1X1"));
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.RES5_DILATION"), 1);
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.RES2_OUT_CHANNELS"), 256);
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.STEM_OUT_CHANNELS"), 64);
  EXPECT_EQ(cfg.get_string("MODEL.RESNETS.NORM"), "FrozenBN");
  EXPECT_EQ(cfg.get_bool_list("MODEL.RESNETS.DEFORM_ON_PER_STAGE"), std::vector<bool>(4, false));
  EXPECT_FALSE(cfg.get_bool("MODEL.RESNETS.DEFORM_MODULATED"));
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.DEFORM_NUM_GROUPS"), 1);
  EXPECT_EQ(cfg.get_string("MODEL.BACKBONE.NAME"), "build_resnet_backbone");
  EXPECT_EQ(cfg.get_int("MODEL.BACKBONE.FREEZE_AT"), 2);
  EXPECT_EQ(cfg.get_float_list("MODEL.PIXEL_MEAN"), (std::vector<double>{103.530, 116.280, 123.675}));
  EXPECT_EQ(cfg.get_float_list("MODEL.PIXEL_STD"), (std::vector<double>{1.0, 1.0, 1.0}));
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "");
  EXPECT_EQ(cfg.get_string("MODEL.DEVICE"), "cuda");
  EXPECT_EQ(cfg.get_string("INPUT.FORMAT"), "BGR");
  EXPECT_EQ(cfg.repr("INPUT.MIN_SIZE_TRAIN"), "(800,)");
  EXPECT_EQ(cfg.get_int_list("INPUT.MIN_SIZE_TRAIN"), std::vector<int64_t>{800});
  EXPECT_EQ(cfg.get_int("INPUT.MIN_SIZE_TEST"), 800);
  EXPECT_EQ(cfg.get_int("INPUT.MAX_SIZE_TEST"), 1333);
  EXPECT_EQ(cfg.repr("INPUT.CROP.SIZE"), "[0.9, 0.9]");
  EXPECT_EQ(cfg.repr("MODEL.ANCHOR_GENERATOR.SIZES"), "[[32, 64, 128, 256, 512]]");
  EXPECT_EQ(cfg.repr("MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS"), "(10.0, 10.0, 5.0, 5.0)");
  EXPECT_EQ(cfg.repr("SOLVER.WEIGHT_DECAY_BIAS"), "None");
  EXPECT_EQ(cfg.repr("SOLVER.STEPS"), "(30000,)");
  EXPECT_DOUBLE_EQ(cfg.get_float("SOLVER.BASE_LR"), 0.001);
  EXPECT_EQ(cfg.repr("DATASETS.TRAIN"), "()");
  EXPECT_EQ(cfg.get_string("OUTPUT_DIR"), "./output");
}

TEST(ConfigDefaults, DumpIsDetectron2sDump) {
  // kDefaultConfigYaml is detectron2's get_cfg().dump() (YAML anchors included), written by
  // gen_defaults.py; Config must write the same bytes back.
  EXPECT_EQ(Config().dump(), std::string(backbone::detail::kDefaultConfigYaml));
  EXPECT_GT(backbone::detail::kDefaultConfigTypeCount, 200u);
}

TEST(ConfigDefaults, CopiesAreIndependent) {
  Config a;
  Config b = a;
  b.set("MODEL.RESNETS.DEPTH", "101");
  EXPECT_EQ(a.get_int("MODEL.RESNETS.DEPTH"), 50);
  EXPECT_EQ(b.get_int("MODEL.RESNETS.DEPTH"), 101);
  a = b;
  EXPECT_EQ(a.get_int("MODEL.RESNETS.DEPTH"), 101);
  Config c = std::move(b);
  EXPECT_EQ(c.get_int("MODEL.RESNETS.DEPTH"), 101);
}

// ---------------------------------------------------------------------------------------------
// Files: detectron2's merged result, dump for dump

TEST_F(ConfigInDataDir, MergedFilesDumpAsDetectron2) {
  const auto& cases = expected().at("dumps");
  ASSERT_GE(cases.size(), 9u);
  for (const auto& c : cases) {
    const std::string input = c.at("input");
    SCOPED_TRACE(input);
    Config cfg;
    ASSERT_NO_THROW(cfg.merge_from_file(input));
    EXPECT_EQ(cfg.dump(), read_text(c.at("dump").get<std::string>()));
  }
}

TEST_F(ConfigInDataDir, FullConfigsDumpedByDetectron2Load) {
  for (const char* name : {"dumps/d2_mask_rcnn_R_50_FPN_3x.yaml",
                           "dumps/d2_cascade_X_152_dconv_with_project_section.yaml"}) {
    SCOPED_TRACE(name);
    Config cfg;
    ASSERT_NO_THROW(cfg.merge_from_file(name));
    // What detectron2 makes of the same file: everything kept; only the YAML anchors of the
    // defaults' shared tuples are gone, as each key now holds its own copy.
    const std::string reloaded = std::string(name).replace(std::string(name).size() - 5, 5, "__reloaded.yaml");
    EXPECT_EQ(cfg.dump(), read_text(reloaded));
    std::string original = read_text(name);
    EXPECT_NE(original.find("&id001"), std::string::npos);
    // Dumping the loaded config again gives a file that loads to the same config.
    Config again;
    again.merge_from_string(cfg.dump());
    EXPECT_EQ(again.dump(), cfg.dump());
  }
  Config mask_rcnn = backbone::load_config("dumps/d2_mask_rcnn_R_50_FPN_3x.yaml");
  EXPECT_EQ(mask_rcnn.get_int("MODEL.RESNETS.DEPTH"), 50);
  EXPECT_EQ(mask_rcnn.get_string_list("MODEL.RESNETS.OUT_FEATURES"),
            (std::vector<std::string>{"res2", "res3", "res4", "res5"}));
  EXPECT_EQ(mask_rcnn.get_string("MODEL.WEIGHTS"), "detectron2://ImageNetPretrained/MSRA/R-50.pkl");
  EXPECT_EQ(mask_rcnn.get_string("MODEL.BACKBONE.NAME"), "build_resnet_fpn_backbone");
  EXPECT_TRUE(mask_rcnn.get_bool("MODEL.MASK_ON"));

  Config cascade = backbone::load_config("dumps/d2_cascade_X_152_dconv_with_project_section.yaml");
  EXPECT_EQ(cascade.get_int("MODEL.RESNETS.DEPTH"), 152);
  EXPECT_EQ(cascade.get_int("MODEL.RESNETS.NUM_GROUPS"), 32);
  EXPECT_EQ(cascade.get_int("MODEL.RESNETS.WIDTH_PER_GROUP"), 8);
  EXPECT_FALSE(cascade.get_bool("MODEL.RESNETS.STRIDE_IN_1X1"));
  EXPECT_EQ(cascade.get_bool_list("MODEL.RESNETS.DEFORM_ON_PER_STAGE"),
            (std::vector<bool>{false, true, true, true}));
  EXPECT_FALSE(cascade.get_bool("MODEL.RESNETS.DEFORM_MODULATED"));
  EXPECT_EQ(cascade.get_string("MODEL.RESNETS.NORM"), "FrozenBN");
  EXPECT_EQ(cascade.get_string("MODEL.ROI_BOX_HEAD.NORM"), "GN");
  EXPECT_TRUE(cascade.has("MODEL.POINT_HEAD.NUM_CLASSES"));
  EXPECT_EQ(cascade.get_int("MODEL.POINT_HEAD.NUM_CLASSES"), 80);
  EXPECT_FALSE(cascade.has("MODEL.POINT_HEAD.NOPE"));
}

// ---------------------------------------------------------------------------------------------
// _BASE_

TEST_F(ConfigInDataDir, BaseChainTwoLevelsRelativePaths) {
  // top.yaml -> mid/mid.yaml -> ../base/base.yaml
  const Config cfg = backbone::load_config("chain/top.yaml");
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.DEPTH"), 101);              // mid over base
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.NUM_GROUPS"), 32);          // base
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.WIDTH_PER_GROUP"), 4);      // base
  EXPECT_FALSE(cfg.get_bool("MODEL.RESNETS.STRIDE_IN_1X1"));       // mid
  EXPECT_EQ(cfg.get_string_list("MODEL.RESNETS.OUT_FEATURES"),     // top over base
            (std::vector<std::string>{"res4", "res5"}));
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "top.pkl");           // top over mid
  EXPECT_EQ(cfg.get_float_list("MODEL.PIXEL_STD"), (std::vector<double>{57.375, 57.120, 58.395}));
  EXPECT_EQ(cfg.get_string("INPUT.FORMAT"), "RGB");
  EXPECT_EQ(cfg.get_int("INPUT.MIN_SIZE_TEST"), 700);
  EXPECT_EQ(cfg.get_int("INPUT.MAX_SIZE_TEST"), 1000);
  EXPECT_DOUBLE_EQ(cfg.get_float("SOLVER.BASE_LR"), 0.5);
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.RES5_DILATION"), 1);        // default

  const Config list = backbone::load_config("chain/list_base.yaml");
  EXPECT_EQ(list.get_int("MODEL.RESNETS.DEPTH"), 34);               // other.yaml after mid.yaml
  EXPECT_EQ(list.get_int("MODEL.RESNETS.RES2_OUT_CHANNELS"), 64);
  EXPECT_EQ(list.get_int("MODEL.RESNETS.NUM_GROUPS"), 32);          // via mid -> base
  EXPECT_EQ(list.get_int("MODEL.RESNETS.RES5_DILATION"), 2);
}

TEST_F(ConfigInDataDir, BaseFromWorkingDirectoryIndependentPaths) {
  // The same chain through an absolute path and from another working directory.
  const std::string abs = (fs::current_path() / "chain" / "top.yaml").string();
  fs::current_path("/");
  EXPECT_EQ(backbone::load_config(abs).dump(), read_text(kDataDir + "/dumps/chain__top.yaml"));
}

TEST_F(ConfigInDataDir, MergeFromStringResolvesBaseInBaseDir) {
  Config cfg;
  cfg.merge_from_string("_BASE_: \"mid/mid.yaml\"\nMODEL:\n  RESNETS:\n    DEPTH: 18\n", "chain");
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.DEPTH"), 18);
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "mid.pkl");
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.NUM_GROUPS"), 32);

  Config absolute;
  absolute.merge_from_string("_BASE_: \"" + (fs::current_path() / "chain/top.yaml").string() + "\"\n");
  EXPECT_EQ(absolute.dump(), read_text("dumps/chain__top.yaml"));

  Config no_base;
  no_base.merge_from_string("MODEL:\n  RESNETS:\n    DEPTH: 34\n    RES2_OUT_CHANNELS: 64\n");
  EXPECT_EQ(no_base.get_int("MODEL.RESNETS.DEPTH"), 34);
}

// ---------------------------------------------------------------------------------------------
// The shipped configs

struct ShippedExpectation {
  const char* file;
  int64_t depth;
  const char* format;
  std::vector<double> mean, std;
  bool stride_in_1x1;
  int64_t groups, width, res2, dilation;
  std::vector<bool> deform;
  bool modulated;
  // FPN configs: MODEL.BACKBONE.NAME, RESNETS.OUT_FEATURES = FPN.IN_FEATURES
  const char* backbone = "build_resnet_backbone";
  std::vector<std::string> out_features = {"res2", "res3", "res4", "res5"};
};

TEST(ConfigShipped, EveryConfigLoadsAsInDetectron2) {
  const std::vector<double> bgr_mean{103.530, 116.280, 123.675}, rgb_mean{123.675, 116.280, 103.530};
  const std::vector<double> msra_std{1.0, 1.0, 1.0}, tv_std{58.395, 57.120, 57.375},
      fair_std{57.375, 57.120, 58.395};
  const std::vector<bool> no_deform(4, false), c3_c5{false, true, true, true};
  const char* const fpn = "build_resnet_fpn_backbone";
  const char* const retinanet = "build_retinanet_resnet_fpn_backbone";
  const std::vector<ShippedExpectation> table = {
      {"Base-ResNet.yaml", 50, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 1, no_deform, false},
      {"R-18.yaml", 18, "RGB", rgb_mean, tv_std, false, 1, 64, 64, 1, no_deform, false},
      {"R-34.yaml", 34, "RGB", rgb_mean, tv_std, false, 1, 64, 64, 1, no_deform, false},
      {"R-50.yaml", 50, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 1, no_deform, false},
      {"R-101.yaml", 101, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 1, no_deform, false},
      {"R-152.yaml", 152, "RGB", rgb_mean, tv_std, false, 1, 64, 256, 1, no_deform, false},
      {"X-101-32x8d.yaml", 101, "BGR", bgr_mean, fair_std, false, 32, 8, 256, 1, no_deform, false},
      {"R-50-DC5.yaml", 50, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 2, no_deform, false},
      {"R-50-dconv-c3-c5.yaml", 50, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 1, c3_c5, false},
      {"R-50-mdconv-c3-c5.yaml", 50, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 1, c3_c5, true},
      {"R-50-FPN.yaml", 50, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 1, no_deform, false, fpn},
      {"R-101-FPN.yaml", 101, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 1, no_deform, false, fpn},
      {"X-101-32x8d-FPN.yaml", 101, "BGR", bgr_mean, fair_std, false, 32, 8, 256, 1, no_deform, false, fpn},
      {"RetinaNet-R-50-FPN.yaml", 50, "BGR", bgr_mean, msra_std, true, 1, 64, 256, 1, no_deform, false, retinanet,
       {"res3", "res4", "res5"}},
  };
  // Every YAML file in configs/ is in the table and has a detectron2 dump.
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(kConfigsDir)) {
    if (entry.path().extension() != ".yaml") continue;
    ++files;
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(std::any_of(table.begin(), table.end(), [&](const auto& t) { return name == t.file; }))
        << name << " is not in the test's table";
  }
  EXPECT_EQ(files, table.size());
  for (const auto& t : table) {
    SCOPED_TRACE(t.file);
    const std::string path = kConfigsDir + "/" + t.file;
    Config cfg;
    ASSERT_NO_THROW(cfg.merge_from_file(path));
    EXPECT_EQ(cfg.dump(), read_text(kDataDir + "/shipped/" + t.file));  // = detectron2's result
    EXPECT_EQ(cfg.get_int("MODEL.RESNETS.DEPTH"), t.depth);
    EXPECT_EQ(cfg.get_string("INPUT.FORMAT"), t.format);
    EXPECT_EQ(cfg.get_float_list("MODEL.PIXEL_MEAN"), t.mean);
    EXPECT_EQ(cfg.get_float_list("MODEL.PIXEL_STD"), t.std);
    EXPECT_EQ(cfg.get_bool("MODEL.RESNETS.STRIDE_IN_1X1"), t.stride_in_1x1);
    EXPECT_EQ(cfg.get_int("MODEL.RESNETS.NUM_GROUPS"), t.groups);
    EXPECT_EQ(cfg.get_int("MODEL.RESNETS.WIDTH_PER_GROUP"), t.width);
    EXPECT_EQ(cfg.get_int("MODEL.RESNETS.RES2_OUT_CHANNELS"), t.res2);
    EXPECT_EQ(cfg.get_int("MODEL.RESNETS.RES5_DILATION"), t.dilation);
    EXPECT_EQ(cfg.get_bool_list("MODEL.RESNETS.DEFORM_ON_PER_STAGE"), t.deform);
    EXPECT_EQ(cfg.get_bool("MODEL.RESNETS.DEFORM_MODULATED"), t.modulated);
    EXPECT_EQ(cfg.get_string_list("MODEL.RESNETS.OUT_FEATURES"), t.out_features);
    EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "");
    EXPECT_EQ(cfg.get_string("MODEL.BACKBONE.NAME"), t.backbone);
    if (std::string(t.backbone) != "build_resnet_backbone") {
      // detectron2's defaults for the rest of the FPN, as the model zoo's configs leave them
      EXPECT_EQ(cfg.get_string_list("MODEL.FPN.IN_FEATURES"), t.out_features);
      EXPECT_EQ(cfg.get_int("MODEL.FPN.OUT_CHANNELS"), 256);
      EXPECT_EQ(cfg.get_string("MODEL.FPN.NORM"), "");
      EXPECT_EQ(cfg.get_string("MODEL.FPN.FUSE_TYPE"), "sum");
    }
    EXPECT_EQ(cfg.get_string("MODEL.RESNETS.NORM"), "FrozenBN");
    if (std::string(t.file) != "Base-ResNet.yaml") {
      const std::string text = read_text(path);
      EXPECT_TRUE(contains(text, "# Weights: ")) << "no comment naming the weights file";
    }
  }
}

// The FPN configs build detectron2's pyramid: names, strides and channels of output_shape(), and
// the padding they need. (R-101 and X-101 differ from R-50-FPN in the bottom-up only.)
TEST(ConfigShipped, FpnConfigsBuildTheirPyramid) {
  using Levels = std::vector<std::pair<std::string, int64_t>>;
  const struct {
    const char* file;
    Levels levels;
  } cases[] = {
      {"R-50-FPN.yaml", {{"p2", 4}, {"p3", 8}, {"p4", 16}, {"p5", 32}, {"p6", 64}}},
      {"RetinaNet-R-50-FPN.yaml", {{"p3", 8}, {"p4", 16}, {"p5", 32}, {"p6", 64}, {"p7", 128}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const Config cfg = backbone::load_config(kConfigsDir + "/" + c.file);
    const std::string name = cfg.get_string("MODEL.BACKBONE.NAME");
    const backbone::FPN fpn = name == "build_retinanet_resnet_fpn_backbone"
                                  ? backbone::build_retinanet_resnet_fpn_backbone(cfg)
                                  : backbone::build_resnet_fpn_backbone(cfg);
    Levels got;
    for (const auto& [level, spec] : fpn.output_shape()) {
      got.emplace_back(level, spec.stride.value_or(0));
      EXPECT_EQ(spec.channels.value_or(0), 256) << level;
    }
    EXPECT_EQ(got, c.levels);
    EXPECT_EQ(fpn.size_divisibility(), 32);
    EXPECT_EQ(backbone::model_name(cfg), name == "build_retinanet_resnet_fpn_backbone" ? "RetinaNet-R-50-FPN" : "R-50-FPN");
  }
}

TEST(ConfigShipped, LoadConfigWithOverrides) {
  const Config cfg = backbone::load_config(kConfigsDir + "/R-50.yaml",
                                           {"MODEL.WEIGHTS", "/models/R-50.pkl", "MODEL.DEVICE", "cpu"});
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "/models/R-50.pkl");
  EXPECT_EQ(cfg.get_string("MODEL.DEVICE"), "cpu");
  EXPECT_EQ(backbone::load_config("").dump(), Config().dump());
  EXPECT_EQ(backbone::load_config("", {"MODEL.RESNETS.DEPTH", "34"}).get_int("MODEL.RESNETS.DEPTH"), 34);
  EXPECT_THROW(backbone::load_config(kConfigsDir + "/R-50.yaml", {"MODEL.RESNETS.DEPTH"}), ConfigError);
}

// ---------------------------------------------------------------------------------------------
// merge_from_list

TEST(ConfigList, ValuesDecodedAsYacs) {
  const auto& cases = expected().at("list_cases");
  ASSERT_GE(cases.size(), 40u);
  for (const auto& c : cases) {
    const auto overrides = c.at("overrides").get<std::vector<std::string>>();
    SCOPED_TRACE(overrides[0] + " = " + overrides[1]);
    Config cfg;
    ASSERT_NO_THROW(cfg.merge_from_list(overrides));
    EXPECT_EQ(cfg.repr(c.at("key").get<std::string>()), c.at("repr").get<std::string>())
        << "yacs type " << c.at("type").get<std::string>();
  }
}

TEST(ConfigList, AllOverridesDumpAsDetectron2) {
  Config cfg;
  cfg.merge_from_list(expected().at("list_all_overrides").get<std::vector<std::string>>());
  EXPECT_EQ(cfg.dump(), read_text(kDataDir + "/" + expected().at("list_all_dump").get<std::string>()));
}

TEST(ConfigList, TypedGettersAfterOverrides) {
  Config cfg;
  cfg.merge_from_list({"MODEL.RESNETS.DEPTH", "101", "MODEL.PIXEL_STD", "[57.375, 57.12, 58.395]",
                       "MODEL.RESNETS.STRIDE_IN_1X1", "False", "MODEL.RESNETS.OUT_FEATURES",
                       "('res3', 'res5')", "INPUT.MIN_SIZE_TRAIN", "[640, 800]", "MODEL.PIXEL_MEAN",
                       "(1, 2.5, 3)", "MODEL.WEIGHTS", "a/b.pkl", "INPUT.CROP.SIZE", "[1, 2]"});
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.DEPTH"), 101);
  EXPECT_DOUBLE_EQ(cfg.get_float("MODEL.RESNETS.DEPTH"), 101.0);  // get_float accepts ints
  EXPECT_EQ(cfg.get_float_list("MODEL.PIXEL_STD"), (std::vector<double>{57.375, 57.12, 58.395}));
  EXPECT_EQ(cfg.get_float_list("MODEL.PIXEL_MEAN"), (std::vector<double>{1.0, 2.5, 3.0}));
  EXPECT_EQ(cfg.repr("MODEL.PIXEL_MEAN"), "[1, 2.5, 3]");  // the tuple became the default's list
  EXPECT_FALSE(cfg.get_bool("MODEL.RESNETS.STRIDE_IN_1X1"));
  EXPECT_EQ(cfg.get_string_list("MODEL.RESNETS.OUT_FEATURES"), (std::vector<std::string>{"res3", "res5"}));
  EXPECT_EQ(cfg.repr("INPUT.MIN_SIZE_TRAIN"), "(640, 800)");
  EXPECT_EQ(cfg.get_int_list("INPUT.MIN_SIZE_TRAIN"), (std::vector<int64_t>{640, 800}));
  EXPECT_EQ(cfg.get_string("MODEL.WEIGHTS"), "a/b.pkl");
  EXPECT_EQ(cfg.get_int_list("INPUT.CROP.SIZE"), (std::vector<int64_t>{1, 2}));

  cfg.set("MODEL.RESNETS.NORM", "'GN'");
  EXPECT_EQ(cfg.get_string("MODEL.RESNETS.NORM"), "GN");
  cfg.set("MODEL.DEVICE", "cpu");
  EXPECT_EQ(cfg.get_string("MODEL.DEVICE"), "cpu");
}

TEST(ConfigList, ErrorsAreYacsMessages) {
  const auto& cases = expected().at("list_errors");
  ASSERT_GE(cases.size(), 25u);
  for (const auto& c : cases) {
    const auto overrides = c.at("overrides").get<std::vector<std::string>>();
    SCOPED_TRACE(c.at("message").get<std::string>().substr(0, 80));
    Config cfg;
    const std::string before = cfg.dump();
    EXPECT_EQ(error_of([&] { cfg.merge_from_list(overrides); }), c.at("message").get<std::string>());
    EXPECT_EQ(cfg.dump(), before) << "a failing merge_from_list changed the config";
  }
}

TEST(ConfigList, SetChecksAsMergeFromList) {
  Config cfg;
  EXPECT_EQ(error_of([&] { cfg.set("MODEL.RESNETS.DEPTH", "abc"); }),
            "Type mismatch (<class 'int'> vs. <class 'str'>) with values (50 vs. abc) for config key: "
            "MODEL.RESNETS.DEPTH");
  EXPECT_EQ(error_of([&] { cfg.set("MODEL.RESNETS.FOO", "1"); }), "Non-existent key: MODEL.RESNETS.FOO");
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.DEPTH"), 50);
}

TEST(ConfigList, UnusedSectionsAcceptAnything) {
  Config cfg;
  ASSERT_NO_THROW(cfg.merge_from_list({"MODEL.ROI_HEADS.NUM_CLASSES", "many",  // type differs
                                       "MODEL.ROI_HEADS.NEW_KEY", "[1, 2]",      // unknown key
                                       "MODEL.POINT_HEAD.NUM_CLASSES", "80",     // unknown section
                                       "SOLVER.BASE_LR", "(1,)", "MY_PROJECT.A.B", "True",
                                       "MODEL.PIXEL_MEANS", "1"}));               // MODEL.* not read
  EXPECT_EQ(cfg.repr("MODEL.ROI_HEADS.NUM_CLASSES"), "'many'");
  EXPECT_EQ(cfg.repr("MODEL.ROI_HEADS.NEW_KEY"), "[1, 2]");
  EXPECT_EQ(cfg.get_int("MODEL.POINT_HEAD.NUM_CLASSES"), 80);
  EXPECT_EQ(cfg.repr("SOLVER.BASE_LR"), "(1,)");
  EXPECT_TRUE(cfg.get_bool("MY_PROJECT.A.B"));
  EXPECT_EQ(cfg.get_int("MODEL.PIXEL_MEANS"), 1);
  EXPECT_TRUE(contains(cfg.dump(), "POINT_HEAD:\n    NUM_CLASSES: 80\n"));
  // Descending into a value is not possible, even in an unused section.
  EXPECT_TRUE(contains(error_of([&] { cfg.set("SOLVER.BASE_LR.X", "1"); }), "Non-existent key: SOLVER.BASE_LR.X"));
}

// ---------------------------------------------------------------------------------------------
// File errors

TEST_F(ConfigInDataDir, FileErrorsAreDetectron2MessagesNamingTheFile) {
  const auto& cases = expected().at("file_errors");
  ASSERT_GE(cases.size(), 18u);
  for (const auto& c : cases) {
    const std::string file = c.at("file");
    const std::string message = c.at("message");
    SCOPED_TRACE(file);
    Config cfg;
    const std::string before = cfg.dump();
    const std::string got = error_of([&] { cfg.merge_from_file(file); });
    if (file == "errors/no_such_file.yaml") {
      EXPECT_EQ(got, message);  // detectron2's message names the file itself
    } else if (file == "errors/unknown_key_in_base.yaml") {
      // The key comes from the _BASE_ file: the message names that file.
      EXPECT_EQ(got, "errors/unknown_key_resnets.yaml: " + message);
    } else if (file == "errors/v1_with_new_weights_key.yaml") {
      EXPECT_EQ(got.rfind(file + ": " + message, 0), 0u) << got;
      EXPECT_TRUE(contains(got, "MODEL.WEIGHT)")) << got;
    } else {
      EXPECT_EQ(got, file + ": " + message);
    }
    EXPECT_EQ(cfg.dump(), before) << "a failing merge_from_file changed the config";
  }
}

TEST_F(ConfigInDataDir, UnknownKeyInEachCheckedSection) {
  // The same mistakes as in expected.json, spelled out (file and list).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"errors/unknown_key_resnets.yaml", "MODEL.RESNETS.FOO"},
      {"errors/unknown_key_backbone.yaml", "MODEL.BACKBONE.FREEZE_ATT"},
      {"errors/unknown_key_input.yaml", "INPUT.FORMATS"},
      {"errors/unknown_key_input_crop.yaml", "INPUT.CROP.SIZES"},
  };
  for (const auto& c : cases) {
    Config cfg;
    EXPECT_EQ(error_of([&] { cfg.merge_from_file(c.first); }), c.first + ": Non-existent config key: " + c.second);
    EXPECT_EQ(error_of([&] { cfg.merge_from_list({c.second, "1"}); }), "Non-existent key: " + c.second);
  }
}

TEST_F(ConfigInDataDir, ErrorsWithoutADetectron2Reference) {
  Config cfg;
  const std::string bad = error_of([&] { cfg.merge_from_file("errors/bad_yaml.yaml"); });
  EXPECT_TRUE(contains(bad, "'errors/bad_yaml.yaml' is not valid YAML: line ")) << bad;

  const std::string cycle = error_of([&] { cfg.merge_from_file("errors/cycle_a.yaml"); });
  EXPECT_TRUE(contains(cycle, "_BASE_ cycle")) << cycle;
  EXPECT_TRUE(contains(cycle, "cycle_a.yaml") && contains(cycle, "cycle_b.yaml")) << cycle;

  const std::string self = error_of([&] { cfg.merge_from_file("errors/self_cycle.yaml"); });
  EXPECT_TRUE(contains(self, "_BASE_ cycle") && contains(self, "self_cycle.yaml")) << self;

  const std::string url = error_of([&] { cfg.merge_from_file("errors/url_base.yaml"); });
  EXPECT_TRUE(contains(url, "errors/url_base.yaml: _BASE_ 'https://raw.githubusercontent.com/")) << url;
  EXPECT_TRUE(contains(url, "is a URL")) << url;

  const std::string base = error_of([&] { cfg.merge_from_file("errors/missing_base.yaml"); });
  EXPECT_TRUE(contains(base, "does_not_exist.yaml") && contains(base, "the _BASE_ of 'errors/missing_base.yaml'"))
      << base;

  const std::string empty = error_of([&] { cfg.merge_from_file("errors/empty.yaml"); });
  EXPECT_TRUE(contains(empty, "'errors/empty.yaml'") && contains(empty, "empty")) << empty;

  const std::string dir = error_of([&] { cfg.merge_from_file("errors"); });
  EXPECT_EQ(dir, "Config file 'errors' does not exist!");

  const std::string text = error_of([&] { cfg.merge_from_string("MODEL: [1,\n"); });
  EXPECT_TRUE(contains(text, "'<string>' is not valid YAML")) << text;
  const std::string text_url = error_of([&] { cfg.merge_from_string("_BASE_: detectron2://x.yaml\n"); });
  EXPECT_TRUE(contains(text_url, "<string>: _BASE_ 'detectron2://x.yaml' is a URL")) << text_url;
  EXPECT_EQ(error_of([&] { cfg.merge_from_string("VERSION: 3\n"); }),
            "<string>: Cannot merge a v3 config into a v2 config.");
  EXPECT_EQ(error_of([&] { cfg.merge_from_string("MODEL: 1\n"); }).substr(0, 80),
            std::string("<string>: Type mismatch (<class 'detectron2.config.config.CfgNode'> vs. <class 'int'>)")
                .substr(0, 80));
  EXPECT_EQ(cfg.dump(), Config().dump());
}

TEST_F(ConfigInDataDir, UnusedSectionsInFilesAreAcceptedAndStored) {
  Config cfg;
  ASSERT_NO_THROW(cfg.merge_from_file("unused_sections.yaml"));
  EXPECT_EQ(cfg.get_int("MODEL.RESNETS.DEPTH"), 18);  // the checked part is applied
  EXPECT_EQ(cfg.repr("MODEL.ROI_HEADS.NUM_CLASSES"), "'eighty'");
  EXPECT_EQ(cfg.repr("MODEL.ROI_HEADS.MY_NEW_KEY"), "[1, 2]");
  EXPECT_EQ(cfg.get_int("MODEL.POINT_HEAD.TRAIN_NUM_POINTS"), 196);
  EXPECT_EQ(cfg.get_string_list("MODEL.POINT_HEAD.IN_FEATURES"), std::vector<std::string>{"p2"});
  EXPECT_EQ(cfg.get_int("MODEL.RPN.NEW_THING.A"), 1);
  EXPECT_EQ(cfg.get_string("MODEL.PIXEL_MEANS"), "typo under MODEL, not a key this project reads");
  EXPECT_DOUBLE_EQ(cfg.get_float("SOLVER.BASE_LR"), 0.01);  // the string "0.01", literal_eval'ed
  EXPECT_EQ(cfg.get_int("SOLVER.STEPS"), 5);
  EXPECT_TRUE(cfg.get_bool("SOLVER.NEW_SCHEDULE.WARMUP"));
  EXPECT_EQ(cfg.repr("DATASETS.TRAIN"), "['my_dataset']");
  EXPECT_TRUE(cfg.get_bool("MY_PROJECT.ENABLED"));
  // "1e-3" is a string to YAML; a new section is stored as read (yacs decodes the values it
  // merges into existing keys only, as SOLVER.BASE_LR above).
  EXPECT_EQ(cfg.repr("MY_PROJECT.RATIO"), "'1e-3'");
  EXPECT_TRUE(contains(cfg.dump(), "MY_PROJECT:\n  ENABLED: true\n  RATIO: 1e-3\n"));
}

// ---------------------------------------------------------------------------------------------
// Getters

TEST(ConfigGetters, MissingKeysAndWrongTypes) {
  const Config cfg;
  EXPECT_TRUE(cfg.has("MODEL.RESNETS"));
  EXPECT_TRUE(cfg.has("MODEL.RESNETS.DEPTH"));
  EXPECT_FALSE(cfg.has("MODEL.RESNETS.DEPTH.X"));
  EXPECT_FALSE(cfg.has("MODEL.RESNET"));
  EXPECT_EQ(error_of([&] { cfg.get_int("MODEL.RESNETS.FOO"); }), "Non-existent config key: MODEL.RESNETS.FOO");
  EXPECT_EQ(error_of([&] { cfg.get_int("MODEL.RESNETS.NORM"); }),
            "Config key MODEL.RESNETS.NORM is <class 'str'> (FrozenBN), expected an int");
  EXPECT_EQ(error_of([&] { cfg.get_bool("MODEL.RESNETS.DEPTH"); }),
            "Config key MODEL.RESNETS.DEPTH is <class 'int'> (50), expected a bool");
  EXPECT_THROW(cfg.get_int("MODEL.RESNETS.STRIDE_IN_1X1"), ConfigError);  // a bool is not an int
  EXPECT_THROW(cfg.get_float("MODEL.WEIGHTS"), ConfigError);
  EXPECT_THROW(cfg.get_string("MODEL.RESNETS"), ConfigError);
  EXPECT_THROW(cfg.get_int_list("MODEL.PIXEL_MEAN"), ConfigError);  // floats
  EXPECT_THROW(cfg.get_string_list("MODEL.PIXEL_MEAN"), ConfigError);
  EXPECT_THROW(cfg.get_bool_list("MODEL.RESNETS.OUT_FEATURES"), ConfigError);
  EXPECT_THROW(cfg.get_float_list("MODEL.RESNETS.DEPTH"), ConfigError);
  EXPECT_EQ(error_of([&] { cfg.get_float_list("MODEL.RESNETS.OUT_FEATURES"); }),
            "Config key MODEL.RESNETS.OUT_FEATURES is <class 'list'> (['res4']), expected a list of floats");
  EXPECT_EQ(cfg.get_float_list("SOLVER.STEPS"), std::vector<double>{30000.0});  // a tuple of ints
  EXPECT_EQ(cfg.get_string_list("DATASETS.TRAIN"), std::vector<std::string>{});
  EXPECT_THROW(cfg.repr("NOPE"), ConfigError);
}

// ---------------------------------------------------------------------------------------------
// The Python pieces underneath, case by case against Python itself

TEST(ConfigPython, LiteralEvalAsYacsDecodesValues) {
  const auto& cases = expected().at("literal_eval");
  ASSERT_GE(cases.size(), 60u);
  for (const auto& c : cases) {
    const std::string text = c.at("text");
    const std::string type = c.at("type");
    SCOPED_TRACE("text: [" + text + "]");
    backbone::detail::PyValue v;
    const bool literal = backbone::detail::literal_eval(text, &v);
    if (type == "bytes" || type == "set" || type == "complex") {
      // Literals Python has but a CfgNode cannot hold: kept as the text (documented deviation).
      EXPECT_FALSE(literal);
      continue;
    }
    ASSERT_EQ(literal, c.at("literal").get<bool>());
    if (literal) {
      EXPECT_EQ(backbone::detail::py_repr(v), c.at("repr").get<std::string>());
      EXPECT_EQ(backbone::detail::py_type(v), "<class '" + type + "'>");
    }
  }
}

TEST(ConfigPython, FloatReprAsPython) {
  for (const auto& c : expected().at("float_repr")) {
    const std::string hex = c.at(0);
    const double x = std::strtod(hex.c_str(), nullptr);
    EXPECT_EQ(backbone::detail::py_repr_float(x), c.at(1).get<std::string>()) << hex;
  }
}

TEST(ConfigPython, YamlPlainScalarsAsPyYAML) {
  for (const auto& c : expected().at("yaml_scalars")) {
    const std::string text = c.at("text");
    SCOPED_TRACE(text);
    if (c.at("repr").is_null()) {  // a timestamp: not a CfgNode value
      EXPECT_THROW(backbone::detail::resolve_plain_scalar(text), std::runtime_error);
      continue;
    }
    const auto v = backbone::detail::resolve_plain_scalar(text);
    EXPECT_EQ(backbone::detail::py_type(v), "<class '" + c.at("type").get<std::string>() + "'>");
    EXPECT_EQ(backbone::detail::py_repr(v), c.at("repr").get<std::string>());
  }
}
