// SPDX-License-Identifier: Apache-2.0
// The FPN backbones against detectron2's own fpn.py: each case of tests/data/fpn/manifest.json (made
// by tests/data/make_fpn_goldens.py from a config, by build_resnet_fpn_backbone or
// build_retinanet_resnet_fpn_backbone, with every parameter and buffer random) is loaded from its
// config.yaml and its checkpoint (detectron2 model .pth, the FPN module's own state dict, Caffe2
// .pkl names, safetensors, a ResNet-only C2 ImageNet .pkl), run by every CPU engine of this build and
// compared per level: max |out - ref| <= tolerance * max |ref| (1e-4; 2e-3 with deformable stages).
// Two routes per engine: load_model (config file + weights, its preprocessing for the image case)
// and build_* + load_checkpoint + create_engine. The model's output_shape() and state_dict() are
// compared with detectron2's.
// The oneDNN engine's bf16 is compared with its own fp32: max |bf16 - fp32| <= bound * max |fp32|, the
// bound 2e-2 (golden_test's) or twice PyTorch's own bf16 error on the case where that is more.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>

#include "backbone/backbone.h"
#include "test_util.h"

using namespace backbone;
using nlohmann::json;

namespace {

const std::string kDir = std::string(BACKBONE_TEST_DATA_DIR) + "/fpn/";

// A case of the manifest (printed by name in test listings).
struct Case {
  json c;
};
void PrintTo(const Case& k, std::ostream* os) { *os << k.c["name"].get<std::string>(); }

std::vector<Case> load_cases() {
  std::ifstream f(kDir + "manifest.json");
  if (!f) return {};
  const json manifest = json::parse(f);
  std::vector<Case> cases;
  for (const json& c : manifest["cases"]) cases.push_back({c});
  return cases;
}

// The CPU engines of this build (the cuda engine has its own GPU tests).
std::vector<std::string> cpu_engines() {
  std::vector<std::string> engines;
  for (const auto& e : available_engines())
    if (e != "cuda") engines.push_back(e);
  return engines;
}

std::string path_of(const json& c, const char* key) { return kDir + c[key].get<std::string>(); }

FPN build_case(const json& c) {
  Config cfg;
  cfg.merge_from_file(path_of(c, "config"));
  return c["backbone_name"] == "build_retinanet_resnet_fpn_backbone" ? build_retinanet_resnet_fpn_backbone(cfg)
                                                                      : build_resnet_fpn_backbone(cfg);
}

// The levels the references hold: every p-level, or the bottom-up's outputs when the checkpoint has
// no FPN weights (a C2 ImageNet ResNet: the FPN is seeded, its values are not detectron2's).
std::vector<std::string> compared_features(const json& c) {
  std::vector<std::string> names;
  for (const auto& [name, file] : c["outputs"].items()) names.push_back(name);
  if (c["bottom_up_only"].get<bool>()) return names;
  std::vector<std::string> ordered;  // output_shape order (json objects are sorted by name)
  for (const json& s : c["output_shape"]) ordered.push_back(s[0].get<std::string>());
  return ordered;
}

void expect_matches(const FeatureMaps& out, const json& c, const std::string& route) {
  SCOPED_TRACE(route);
  const auto names = compared_features(c);
  ASSERT_EQ(out.size(), names.size());
  const double tol = c["tolerance"].get<double>();
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& [name, t] = out[i];
    EXPECT_EQ(name, names[i]);
    ASSERT_TRUE(c["outputs"].contains(name)) << name;
    const Tensor ref = load_npy(kDir + c["outputs"][name].get<std::string>());
    ASSERT_EQ(t.shape(), ref.shape()) << name;
    const double max_ref = test::max_abs(ref), max_err = test::max_abs_diff(t, ref);
    EXPECT_GT(max_ref, 0.0) << name << ": an all-zero reference tests nothing";
    EXPECT_LE(max_err, tol * max_ref) << name << ": max |out - ref| = " << max_err << ", max |ref| = " << max_ref
                                      << ", tolerance " << tol;
  }
}

std::string clean(std::string n) {
  std::replace_if(n.begin(), n.end(), [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)); }, '_');
  return n;
}

// ---- model description (no engine) ---------------------------------------------------------

class FpnGoldenModel : public ::testing::TestWithParam<Case> {};

TEST_P(FpnGoldenModel, OutputShapeStateDictAndCheckpointAsDetectron2) {
  const json& c = GetParam().c;
  SCOPED_TRACE(c["description"].get<std::string>());
  FPN model = build_case(c);

  // detectron2's output_shape(): names, channels and strides in order.
  const auto shape = model.output_shape();
  ASSERT_EQ(shape.size(), c["output_shape"].size());
  for (size_t i = 0; i < shape.size(); ++i) {
    EXPECT_EQ(shape[i].first, c["output_shape"][i][0].get<std::string>());
    EXPECT_EQ(shape[i].second.channels.value(), c["output_shape"][i][1].get<int64_t>()) << shape[i].first;
    EXPECT_EQ(shape[i].second.stride.value(), c["output_shape"][i][2].get<int64_t>()) << shape[i].first;
  }
  EXPECT_EQ(model.size_divisibility(), c["size_divisibility"].get<int64_t>());
  EXPECT_EQ(model.in_features(), c["in_features"].get<std::vector<std::string>>());

  // detectron2's state_dict(): names and shapes in registration order. BatchNorm's
  // num_batches_tracked counters are left out on both sides (detectron2's loader ignores them; they
  // play no part in inference).
  std::vector<std::pair<std::string, Shape>> ours, theirs;
  for (const auto& [name, t] : model.state_dict())
    if (name.find("num_batches_tracked") == std::string::npos) ours.emplace_back(name, t.shape());
  for (const json& e : c["state_dict"]) {
    const auto name = e[0].get<std::string>();
    if (name.find("num_batches_tracked") == std::string::npos) theirs.emplace_back(name, e[1].get<Shape>());
  }
  EXPECT_EQ(ours, theirs);

  // The checkpoint: everything the model has (a ResNet-only file: exactly the FPN's own entries missing).
  const LoadReport report = load_checkpoint(model, path_of(c, "weights"), /*strict=*/true);
  if (c["bottom_up_only"].get<bool>()) {
    std::set<std::string> fpn_entries;
    for (const auto& [name, t] : model.state_dict())
      if (FPN::is_fpn_entry(name)) fpn_entries.insert(name);
    EXPECT_FALSE(fpn_entries.empty());
    EXPECT_EQ(std::set<std::string>(report.missing.begin(), report.missing.end()), fpn_entries) << report.summary();
  } else {
    EXPECT_TRUE(report.missing.empty()) << report.summary();
  }
  EXPECT_TRUE(report.unexpected.empty()) << report.summary();
  EXPECT_FALSE(report.loaded.empty()) << report.summary();
}

// ---- every CPU engine ---------------------------------------------------------------------------

struct EngineCase {
  json c;
  std::string engine;
};
void PrintTo(const EngineCase& e, std::ostream* os) { *os << e.engine << " " << e.c["name"].get<std::string>(); }

std::vector<EngineCase> engine_cases() {
  std::vector<EngineCase> all;
  for (const auto& engine : cpu_engines())
    for (const auto& k : load_cases()) all.push_back({k.c, engine});
  return all;
}

class FpnGolden : public ::testing::TestWithParam<EngineCase> {};

// load_model: the config file as written (MODEL.BACKBONE.NAME chooses the builder), the checkpoint,
// the engine; the image case through the model's own preprocessing.
TEST_P(FpnGolden, LoadModelMatchesDetectron2) {
  const json& c = GetParam().c;
  SCOPED_TRACE("engine " + GetParam().engine);
  SCOPED_TRACE(c["description"].get<std::string>());
  ModelSpec spec;
  spec.config_file = path_of(c, "config");
  spec.weights = path_of(c, "weights");
  spec.engine = GetParam().engine;
  spec.device = "cpu";
  const bool bottom_up_only = c["bottom_up_only"].get<bool>();
  if (bottom_up_only) spec.out_features = compared_features(c);
  // The config's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST (detectron2's test-time ResizeShortestEdge).
  spec.preprocess.resize = ResizeMode::ShortestEdge;
  Model m = load_model(spec);
  EXPECT_EQ(m.engine->name(), GetParam().engine);
  EXPECT_EQ(m.preprocess.size_divisibility, c["size_divisibility"].get<int64_t>());
  const bool seeded_fpn = std::any_of(m.warnings.begin(), m.warnings.end(), [](const ModelWarning& w) {
    return w.kind == ModelWarning::Kind::SeededFpnWeights;
  });
  EXPECT_EQ(seeded_fpn, bottom_up_only) << "a warning SeededFpnWeights exactly when the file lacks the FPN";
  if (!bottom_up_only) {
    ASSERT_EQ(m.output_shape.size(), c["output_shape"].size());
    for (size_t i = 0; i < m.output_shape.size(); ++i) {
      EXPECT_EQ(m.output_shape[i].first, c["output_shape"][i][0].get<std::string>());
      EXPECT_EQ(m.output_shape[i].second.stride.value(), c["output_shape"][i][2].get<int64_t>());
      EXPECT_EQ(m.output_shape[i].second.channels.value(), c["output_shape"][i][1].get<int64_t>());
    }
  }

  const Tensor input = load_npy(path_of(c, "input"));
  expect_matches(m.engine->forward(input), c, "load_model + forward(padded input)");

  if (c.contains("input_unpadded")) {
    // Padded here as the model pads (ImageList.from_tensors): the same references.
    const Tensor unpadded = load_npy(path_of(c, "input_unpadded"));
    const Tensor padded = normalize_and_pad(unpadded, {0.0, 0.0, 0.0}, {1.0, 1.0, 1.0}, m.preprocess.size_divisibility);
    ASSERT_EQ(padded.shape(), input.shape());
    expect_matches(m.engine->forward(padded), c, "normalize_and_pad(unpadded) + forward");
    // Unpadded: the top-down levels do not meet their laterals.
    EXPECT_THROW(m.engine->forward(unpadded), ShapeError);
  }

  if (c.contains("image")) {
    // The uint8 BGR image through the model's test-time preprocessing (ResizeShortestEdge from the
    // config's INPUT.MIN/MAX_SIZE_TEST, normalisation, padding to the FPN's size_divisibility).
    const Tensor image = load_npy(path_of(c, "image"));
    ASSERT_EQ(image.dtype(), DType::UInt8);
    FrameView frame;
    frame.format = PixelFormat::BGR;
    frame.height = image.shape()[0];
    frame.width = image.shape()[1];
    frame.planes[0] = image.data_ptr<uint8_t>();
    frame.strides[0] = frame.width * 3;
    PreprocessResult info;
    expect_matches(m.engine->forward_frame(frame, m.preprocess, &info), c, "load_model + forward_frame(image)");
    EXPECT_EQ(info.resized_height, c["resized_size"][0].get<int64_t>());
    EXPECT_EQ(info.resized_width, c["resized_size"][1].get<int64_t>());
  }
}

// build_* + load_checkpoint + create_engine; the ResNet-only file with out features chosen among
// the bottom-up's outputs (FPN::set_out_features).
TEST_P(FpnGolden, BuildLoadCheckpointCreateEngineMatchesDetectron2) {
  const json& c = GetParam().c;
  SCOPED_TRACE("engine " + GetParam().engine);
  SCOPED_TRACE(c["description"].get<std::string>());
  FPN model = build_case(c);
  load_checkpoint(model, path_of(c, "weights"), /*strict=*/true);
  if (c["bottom_up_only"].get<bool>()) model.set_out_features(compared_features(c));
  EngineOptions options;
  options.engine = GetParam().engine;
  auto engine = create_engine(model, options);
  EXPECT_EQ(engine->name(), options.engine);
  const Tensor input = load_npy(path_of(c, "input"));
  expect_matches(engine->forward(input), c, "create_engine + forward");
}

// bf16 against fp32 of the same engine on the same case.
class FpnGoldenBf16 : public ::testing::TestWithParam<Case> {};

TEST_P(FpnGoldenBf16, WithinBoundOfFp32) {
  const json& c = GetParam().c;
  const auto engines = available_engines();
  if (std::find(engines.begin(), engines.end(), "onednn") == engines.end())
    GTEST_SKIP() << "the oneDNN engine is not built";
  FPN model = build_case(c);
  load_checkpoint(model, path_of(c, "weights"), /*strict=*/true);
  const Tensor input = load_npy(path_of(c, "input"));
  EngineOptions options;
  options.engine = "onednn";
  const FeatureMaps f32 = create_engine(model, options)->forward(input);
  options.precision = Precision::BFloat16;
  if (c["deformable"].get<bool>()) {
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
  const FeatureMaps bf16 = engine->forward(input);
  ASSERT_EQ(bf16.size(), f32.size());
  // The bf16 bound of golden_test, or twice what bf16 costs PyTorch on this case (the generator's
  // emulation: bf16-rounded convolution weights, inputs and outputs; the largest over the case's
  // levels) where that is more: these narrow random networks amplify bf16 rounding.
  double bound = 2e-2;
  for (const auto& [level, err] : c["pytorch_bf16_error"].items()) bound = std::max(bound, 2.0 * err.get<double>());
  for (size_t i = 0; i < f32.size(); ++i) {
    ASSERT_EQ(bf16[i].first, f32[i].first);
    ASSERT_EQ(bf16[i].second.shape(), f32[i].second.shape()) << f32[i].first;
    ASSERT_EQ(bf16[i].second.dtype(), DType::Float32) << "features are float32 whatever the precision";
    const double max_ref = test::max_abs(f32[i].second), err = test::max_abs_diff(bf16[i].second, f32[i].second);
    EXPECT_GT(err, 0.0) << f32[i].first << ": bf16 identical to fp32, bf16 did not run";
    EXPECT_LE(err, bound * max_ref) << f32[i].first << ": max |bf16 - fp32| = " << err << ", max |fp32| = " << max_ref
                                    << ", bound " << bound;
  }
}

// The oneDNN engine's measured choices on the same cases (tests/backbone/onednn_tuning_test.cpp has
// the cache and the ResNet cases): Winograd on every layer that has it within 1e-5 * max |direct|
// (the bound under which conv algorithm auto may use it), auto likewise, precision auto within the
// bf16 bound of fp32.
class FpnGoldenTuning : public ::testing::TestWithParam<Case> {};

TEST_P(FpnGoldenTuning, ChoicesStayWithinTheirBounds) {
  const json& c = GetParam().c;
  const auto engines = available_engines();
  if (std::find(engines.begin(), engines.end(), "onednn") == engines.end())
    GTEST_SKIP() << "the oneDNN engine is not built";
  SCOPED_TRACE(c["description"].get<std::string>());
  FPN model = build_case(c);
  load_checkpoint(model, path_of(c, "weights"), /*strict=*/true);
  const Tensor input = load_npy(path_of(c, "input"));
  auto run = [&](ConvAlgorithm a, Precision p) {
    EngineOptions o;
    o.engine = "onednn";
    o.conv_algorithm = a;
    o.precision = p;
    return create_engine(model, o)->forward(input);
  };
  auto expect_within = [](const FeatureMaps& out, const FeatureMaps& ref, double bound, const std::string& what) {
    ASSERT_EQ(out.size(), ref.size()) << what;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double max_ref = test::max_abs(ref[i].second), err = test::max_abs_diff(out[i].second, ref[i].second);
      EXPECT_LE(err, bound * max_ref) << what << " " << ref[i].first << ": max |out - ref| = " << err
                                      << ", max |ref| = " << max_ref;
    }
  };
  const FeatureMaps direct = run(ConvAlgorithm::Direct, Precision::Float32);
  expect_within(run(ConvAlgorithm::Winograd, Precision::Float32), direct, 1e-5, "winograd everywhere");
  const FeatureMaps a = run(ConvAlgorithm::Auto, Precision::Float32);
  expect_within(a, direct, 1e-5, "conv algorithm auto");
  if (c["deformable"].get<bool>()) {
    expect_within(run(ConvAlgorithm::Auto, Precision::Auto), a, 0.0, "precision auto: fp32 with deformable convolutions");
    return;
  }
  double bound = 2e-2;
  for (const auto& [level, err] : c["pytorch_bf16_error"].items()) bound = std::max(bound, 2.0 * err.get<double>());
  expect_within(run(ConvAlgorithm::Auto, Precision::Auto), a, bound, "precision auto");
}

std::string json_case_name(const ::testing::TestParamInfo<Case>& info) {
  return clean(info.param.c["name"].get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(Detectron2, FpnGoldenModel, ::testing::ValuesIn(load_cases()), json_case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FpnGoldenModel);
INSTANTIATE_TEST_SUITE_P(Detectron2, FpnGolden, ::testing::ValuesIn(engine_cases()),
                         [](const ::testing::TestParamInfo<EngineCase>& info) {
                           return clean(info.param.engine + "_" + info.param.c["name"].get<std::string>());
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FpnGolden);
INSTANTIATE_TEST_SUITE_P(Detectron2, FpnGoldenBf16, ::testing::ValuesIn(load_cases()), json_case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FpnGoldenBf16);
INSTANTIATE_TEST_SUITE_P(Detectron2, FpnGoldenTuning, ::testing::ValuesIn(load_cases()), json_case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FpnGoldenTuning);

TEST(FpnGoldenData, ManifestCoversBothBuildersEveryNormFuseTypeAndWeightNaming) {
  const auto cases = load_cases();
  ASSERT_GE(cases.size(), 10u) << kDir << "manifest.json";
  std::set<std::string> builders, norms, fuse_types, formats;
  bool deformable = false, image = false, unpadded = false;
  for (const auto& [c] : cases) {
    builders.insert(c["backbone_name"].get<std::string>());
    formats.insert(c["weights_format"].get<std::string>());
    Config cfg;
    cfg.merge_from_file(path_of(c, "config"));
    norms.insert(cfg.get_string("MODEL.FPN.NORM"));
    fuse_types.insert(cfg.get_string("MODEL.FPN.FUSE_TYPE"));
    deformable = deformable || c["deformable"].get<bool>();
    image = image || c.contains("image");
    unpadded = unpadded || c.contains("input_unpadded");
  }
  EXPECT_EQ(builders, (std::set<std::string>{"build_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone"}));
  EXPECT_EQ(norms, (std::set<std::string>{"", "BN", "SyncBN", "FrozenBN", "GN", "LN"}));
  EXPECT_EQ(fuse_types, (std::set<std::string>{"sum", "avg"}));
  EXPECT_EQ(formats, (std::set<std::string>{"d2_model_pth", "fpn_state_dict_pth", "safetensors", "c2_pkl",
                                            "c2_imagenet_pkl"}));
  EXPECT_TRUE(deformable && image && unpadded);
}

}  // namespace
