// SPDX-License-Identifier: Apache-2.0
// backbone-bench: its agreement check (matching outputs pass; another network, a perturbed
// weight, a missing level, a wrong shape or NaNs fail), its FLOP count against torchvision's
// convolutions, its option parsing, and one tiny end-to-end run (when Debian's torch is there);
// the GPU section's parts that run without a GPU (peak table, workloads, deformable model, NV12
// frame, speed-target verdicts, runner names) and its behaviour without a CUDA device (skipped
// with one line, or exit status 4 under --gpu); with a CUDA device, one short GPU run.
// No timing is asserted: speed lives in the benchmark itself.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
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

// The engine "auto" takes on the CPU: the first of this build's engines other than "cuda" (listed
// first where a CUDA device is present).
std::string first_cpu_engine() {
  for (const auto& e : available_engines())
    if (e != "cuda") return e;
  return "none";
}


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

// An FPN model: the bottom-up's FLOPs plus each level's 1x1 lateral (C_in x 256) and 3x3 output
// (256 x 256 x 9) convolutions at H/stride x W/stride; LastLevelMaxPool costs none.
TEST(BenchFlops, FpnAddsItsLateralAndOutputConvolutions) {
  Config cfg;
  cfg.merge_from_list(bench_config_overrides("R-50-FPN"));
  const FPN fpn = build_resnet_fpn_backbone(cfg);
  for (const auto& [h, w] : {std::pair<int64_t, int64_t>{224, 224}, {800, 1216}}) {
    double macs = 0;
    const int64_t channels[] = {256, 512, 1024, 2048};
    for (int i = 0; i < 4; ++i) {
      const int64_t s = int64_t{4} << i;
      macs += double(h / s) * double(w / s) * (256.0 * channels[i] + 256.0 * 256.0 * 9.0);
    }
    EXPECT_DOUBLE_EQ(conv_flops(fpn, h, w), conv_flops(fpn.bottom_up(), h, w) + 2.0 * macs) << h << "x" << w;
  }
  EXPECT_DOUBLE_EQ(conv_flops(fpn.bottom_up(), 224, 224), 8174272512.0) << "the bottom-up is torchvision's resnet50";
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
  EXPECT_EQ(model_depth("R-50-FPN"), 50);
  EXPECT_TRUE(is_fpn_model("R-101-FPN"));
  EXPECT_FALSE(is_fpn_model("R-101"));
  EXPECT_THROW(model_depth("R-51-FPN"), std::invalid_argument);
  EXPECT_THROW(model_depth("-FPN"), std::invalid_argument);
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 2, 3}), 2.5);
}

// The default CPU workloads, every model at every size otherwise, and an FPN model at a size that
// is not a multiple of 32 padded to the next multiples (as detectron2 pads), which its title says.
TEST(BenchOptions, CpuWorkloads) {
  const auto d = cpu_workloads("", "");
  std::vector<std::string> titles;
  for (const auto& w : d) titles.push_back(w.title());
  EXPECT_EQ(titles, (std::vector<std::string>{"R-50 224x224", "R-50 480x640", "R-50 720x1280", "R-50 800x1216",
                                              "R-101 800x1216", "R-101 480x640", "R-50-FPN 480x640",
                                              "R-50-FPN 800x1216"}));
  EXPECT_EQ(d[4].depth, 101);
  EXPECT_EQ(d[6].weights_key(), "50-fpn");
  const auto p = cpu_workloads("R-18-FPN,R-18", "720x1280,64x70");
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0].title(), "R-18-FPN 720x1280 (padded to 736x1280)");
  EXPECT_TRUE(p[0].padded());
  EXPECT_EQ(p[0].size.height, 736);
  EXPECT_EQ(p[0].size.width, 1280);
  EXPECT_EQ(p[0].asked.height, 720);
  EXPECT_EQ(p[1].title(), "R-18-FPN 64x70 (padded to 64x96)");
  EXPECT_EQ(p[2].title(), "R-18 720x1280");  // a plain ResNet runs any size as it is
  EXPECT_FALSE(p[3].padded());
  EXPECT_EQ(cpu_workloads("R-101", "").size(), 2u);  // the default sizes 224x224 and 800x1216
  EXPECT_THROW(cpu_workloads("R-51", ""), std::invalid_argument);
  EXPECT_THROW(cpu_workloads("", "64"), std::invalid_argument);
}

// The CPU targets come from the medians given: the worst workload decides, a missing time is "not
// measured" (never a verdict), and the markdown ends each target with met / NOT met.
TEST(BenchCpuTargets, VerdictsFromMediansOnly) {
  EXPECT_EQ(auto_precision_choice("onednn auto on cpu (precision auto: bf16, measured 1.8x fp32)"), "bf16");
  EXPECT_EQ(auto_precision_choice("onednn auto on cpu (precision auto: fp32)"), "fp32");
  EXPECT_EQ(auto_precision_choice("onednn fp32 on cpu"), "");
  CpuRow a;  // all cores at 224x224
  a.workload = "R-50 224x224";
  a.at_224 = true;
  a.threads = 2;
  a.all_cores = true;
  a.flops = 8.0e9;
  a.peak_gflops = 400;  // 8 GFLOP in 25 ms = 320 GFLOP/s = 80%
  a.engine = "onednn";
  a.median_ms = {{"ours-onednn", 25.0}, {"venv-onnxruntime", 27.5}, {"venv-openvino", 30.0},  // 1.10x, 1.20x
                 {"ours-onednn-auto", 20.0}, {"ours-onednn-bf16", 20.0}, {"venv-openvino-bf16", 24.0}};
  a.describe = {{"ours-onednn-auto", "onednn auto on cpu (precision auto: bf16)"}};
  CpuRow one = a;  // one thread
  one.threads = 1;
  one.all_cores = false;
  one.peak_gflops = 200;
  one.median_ms = {{"ours-onednn", 50.0}, {"venv-onnxruntime", 49.0}, {"venv-openvino", 60.0},  // 0.98x
                   {"ours-onednn-auto", 50.5}};
  auto v = evaluate_cpu_targets({a, one});
  ASSERT_EQ(v.size(), 4u);
  EXPECT_EQ(v[0].verdict, "met") << v[0].measured;  // 1.10x, bound included
  EXPECT_EQ(v[0].measured.rfind("worst 1.10x", 0), 0u) << v[0].measured;
  EXPECT_NE(v[0].measured.find("vs ONNX Runtime"), std::string::npos) << v[0].measured;
  EXPECT_EQ(v[1].verdict, "not met") << v[1].measured;  // 0.98x on one thread
  EXPECT_EQ(v[2].verdict, "met") << v[2].measured;
  EXPECT_EQ(v[2].measured.rfind("worst 80.00%", 0), 0u) << v[2].measured;
  EXPECT_EQ(v[3].verdict, "not met") << v[3].measured;  // auto 1.01x fp32 on one thread
  EXPECT_NE(v[3].measured.find("1.01x"), std::string::npos) << v[3].measured;

  const std::string md = cpu_targets_markdown({a, one});
  EXPECT_NE(md.find("| R-50 224x224 | 2 (all) | 25.00 | 1.10x | 1.20x | 80.0% | 0.80 (bf16) | 1.25x | 1.20x |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find(": NOT met\n"), std::string::npos) << md;
  EXPECT_NE(md.find(": met\n"), std::string::npos) << md;

  // A peer without a time: not measured, naming it; no 224x224 on all cores: not measured.
  a.median_ms.erase("venv-openvino");
  a.at_224 = false;
  v = evaluate_cpu_targets({a, one});
  EXPECT_EQ(v[0].verdict.rfind("not measured: no time of venv-openvino at R-50 224x224, 2 threads", 0), 0u) << v[0].verdict;
  EXPECT_TRUE(v[0].measured.empty());
  EXPECT_EQ(v[2].verdict, "not measured: no workload at 224x224 on all cores in this run");
  for (const auto& x : evaluate_cpu_targets({})) EXPECT_EQ(x.verdict.rfind("not measured", 0), 0u) << x.target;
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

// ---- GPU section -----------------------------------------------------------------------------

// Datasheet figures (dense fp16 tensor TFLOPS) at the clocks NVIDIA computes them with.
TEST(BenchGpuPeak, KnownDevicesGiveTheirDatasheetPeak) {
  struct Case {
    const char* name;
    int major, minor, sms, clock_khz;
    double tflops;
  };
  const Case cases[] = {
      {"NVIDIA H100 80GB HBM3", 9, 0, 132, 1830000, 989.4},  // H100 SXM5 datasheet: 989.4
      {"NVIDIA A100-SXM4-80GB", 8, 0, 108, 1410000, 312.0},  // A100: 312
      {"Tesla V100-SXM2-16GB", 7, 0, 80, 1530000, 125.0},    // V100 SXM2: 125
      {"Tesla T4", 7, 5, 40, 1590000, 65.0},                 // T4: 65
      {"NVIDIA A10", 8, 6, 72, 1695000, 125.0},              // A10: 125
      {"NVIDIA L4", 8, 9, 58, 2040000, 121.0},               // L4: 121
      {"NVIDIA GeForce RTX 4090", 8, 9, 128, 2520000, 165.2},  // AD102 whitepaper, fp32 accumulation: 165.2
      {"NVIDIA GeForce RTX 3090", 8, 6, 82, 1695000, 71.0},    // GA102 whitepaper, fp32 accumulation: 71
  };
  for (const auto& c : cases) {
    const double peak = fp16_tensor_peak_flops(c.major, c.minor, c.sms, c.clock_khz, c.name);
    EXPECT_NEAR(peak / 1e12, c.tflops, 0.012 * c.tflops) << c.name;
  }
  // The formula itself, exactly: SMs x clock x FLOP/clk/SM (H200 at the 1.98 GHz CUDA reports).
  EXPECT_DOUBLE_EQ(fp16_tensor_peak_flops(9, 0, 132, 1980000, "NVIDIA H200"), 132.0 * 1.98e9 * 4096);
  EXPECT_DOUBLE_EQ(fp16_tensor_rate(8, 0, "NVIDIA A100").flops_per_sm_clock, 2048);
  EXPECT_NE(fp16_tensor_rate(9, 0, "NVIDIA H100").entry.find("sm_90"), std::string::npos);
  // Not in the table: no peak, and the entry says so.
  for (auto [major, minor] : {std::pair{10, 0}, std::pair{8, 7}, std::pair{6, 1}, std::pair{12, 0}}) {
    EXPECT_EQ(fp16_tensor_peak_flops(major, minor, 100, 2000000, "x"), 0.0) << major << minor;
    EXPECT_NE(fp16_tensor_rate(major, minor, "x").entry.find("not in the table"), std::string::npos);
  }
  EXPECT_EQ(fp16_tensor_peak_flops(9, 0, 0, 1980000, "NVIDIA H100"), 0.0);
  EXPECT_EQ(fp16_tensor_peak_flops(9, 0, 132, 0, "NVIDIA H100"), 0.0);
}

TEST(BenchGpuWorkloads, ParsesKeys) {
  const auto all = parse_gpu_workloads("all");
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].key, "b1");
  EXPECT_EQ(all[1].batch, 8);
  EXPECT_TRUE(all[2].deform);
  EXPECT_TRUE(all[3].nv12);
  // ResizeShortestEdge(800, 1333) of 1080x1920: 800x1422 is longer than 1333, so 750x1333.
  EXPECT_EQ(all[3].height, 750);
  EXPECT_EQ(all[3].width, 1333);
  for (const auto& w : all)
    if (!w.nv12) {
      EXPECT_EQ(w.height, 800);
      EXPECT_EQ(w.width, 1216);
    }
  const auto two = parse_gpu_workloads("deform,b8,deform");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].key, "deform");
  EXPECT_EQ(two[1].key, "b8");
  EXPECT_THROW(parse_gpu_workloads("b9"), std::invalid_argument);
  EXPECT_THROW(parse_gpu_workloads(","), std::invalid_argument);
}

TEST(BenchGpuRunners, OursNames) {
  OursRunner r;
  ASSERT_TRUE(parse_ours_runner("ours-cuda-fp16", r));
  EXPECT_EQ(r.engine, "cuda");
  EXPECT_EQ(r.precision, "fp16");
  EXPECT_FALSE(r.tf32);
  ASSERT_TRUE(parse_ours_runner("ours-cuda-fp32", r));
  EXPECT_EQ(r.engine, "cuda");
  EXPECT_EQ(r.precision, "fp32");
  ASSERT_TRUE(parse_ours_runner("ours-cuda-tf32", r));
  EXPECT_EQ(r.engine, "cuda");
  EXPECT_EQ(r.precision, "fp32");
  EXPECT_TRUE(r.tf32);
  EXPECT_EQ(r.conv_algorithm, "auto");
  ASSERT_TRUE(parse_ours_runner("ours-onednn-winograd", r));
  EXPECT_EQ(r.engine, "onednn");
  EXPECT_EQ(r.conv_algorithm, "winograd");
  EXPECT_EQ(r.precision, "fp32");
  EXPECT_FALSE(r.tf32);
  ASSERT_TRUE(parse_ours_runner("ours-onednn-direct", r));
  EXPECT_EQ(r.engine, "onednn");
  EXPECT_EQ(r.conv_algorithm, "direct");
  EXPECT_EQ(r.precision, "fp32");
  ASSERT_TRUE(parse_ours_runner("ours-onednn-auto", r));
  EXPECT_EQ(r.engine, "onednn");
  EXPECT_EQ(r.precision, "auto");
  EXPECT_EQ(r.conv_algorithm, "auto");
  ASSERT_TRUE(parse_ours_runner("ours-onednn-bf16", r));
  EXPECT_EQ(r.precision, "bf16");
  ASSERT_TRUE(parse_ours_runner("ours-onednn", r));
  EXPECT_EQ(r.engine, "onednn");
  EXPECT_EQ(r.precision, "fp32");
  EXPECT_EQ(r.conv_algorithm, "auto");
  EXPECT_FALSE(parse_ours_runner("ours-cuda-tf32-fp16", r));  // TF32 is a float32 mode
  EXPECT_FALSE(parse_ours_runner("pytorch-cuda-fp32", r));
  EXPECT_FALSE(parse_ours_runner("ours-", r));
}

// The verdicts come from the medians given, and a missing figure is "not measured", never a verdict.
TEST(BenchGpuTargets, VerdictsFromMediansOnly) {
  GpuTimes t;
  t.peak_flops = 989.4e12;
  t.flops["b8"] = 8 * 158.5e9;
  t.median_ms["b1"] = {{"ours-cuda-fp32", 10.0}, {"pytorch-cuda-fp32", 30.0},    // 3.00x: met (bound included)
                       {"ours-cuda-fp16", 5.0},  {"pytorch-cuda-fp16-cl", 6.0},  // 1.20x: not met
                       {"ours-cuda-bf16", 5.5}};
  t.median_ms["b8"] = {{"ours-cuda-fp16", 3.0}};  // 422.7 TFLOP/s = 42.7%: met
  t.median_ms["deform"] = {{"ours-cuda-fp32", 12.5}, {"ours-cuda-fp16", 7.0}};  // 1.25x met, 1.40x not met
  auto v = evaluate_gpu_targets(t);
  ASSERT_EQ(v.size(), 6u);
  EXPECT_EQ(v[0].verdict, "met") << v[0].measured;
  EXPECT_EQ(v[0].measured.rfind("3.00x", 0), 0u) << v[0].measured;
  EXPECT_EQ(v[1].verdict, "not met") << v[1].measured;
  EXPECT_EQ(v[1].measured.rfind("1.20x", 0), 0u) << v[1].measured;
  EXPECT_EQ(v[2].verdict, "met") << v[2].measured;
  EXPECT_EQ(v[2].measured.rfind("42.7%", 0), 0u) << v[2].measured;
  EXPECT_EQ(v[3].verdict, "met") << v[3].measured;
  EXPECT_EQ(v[4].verdict, "not met") << v[4].measured;
  EXPECT_EQ(v[5].verdict.rfind("not measured", 0), 0u) << v[5].verdict;  // no deformable bf16 time
  EXPECT_TRUE(v[5].measured.empty());
  EXPECT_NE(v[5].verdict.find("ours-cuda-bf16"), std::string::npos) << v[5].verdict;

  // Below the bounds the other way round, and nothing without times or peak.
  t.median_ms["b1"]["pytorch-cuda-fp32"] = 29.9;  // 2.99x
  t.median_ms["b8"]["ours-cuda-fp16"] = 3.3;      // 38.8%
  v = evaluate_gpu_targets(t);
  EXPECT_EQ(v[0].verdict, "not met");
  EXPECT_EQ(v[2].verdict, "not met");
  t.peak_flops = 0;
  EXPECT_EQ(evaluate_gpu_targets(t)[2].verdict.rfind("not measured", 0), 0u);
  for (const auto& x : evaluate_gpu_targets(GpuTimes{})) {
    EXPECT_EQ(x.verdict.rfind("not measured", 0), 0u) << x.target;
    EXPECT_TRUE(x.measured.empty());
  }
}

// The deformable R-50 of the GPU section: deformable blocks in res3-res5 only, offset convolutions
// with drawn (non-zero, fractional) weights, and FLOPs that add exactly the offset convolutions.
TEST(BenchGpuModels, DeformableR50) {
  const ResNet plain = bench_model(50, false, "", 0);
  const ResNet deform = bench_model(50, true, "", 0);
  ASSERT_EQ(deform.stages().size(), 4u);
  int deformable = 0;
  for (size_t s = 0; s < deform.stages().size(); ++s)
    for (const auto& block : deform.stages()[s]) {
      const auto* db = dynamic_cast<const DeformBottleneckBlock*>(block.get());
      EXPECT_EQ(db != nullptr, s > 0) << "res" << s + 2;
      if (!db) continue;
      ++deformable;
      EXPECT_FALSE(db->deform_modulated);
      EXPECT_EQ(db->deform_num_groups, 1);
      EXPECT_EQ(db->conv2_offset.out_channels, 18);
      const Tensor& w = db->conv2_offset.weight;
      const Tensor& b = db->conv2_offset.bias;
      ASSERT_TRUE(b.defined());
      double w2 = 0;
      for (int64_t i = 0; i < w.numel(); ++i) w2 += double(w.data_ptr<float>()[i]) * w.data_ptr<float>()[i];
      EXPECT_GT(w2, 0);
      int fractional = 0;
      for (int64_t i = 0; i < b.numel(); ++i) {
        const float v = b.data_ptr<float>()[i];
        EXPECT_LE(std::fabs(v), 2.f);
        fractional += v != std::round(v);
      }
      EXPECT_EQ(fractional, b.numel());
    }
  EXPECT_EQ(deformable, 4 + 6 + 3);
  // Offset convolutions, 3x3 -> 18 channels at conv2's output size (stride on the 3x3):
  // res3 4 x 128 ch at 100x152, res4 6 x 256 at 50x76, res5 3 x 512 at 25x38.
  const double offset_macs = 4.0 * 18 * 128 * 9 * 100 * 152 + 6.0 * 18 * 256 * 9 * 50 * 76 + 3.0 * 18 * 512 * 9 * 25 * 38;
  EXPECT_DOUBLE_EQ(conv_flops(deform, 800, 1216) - conv_flops(plain, 800, 1216), 2 * offset_macs);
  EXPECT_DOUBLE_EQ(conv_flops(build_resnet_backbone(bench_config(50, true), ShapeSpec{3}), 800, 1216),
                   conv_flops(deform, 800, 1216));
  EXPECT_THROW(bench_model(50, true, "/nonexistent/weights.pth", 0), std::exception);
}

TEST(BenchGpuModels, Nv12FrameAndItsPreprocessing) {
  const Tensor f = make_nv12_frame(1080, 1920, 0);
  ASSERT_EQ(f.shape(), (Shape{1620, 1920}));
  ASSERT_EQ(f.dtype(), DType::UInt8);
  const uint8_t* p = f.data_ptr<uint8_t>();
  int lo = 255, hi = 0;
  for (int64_t i = 0; i < 1080 * 1920; ++i) lo = std::min<int>(lo, p[i]), hi = std::max<int>(hi, p[i]);
  EXPECT_EQ(lo, 16);
  EXPECT_EQ(hi, 235);
  lo = 255, hi = 0;
  for (int64_t i = 1080 * 1920; i < f.numel(); ++i) lo = std::min<int>(lo, p[i]), hi = std::max<int>(hi, p[i]);
  EXPECT_EQ(lo, 16);
  EXPECT_EQ(hi, 240);
  const Tensor again = make_nv12_frame(1080, 1920, 0), other = make_nv12_frame(1080, 1920, 1);
  EXPECT_EQ(std::memcmp(again.data(), f.data(), f.nbytes()), 0);
  EXPECT_NE(std::memcmp(other.data(), f.data(), f.nbytes()), 0);
  EXPECT_THROW(make_nv12_frame(1079, 1920, 0), std::invalid_argument);

  const FrameView v = nv12_frame_view(p, 1080, 1920, Device::cpu());
  EXPECT_EQ(v.format, PixelFormat::NV12);
  EXPECT_EQ(v.planes[1], p + 1080 * 1920);
  EXPECT_EQ(v.strides[0], 1920);
  EXPECT_EQ(v.strides[1], 1920);
  // The CPU path (the GPU section's reference) gives the network input size of the nv12 workload.
  const PreprocessResult r = preprocess_frame(v, nv12_preprocess_options());
  EXPECT_EQ(r.tensor.shape(), (Shape{1, 3, 750, 1333}));
  const auto nv12 = parse_gpu_workloads("nv12").at(0);
  EXPECT_EQ(r.resized_height, nv12.height);
  EXPECT_EQ(r.resized_width, nv12.width);
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
  EXPECT_NE(list.output.find("venv-openvino-bf16 "), std::string::npos) << list.output;
  const auto engines = available_engines();
  if (std::find(engines.begin(), engines.end(), "onednn") != engines.end()) {
    for (const char* r : {"ours-onednn ", "ours-onednn-direct ", "ours-onednn-winograd ", "ours-onednn-auto ",
                          "ours-onednn-bf16 "})
      EXPECT_NE(list.output.find(r), std::string::npos) << r << "\n" << list.output;
  }
  for (const char* gpu : {"ours-cuda-fp32 ", "ours-cuda-fp16 ", "ours-cuda-bf16 ", "pytorch-cuda-fp32 ",
                          "pytorch-cuda-fp32-notf32 ", "pytorch-cuda-fp16-cl "})
    EXPECT_NE(list.output.find(gpu), std::string::npos) << gpu << "\n" << list.output;
  // The GPU section's options are checked before anything runs, with or without a GPU.
  for (const char* bad : {"--gpu-workloads b9", "--gpu-runners nosuchrunner", "--device cpu", "--device cuda:x",
                          "--gpu-frames 0", "--gpu-seconds 0", "--gpu-warmup -1", "--gpu --gpu-runners ours-onednn"}) {
    const Result r = run(bad);
    EXPECT_EQ(r.status, 2) << bad << "\n" << r.output;
  }
  const Result wrong_list = run("--runners ours-cuda-fp16");
  EXPECT_EQ(wrong_list.status, 2);
  EXPECT_NE(wrong_list.output.find("is a GPU runner: --gpu-runners"), std::string::npos) << wrong_list.output;
}

// --gpu --help documents what the GPU section runs.
TEST(BenchTool, GpuHelp) {
  const Result r = run("--gpu --help");
  EXPECT_EQ(r.status, 0);
  for (const char* s : {"GPU section (--gpu)", "ours-cuda-fp32", "ours-cuda-tf32", "ours-cuda-fp16", "ours-cuda-bf16",
                        "pytorch-cuda-fp32 ", "pytorch-cuda-fp32-notf32", "pytorch-cuda-fp16-cl", "b1 ", "b8 ",
                        "deform ", "nv12 ", "DEFORM_ON_PER_STAGE [False, True,", "cuda_wait_ready",
                        "torch.cuda.synchronize()", "--device cuda:N", "--quick", "exit status 4",
                        "GPU section skipped: <why>"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s;
}

// --gpu without a usable CUDA device: exit status 4 and the loader's reason, before anything runs.
TEST(BenchTool, GpuDemandedWithoutADeviceFails) {
  if (cuda_is_available()) GTEST_SKIP() << "a CUDA device is present";
  const fs::path dir = fs::temp_directory_path() / ("backbone-bench-nogpu-" + std::to_string(::getpid()));
  const Result r = run("--gpu --work-dir " + dir.string());
  EXPECT_EQ(r.status, 4) << r.output;
  EXPECT_NE(r.output.find("backbone-bench: error: --gpu: no usable CUDA device cuda:0: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("CUDA is not available"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir)) << "nothing should run or be written before the GPU is found";
  EXPECT_EQ(run("--gpu --cpu --device cuda:3").status, 4);
}


// One tiny run as a user runs it: R-50 at 64x64, one thread, this project's first engine beside
// Debian's PyTorch eager and OpenCV DNN; every runner must pass the agreement check and be timed.
TEST(BenchTool, TinyRunAgreesAndReports) {
  if (std::system("/usr/bin/python3 -c 'import torch, torchvision' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 lacks torch/torchvision (Debian's python3-torch, python3-torchvision)";
  const fs::path dir = fs::temp_directory_path() / ("backbone-bench-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string runners = "ours-" + first_cpu_engine() + ",pytorch-eager";
  if (run("--list-runners").output.find("opencv-dnn ") != std::string::npos) runners += ",opencv-dnn";
  // The oneDNN engine's variants agree too: direct and forced Winograd (about 1e-6 off the direct
  // path) within the fp32 bound, precision=auto within the bf16 one.
  if (first_cpu_engine() == "onednn") runners += ",ours-onednn-direct,ours-onednn-winograd,ours-onednn-auto";
  const Result r = run("--cpu --models R-50 --sizes 64x64 --threads 1 --frames 2 --warmup 1 --rounds 2 --seconds 0.01 --runners " +
                       runners + " --work-dir " + dir.string() + " --json " + (dir / "out.json").string());
  EXPECT_EQ(r.status, 0) << r.output;
  std::ifstream in(dir / "out.json");
  ASSERT_TRUE(in) << r.output;
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["workloads"].size(), 1u);
  const auto& w = j["workloads"][0];
  EXPECT_EQ(w["reference"], "ours-" + first_cpu_engine());
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
  // The targets table and one line per target, judged from this run (no peers: not measured).
  EXPECT_NE(r.output.find("#### Targets"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| R-50 64x64 | 1"), std::string::npos) << r.output;
  ASSERT_TRUE(j.contains("cpu_targets"));
  EXPECT_EQ(j["cpu_targets"].size(), 4u);
  EXPECT_EQ(r.output.find("GPU section"), std::string::npos) << "--cpu runs the CPU section only\n" << r.output;
  EXPECT_FALSE(j.contains("gpu"));
  fs::remove_all(dir);
}

// The FPN workload: R-18-FPN at 64x64 (detectron2's FPN on the body, p2..p6): PyTorch eager running
// the same graph in plain torch, and OpenCV DNN on its ONNX export, agree with this project's engine.
TEST(BenchTool, TinyFpnRunAgreesWithItsPeers) {
  if (std::system("/usr/bin/python3 -c 'import torch, torchvision' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 lacks torch/torchvision (Debian's python3-torch, python3-torchvision)";
  const fs::path dir = fs::temp_directory_path() / ("backbone-bench-fpn-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<std::string> engines = available_engines();
  // LibTorch runs the FPN since the FPN itself landed; the other engines as they gain it.
  const std::string ours =
      "ours-" + (std::find(engines.begin(), engines.end(), "libtorch") != engines.end() ? "libtorch" : first_cpu_engine());
  std::string runners = ours + ",pytorch-eager";
  if (run("--list-runners").output.find("opencv-dnn ") != std::string::npos) runners += ",opencv-dnn";
  const Result r = run("--cpu --models R-18-FPN --sizes 64x64 --threads 1 --frames 1 --warmup 0 --rounds 1 --seconds 0.01 "
                       "--runners " + runners + " --work-dir " + dir.string() + " --json " + (dir / "out.json").string());
  EXPECT_EQ(r.status, 0) << r.output;
  std::ifstream in(dir / "out.json");
  ASSERT_TRUE(in) << r.output;
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["workloads"].size(), 1u);
  const auto& w = j["workloads"][0];
  EXPECT_EQ(w["model"], "R-18-FPN");
  EXPECT_EQ(w["reference"], ours);
  EXPECT_DOUBLE_EQ(w["gflop"].get<double>(), bench_flops("R-18-FPN", 64, 64) / 1e9);
  EXPECT_EQ(w["runners"].size(), split_list(runners).size());
  for (const auto& x : w["runners"]) {
    EXPECT_EQ(x["status"], "ok") << x.dump();
    EXPECT_TRUE(x["agreement"]["ok"].get<bool>()) << x.dump();
    std::vector<std::string> levels;
    for (const auto& l : x["agreement"]["levels"]) levels.push_back(l["name"]);
    if (x["name"] != ours) {
      EXPECT_EQ(levels, (std::vector<std::string>{"p2", "p3", "p4", "p5", "p6"})) << x.dump();
    }
  }
  EXPECT_NE(r.output.find("detectron2's FPN"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

bool have_debian_torch() { return std::system("/usr/bin/python3 -c 'import torch, torchvision' > /dev/null 2>&1") == 0; }

// Without --gpu and without a CUDA device, the GPU section is skipped with one line (in the log and
// in the report, the reason from the CUDA module's loader) and the run succeeds.
TEST(BenchTool, GpuSectionSkipsWithoutADevice) {
  if (cuda_is_available()) GTEST_SKIP() << "a CUDA device is present: the section runs";
  if (!have_debian_torch()) GTEST_SKIP() << "/usr/bin/python3 lacks torch/torchvision";
  const fs::path dir = fs::temp_directory_path() / ("backbone-bench-skip-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const Result r = run("--models R-50 --sizes 64x64 --threads 1 --frames 1 --warmup 0 --rounds 1 --seconds 0.01 --runners ours-" +
                       first_cpu_engine() + " --work-dir " + dir.string() + " --json " + (dir / "out.json").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("backbone-bench: GPU section skipped: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("### GPU section\n\nGPU section skipped: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("CUDA is not available"), std::string::npos) << r.output;
  std::ifstream in(dir / "out.json");
  ASSERT_TRUE(in) << r.output;
  const auto j = nlohmann::json::parse(in);
  ASSERT_TRUE(j.contains("gpu"));
  EXPECT_NE(j["gpu"]["skipped"].get<std::string>().find("CUDA is not available"), std::string::npos);
  EXPECT_EQ(j["sections"]["gpu"], false);
  EXPECT_EQ(j["workloads"].size(), 1u);  // the CPU section ran
  fs::remove_all(dir);
}

// With a CUDA device: a short GPU section (b1 and nv12, two of our runners) agrees and reports.
TEST(BenchTool, GpuSectionRunsOnADevice) {
  if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
  if (!have_debian_torch()) GTEST_SKIP() << "/usr/bin/python3 lacks torch/torchvision (it makes the weights)";
  const fs::path dir = fs::temp_directory_path() / ("backbone-bench-gpu-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const Result r = run("--gpu --python /usr/bin/python3 --gpu-workloads b1,nv12 --gpu-runners ours-cuda-fp32,ours-cuda-fp16 "
                       "--gpu-frames 3 --gpu-warmup 1 --gpu-seconds 0.05 --rounds 1 --timeout 600 --work-dir " +
                       dir.string() + " --json " + (dir / "out.json").string());
  EXPECT_EQ(r.status, 0) << r.output;
  std::ifstream in(dir / "out.json");
  ASSERT_TRUE(in) << r.output;
  const auto j = nlohmann::json::parse(in);
  ASSERT_TRUE(j["gpu"].contains("workloads")) << j["gpu"].dump();
  ASSERT_EQ(j["gpu"]["workloads"].size(), 2u);
  for (const auto& w : j["gpu"]["workloads"]) {
    EXPECT_FALSE(w["reference"].get<std::string>().empty());
    for (const auto& x : w["runners"]) {
      if (x["cpu_reference"].get<bool>()) {
        EXPECT_EQ(x["status"], "reference") << x.dump();
        continue;
      }
      EXPECT_EQ(x["status"], "ok") << x.dump();
      EXPECT_TRUE(x["agreement"]["ok"].get<bool>()) << x.dump();
      EXPECT_EQ(x["times_ms"].size(), 3u) << x.dump();
    }
  }
  EXPECT_EQ(j["gpu"]["targets"].size(), 6u);
  EXPECT_NE(r.output.find("#### Speed targets on this GPU"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace
