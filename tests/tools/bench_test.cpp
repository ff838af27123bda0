// SPDX-License-Identifier: Apache-2.0
// backbone-bench: its agreement check (matching outputs pass; another network, a perturbed
// weight, a missing level, a wrong shape or NaNs fail), its FLOP count against torchvision's
// convolutions, its option parsing, and one tiny end-to-end run (when Debian's torch is there).
// No timing is asserted: speed lives in the benchmark itself.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>

#include "backbone/backbone.h"
#include "bench_core.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace backbone;
using namespace backbone::bench;

namespace {

// A narrow R-50 (bottleneck blocks, STRIDE_IN_1X1 as given) so that a forward pass is quick.
ResNet narrow_r50(bool stride_in_1x1) {
  Config cfg;
  cfg.merge_from_list({"MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
                       "MODEL.RESNETS.RES2_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "4",
                       "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']", "MODEL.RESNETS.STRIDE_IN_1X1",
                       stride_in_1x1 ? "True" : "False"});
  return build_resnet_backbone(cfg, ShapeSpec{3});
}

Tensor input(int64_t h, int64_t w) {
  Tensor x = Tensor::empty({1, 3, h, w});
  float* d = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) d[i] = std::sin(0.37f * static_cast<float>(i)) * 1.5f;
  return x;
}

FeatureMaps run_model(const ResNet& model, const Tensor& x) {
  EngineOptions o;
  o.num_threads = 1;
  return create_engine(model, o)->forward(x);
}

FeatureMaps copy_maps(const FeatureMaps& m) {
  FeatureMaps c;
  for (const auto& [n, t] : m) c.emplace_back(n, t.to(Device::cpu()).contiguous().clone());
  return c;
}

float max_abs(const Tensor& t) {
  const Tensor c = t.contiguous();
  float m = 0;
  for (int64_t i = 0; i < c.numel(); ++i) m = std::max(m, std::fabs(c.data_ptr<float>()[i]));
  return m;
}

class BenchAgreement : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new ResNet(narrow_r50(false));
    model_->init_weights(3);
    x_ = new Tensor(input(96, 128));
    ref_ = new FeatureMaps(copy_maps(run_model(*model_, *x_)));
  }
  static void TearDownTestSuite() {
    delete ref_;
    delete x_;
    delete model_;
  }
  static ResNet* model_;
  static Tensor* x_;
  static FeatureMaps* ref_;
};
ResNet* BenchAgreement::model_ = nullptr;
Tensor* BenchAgreement::x_ = nullptr;
FeatureMaps* BenchAgreement::ref_ = nullptr;

TEST_F(BenchAgreement, TheSameNetworkAgrees) {
  ASSERT_EQ(ref_->size(), 4u);
  const FeatureMaps again = run_model(*model_, *x_);
  const Agreement a = check_agreement(*ref_, again, kFp32Tolerance);
  EXPECT_TRUE(a.ok) << a.message;
  ASSERT_EQ(a.levels.size(), 4u);
  for (const auto& l : a.levels) {
    EXPECT_TRUE(l.ok) << l.name;
    EXPECT_GT(l.max_abs_ref, 0) << l.name;
    EXPECT_LE(l.relative, kFp32Tolerance) << l.name;
  }
  EXPECT_EQ(a.message, "");
}

TEST_F(BenchAgreement, StrideIn1x1TrueIsAnotherNetwork) {
  // Same weights (the names and shapes are the same), stride on the 1x1 instead of the 3x3.
  ResNet other = narrow_r50(true);
  const auto loaded = other.load_state_dict(model_->state_dict());
  ASSERT_TRUE(loaded.missing.empty());
  ASSERT_TRUE(loaded.unexpected.empty());
  const FeatureMaps out = run_model(other, *x_);
  const Agreement a = check_agreement(*ref_, out, kFp32Tolerance);
  EXPECT_FALSE(a.ok);
  EXPECT_TRUE(a.levels.at(0).ok) << "res2 has no strided block";
  EXPECT_FALSE(a.levels.at(1).ok) << "res3 starts with a strided block";
  EXPECT_NE(a.message.find("res3"), std::string::npos) << a.message;
  // Not even the bf16 bound lets it through.
  EXPECT_FALSE(check_agreement(*ref_, out, kBf16Tolerance).ok);
}

TEST_F(BenchAgreement, APerturbedWeightFailsFromItsStageOn) {
  ResNet other = narrow_r50(false);
  StateDict sd = model_->state_dict();
  for (auto& [name, t] : sd)
    if (name == "res4.0.conv2.weight") {
      t = t.clone();
      float* d = t.data_ptr<float>();
      for (int64_t i = 0; i < t.numel(); ++i) d[i] *= 1.05f;
    }
  other.load_state_dict(sd);
  const Agreement a = check_agreement(*ref_, run_model(other, *x_), kFp32Tolerance);
  EXPECT_FALSE(a.ok);
  EXPECT_TRUE(a.levels.at(0).ok);
  EXPECT_TRUE(a.levels.at(1).ok);
  EXPECT_FALSE(a.levels.at(2).ok);
  EXPECT_FALSE(a.levels.at(3).ok);
  EXPECT_NE(a.message.find("res4"), std::string::npos) << a.message;
}

TEST_F(BenchAgreement, TheBoundIsRelativeToTheLargestReferenceValue) {
  for (double rel : {0.5e-3, 5e-3, 3e-2}) {
    FeatureMaps out = copy_maps(*ref_);
    Tensor& t = out.back().second;
    t.data_ptr<float>()[7] += static_cast<float>(rel * max_abs(ref_->back().second));
    const Agreement fp32 = check_agreement(*ref_, out, kFp32Tolerance);
    const Agreement bf16 = check_agreement(*ref_, out, kBf16Tolerance);
    EXPECT_EQ(fp32.ok, rel < kFp32Tolerance) << rel;
    EXPECT_EQ(bf16.ok, rel < kBf16Tolerance) << rel;
    EXPECT_NEAR(fp32.levels.back().relative, rel, rel * 1e-3);
    EXPECT_NEAR(fp32.worst_relative(), rel, rel * 1e-3);
  }
}

TEST_F(BenchAgreement, MissingMisshapedOrNonFiniteLevelsFail) {
  FeatureMaps missing(ref_->begin(), ref_->end() - 1);
  Agreement a = check_agreement(*ref_, missing, kFp32Tolerance);
  EXPECT_FALSE(a.ok);
  EXPECT_NE(a.message.find("res5: missing"), std::string::npos) << a.message;

  FeatureMaps misshaped = copy_maps(*ref_);
  misshaped[1].second = misshaped[1].second.reshape({1, -1});
  a = check_agreement(*ref_, misshaped, kFp32Tolerance);
  EXPECT_FALSE(a.ok);
  EXPECT_NE(a.message.find("res3: shape"), std::string::npos) << a.message;

  FeatureMaps nan = copy_maps(*ref_);
  nan[0].second.data_ptr<float>()[3] = std::numeric_limits<float>::quiet_NaN();
  a = check_agreement(*ref_, nan, kBf16Tolerance);
  EXPECT_FALSE(a.ok);
  EXPECT_NE(a.message.find("res2: non-finite"), std::string::npos) << a.message;

  EXPECT_FALSE(check_agreement({}, *ref_, kFp32Tolerance).ok);
}

TEST(BenchFlops, MatchesTorchvisionsConvolutions) {
  // 2 x MACs of torchvision's resnet50/101/18 convolutions (forward hooks on every nn.Conv2d,
  // fc excluded), computed with torch 1.13 / torchvision 0.14.
  struct Case {
    int depth;
    int64_t h, w;
    double flops;
  } cases[] = {{50, 224, 224, 8174272512.0}, {50, 800, 1216, 158480793600.0}, {101, 800, 1216, 302424064000.0},
               {18, 224, 224, 3627122688.0}};
  for (const auto& c : cases) {
    Config cfg;
    cfg.merge_from_list(torchvision_config_overrides(c.depth));
    EXPECT_DOUBLE_EQ(conv_flops(build_resnet_backbone(cfg, ShapeSpec{3}), c.h, c.w), c.flops) << "R-" << c.depth;
  }
  // The stride on the 1x1 runs the 3x3 convolutions at a quarter of the pixels.
  EXPECT_LT(conv_flops(narrow_r50(true), 224, 224), conv_flops(narrow_r50(false), 224, 224));
}

TEST(BenchOptions, ParsesAndRejects) {
  const auto sizes = parse_sizes("224x224,800x1216");
  ASSERT_EQ(sizes.size(), 2u);
  EXPECT_EQ(sizes[1].height, 800);
  EXPECT_EQ(sizes[1].width, 1216);
  EXPECT_THROW(parse_sizes("224"), std::invalid_argument);
  EXPECT_THROW(parse_sizes("224xabc"), std::invalid_argument);
  EXPECT_THROW(parse_sizes(""), std::invalid_argument);
  EXPECT_EQ(parse_threads("1,0"), (std::vector<int>{1, 0}));
  EXPECT_THROW(parse_threads("-1"), std::invalid_argument);
  EXPECT_EQ(model_depth("R-101"), 101);
  EXPECT_THROW(model_depth("R-51"), std::invalid_argument);
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 2, 3}), 2.5);
}

TEST(BenchPeak, MeasuresAPositiveRate) {
  const PeakResult p = measure_fp32_peak(1, 0.05);
  EXPECT_GT(p.gflops, 0);
  EXPECT_EQ(p.threads, 1);
  EXPECT_FALSE(p.isa.empty());
  const MachineInfo m = machine_info();
  EXPECT_GE(m.cores, 1);
  EXPECT_EQ(p.isa == "avx512f", m.avx512f);
}

using Result = backbone::test::CommandResult;

Result run(const std::string& args) { return backbone::test::run_command(std::string(BACKBONE_BENCH) + " " + args); }

TEST(BenchTool, UsageErrors) {
  EXPECT_EQ(run("--sizes 224").status, 2);
  EXPECT_EQ(run("--runners nosuchrunner").status, 2);
  EXPECT_EQ(run("--runners venv-onnxruntime").status, 2);  // needs --peers-venv
  EXPECT_EQ(run("--frames 0").status, 2);
  const Result list = run("--list-runners");
  EXPECT_EQ(list.status, 0);
  EXPECT_NE(list.output.find("pytorch-eager"), std::string::npos) << list.output;
}

// One tiny run as a user runs it: R-50 at 64x64, one thread, this project's first engine beside
// Debian's PyTorch eager and OpenCV DNN; every runner must pass the agreement check and be timed.
TEST(BenchTool, TinyRunAgreesAndReports) {
  if (std::system("/usr/bin/python3 -c 'import torch, torchvision' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 lacks torch/torchvision (Debian's python3-torch, python3-torchvision)";
  const fs::path dir = fs::temp_directory_path() / ("backbone-bench-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string runners = "ours-" + available_engines().at(0) + ",pytorch-eager";
  if (run("--list-runners").output.find("opencv-dnn ") != std::string::npos) runners += ",opencv-dnn";
  // The opt-in Winograd variant of the oneDNN engine agrees too (about 1e-6 off the direct path).
  if (available_engines().at(0) == "onednn") runners += ",ours-onednn-winograd";
  const Result r = run("--models R-50 --sizes 64x64 --threads 1 --frames 2 --warmup 1 --rounds 2 --seconds 0.01 --runners " +
                       runners + " --work-dir " + dir.string() + " --json " + (dir / "out.json").string());
  EXPECT_EQ(r.status, 0) << r.output;
  std::ifstream in(dir / "out.json");
  ASSERT_TRUE(in) << r.output;
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["workloads"].size(), 1u);
  const auto& w = j["workloads"][0];
  EXPECT_EQ(w["reference"], "ours-" + available_engines().at(0));
  EXPECT_GT(w["gflop"].get<double>(), 0.3);
  EXPECT_EQ(w["runners"].size(), split_list(runners).size());
  for (const auto& x : w["runners"]) {
    EXPECT_EQ(x["status"], "ok") << x.dump();
    EXPECT_TRUE(x["agreement"]["ok"].get<bool>()) << x.dump();
    EXPECT_EQ(x["times_ms"].size(), 2u) << x.dump();
    EXPECT_FALSE(x["describe"].get<std::string>().empty());
    EXPECT_GT(x["vm_hwm_mib"].get<double>(), 0);
  }
  EXPECT_NE(r.output.find("| pytorch-eager |"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace
