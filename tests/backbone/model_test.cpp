// SPDX-License-Identifier: Apache-2.0
// load_model(): each step's error with its message, the config and preprocessing overrides, the
// default out features, seeded weights, the engine choice (device auto on this machine), the engine
// table, padded_size and model_name; and features equal to those of the model assembled by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "test_util.h"

namespace backbone {
namespace {

std::string data_path(const std::string& name) { return std::string(BACKBONE_TEST_DATA_DIR) + "/plugin/" + name; }
std::string config_path(const std::string& name) { return std::string(BACKBONE_SOURCE_DIR) + "/configs/" + name; }

// The narrow R-50 of the element tests, one thread.
ModelSpec narrow_spec() {
  ModelSpec s;
  s.config_file = data_path("narrow.yaml");
  s.num_threads = 1;
  return s;
}

// Runs load_model(spec), expecting a failure of `step`; returns the error's message and cause.
struct Failure {
  bool thrown = false;
  ModelStep step = ModelStep::Config;
  std::string message, cause;
};
template <typename E>
Failure fail(const ModelSpec& spec) {
  Failure f;
  try {
    load_model(spec);
  } catch (const E& e) {
    f.thrown = true;
    f.step = e.step();
    f.message = e.what();
    f.cause = e.cause();
  }
  return f;
}

std::vector<std::string> names_of(const Model& m) {
  std::vector<std::string> n;
  for (const auto& [name, spec] : m.output_shape) n.push_back(name);
  return n;
}

// ---- config ----

TEST(LoadModel, MissingConfigFileIsConfigFileStep) {
  ModelSpec s = narrow_spec();
  s.config_file = "/nonexistent/narrow.yaml";
  const Failure f = fail<ModelConfigError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::ConfigFile);
  EXPECT_EQ(f.message, "config-file \"/nonexistent/narrow.yaml\" does not exist or is not a regular file");
}

TEST(LoadModel, InvalidConfigNamesTheFileOrTheOverrides) {
  ModelSpec s = narrow_spec();
  s.config_file = data_path("bad_syntax.yaml");
  Failure f = fail<ModelConfigError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::Config);
  EXPECT_EQ(f.message.rfind("config-file \"" + s.config_file + "\": ", 0), 0u) << f.message;
  EXPECT_NE(f.message.find("not valid YAML"), std::string::npos) << f.message;
  EXPECT_EQ(f.message, "config-file \"" + s.config_file + "\": " + f.cause);

  s = narrow_spec();
  s.config_overrides = {"MODEL.RESNETS.FOO", "1"};
  f = fail<ModelConfigError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::Config);
  EXPECT_EQ(f.message.rfind("config overrides: ", 0), 0u) << f.message;
  EXPECT_NE(f.message.find("Non-existent key: MODEL.RESNETS.FOO"), std::string::npos) << f.message;
}

TEST(LoadModel, OutFeaturesAreChecked) {
  ModelSpec s = narrow_spec();
  s.out_features = {"res2", "res7"};
  Failure f = fail<ModelConfigError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::Config);
  EXPECT_NE(f.message.find("unknown out feature \"res7\" (expected stem, res2, res3, res4 or res5)"), std::string::npos)
      << f.message;
  // The backbone has no classifier output.
  s.out_features = {"linear"};
  f = fail<ModelConfigError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_NE(f.message.find("unknown out feature \"linear\""), std::string::npos) << f.message;
}

TEST(LoadModel, BuildErrorNamesTheCheck) {
  ModelSpec s = narrow_spec();
  s.config_overrides = {"MODEL.RESNETS.DEPTH", "42"};
  const Failure f = fail<ModelBuildError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::Build);
  EXPECT_EQ(f.message, "cannot build the backbone: " + f.cause);
  EXPECT_NE(f.message.find("MODEL.RESNETS.DEPTH must be one of 18, 34, 50, 101, 152; got 42"), std::string::npos)
      << f.message;
}

// ---- weights ----

TEST(LoadModel, WeightsErrors) {
  ModelSpec s = narrow_spec();
  s.weights = "/nonexistent/w.pth";
  Failure f = fail<WeightsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::WeightsFile);
  EXPECT_EQ(f.message, "weights \"/nonexistent/w.pth\" does not exist or is not a regular file");

  s = narrow_spec();
  s.config_overrides = {"MODEL.WEIGHTS", "/nonexistent/w.pth"};
  f = fail<WeightsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::WeightsFile);
  EXPECT_EQ(f.message, "weights \"/nonexistent/w.pth\" does not exist or is not a regular file (from the config's "
                       "MODEL.WEIGHTS)");

  s.config_overrides = {"MODEL.WEIGHTS", "detectron2://ImageNetPretrained/MSRA/R-50.pkl"};
  f = fail<WeightsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::WeightsFile);
  EXPECT_NE(f.message.find("is a URL: this library does not download"), std::string::npos) << f.message;

  s = narrow_spec();
  s.weights = data_path("corrupt.pth");
  f = fail<WeightsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::Weights);
  EXPECT_EQ(f.message, "weights \"" + s.weights + "\": " + f.cause);
  EXPECT_NE(f.message.find("truncated"), std::string::npos) << f.message;

  // The narrow weights in the default R-50.
  s = ModelSpec();
  s.weights = data_path("narrow.pth");
  f = fail<WeightsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::Weights);
  EXPECT_NE(f.message.find("shape mismatch for stem.conv1.weight"), std::string::npos) << f.message;
}

TEST(LoadModel, WithoutWeightsSeedsAndWarns) {
  ModelSpec s = narrow_spec();
  s.seed = 5;
  const Model m = load_model(s);
  EXPECT_EQ(m.weights, "");
  EXPECT_FALSE(m.load_report.has_value());
  ASSERT_EQ(m.warnings.size(), 1u);
  EXPECT_EQ(m.warnings[0].kind, ModelWarning::Kind::SeededWeights);
  EXPECT_NE(m.warnings[0].message.find("no weights given"), std::string::npos) << m.warnings[0].message;
  EXPECT_NE(m.warnings[0].message.find("seed 5"), std::string::npos) << m.warnings[0].message;
}

TEST(LoadModel, WeightsFromTheSpecAreReported) {
  ModelSpec s = narrow_spec();
  s.weights = data_path("narrow.pth");
  const Model m = load_model(s);
  EXPECT_EQ(m.weights, s.weights);
  ASSERT_TRUE(m.load_report.has_value());
  EXPECT_NE(m.load_report->find("loaded"), std::string::npos) << *m.load_report;
  EXPECT_TRUE(m.warnings.empty());
}

// ---- engine ----

TEST(LoadModel, EngineSettingsErrors) {
  ModelSpec s = narrow_spec();
  s.engine = "tensorrt";
  Failure f = fail<EngineSettingsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::EngineSettings);
  EXPECT_EQ(f.message.rfind("unknown engine \"tensorrt\": expected auto or one of this build's engines (", 0), 0u)
      << f.message;
  EXPECT_NE(f.cause.find("unknown engine 'tensorrt'"), std::string::npos) << f.cause;  // create_engine's words

  s = narrow_spec();
  s.device = "tpu";
  f = fail<EngineSettingsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.message.rfind("device: invalid device 'tpu'", 0), 0u) << f.message;

  s = narrow_spec();
  s.num_threads = -1;
  f = fail<EngineSettingsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.message, "num-threads must be 0 (every core) or positive, found -1");

  // An engine of the table that this build lacks.
  for (const auto& e : engine_table()) {
    if (e.built) continue;
    s = narrow_spec();
    s.engine = e.name;
    f = fail<EngineSettingsError>(s);
    ASSERT_TRUE(f.thrown) << e.name;
    EXPECT_EQ(f.message.rfind("engine \"" + e.name + "\" is not built into this copy of the backbone library", 0), 0u)
        << f.message;
  }

  // A precision the engine does not run: an engine of this build that runs fp32 only.
  for (const auto& e : engine_table()) {
    if (!e.built || e.cuda_device || e.precisions.size() != 1) continue;
    s = narrow_spec();
    s.engine = e.name;
    s.precision = Precision::BFloat16;
    f = fail<EngineSettingsError>(s);
    ASSERT_TRUE(f.thrown) << e.name;
    EXPECT_EQ(f.message.rfind("engine \"" + e.name + "\", precision bf16, on cpu: ", 0), 0u) << f.message;
  }
}

TEST(LoadModel, EngineDeviceErrors) {
  // No CPU engine runs fp16: auto finds none on the CPU and says why for each.
  ModelSpec s = narrow_spec();
  s.device = "cpu";
  s.precision = Precision::Float16;
  Failure f = fail<EngineDeviceError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.step, ModelStep::EngineDevice);
  EXPECT_EQ(f.message.rfind("engine \"auto\", precision fp16, on cpu: ", 0), 0u) << f.message;

  // Engine cuda runs on CUDA devices only.
  s = narrow_spec();
  s.engine = "cuda";
  s.device = "cpu";
  f = fail<EngineDeviceError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_NE(f.cause.find("expected cuda:N, found cpu"), std::string::npos) << f.cause;

  if (cuda_is_available()) GTEST_SKIP() << "this machine has a CUDA device: cuda:0 is available";
  s.device = "cuda:0";
  f = fail<EngineDeviceError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.message.rfind("engine \"cuda\" on cuda:0 cannot run: " + f.cause + " (the engines of this build that run "
                            "here: ", 0),
            0u)
      << f.message;
  s.engine = "auto";
  f = fail<EngineDeviceError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.message.rfind("engine \"auto\", precision fp32, on cuda:0: ", 0), 0u) << f.message;
}

// device auto: cuda:0 where CUDA runs, else the CPU (this machine's case without a GPU), with no
// warning; the engine is the first of available_engines() that runs there.
TEST(LoadModel, DeviceAuto) {
  ModelSpec s = narrow_spec();
  s.weights = data_path("narrow.pth");
  const Model m = load_model(s);
  ASSERT_NE(m.engine, nullptr);
  const auto engines = available_engines();
  ASSERT_FALSE(engines.empty());
  EXPECT_EQ(m.engine->name(), engines.front());
  EXPECT_EQ(m.description.rfind(m.engine->name() + " ", 0), 0u) << m.description;
  EXPECT_EQ(m.engine->device().is_cuda(), cuda_is_available());
  EXPECT_TRUE(m.warnings.empty());
  // A named engine with device auto runs on its kind of device: a CPU engine on the CPU, also on a
  // machine with CUDA, and without a fallback warning.
  for (const auto& e : engine_table()) {
    if (!e.built || e.cuda_device) continue;
    s.engine = e.name;
    const Model c = load_model(s);
    EXPECT_TRUE(c.engine->device().is_cpu()) << e.name;
    EXPECT_EQ(c.engine->name(), e.name);
    EXPECT_TRUE(c.warnings.empty()) << e.name;
  }
  // engine cuda with device auto means cuda:0; without CUDA, the element's message says why.
  if (cuda_is_available()) return;
  s.engine = "cuda";
  const Failure f = fail<EngineDeviceError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.message.rfind("engine \"cuda\" on auto cannot run: ", 0), 0u) << f.message;
}

TEST(ResolveDevice, AutoFollowsTheEngine) {
  EXPECT_EQ(resolve_device("auto", "cpu"), Device::cpu());
  EXPECT_EQ(resolve_device("onednn", "cuda:1"), Device::cuda(1));
  EXPECT_EQ(resolve_device("cuda", "auto"), Device::cuda(0));
  EXPECT_EQ(resolve_device("cuda", ""), Device::cuda(0));
  EXPECT_EQ(resolve_device("onednn", "auto"), Device::cpu());
  EXPECT_EQ(resolve_device("auto", "auto"), cuda_is_available() ? Device::cuda(0) : Device::cpu());
  EXPECT_THROW(resolve_device("auto", "tpu"), Error);
}

// ---- out features, name ----

TEST(LoadModel, DefaultOutFeaturesOnlyWithoutConfigFile) {
  ModelSpec s;
  s.num_threads = 1;
  s.config_overrides = {"MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"};
  Model m = load_model(s);  // detectron2's default
  EXPECT_EQ(names_of(m), std::vector<std::string>{"res4"});

  s.default_out_features = {"res2", "res3", "res4", "res5"};
  m = load_model(s);
  EXPECT_EQ(names_of(m), (std::vector<std::string>{"res2", "res3", "res4", "res5"}));
  std::vector<int> strides;
  for (const auto& [name, shape] : m.output_shape) strides.push_back(shape.stride.value_or(0));
  EXPECT_EQ(strides, (std::vector<int>{4, 8, 16, 32}));
  EXPECT_EQ(m.output_shape[3].second.channels.value_or(0), 512);
  EXPECT_EQ(m.name, "R-18");

  // The config overrides and out_features come after the default.
  s.config_overrides.insert(s.config_overrides.end(), {"MODEL.RESNETS.OUT_FEATURES", "['res3']"});
  EXPECT_EQ(names_of(load_model(s)), std::vector<std::string>{"res3"});
  s.out_features = {"stem", "res5"};
  EXPECT_EQ(names_of(load_model(s)), (std::vector<std::string>{"stem", "res5"}));

  // With a config file the default is not used.
  ModelSpec n = narrow_spec();
  n.default_out_features = {"res5"};
  EXPECT_EQ(names_of(load_model(n)), (std::vector<std::string>{"res2", "res3", "res4", "res5"}));
  n.out_features = {"res3"};
  EXPECT_EQ(names_of(load_model(n)), std::vector<std::string>{"res3"});
}

TEST(ModelName, FollowsDetectron2sNaming) {
  EXPECT_EQ(model_name(Config()), "R-50");
  EXPECT_EQ(model_name(load_config(config_path("X-101-32x8d.yaml"))), "X-101-32x8d");
  EXPECT_EQ(model_name(load_config(config_path("R-50-DC5.yaml"))), "R-50-DC5");
  EXPECT_EQ(model_name(load_config(config_path("R-18.yaml"))), "R-18");
}

TEST(SplitOutFeatures, SplitsAndTrims) {
  EXPECT_EQ(split_out_features("res2, res3 ,res5"), (std::vector<std::string>{"res2", "res3", "res5"}));
  EXPECT_TRUE(split_out_features("").empty());
  EXPECT_TRUE(split_out_features("  ").empty());
  EXPECT_EQ(split_out_features("res2,,res3"), (std::vector<std::string>{"res2", "", "res3"}));
  EXPECT_EQ(split_out_features("res2, "), (std::vector<std::string>{"res2", ""}));
  // load_model checks what it split.
  ModelSpec s = narrow_spec();
  s.out_features = split_out_features("res2,");
  const Failure f = fail<ModelConfigError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_EQ(f.message, "out features [res2, ]: an out feature is empty");
}

// ---- preprocessing ----

TEST(LoadModel, PreprocessingFromTheConfig) {
  const Model m = load_model(narrow_spec());
  EXPECT_EQ(m.preprocess.input_format, "BGR");
  EXPECT_EQ(m.preprocess.pixel_std, (std::vector<double>{57.375, 57.120, 58.395}));
  EXPECT_EQ(m.preprocess.resize, ResizeMode::None);
  EXPECT_EQ(m.preprocess.min_size, 800);  // INPUT.MIN_SIZE_TEST
  EXPECT_EQ(m.preprocess.max_size, 1333);
  EXPECT_EQ(m.preprocess.size_divisibility, 0);
}

TEST(LoadModel, PreprocessingOverridesApplied) {
  ModelSpec s = narrow_spec();
  s.preprocess.input_format = "RGB";
  s.preprocess.pixel_mean = {120, 110, 100};
  s.preprocess.pixel_std = {60, 50, 40};
  s.preprocess.resize = ResizeMode::Fixed;
  s.preprocess.width = 64;
  s.preprocess.height = 48;
  s.preprocess.size_divisibility = 32;
  Model m = load_model(s);
  EXPECT_EQ(m.preprocess.input_format, "RGB");
  EXPECT_EQ(m.preprocess.pixel_mean, (std::vector<double>{120, 110, 100}));
  EXPECT_EQ(m.preprocess.pixel_std, (std::vector<double>{60, 50, 40}));
  EXPECT_EQ(m.preprocess.resize, ResizeMode::Fixed);
  EXPECT_EQ(m.preprocess.width, 64);
  EXPECT_EQ(m.preprocess.height, 48);
  EXPECT_EQ(m.preprocess.size_divisibility, 32);

  s = narrow_spec();
  s.preprocess.resize = ResizeMode::ShortestEdge;
  s.preprocess.min_size = 100;
  m = load_model(s);
  EXPECT_EQ(m.preprocess.resize, ResizeMode::ShortestEdge);
  EXPECT_EQ(m.preprocess.min_size, 100);
  EXPECT_EQ(m.preprocess.max_size, 1333);  // the config's
  s.preprocess.max_size = 200;
  EXPECT_EQ(load_model(s).preprocess.max_size, 200);
}

TEST(LoadModel, PreprocessingErrors) {
  struct Case {
    std::function<void(PreprocessOverrides&)> set;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](PreprocessOverrides& p) { p.pixel_mean = {1.0, 2.0}; }, "pixel-mean and pixel-std need 3 values each"},
      {[](PreprocessOverrides& p) { p.pixel_std = {1.0, 0.0, 1.0}; }, "pixel-std values must be non-zero and finite"},
      {[](PreprocessOverrides& p) { p.resize = ResizeMode::Fixed; }, "resize=fixed needs width and height > 0, found 0x0"},
      {[](PreprocessOverrides& p) { p.input_format = "YUV"; }, "input format must be BGR or RGB, found \"YUV\""},
      {[](PreprocessOverrides& p) { p.size_divisibility = -1; }, "size-divisibility must be >= 0, found -1"},
  };
  for (const auto& c : cases) {
    ModelSpec s = narrow_spec();
    c.set(s.preprocess);
    const Failure f = fail<PreprocessSettingsError>(s);
    ASSERT_TRUE(f.thrown) << c.expected;
    EXPECT_EQ(f.step, ModelStep::Preprocess);
    EXPECT_NE(f.message.find(c.expected), std::string::npos) << f.message;
  }
  // shortest-edge with a config that disables resizing and no sizes given.
  ModelSpec s = narrow_spec();
  s.config_overrides = {"INPUT.MIN_SIZE_TEST", "0"};
  s.preprocess.resize = ResizeMode::ShortestEdge;
  const Failure f = fail<PreprocessSettingsError>(s);
  ASSERT_TRUE(f.thrown);
  EXPECT_NE(f.message.find("resize=shortest-edge needs min-size and max-size > 0"), std::string::npos) << f.message;
}

// Every step's error is a ModelError, and an Error of this library.
TEST(LoadModel, ErrorsShareOneBase) {
  ModelSpec s = narrow_spec();
  s.engine = "tensorrt";
  EXPECT_THROW(load_model(s), ModelError);
  EXPECT_THROW(load_model(s), Error);
  EXPECT_STREQ(model_step_name(ModelStep::EngineSettings), "engine-settings");
  EXPECT_STREQ(model_step_name(ModelStep::WeightsFile), "weights-file");
}

// ---- the same features as the model assembled by hand ----

TEST(LoadModel, FeaturesEqualTheHandAssembledModel) {
  for (const std::string& weights : {std::string(), data_path("narrow.pth")}) {
    SCOPED_TRACE(weights.empty() ? "seeded" : weights);
    Config cfg = load_config(data_path("narrow.yaml"));
    ResNet net = build_resnet_backbone(cfg);
    if (weights.empty())
      net.init_weights(0);
    else
      load_checkpoint(net, weights, true);
    EngineOptions eo;
    eo.num_threads = 1;
    const std::unique_ptr<Engine> by_hand = create_engine(net, eo);

    ModelSpec s = narrow_spec();
    s.weights = weights;
    s.device = "cpu";
    const Model m = load_model(s);
    EXPECT_EQ(m.engine->name(), by_hand->name());

    Tensor x = Tensor::empty({1, 3, 64, 96});
    for (int64_t i = 0; i < x.numel(); ++i) x.data_ptr<float>()[i] = float((i * 7919) % 255) / 64.0f - 2.0f;
    const FeatureMaps want = by_hand->forward(x);
    const FeatureMaps got = m.engine->forward(x);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].first, want[i].first);
      EXPECT_EQ(test::max_abs_diff(got[i].second, want[i].second), 0.0) << got[i].first;
    }
  }
}

// ---- engine table, padded size ----

TEST(EngineTable, ListsEveryEngineOnce) {
  std::vector<std::string> names;
  for (const auto& e : engine_table()) {
    names.push_back(e.name);
    EXPECT_FALSE(e.description.empty()) << e.name;
    ASSERT_FALSE(e.precisions.empty()) << e.name;
    EXPECT_EQ(e.precisions.front(), Precision::Float32) << e.name;
    EXPECT_TRUE(is_known_engine(e.name));
    EXPECT_EQ(find_engine(e.name), &e);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"cuda", "onednn", "libtorch", "opencv"}));
  EXPECT_EQ(engine_names(), "cuda, onednn, libtorch or opencv");
  EXPECT_FALSE(is_known_engine("auto"));
  EXPECT_FALSE(is_known_engine("tensorrt"));
  EXPECT_EQ(find_engine("tensorrt"), nullptr);
  EXPECT_TRUE(find_engine("cuda")->cuda_device);
  EXPECT_TRUE(find_engine("cuda")->built);
  EXPECT_TRUE(find_engine("cuda")->allow_tf32);
  EXPECT_TRUE(find_engine("onednn")->winograd);
  EXPECT_FALSE(find_engine("onednn")->cuda_device);
  // available_engines(): the built ones that run here, in the table's order.
  std::vector<std::string> runnable;
  for (const auto& e : engine_table())
    if (e.built && (!e.cuda_device || cuda_is_available())) runnable.push_back(e.name);
  EXPECT_EQ(available_engines(), runnable);
}

TEST(PaddedSize, RoundsUpToTheDivisibility) {
  EXPECT_EQ(padded_size(85, 32), 96);
  EXPECT_EQ(padded_size(64, 32), 64);
  EXPECT_EQ(padded_size(1, 32), 32);
  EXPECT_EQ(padded_size(85, 0), 85);
  EXPECT_EQ(padded_size(85, 1), 85);
}

}  // namespace
}  // namespace backbone
