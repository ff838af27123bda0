// SPDX-License-Identifier: Apache-2.0
// backbone-infer as a user runs it: outputs against detectron2's references, the image path, and
// every usage and runtime error with its exit status.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "backbone/backbone.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kData = std::string(BACKBONE_TEST_DATA_DIR) + "/resnet/";
// A narrow R-50 so that the tool runs in well under a second.
const std::string kNarrow =
    " MODEL.RESNETS.STEM_OUT_CHANNELS 8 MODEL.RESNETS.RES2_OUT_CHANNELS 16 MODEL.RESNETS.WIDTH_PER_GROUP 4";

using Result = backbone::test::CommandResult;

Result run(const std::string& args) { return backbone::test::run_command(std::string(BACKBONE_INFER) + " " + args); }

class InferTool : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("backbone-infer-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

using backbone::test::max_abs;
}  // namespace

TEST_F(InferTool, ReproducesDetectron2OnAGoldenCase) {
  std::ifstream f(kData + "manifest.json");
  ASSERT_TRUE(f) << "tests/data/resnet/manifest.json";
  json manifest = json::parse(f);
  int checked = 0;
  for (const json& c : manifest["cases"]) {
    if (c["model"] != "config") continue;
    const std::string out = (dir_ / c["name"].get<std::string>()).string();
    Result r = run("--config-file " + kData + c["config"].get<std::string>() + " --weights " + kData +
                   c["weights"].get<std::string>() + " --input " + kData + c["input"].get<std::string>() +
                   " --output-dir " + out + " --threads 1");
    ASSERT_EQ(r.status, 0) << r.output;
    for (auto it = c["outputs"].begin(); it != c["outputs"].end(); ++it) {
      backbone::Tensor ref = backbone::load_npy(kData + it.value().get<std::string>());
      backbone::Tensor got = backbone::load_npy(out + "/" + it.key() + ".npy");
      ASSERT_EQ(got.shape(), ref.shape()) << it.key();
      EXPECT_LE(backbone::test::max_abs_diff(got, ref), c["tolerance"].get<double>() * max_abs(ref)) << c["name"] << " " << it.key();
    }
    json shapes = json::parse(std::ifstream(out + "/shapes.json"));
    ASSERT_EQ(shapes.size(), c["outputs"].size());
    for (const json& s : shapes) {
      const std::string name = s["name"];
      EXPECT_EQ(s["stride"], c["output_shape"][name]["stride"]);
      EXPECT_EQ(s["channels"], c["output_shape"][name]["channels"]);
    }
    if (++checked == 3) break;  // three configs are enough for the tool's plumbing
  }
  EXPECT_GT(checked, 0);
}

TEST_F(InferTool, WithoutWeightsUsesSeededInitialisationAndSaysSo) {
  Result r = run("--output-dir " + dir_.string() + " --seed 3" + kNarrow +
                 " MODEL.RESNETS.OUT_FEATURES \"['stem','res2','res5']\"");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("no weights given"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("seed 3"), std::string::npos) << r.output;
  json shapes = json::parse(std::ifstream(dir_ / "shapes.json"));
  ASSERT_EQ(shapes.size(), 3u);
  // The built-in 480x640 test pattern is resized to 800x1067 (MIN_SIZE_TEST 800).
  EXPECT_EQ(shapes[0]["name"], "stem");
  EXPECT_EQ(shapes[0]["shape"], json({1, 8, 200, 267}));
  EXPECT_EQ(shapes[2]["name"], "res5");
  EXPECT_EQ(shapes[2]["stride"], 32);
  EXPECT_EQ(shapes[2]["shape"], json({1, 128, 25, 34}));
  backbone::Tensor res2 = backbone::load_npy((dir_ / "res2.npy").string());
  EXPECT_EQ(res2.shape(), (backbone::Shape{1, 16, 200, 267}));
}

// An FPN config (the narrow R-50 with detectron2's FPN, ResNet-only weights): every p-level with its
// stride in shapes.json, an odd --input zero-padded to 32 (the same maps as the input padded by
// hand), --out-features choosing p-levels and bottom-up outputs, the seeded FPN reported.
TEST_F(InferTool, FpnConfigWritesPLevelsAndPadsTo32) {
  const std::string plugin = std::string(BACKBONE_TEST_DATA_DIR) + "/plugin/";
  const std::string model = "--config-file " + plugin + "narrow_fpn.yaml --weights " + plugin + "narrow.pth --threads 1";
  backbone::Tensor x = backbone::Tensor::empty({1, 3, 37, 50});
  float* px = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) px[i] = static_cast<float>((i * 37) % 101) / 25.f - 2.f;
  backbone::save_npy((dir_ / "x.npy").string(), x);
  backbone::Tensor padded = backbone::Tensor::zeros({1, 3, 64, 64});
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 37; ++y)
      for (int64_t w = 0; w < 50; ++w)
        padded.data_ptr<float>()[(c * 64 + y) * 64 + w] = px[(c * 37 + y) * 50 + w];
  backbone::save_npy((dir_ / "padded.npy").string(), padded);

  Result r = run(model + " --input " + (dir_ / "x.npy").string() + " --output-dir " + (dir_ / "a").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("entries of the FPN"), std::string::npos) << "the seeded FPN layers are reported: " << r.output;
  EXPECT_NE(r.output.find("zero-padded to a multiple of 32"), std::string::npos) << r.output;
  json shapes = json::parse(std::ifstream(dir_ / "a" / "shapes.json"));
  const std::vector<std::pair<std::string, int>> levels = {{"p2", 4}, {"p3", 8}, {"p4", 16}, {"p5", 32}, {"p6", 64}};
  ASSERT_EQ(shapes.size(), levels.size()) << shapes.dump();
  for (size_t i = 0; i < levels.size(); ++i) {
    const auto& [name, stride] = levels[i];
    EXPECT_EQ(shapes[i]["name"], name);
    EXPECT_EQ(shapes[i]["stride"], stride);
    EXPECT_EQ(shapes[i]["channels"], 16);
    EXPECT_EQ(shapes[i]["shape"], json({1, 16, (64 + stride - 1) / stride, (64 + stride - 1) / stride})) << name;
  }

  Result by_hand = run(model + " --input " + (dir_ / "padded.npy").string() + " --output-dir " + (dir_ / "b").string() +
                       " --out-features p5,res4,p2");
  ASSERT_EQ(by_hand.status, 0) << by_hand.output;
  shapes = json::parse(std::ifstream(dir_ / "b" / "shapes.json"));
  ASSERT_EQ(shapes.size(), 3u);
  EXPECT_EQ(shapes[0]["name"], "p5");
  EXPECT_EQ(shapes[1]["name"], "res4");
  EXPECT_EQ(shapes[1]["stride"], 16);
  EXPECT_EQ(shapes[1]["channels"], 64);
  EXPECT_EQ(shapes[2]["name"], "p2");
  for (const char* name : {"p2", "p5"}) {
    const backbone::Tensor a = backbone::load_npy((dir_ / "a" / (std::string(name) + ".npy")).string());
    const backbone::Tensor b = backbone::load_npy((dir_ / "b" / (std::string(name) + ".npy")).string());
    ASSERT_EQ(a.shape(), b.shape()) << name;
    // the same input (the engine may order its work differently for another set of outputs)
    EXPECT_LE(backbone::test::max_abs_diff(a, b), 1e-5 * max_abs(b)) << name;
  }

  Result bad = run(model + " --input " + (dir_ / "x.npy").string() + " --output-dir " + (dir_ / "c").string() +
                   " --out-features p7");
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("unknown out feature \"p7\" of the FPN"), std::string::npos) << bad.output;
}

TEST_F(InferTool, ImageGoesThroughDetectron2Preprocessing) {
  // A 30x40 binary PPM (OpenCV reads it as BGR).
  const int h = 30, w = 40;
  std::vector<uint8_t> rgb(h * w * 3);
  for (int i = 0; i < h * w * 3; ++i) rgb[i] = static_cast<uint8_t>((i * 37) % 251);
  const fs::path img = dir_ / "img.ppm";
  {
    std::ofstream o(img, std::ios::binary);
    o << "P6\n" << w << " " << h << "\n255\n";
    o.write(reinterpret_cast<const char*>(rgb.data()), static_cast<std::streamsize>(rgb.size()));
  }
  const std::string overrides = kNarrow + " MODEL.RESNETS.OUT_FEATURES \"['res3']\" INPUT.MIN_SIZE_TEST 64";
  Result r = run("--image " + img.string() + " --output-dir " + dir_.string() + " --size-divisibility 32" + overrides);
#ifndef BACKBONE_TEST_NO_OPENCV
  ASSERT_EQ(r.status, 0) << r.output;
  // The same through the library: PPM's RGB bytes as a BGR view, as OpenCV decodes them.
  std::vector<uint8_t> bgr(rgb.size());
  for (int i = 0; i < h * w; ++i)
    for (int c = 0; c < 3; ++c) bgr[i * 3 + c] = rgb[i * 3 + 2 - c];
  backbone::Config cfg;
  cfg.merge_from_list({"MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
                       "MODEL.RESNETS.WIDTH_PER_GROUP", "4", "MODEL.RESNETS.OUT_FEATURES", "['res3']",
                       "INPUT.MIN_SIZE_TEST", "64"});
  backbone::ResNet model = backbone::build_resnet_backbone(cfg);
  model.init_weights(0);
  backbone::ImageView view;
  view.data = bgr.data();
  view.width = w;
  view.height = h;
  view.format = "BGR";
  auto p = backbone::PreprocessOptions::from_config(cfg);
  p.size_divisibility = 32;
  backbone::PreprocessResult in = backbone::preprocess(view, p);
  EXPECT_EQ(in.tensor.shape(), (backbone::Shape{1, 3, 64, 96}));  // 64x85 padded to 64x96
  auto engine = backbone::create_engine(model);
  backbone::Tensor expected = engine->forward(in.tensor)[0].second;
  backbone::Tensor got = backbone::load_npy((dir_ / "res3.npy").string());
  ASSERT_EQ(got.shape(), expected.shape());
  EXPECT_LE(backbone::test::max_abs_diff(got, expected), 1e-6 * max_abs(expected));
#endif
}

TEST_F(InferTool, UsageErrorsExitWith2) {
  for (const std::string args : {"--bogus", "--threads", "--threads -1", "--threads x", "MODEL.RESNETS.DEPTH",
                                 "--input a.npy --image b.png", "--output-dir=", "--precision", "--engine=",
                                 "--max-image-pixels 0", "--max-image-pixels -5", "--threads 4294967297",
                                 "--size-divisibility 9223372036854775807", "--seed 99999999999999999999",
                                 "--conv-algorithm", "--conv-algorithm fast", "--conv-algorithm=Winograd"}) {
    Result r = run(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("usage: backbone-infer"), std::string::npos) << args;
  }
  Result help = run("--help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("--config-file"), std::string::npos);
  EXPECT_NE(help.output.find("--engine NAME            auto, cuda, onednn, libtorch or opencv (default: auto"),
            std::string::npos)
      << help.output;
  EXPECT_NE(help.output.find("--tf32                   engine cuda: let cuDNN use TF32"), std::string::npos) << help.output;
  EXPECT_NE(help.output.find("--precision P            fp32, fp16, bf16 or auto (default: fp32)"), std::string::npos)
      << help.output;
  EXPECT_NE(help.output.find("--conv-algorithm A       auto, direct or winograd (default: auto)"), std::string::npos)
      << help.output;
  Result bad = run("--conv-algorithm fast");
  EXPECT_NE(bad.output.find("--conv-algorithm expects auto, direct or winograd, got 'fast'"), std::string::npos)
      << bad.output;
}

TEST_F(InferTool, PrecisionOption) {
  // Bad values are usage errors that name the option and the value.
  for (const std::string bad : {"fp8", "FP32", "half", ""}) {
    Result r = run("--precision=" + bad + " --output-dir " + dir_.string());
    EXPECT_EQ(r.status, 2) << bad << "\n" << r.output;
    EXPECT_NE(r.output.find("--precision expects fp32, fp16, bf16 or auto, got '" + bad + "'"), std::string::npos)
        << r.output;
  }
  // A precision the engine does not run: a runtime error naming both, and no output written.
  const auto engines = backbone::available_engines();
  if (std::find(engines.begin(), engines.end(), "libtorch") != engines.end()) {
    Result r = run("--engine libtorch --precision bf16 --output-dir " + dir_.string() + kNarrow);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("error: engine 'libtorch' at precision bf16 on cpu: "), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(dir_ / "shapes.json"));
  }
  // fp16: no CPU engine runs it, and auto says so for each engine it tried.
  Result r = run("--precision fp16 --output-dir " + dir_.string() + kNarrow);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("engine 'auto' at precision fp16 on cpu: "), std::string::npos) << r.output;
  for (const auto& e : engines) EXPECT_NE(r.output.find(e + ": "), std::string::npos) << e << "\n" << r.output;
}

// The output names the engine that ran, with its precision and threads, on one line.
TEST_F(InferTool, PrintsTheEngineDescription) {
  const std::string in = (dir_ / "x.npy").string();
  backbone::Tensor x = backbone::Tensor::empty({1, 3, 64, 96});
  for (int64_t i = 0; i < x.numel(); ++i) x.data_ptr<float>()[i] = float((i * 7919) % 255) / 64.0f - 2.0f;
  backbone::save_npy(in, x);
  const std::string kLevels = " MODEL.RESNETS.OUT_FEATURES \"['res2','res3','res4','res5']\"";
  auto description_of = [](const std::string& output) {
    const auto b = output.find("\nengine: ");
    if (b == std::string::npos) return std::string();
    const auto e = output.find('\n', b + 1);
    return output.substr(b + 9, e - b - 9);
  };
  // Default (auto): one of this build's engines, fp32, the thread count asked for.
  Result r = run("--input " + in + " --threads 1 --output-dir " + (dir_ / "auto").string() + kNarrow);
  ASSERT_EQ(r.status, 0) << r.output;
  std::string d = description_of(r.output);
  ASSERT_FALSE(d.empty()) << r.output;
  const auto engines = backbone::available_engines();
  EXPECT_NE(std::find(engines.begin(), engines.end(), d.substr(0, d.find(' '))), engines.end()) << d;
  EXPECT_NE(d.find("fp32"), std::string::npos) << d;
  EXPECT_NE(d.find("1 thread"), std::string::npos) << d;
  // --conv-algorithm winograd (and its alias --winograd) reaches the oneDNN engine; direct does not
  // run Winograd.
  if (std::find(engines.begin(), engines.end(), "onednn") != engines.end()) {
    for (const std::string arg : {"--conv-algorithm winograd", "--winograd", "--conv-algorithm=direct"}) {
      SCOPED_TRACE(arg);
      Result w = run("--input " + in + " --engine onednn " + arg + " --output-dir " + (dir_ / "wino").string() + kNarrow);
      ASSERT_EQ(w.status, 0) << w.output;
      EXPECT_EQ(description_of(w.output).find("Winograd 3x3") != std::string::npos, arg.find("direct") == std::string::npos)
          << w.output;
    }
  }
  // Each engine by name, and bf16 where the build has oneDNN: its features within 2e-2 * max of fp32.
  for (const auto& engine : engines) {
    SCOPED_TRACE(engine);
    if (engine == "cuda") continue;  // a CUDA device, not CPU threads: InferTool.CudaEngine
    const std::string out = (dir_ / engine).string();
    r = run("--input " + in + " --engine " + engine + " --threads 2 --output-dir " + out + kNarrow + kLevels);
    ASSERT_EQ(r.status, 0) << r.output;
    d = description_of(r.output);
    EXPECT_EQ(d.rfind(engine + " ", 0), 0u) << d;
    EXPECT_NE(d.find("2 threads"), std::string::npos) << d;
    if (engine != "onednn") continue;
    r = run("--input " + in + " --engine onednn --precision bf16 --output-dir " + out + "-bf16" + kNarrow + kLevels);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(description_of(r.output).find("bf16"), std::string::npos) << r.output;
    for (const char* level : {"res2", "res3", "res4", "res5"}) {
      backbone::Tensor fp32 = backbone::load_npy(out + "/" + level + ".npy");
      backbone::Tensor bf16 = backbone::load_npy(out + "-bf16/" + level + ".npy");
      ASSERT_EQ(bf16.shape(), fp32.shape());
      const double diff = backbone::test::max_abs_diff(bf16, fp32);
      EXPECT_LE(diff, 2e-2 * max_abs(fp32)) << level;
      EXPECT_GT(diff, 0.0) << "bf16 gave exactly the fp32 features";
    }
    // auto: fp32 or bf16, whichever the engine measures faster here; within bf16's bound either way.
    r = run("--input " + in + " --engine onednn --precision auto --output-dir " + out + "-auto" + kNarrow + kLevels);
    ASSERT_EQ(r.status, 0) << r.output;
    for (const char* level : {"res2", "res3", "res4", "res5"}) {
      backbone::Tensor fp32 = backbone::load_npy(out + "/" + level + ".npy");
      backbone::Tensor autop = backbone::load_npy(out + "-auto/" + level + ".npy");
      ASSERT_EQ(autop.shape(), fp32.shape());
      EXPECT_LE(backbone::test::max_abs_diff(autop, fp32), 2e-2 * max_abs(fp32)) << level;
    }
  }
}

TEST_F(InferTool, RuntimeErrorsNameTheCause) {
  const std::string out = " --output-dir " + dir_.string();
  struct Case {
    std::string args, needle;
  };
  std::vector<Case> cases = {
      {"MODEL.RESNETS.FOO 1", "Non-existent key: MODEL.RESNETS.FOO"},
      {"MODEL.RESNETS.DEPTH 42", "MODEL.RESNETS.DEPTH must be one of 18, 34, 50, 101, 152; got 42"},
      {"--config-file /nonexistent/config.yaml", "/nonexistent/config.yaml"},
      {"--weights /nonexistent/R-50.pkl", "/nonexistent/R-50.pkl"},
      {"MODEL.WEIGHTS detectron2://ImageNetPretrained/MSRA/R-50.pkl", "download"},
      {"MODEL.WEIGHTS /nonexistent/w.pth", "/nonexistent/w.pth"},
      {"--input /nonexistent/x.npy", "/nonexistent/x.npy"},
      {"--device tpu", "invalid device 'tpu'"},
      {"--engine tensorrt", "unknown engine 'tensorrt'"},
  };
  // Without a usable CUDA device, cuda:0 is a runtime error naming it (with one, it runs: InferTool.CudaEngine).
  if (!backbone::cuda_is_available()) cases.push_back({"--device cuda:0" + kNarrow, "cuda:0"});
  for (const auto& c : cases) {
    Result r = run(c.args + out);
    EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
  }
}

// --engine cuda / --device cuda:N go through the library's engine "cuda". Without a usable CUDA
// device the tool fails (status 1, no output written) with the loader's reason; with one, its
// features agree with this build's CPU engine (1e-3 * max for fp32, 2e-2 for fp16, bf16 and TF32).
TEST_F(InferTool, CudaEngine) {
  const std::string in = (dir_ / "x.npy").string();
  backbone::Tensor x = backbone::Tensor::empty({1, 3, 64, 96});
  for (int64_t i = 0; i < x.numel(); ++i) x.data_ptr<float>()[i] = float((i * 7919) % 255) / 64.0f - 2.0f;
  backbone::save_npy(in, x);
  const std::string kLevels = " MODEL.RESNETS.OUT_FEATURES \"['res2','res3','res4','res5']\"";
  // The cuda engine runs on CUDA devices only, GPU or not.
  Result r = run("--input " + in + " --engine cuda --output-dir " + (dir_ / "cpu").string() + kNarrow);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("error: engine 'cuda' at precision fp32 on cpu: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("expected cuda:N, found cpu"), std::string::npos) << r.output;
  // --tf32 is accepted everywhere; CPU engines ignore it.
  r = run("--input " + in + " --tf32 --threads 1 --output-dir " + (dir_ / "tf32-cpu").string() + kNarrow);
  EXPECT_EQ(r.status, 0) << r.output;

  if (!backbone::cuda_is_available()) {
    for (const std::string engine : {"cuda", "auto"})
      for (const std::string precision : {"fp32", "fp16"}) {
        SCOPED_TRACE(engine + " " + precision);
        const fs::path out = dir_ / ("nogpu-" + engine + "-" + precision);
        r = run("--input " + in + " --engine " + engine + " --device cuda:0 --precision " + precision + " --tf32 --output-dir " +
                out.string() + kNarrow);
        EXPECT_EQ(r.status, 1) << r.output;
        EXPECT_NE(r.output.find("backbone-infer: error: engine '" + engine + "' at precision " + precision + " on cuda:0: "),
                  std::string::npos)
            << r.output;
        EXPECT_NE(r.output.find("CUDA is not available: "), std::string::npos) << r.output;
        EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
        EXPECT_FALSE(fs::exists(out / "shapes.json"));
      }
    return;
  }

  // With a CUDA device: the reference is this build's first CPU engine.
  std::string cpu_engine;
  for (const auto& e : backbone::available_engines())
    if (e != "cuda" && cpu_engine.empty()) cpu_engine = e;
  ASSERT_FALSE(cpu_engine.empty());
  const fs::path ref = dir_ / "ref";
  r = run("--input " + in + " --engine " + cpu_engine + " --output-dir " + ref.string() + kNarrow + kLevels);
  ASSERT_EQ(r.status, 0) << r.output;
  struct Case {
    std::string args, precision;
    double tolerance;
    std::string in_description;
  } cases[] = {
      {"--engine cuda --device cuda:0", "fp32", 1e-3, "TF32 off"},
      {"--device cuda:0", "fp32", 1e-3, "TF32 off"},  // auto takes cuda on a CUDA device
      {"--engine cuda --device cuda:0 --tf32", "fp32", 2e-2, "TF32 on"},
      {"--engine cuda --device cuda:0 --precision fp16", "fp16", 2e-2, "fp16"},
      {"--engine cuda --device cuda:0 --precision bf16", "bf16", 2e-2, "bf16"},
  };
  int k = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const fs::path out = dir_ / ("gpu-" + std::to_string(k++));
    r = run("--input " + in + " " + c.args + " --output-dir " + out.string() + kNarrow + kLevels);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("\nengine: cuda " + c.precision + " on cuda:0"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.in_description), std::string::npos) << r.output;
    for (const char* level : {"res2", "res3", "res4", "res5"}) {
      const backbone::Tensor want = backbone::load_npy((ref / (std::string(level) + ".npy")).string());
      const backbone::Tensor got = backbone::load_npy((out / (std::string(level) + ".npy")).string());
      ASSERT_EQ(got.shape(), want.shape()) << level;
      EXPECT_LE(backbone::test::max_abs_diff(got, want), c.tolerance * max_abs(want)) << level;
    }
  }
  // A device that does not exist: the reason names the device count.
  r = run("--input " + in + " --engine cuda --device cuda:99 --output-dir " + (dir_ / "99").string() + kNarrow);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("cuda:99"), std::string::npos) << r.output;
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs: clean errors (status 1), the image refused from its header before decoding.

namespace {

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
std::string le32(uint32_t v) {
  return {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16), static_cast<char>(v >> 24)};
}
std::string le16(uint32_t v) { return {static_cast<char>(v), static_cast<char>(v >> 8)}; }
std::string be16(uint32_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }

// Headers of images of w x h pixels, without their pixel data: a decoder would fail on them, so
// the size error shows the check ran before decoding.
std::vector<std::pair<std::string, std::string>> image_headers(uint32_t w, uint32_t h) {
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + "IHDR" + be32(w) + be32(h) +
                          std::string("\x08\x02\x00\x00\x00", 5) + be32(0);
  const std::string jpeg = std::string("\xff\xd8\xff\xe0", 4) + be16(16) + std::string("JFIF\0\1\1\0\0\1\0\1\0\0", 14) +
                           std::string("\xff\xc0", 2) + be16(17) + "\x08" + be16(h) + be16(w) + "\x03" +
                           std::string("\x01\x22\x00\x02\x11\x01\x03\x11\x01", 9);
  const std::string bmp = "BM" + le32(54) + le32(0) + le32(54) + le32(40) + le32(w) + le32(h) + le16(1) + le16(24) +
                          std::string(24, '\0');
  const std::string tiff = std::string("II*\0", 4) + le32(8) + le16(2) + le16(256) + le16(4) + le32(1) + le32(w) +
                           le16(257) + le16(4) + le32(1) + le32(h) + le32(0);
  const std::string webp = "RIFF" + le32(30) + "WEBPVP8X" + le32(10) + le32(0) + le32(w - 1).substr(0, 3) +
                           le32(h - 1).substr(0, 3);
  const std::string ppm = "P6\n# a comment\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n";
  return {{"big.png", png},   {"big.jpg", jpeg},  {"big.bmp", bmp},
          {"big.tif", tiff},  {"big.webp", webp}, {"big.ppm", ppm}};
}

void write_file(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

}  // namespace

TEST_F(InferTool, OversizedImagesAreRefusedFromTheirHeader) {
  const std::string out = " --output-dir " + dir_.string() + kNarrow;
  for (const auto& [name, bytes] : image_headers(20000, 20000)) {
    const fs::path p = dir_ / name;
    write_file(p, bytes);
    Result r = run("--image " + p.string() + out);
    EXPECT_EQ(r.status, 1) << name << "\n" << r.output;
    EXPECT_NE(r.output.find("is 20000x20000 pixels, more than --max-image-pixels 67108864"), std::string::npos)
        << name << "\n" << r.output;
  }
  // Raising the limit lets the header through: the decoder then fails on the missing pixel data.
  const fs::path png = dir_ / "big.png";
  Result raised = run("--image " + png.string() + " --max-image-pixels 400000000" + out);
  EXPECT_EQ(raised.status, 1) << raised.output;
  EXPECT_EQ(raised.output.find("more than --max-image-pixels"), std::string::npos) << raised.output;
  EXPECT_NE(raised.output.find(png.string()), std::string::npos) << raised.output;
}

TEST_F(InferTool, MalformedImageHeadersAreCleanErrors) {
  const std::string out = " --output-dir " + dir_.string() + kNarrow;
  struct Case {
    std::string bytes, needle;
  };
  const std::vector<Case> cases = {
      {"just text", "not a PNG, JPEG, BMP, TIFF, WebP"},
      {std::string("\x89PNG\r\n\x1a\n\0\0", 10), "(PNG): the file ends inside the IHDR chunk"},
      {std::string("\xff\xd8", 2) + std::string(100000, '\xff'),
       "(JPEG): no start-of-frame marker among the first 4096"},
      {std::string("\xff\xd8\xff\xda", 4), "(JPEG): no start-of-frame marker before the image data"},
      {std::string("II*\0", 4) + le32(0x7fffffff), "(TIFF): the first image directory is outside the file"},
      {"P6\n-3 4\n255\n", "(PNM): expected a size, found '-3'"},
      {"P6\n99999999999999999999 4\n255\n", "(PNM): expected a size"},
      {image_headers(0, 5)[0].second, "is 0x5 pixels: both sides must be positive"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const fs::path p = dir_ / ("bad" + std::to_string(i));
    write_file(p, cases[i].bytes);
    Result r = run("--image " + p.string() + out);
    EXPECT_EQ(r.status, 1) << i << "\n" << r.output;
    EXPECT_NE(r.output.find(cases[i].needle), std::string::npos) << i << "\n" << r.output;
  }
}

TEST_F(InferTool, ImageAtTheLimitIsReadAndOneAboveIsNot) {
  const fs::path img = dir_ / "img.ppm";
  write_file(img, "P6\n40 30\n255\n" + std::string(40 * 30 * 3, '\x40'));
  const std::string out = " --output-dir " + dir_.string() + kNarrow + " MODEL.RESNETS.OUT_FEATURES \"['res2']\"";
  Result over = run("--image " + img.string() + " --max-image-pixels 1199" + out);
  EXPECT_EQ(over.status, 1) << over.output;
  EXPECT_NE(over.output.find("is 40x30 pixels, more than --max-image-pixels 1199"), std::string::npos) << over.output;
#ifdef BACKBONE_INFER_HAVE_OPENCV
  Result at = run("--image " + img.string() + " --max-image-pixels 1200" + out);
  EXPECT_EQ(at.status, 0) << at.output;
#endif
}

TEST_F(InferTool, HostileConfigsAreCleanErrors) {
  const std::string out = " --output-dir " + dir_.string();
  struct Case {
    std::string args, needle;
  };
  const fs::path nested = dir_ / "nested.yaml";
  write_file(nested, "MODEL:\n  PIXEL_MEAN: \"" + std::string(30000, '[') + std::string(30000, ']') + "\"\n");
  const fs::path tagged = dir_ / "tagged.yaml";
  write_file(tagged, "MODEL:\n  WEIGHTS: !!python/object/apply:os.system [\"echo owned\"]\n");
  const std::vector<Case> cases = {
      {"MODEL.RESNETS.NORM '\"\"' MODEL.RESNETS.OUT_FEATURES \"['stem']\" "
       "MODEL.RESNETS.STEM_OUT_CHANNELS 7560655309122452278",
       "MODEL.RESNETS.STEM_OUT_CHANNELS must be between 1 and 65536, found 7560655309122452278"},
      {"MODEL.RESNETS.STEM_OUT_CHANNELS 0 --engine onednn",
       "MODEL.RESNETS.STEM_OUT_CHANNELS must be between 1 and 65536, found 0"},
      {"MODEL.RESNETS.NUM_GROUPS 4294967296 MODEL.RESNETS.WIDTH_PER_GROUP 4294967296",
       "MODEL.RESNETS.NUM_GROUPS must be between 1 and 65536, found 4294967296"},
      {"MODEL.RESNETS.RES5_DILATION 3", "MODEL.RESNETS.RES5_DILATION must be 1 or 2"},
      {"--config-file " + nested.string(), "key MODEL.PIXEL_MEAN: the value nests brackets deeper than 200"},
      {"--config-file " + tagged.string(), "the YAML tag !!python/object/apply:os.system is not allowed"},
      {"--size-divisibility 4096 INPUT.MIN_SIZE_TEST 100000 INPUT.MAX_SIZE_TEST 100000" + kNarrow,
       "size_divisibility 4096), more than the 67108864 pixels allowed"},
      {"INPUT.MIN_SIZE_TEST 100000 INPUT.MAX_SIZE_TEST 100000" + kNarrow, "pixels allowed"},
  };
  for (const auto& c : cases) {
    Result r = run(c.args + out);
    EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_EQ(r.output.find("owned"), std::string::npos) << r.output;
  }
}
