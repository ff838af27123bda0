// SPDX-License-Identifier: Apache-2.0
// engine=cuda without a GPU: the network description libbackbone hands to the CUDA module (layers,
// stride placement, dilation, deformable offsets, GN/LN, BN folding), run by its CPU executor (the
// module's kernels' CPU twins) against detectron2's goldens; and how the engine refuses devices it
// cannot run on. The GPU side is cuda_engine_gpu_test.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "backbone/backbone.h"
#include "backbone/golden_cases.h"
#include "build_config.h"
#include "cuda/engine/layout.h"
#include "cuda/loader.h"
#include "engines/cuda/cuda_net.h"
#include "seeded_model.h"
#include "test_util.h"

using namespace backbone;
using namespace backbone::test::golden;

namespace {

ResNet make_model(const std::string& config, const std::vector<std::string>& overrides = {},
                  const std::string& out_features = "['res2', 'res3', 'res4', 'res5']") {
  std::vector<std::string> o = {"MODEL.RESNETS.OUT_FEATURES", out_features};
  o.insert(o.end(), overrides.begin(), overrides.end());
  Config cfg = load_config(std::string(BACKBONE_SOURCE_DIR) + "/configs/" + config, o);
  ResNet model = build_resnet_backbone(cfg, ShapeSpec{3});
  model.init_weights(3);
  return model;
}

std::vector<const BackboneCudaLayer*> of_kind(const detail::CudaNet& net, int32_t kind) {
  std::vector<const BackboneCudaLayer*> r;
  for (const auto& l : net.layers)
    if (l.kind == kind) r.push_back(&l);
  return r;
}

// The layer that writes value v.
const BackboneCudaLayer& writer(const detail::CudaNet& net, int32_t v) {
  for (const auto& l : net.layers)
    if (l.output == v) return l;
  throw std::runtime_error("no layer writes value " + std::to_string(v));
}

// Every value is written once, read after it is written; outputs exist.
void expect_well_formed(const detail::CudaNet& net) {
  EXPECT_EQ(net.num_values, static_cast<int32_t>(net.layers.size()) + 1);
  std::vector<bool> written(static_cast<size_t>(net.num_values), false);
  written[0] = true;
  for (size_t i = 0; i < net.layers.size(); ++i) {
    const auto& l = net.layers[i];
    SCOPED_TRACE("layer " + std::to_string(i));
    ASSERT_TRUE(l.input >= 0 && written[static_cast<size_t>(l.input)]);
    if (l.residual >= 0) {
      EXPECT_TRUE(written[static_cast<size_t>(l.residual)]);
    }
    if (l.aux >= 0) {
      EXPECT_TRUE(written[static_cast<size_t>(l.aux)]);
    }
    ASSERT_TRUE(l.output > 0 && l.output < net.num_values);
    EXPECT_FALSE(written[static_cast<size_t>(l.output)]);
    written[static_cast<size_t>(l.output)] = true;
  }
  EXPECT_EQ(net.outputs.size(), net.output_names.size());
}

// ---------------------------------------------------------------------------------------------
// The description.

TEST(CudaEngineNet, R50LayersAndOutputs) {
  const detail::CudaNet net = detail::build_cuda_net(make_model("R-50.yaml"));
  expect_well_formed(net);
  // stem conv + 4 shortcuts + 16 blocks x 3 convolutions; one max pooling; no norm layers (BN folded).
  EXPECT_EQ(of_kind(net, BACKBONE_CUDA_LAYER_CONV).size(), 1u + 4u + 16u * 3u);
  EXPECT_EQ(of_kind(net, BACKBONE_CUDA_LAYER_MAX_POOL).size(), 1u);
  EXPECT_EQ(net.layers.size(), 54u);
  EXPECT_EQ(net.output_names, (std::vector<std::string>{"res2", "res3", "res4", "res5"}));
  // The stem: 7x7/2 + ReLU, then max_pool 3/2/1.
  const auto& stem = net.layers[0];
  EXPECT_EQ(stem.kind, BACKBONE_CUDA_LAYER_CONV);
  EXPECT_EQ(stem.kernel_size, 7);
  EXPECT_EQ(stem.stride, 2);
  EXPECT_EQ(stem.padding, 3);
  EXPECT_EQ(stem.relu, 1);
  EXPECT_EQ(stem.in_channels, 3);
  const auto& pool = net.layers[1];
  EXPECT_EQ(pool.kind, BACKBONE_CUDA_LAYER_MAX_POOL);
  EXPECT_EQ(pool.kernel_size, 3);
  EXPECT_EQ(pool.stride, 2);
  EXPECT_EQ(pool.padding, 1);
  // res5 ends with 2048 channels; the outputs are the last value of each stage, each written by a
  // convolution adding its block's shortcut before the ReLU.
  for (int32_t v : net.outputs) {
    const auto& l = writer(net, v);
    EXPECT_EQ(l.kind, BACKBONE_CUDA_LAYER_CONV);
    EXPECT_GE(l.residual, 0);
    EXPECT_EQ(l.relu, 1);
  }
  EXPECT_EQ(writer(net, net.outputs.back()).out_channels, 2048);
  // Shortcut convolutions: 1x1, no ReLU, no residual; every other convolution but the stem has ReLU.
  int shortcuts = 0;
  for (const auto* l : of_kind(net, BACKBONE_CUDA_LAYER_CONV))
    if (l->relu == 0) {
      ++shortcuts;
      EXPECT_EQ(l->kernel_size, 1);
      EXPECT_EQ(l->residual, -1);
    }
  EXPECT_EQ(shortcuts, 4);
}

TEST(CudaEngineNet, OutFeaturesOrderAndStem) {
  const detail::CudaNet net =
      detail::build_cuda_net(make_model("R-50.yaml", {}, "['res3', 'stem']"));
  expect_well_formed(net);
  // detectron2 returns out_features in its own order; the engine in the model's out_features order.
  const ResNet m = make_model("R-50.yaml", {}, "['res3', 'stem']");
  EXPECT_EQ(net.output_names, m.out_features());
  // Stages after the last requested one are not built.
  EXPECT_EQ(of_kind(net, BACKBONE_CUDA_LAYER_CONV).size(), 1u + 2u + 7u * 3u);
}

// The stride of a bottleneck's first block sits on conv1 (1x1) with STRIDE_IN_1X1, else on conv2 (3x3).
TEST(CudaEngineNet, StrideInOneByOnePlacement) {
  for (const bool in_1x1 : {true, false}) {
    SCOPED_TRACE(in_1x1 ? "STRIDE_IN_1X1 True" : "STRIDE_IN_1X1 False");
    const detail::CudaNet net =
        detail::build_cuda_net(make_model("R-50.yaml", {"MODEL.RESNETS.STRIDE_IN_1X1", in_1x1 ? "True" : "False"}));
    // Strided convolutions other than the stem: per stage res3..res5 the shortcut and one of conv1/conv2.
    int strided_1x1_main = 0, strided_3x3 = 0, strided_shortcut = 0;
    for (const auto* l : of_kind(net, BACKBONE_CUDA_LAYER_CONV)) {
      if (l == &net.layers[0] || l->stride == 1) continue;
      EXPECT_EQ(l->stride, 2);
      if (l->kernel_size == 3) ++strided_3x3;
      else if (l->relu == 0) ++strided_shortcut;
      else ++strided_1x1_main;
    }
    EXPECT_EQ(strided_shortcut, 3);
    EXPECT_EQ(strided_1x1_main, in_1x1 ? 3 : 0);
    EXPECT_EQ(strided_3x3, in_1x1 ? 0 : 3);
  }
}

TEST(CudaEngineNet, Res5Dilation2) {
  const detail::CudaNet net = detail::build_cuda_net(make_model("R-50-DC5.yaml"));
  expect_well_formed(net);
  // res5's three 3x3 convolutions: dilation 2, padding 2, stride 1; no stride-2 convolution in res5.
  const auto convs = of_kind(net, BACKBONE_CUDA_LAYER_CONV);
  const auto dilated = std::count_if(convs.begin(), convs.end(), [](const auto* l) { return l->dilation == 2; });
  EXPECT_EQ(dilated, 3);
  for (const auto* l : convs)
    if (l->dilation == 2) {
      EXPECT_EQ(l->kernel_size, 3);
      EXPECT_EQ(l->padding, 2);
      EXPECT_EQ(l->stride, 1);
    }
  const auto strided = std::count_if(convs.begin(), convs.end(), [](const auto* l) { return l->stride == 2; });
  EXPECT_EQ(strided, 1 + 2 * 2);  // the stem, and res3/res4 (shortcut + main)
}

void check_deformable(const std::string& config, bool modulated, int64_t groups) {
  SCOPED_TRACE(config + " deform groups " + std::to_string(groups));
  const detail::CudaNet net = detail::build_cuda_net(make_model(
      config, {"MODEL.RESNETS.DEFORM_NUM_GROUPS", std::to_string(groups)}));
  expect_well_formed(net);
  const auto deform = of_kind(net, BACKBONE_CUDA_LAYER_DEFORM_CONV);
  EXPECT_EQ(deform.size(), 4u + 6u + 3u);  // c3-c5 of R-50
  for (const auto* l : deform) {
    EXPECT_EQ(l->modulated, modulated ? 1 : 0);
    EXPECT_EQ(l->deformable_groups, groups);
    EXPECT_EQ(l->kernel_size, 3);
    EXPECT_EQ(l->relu, 1);
    EXPECT_EQ(l->residual, -1);
    // aux is conv2_offset's output: a 3x3 convolution of the same input with its bias, no ReLU,
    // 18 (v1) or 27 (v2) channels per deformable group, with the same stride and dilation.
    const auto& off = writer(net, l->aux);
    EXPECT_EQ(off.kind, BACKBONE_CUDA_LAYER_CONV);
    EXPECT_EQ(off.input, l->input);
    EXPECT_EQ(off.out_channels, (modulated ? 27 : 18) * groups);
    EXPECT_EQ(off.relu, 0);
    EXPECT_NE(off.bias, nullptr);
    EXPECT_EQ(off.stride, l->stride);
    EXPECT_EQ(off.dilation, l->dilation);
  }
}

TEST(CudaEngineNet, DeformableV1AndV2) {
  check_deformable("R-50-dconv-c3-c5.yaml", false, 1);
  check_deformable("R-50-mdconv-c3-c5.yaml", true, 1);
  check_deformable("R-50-mdconv-c3-c5.yaml", true, 2);
}

TEST(CudaEngineNet, GroupNormAndLayerNormAreLayers) {
  for (const std::string norm : {"GN", "LN"}) {
    SCOPED_TRACE(norm);
    const detail::CudaNet net = detail::build_cuda_net(
        make_model("R-50.yaml", {"MODEL.RESNETS.NORM", norm, "MODEL.RESNETS.STRIDE_IN_1X1", "False"}));
    expect_well_formed(net);
    const int32_t kind = norm == "GN" ? BACKBONE_CUDA_LAYER_GROUP_NORM : BACKBONE_CUDA_LAYER_LAYER_NORM;
    const auto norms = of_kind(net, kind);
    EXPECT_EQ(norms.size(), of_kind(net, BACKBONE_CUDA_LAYER_CONV).size());  // one per convolution
    for (const auto& l : net.layers) {
      if (l.kind == BACKBONE_CUDA_LAYER_CONV) {
        // Unfolded: no residual, no ReLU, no bias (detectron2's convolutions with a norm have none).
        EXPECT_EQ(l.residual, -1);
        EXPECT_EQ(l.relu, 0);
        EXPECT_EQ(l.bias, nullptr);
      }
      if (l.kind == kind) {
        const auto& conv = writer(net, l.input);
        EXPECT_EQ(conv.kind, BACKBONE_CUDA_LAYER_CONV);
        EXPECT_EQ(l.in_channels, conv.out_channels);
        if (norm == "GN") {
          EXPECT_EQ(l.num_groups, 32);
        }
        EXPECT_DOUBLE_EQ(l.eps, norm == "GN" ? 1e-5 : 1e-6);
      }
    }
    // The outputs are norm layers carrying the shortcut and the ReLU.
    for (int32_t v : net.outputs) {
      const auto& l = writer(net, v);
      EXPECT_EQ(l.kind, kind);
      EXPECT_GE(l.residual, 0);
      EXPECT_EQ(l.relu, 1);
    }
  }
}

// BN folded in double precision: W' = W * gamma / sqrt(var + eps), b' = (b - mean) * s + beta.
TEST(CudaEngineNet, BatchNormFoldedInDouble) {
  ResNet m = make_model("R-18.yaml", {}, "['res2']");
  Conv2d& c = m.stem().conv1;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.5f, 1.5f), s(-0.3f, 0.3f);
  for (Tensor* t : {&c.norm.weight, &c.norm.running_var})
    for (int64_t i = 0; i < t->numel(); ++i) t->data_ptr<float>()[i] = u(rng);
  for (Tensor* t : {&c.norm.bias, &c.norm.running_mean})
    for (int64_t i = 0; i < t->numel(); ++i) t->data_ptr<float>()[i] = s(rng);
  const detail::CudaNet net = detail::build_cuda_net(m);
  const auto& l = net.layers[0];
  ASSERT_NE(l.bias, nullptr);
  const int64_t per_out = c.weight.numel() / c.out_channels;
  for (int64_t o = 0; o < c.out_channels; ++o) {
    const double g = c.norm.weight.data_ptr<float>()[o], beta = c.norm.bias.data_ptr<float>()[o];
    const double mean = c.norm.running_mean.data_ptr<float>()[o], var = c.norm.running_var.data_ptr<float>()[o];
    const double scale = g / std::sqrt(var + 1e-5);
    EXPECT_EQ(l.bias[o], static_cast<float>((0.0 - mean) * scale + beta)) << o;
    for (int64_t i = 0; i < per_out; i += 37)
      EXPECT_EQ(l.weight[o * per_out + i], static_cast<float>(c.weight.data_ptr<float>()[o * per_out + i] * scale))
          << o << ", " << i;
  }
}

TEST(CudaEngineNet, ClassifierIsAvgPoolLinear) {
  auto stem = std::make_unique<BasicStem>(3, 16, "BN");
  std::vector<Stage> stages;
  StageArgs a;
  a.block_class = BlockKind::BasicBlock;
  a.num_blocks = 1;
  a.in_channels = 16;
  a.out_channels = 32;
  a.block.stride = 2;
  stages.push_back(ResNet::make_stage(a));
  ResNet m(std::move(stem), std::move(stages), int64_t{10}, {"res2", "linear"});
  m.init_weights(1);
  const detail::CudaNet net = detail::build_cuda_net(m);
  expect_well_formed(net);
  ASSERT_EQ(net.output_names, (std::vector<std::string>{"res2", "linear"}));
  const auto& head = writer(net, net.outputs[1]);
  EXPECT_EQ(head.kind, BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR);
  EXPECT_EQ(head.in_channels, 32);
  EXPECT_EQ(head.out_channels, 10);
  EXPECT_EQ(head.input, net.outputs[0]);
  // The CPU executor gives [N, classes].
  const auto out = detail::run_cuda_net_on_cpu(net, Tensor::zeros({2, 3, 32, 32}), Precision::Float32);
  EXPECT_EQ(out[1].second.shape(), (Shape{2, 10}));
}

// ---------------------------------------------------------------------------------------------
// The CPU executor against detectron2's goldens.

class CudaEngineGolden : public ::testing::TestWithParam<json> {};

TEST_P(CudaEngineGolden, ExecutorMatchesDetectron2) {
  const json& c = GetParam();
  SCOPED_TRACE(c.value("description", ""));
  ResNet model = build_case(c);
  load_checkpoint(model, kDir + c["weights"].get<std::string>(), /*strict=*/true);
  const Tensor input = load_npy(kDir + c["input"].get<std::string>());
  const detail::CudaNet net = detail::build_cuda_net(model);
  expect_well_formed(net);
  const FeatureMaps out = detail::run_cuda_net_on_cpu(net, input, Precision::Float32);
  ASSERT_EQ(out.size(), c["outputs"].size());
  const double tol = c["tolerance"].get<double>();
  for (const auto& [name, t] : out) {
    ASSERT_TRUE(c["outputs"].contains(name)) << name;
    const Tensor ref = load_npy(kDir + c["outputs"][name].get<std::string>());
    ASSERT_EQ(t.shape(), ref.shape()) << name;
    const double max_ref = test::max_abs(ref), err = test::max_abs_diff(t, ref);
    EXPECT_GT(max_ref, 0.0) << name;
    EXPECT_LE(err, tol * max_ref) << name << ": max |out - ref| = " << err << ", max |ref| = " << max_ref;
  }
}

// fp16 / bf16: the executor rounds the input, the convolution weights and every activation as the
// module stores them. Bounds relative to max |fp32| per level (what the GPU engine is held to in
// golden_test's GoldenCudaPrecision): fp16 1e-2, bf16 6e-2. Measured on these cases with the same
// rounding emulated in PyTorch: at most 3.1e-3 (fp16) and 3.2e-2 (bf16, dcn_v1_g1; 2.9e-2 r50_ln).
TEST_P(CudaEngineGolden, ReducedPrecisionExecutorWithinBound) {
  const json& c = GetParam();
  ResNet model = build_case(c);
  load_checkpoint(model, kDir + c["weights"].get<std::string>(), /*strict=*/true);
  const Tensor input = load_npy(kDir + c["input"].get<std::string>());
  const detail::CudaNet net = detail::build_cuda_net(model);
  const FeatureMaps f32 = detail::run_cuda_net_on_cpu(net, input, Precision::Float32);
  for (const Precision p : {Precision::Float16, Precision::BFloat16}) {
    SCOPED_TRACE(precision_name(p));
    const FeatureMaps low = detail::run_cuda_net_on_cpu(net, input, p);
    ASSERT_EQ(low.size(), f32.size());
    const double bound = p == Precision::Float16 ? 1e-2 : 6e-2;
    for (size_t i = 0; i < f32.size(); ++i) {
      const double max_ref = test::max_abs(f32[i].second), err = test::max_abs_diff(low[i].second, f32[i].second);
      EXPECT_GT(err, 0.0) << f32[i].first << ": no rounding happened";
      EXPECT_LE(err, bound * max_ref) << f32[i].first << ": max |" << precision_name(p) << " - fp32| = " << err
                                      << ", max |fp32| = " << max_ref << " (" << err / max_ref << ")";
      std::printf("[ measured ] %s %s %s: %.3g of max |fp32|\n", c["name"].get<std::string>().c_str(),
                  precision_name(p), f32[i].first.c_str(), err / max_ref);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Detectron2, CudaEngineGolden, ::testing::ValuesIn(load_cases()),
                         [](const ::testing::TestParamInfo<json>& info) {
                           std::string n = info.param["name"].get<std::string>();
                           std::replace_if(n.begin(), n.end(),
                                           [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)); }, '_');
                           return n;
                         });

// The executor says which layer of a broken description is wrong.
TEST(CudaEngineNet, ExecutorNamesABrokenLayer) {
  detail::CudaNet net = detail::build_cuda_net(make_model("R-18.yaml", {}, "['res2']"));
  net.layers[3].in_channels = 7;
  try {
    detail::run_cuda_net_on_cpu(net, Tensor::zeros({1, 3, 32, 32}), Precision::Float32);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 3 (CONV)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expected 7 input channels, found 64"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// The module engine's host-side layout (cuda/engine/layout.h), on the CPU.

std::vector<int64_t> value_channels(const detail::CudaNet& net) {
  std::vector<int64_t> c(static_cast<size_t>(net.num_values), -1);
  c[0] = net.in_channels;
  for (const auto& l : net.layers) c[static_cast<size_t>(l.output)] = l.out_channels;
  return c;
}

TEST(CudaEngineLayout, StoredChannelsPadTheStemInputAndTheOffsets) {
  const detail::CudaNet net = detail::build_cuda_net(make_model("R-50-mdconv-c3-c5.yaml"));
  const BackboneCudaNetDesc d = net.desc();
  const auto channels = value_channels(net);
  for (const int64_t align : {4, 8}) {
    SCOPED_TRACE("align " + std::to_string(align));
    const auto stored = cuda_module::stored_channels(d, channels, align);
    EXPECT_EQ(stored[0], align);  // 3 -> 4 or 8
    int padded_offsets = 0;
    for (const auto& l : net.layers) {
      const size_t v = static_cast<size_t>(l.output);
      const bool offsets = std::any_of(net.layers.begin(), net.layers.end(),
                                       [&](const auto& o) { return o.aux == l.output; });
      if (offsets) {
        ++padded_offsets;
        EXPECT_EQ(stored[v], (27 + align - 1) / align * align);
      } else {
        EXPECT_EQ(stored[v], channels[v]);
      }
    }
    EXPECT_EQ(padded_offsets, 13);
  }
}

// A value read as a residual keeps its channels: cuDNN's fused call reads z with the output's shape.
TEST(CudaEngineLayout, ResidualOperandsAreNotPadded) {
  auto layer = [](int32_t kind, int32_t in, int32_t out, int64_t ci, int64_t co, int32_t residual) {
    BackboneCudaLayer l{};
    l.kind = kind;
    l.input = in;
    l.output = out;
    l.residual = residual;
    l.aux = -1;
    l.in_channels = ci;
    l.out_channels = co;
    l.kernel_size = l.stride = l.dilation = l.groups = l.deformable_groups = 1;
    return l;
  };
  auto desc = [](const std::vector<BackboneCudaLayer>& layers, const int32_t* outputs) {
    BackboneCudaNetDesc d{};
    d.in_channels = 3;
    d.num_values = static_cast<int32_t>(layers.size()) + 1;
    d.num_layers = static_cast<int32_t>(layers.size());
    d.layers = layers.data();
    d.num_outputs = 1;
    d.outputs = outputs;
    return d;
  };
  const int32_t conv = BACKBONE_CUDA_LAYER_CONV;
  // v1 = conv(v0), v2 = conv(v1) + v0: value 0 is read by ungrouped convolutions, and as a residual.
  const std::vector<BackboneCudaLayer> a = {layer(conv, 0, 1, 3, 3, -1), layer(conv, 1, 2, 3, 3, 0)};
  const int32_t out_a[] = {2};
  EXPECT_EQ(cuda_module::stored_channels(desc(a, out_a), {3, 3, 3}, 8)[0], 3);
  // v1 = conv(v0), v2 = conv(v1) + v1, read only as offsets by v3 = deform(v1, v2): v2 has a residual.
  std::vector<BackboneCudaLayer> b = {layer(conv, 0, 1, 3, 18, -1), layer(conv, 1, 2, 18, 18, 1),
                                      layer(BACKBONE_CUDA_LAYER_DEFORM_CONV, 1, 3, 18, 4, -1)};
  b[2].aux = 2;
  b[2].kernel_size = 3;
  b[2].padding = 1;
  const int32_t out_b[] = {3};
  const auto stored_b = cuda_module::stored_channels(desc(b, out_b), {3, 18, 18, 4}, 8);
  EXPECT_EQ(stored_b[0], 8);   // only an ungrouped convolution reads it
  EXPECT_EQ(stored_b[2], 18);  // offsets, but written with a residual
  // The same without the residual: padded.
  b[1].residual = -1;
  EXPECT_EQ(cuda_module::stored_channels(desc(b, out_b), {3, 18, 18, 4}, 8)[2], 24);
}

TEST(CudaEngineLayout, FilterToNhwcPadsWithZeros) {
  // out 3, in 4, groups 2, 3x3: OIHW [3][2][3][3] -> [4][3][3][2] (out padded to 4).
  std::vector<float> w(3 * 2 * 3 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i + 1);
  const auto r = cuda_module::filter_to_nhwc(w.data(), 3, 4, 2, 3, 4, 4);
  ASSERT_EQ(r.size(), 4u * 3 * 3 * 2);
  for (int o = 0; o < 4; ++o)
    for (int y = 0; y < 3; ++y)
      for (int x = 0; x < 3; ++x)
        for (int c = 0; c < 2; ++c)
          EXPECT_EQ(r[static_cast<size_t>(((o * 3 + y) * 3 + x) * 2 + c)],
                    o < 3 ? w[static_cast<size_t>(((o * 2 + c) * 3 + y) * 3 + x)] : 0.0f);
  // The stem: in 3 padded to 8, groups 1, 1x1.
  const std::vector<float> s = {1, 2, 3, 4, 5, 6};  // [2][3][1][1]
  EXPECT_EQ(cuda_module::filter_to_nhwc(s.data(), 2, 3, 1, 1, 2, 8),
            (std::vector<float>{1, 2, 3, 0, 0, 0, 0, 0, 4, 5, 6, 0, 0, 0, 0, 0}));
}

// No two values alive at once share a buffer; outputs keep theirs; buffers are shared at all.
TEST(CudaEngineLayout, BuffersFollowValueLifetimes) {
  for (const std::string config : {"R-50.yaml", "R-50-mdconv-c3-c5.yaml"}) {
    SCOPED_TRACE(config);
    const detail::CudaNet net =
        detail::build_cuda_net(make_model(config, {}, "['stem', 'res2', 'res3', 'res4', 'res5']"));
    const BackboneCudaNetDesc d = net.desc();
    const auto last = cuda_module::last_reads(d);
    std::vector<std::size_t> bytes(static_cast<size_t>(d.num_values));
    std::mt19937 rng(3);
    for (auto& b : bytes) b = 256 + rng() % 100000;
    const auto plan = cuda_module::assign_buffers(d, bytes, last);
    ASSERT_EQ(plan.slot_of.size(), bytes.size());
    // Value v is alive from the layer writing it (value 0: before layer 0) to its last read.
    std::vector<int32_t> born(bytes.size(), -1);
    for (int32_t i = 0; i < d.num_layers; ++i) born[static_cast<size_t>(d.layers[i].output)] = i;
    for (size_t v = 0; v < bytes.size(); ++v) {
      ASSERT_GE(plan.slot_of[v], 0) << v;
      EXPECT_GE(plan.slot_bytes[static_cast<size_t>(plan.slot_of[v])], bytes[v]) << v;
      for (size_t u = 0; u < v; ++u) {
        if (plan.slot_of[u] != plan.slot_of[v]) continue;
        // u (earlier) must be dead before v is written: its last read is before v's writer.
        EXPECT_LT(last[u], born[v]) << "values " << u << " and " << v << " share slot " << plan.slot_of[v];
      }
    }
    for (int32_t o : net.outputs) EXPECT_EQ(last[static_cast<size_t>(o)], INT32_MAX);
    EXPECT_LT(plan.slot_bytes.size(), bytes.size() / 4) << "buffers are hardly shared";
  }
}

// ---------------------------------------------------------------------------------------------
// The module's own checks of a description (engine_create), which run before any CUDA call: the
// module is loaded directly (dlopen), so they run here without a GPU.

const BackboneCudaApi* module_table(std::string* why) {
#if BACKBONE_HAVE_CUDA
  const std::string path =
      std::string(BACKBONE_BINARY_DIR) + "/lib/" BACKBONE_MODULE_DIR_NAME "/" BACKBONE_CUDA_MODULE_NAME;
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);  // never closed, as the loader does
  if (!handle) {
    const char* e = dlerror();
    *why = path + ": " + (e ? e : "dlopen failed");
    return nullptr;
  }
  const auto entry = reinterpret_cast<BackboneCudaEntryPoint>(dlsym(handle, BACKBONE_CUDA_ENTRY_POINT));
  if (!entry) {
    *why = path + " exports no " BACKBONE_CUDA_ENTRY_POINT;
    return nullptr;
  }
  return entry();
#else
  *why = "this build has no CUDA module";
  return nullptr;
#endif
}

// engine_create's status and message for `net`; an engine it did create (on a GPU) is destroyed.
std::pair<int, std::string> create_status(const BackboneCudaApi& api, const BackboneCudaNetDesc& net,
                                          int32_t precision = BACKBONE_CUDA_FP32) {
  BackboneCudaEngineOptions o{};
  o.device = 0;
  o.precision = precision;
  o.use_graphs = 1;
  o.max_plans = 2;
  BackboneCudaEngine* engine = nullptr;
  char msg[2048] = {0};
  const int status = api.engine_create(&net, &o, &engine, msg, sizeof(msg));
  if (engine) api.engine_destroy(engine);
  return {status, msg};
}

TEST(CudaEngineModule, CreateChecksTheDescriptionFirst) {
  std::string why;
  const BackboneCudaApi* api = module_table(&why);
  if (!api) GTEST_SKIP() << "no CUDA module: " << why;
  ASSERT_EQ(api->version, BACKBONE_CUDA_API_VERSION);
  ASSERT_NE(api->engine_create, nullptr);
  const detail::CudaNet good = detail::build_cuda_net(make_model("R-18.yaml", {}, "['res2']"));
  // Layers: 0 stem conv -> 1, 1 max pool -> 2, 2 conv1 (2 -> 3), 3 conv2 (3 -> 4, residual 2), ...
  auto expect_refused = [&](detail::CudaNet net, const std::string& expected, int32_t precision = BACKBONE_CUDA_FP32) {
    const auto [status, msg] = create_status(*api, net.desc(), precision);
    EXPECT_EQ(status, BACKBONE_CUDA_ERROR_ARGUMENT) << msg;
    EXPECT_NE(msg.find(expected), std::string::npos) << msg << "\nexpected: " << expected;
  };
  {
    detail::CudaNet n = good;
    n.layers[3].in_channels = 7;
    expect_refused(n, "engine_create: layer 3 (CONV): in_channels: expected 64 (channels of value 3), found 7");
  }
  {
    detail::CudaNet n = good;
    n.layers[3].aux = 2;
    expect_refused(n, "engine_create: layer 3 (CONV): aux: expected -1, found 2");
  }
  {
    detail::CudaNet n = good;
    n.layers[3].input = 5;
    expect_refused(n, "engine_create: layer 3 (CONV): input: expected a value computed before, found 5");
  }
  {
    detail::CudaNet n = good;
    n.layers[3].groups = 5;
    expect_refused(n, "engine_create: layer 3 (CONV): groups: expected a divisor of 64 and 64, found 5");
  }
  {
    detail::CudaNet n = good;
    n.layers[1].relu = 1;
    expect_refused(n, "engine_create: layer 1 (MAX_POOL): relu: expected 0, found 1");
  }
  {
    detail::CudaNet n = good;
    n.num_values += 1;
    expect_refused(n, "engine_create: num_values: expected " + std::to_string(good.num_values) +
                          " (the input and one value per layer), found " + std::to_string(good.num_values + 1));
  }
  {
    detail::CudaNet n = good;
    n.outputs[0] = 0;
    expect_refused(n, "engine_create: output 0: expected a layer's value, found 0");
  }
  expect_refused(good, "engine_create: precision: expected 0 (fp32), 1 (fp16) or 2 (bf16), found 9", 9);
  // Deformable: the offsets must have 2*G*k*k (v1) or 3*G*k*k (v2) channels.
  {
    detail::CudaNet n = detail::build_cuda_net(make_model("R-50-dconv-c3-c5.yaml", {}, "['res3']"));
    auto it = std::find_if(n.layers.begin(), n.layers.end(),
                           [](const auto& l) { return l.kind == BACKBONE_CUDA_LAYER_DEFORM_CONV; });
    ASSERT_NE(it, n.layers.end());
    it->modulated = 1;
    expect_refused(n, "(DEFORM_CONV): aux: expected 27 offset+mask channels, found 18");
  }
  // The FPN's layers: the top-down sum reads a coarser level of the lateral's channels with a
  // scale; the ReLU of LastLevelP6P7 has no residual.
  const FPN fpn = test::make_seeded_fpn("R-18.yaml", true);
  const detail::CudaNet fpn_good = detail::build_cuda_net(fpn.bottom_up(), &fpn);
  const auto first_of = [](detail::CudaNet& n, int32_t kind) {
    return std::find_if(n.layers.begin(), n.layers.end(), [&](const auto& l) { return l.kind == kind; });
  };
  {
    detail::CudaNet n = fpn_good;
    auto it = first_of(n, BACKBONE_CUDA_LAYER_UPSAMPLE_ADD);
    ASSERT_NE(it, n.layers.end());
    it->aux = n.fpn_inputs.back();  // res5: 512 channels
    expect_refused(n, "(UPSAMPLE_ADD): aux: expected 64 channels (the lateral's), found 512 (value " +
                          std::to_string(n.fpn_inputs.back()) + ")");
    it->aux = -1;
    expect_refused(n, "(UPSAMPLE_ADD): aux: expected the coarser level, a value computed before, found -1");
  }
  {
    detail::CudaNet n = fpn_good;
    first_of(n, BACKBONE_CUDA_LAYER_UPSAMPLE_ADD)->scale = 0.0;
    expect_refused(n, "(UPSAMPLE_ADD): scale: expected 1 (fuse_type sum) or 0.5 (avg), found 0");
  }
  {
    detail::CudaNet n = fpn_good;
    first_of(n, BACKBONE_CUDA_LAYER_RELU)->residual = 1;
    expect_refused(n, "(RELU): residual: expected -1, found 1");
  }
  {
    detail::CudaNet n = fpn_good;
    first_of(n, BACKBONE_CUDA_LAYER_RELU)->kind = 8;
    expect_refused(n, "(unknown): kind: expected 0..7, found 8");
  }
  // Valid descriptions pass the checks: what follows needs the device (here: none, or the engine).
  for (const detail::CudaNet* valid : {&good, &fpn_good}) {
    const auto [status, msg] = create_status(*api, valid->desc());
    EXPECT_NE(status, BACKBONE_CUDA_ERROR_ARGUMENT) << msg;
    if (status != BACKBONE_CUDA_OK) {
      EXPECT_NE(msg.find("cudaGetDeviceCount"), std::string::npos) << msg;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Devices.

TEST(CudaEngineDevice, CpuDeviceIsRefused) {
  ResNet m = make_model("R-18.yaml", {}, "['res2']");
  EngineOptions o;
  o.engine = "cuda";
  try {
    create_engine(m, o);
    FAIL() << "engine cuda accepted the cpu";
  } catch (const DeviceError& e) {
    EXPECT_EQ(std::string(e.what()), "engine 'cuda' runs on CUDA devices: expected cuda:N, found cpu");
  }
}

TEST(CudaEngineDevice, WithoutCudaTheLoaderSaysWhy) {
  std::string why;
  if (detail::cuda_available(&why)) GTEST_SKIP() << "a CUDA device is present (cuda_engine_gpu_test runs there)";
  ASSERT_FALSE(why.empty());
  ResNet m = make_model("R-18.yaml", {}, "['res2']");
  EngineOptions o;
  o.engine = "cuda";
  o.device = Device::cuda(0);
  try {
    create_engine(m, o);
    FAIL() << "engine cuda created without CUDA";
  } catch (const DeviceError& e) {
    const std::string text = e.what();
    EXPECT_NE(text.find("engine 'cuda' on cuda:0: CUDA is not available: "), std::string::npos) << text;
    EXPECT_NE(text.find(why), std::string::npos) << text << "\nexpected the loader's reason: " << why;
  }
}

TEST(CudaEngineDevice, AutoOnCpuMovesPastCuda) {
  const auto engines = available_engines();
  ResNet m = make_model("R-18.yaml", {}, "['res2']");
  EngineOptions o;  // auto, cpu
  const std::string picked = create_engine(m, o)->name();
  EXPECT_NE(picked, "cuda");
  if (std::find(engines.begin(), engines.end(), "onednn") != engines.end()) {
    EXPECT_EQ(picked, "onednn");
  }
  // Listed first only where it can run.
  const bool listed = std::find(engines.begin(), engines.end(), "cuda") != engines.end();
  EXPECT_EQ(listed, detail::cuda_available());
  if (listed) {
    EXPECT_EQ(engines.front(), "cuda");
  }
}

}  // namespace
