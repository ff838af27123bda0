// SPDX-License-Identifier: Apache-2.0
// engine=cuda with detectron2's FPN, without a GPU (label cpu): the network description the library
// hands to the module (lateral/output convolutions, top-down UPSAMPLE_ADD with the fuse type's
// scale, LastLevelMaxPool as MAX_POOL 1/2/0, LastLevelP6P7 with its ReLU feeding p7 only, the
// out_features selection), the module's buffer layout of it, and the description run through the
// kernels' CPU twins against the LibTorch engine's FPN (itself checked against detectron2) and
// against detectron2's FPN goldens (tests/data/fpn) where they are present.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "build_config.h"
#include "cuda/engine/layout.h"
#include "engines/cuda/cuda_net.h"
#include "fpn_golden_manifest.h"
#include "seeded_model.h"
#include "test_util.h"

using namespace backbone;

namespace {

// Inputs a multiple of the FPN's size_divisibility (32), values of a normalised image's magnitude.
Tensor make_input(int64_t n, int64_t h, int64_t w) {
  Tensor x = Tensor::empty({n, 3, h, w});
  float* p = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = 2.0f * std::sin(0.37f * static_cast<float>(i % 9973));
  return x;
}

const BackboneCudaLayer& writer(const detail::CudaNet& net, int32_t v) {
  for (const auto& l : net.layers)
    if (l.output == v) return l;
  throw std::runtime_error("no layer writes value " + std::to_string(v));
}

std::vector<const BackboneCudaLayer*> of_kind(const detail::CudaNet& net, int32_t kind) {
  std::vector<const BackboneCudaLayer*> r;
  for (const auto& l : net.layers)
    if (l.kind == kind) r.push_back(&l);
  return r;
}

int32_t output_value(const detail::CudaNet& net, const std::string& name) {
  const auto it = std::find(net.output_names.begin(), net.output_names.end(), name);
  if (it == net.output_names.end()) throw std::runtime_error("no output " + name);
  return net.outputs[static_cast<size_t>(it - net.output_names.begin())];
}

void expect_well_formed(const detail::CudaNet& net) {
  EXPECT_EQ(net.num_values, static_cast<int32_t>(net.layers.size()) + 1);
  std::vector<bool> written(static_cast<size_t>(net.num_values), false);
  written[0] = true;
  for (size_t i = 0; i < net.layers.size(); ++i) {
    const auto& l = net.layers[i];
    SCOPED_TRACE("layer " + std::to_string(i));
    ASSERT_TRUE(l.input >= 0 && written[static_cast<size_t>(l.input)]);
    if (l.residual >= 0) EXPECT_TRUE(written[static_cast<size_t>(l.residual)]);
    if (l.aux >= 0) EXPECT_TRUE(written[static_cast<size_t>(l.aux)]);
    ASSERT_TRUE(l.output > 0 && l.output < net.num_values);
    EXPECT_FALSE(written[static_cast<size_t>(l.output)]);
    written[static_cast<size_t>(l.output)] = true;
  }
  EXPECT_EQ(net.outputs.size(), net.output_names.size());
}

// ---------------------------------------------------------------------------------------------
// The description.

TEST(CudaEngineFpnNet, ResnetFpnTopDownAndLastLevelMaxPool) {
  const FPN fpn = test::make_seeded_fpn("R-18.yaml", false);
  const detail::CudaNet net = detail::build_cuda_net(fpn.bottom_up(), &fpn);
  expect_well_formed(net);
  EXPECT_EQ(net.output_names, (std::vector<std::string>{"p2", "p3", "p4", "p5", "p6"}));
  ASSERT_TRUE(net.fpn);
  ASSERT_EQ(net.fpn_inputs.size(), 4u);
  const auto sums = of_kind(net, BACKBONE_CUDA_LAYER_UPSAMPLE_ADD);
  ASSERT_EQ(sums.size(), 3u);
  // From the coarsest: lateral(res4) + up(lateral(res5)), then res3, res2.
  int32_t prev = writer(net, output_value(net, "p5")).input;  // p5 = output conv of lateral(res5)
  EXPECT_EQ(writer(net, prev).kind, BACKBONE_CUDA_LAYER_CONV);
  EXPECT_EQ(writer(net, prev).input, net.fpn_inputs[3]);
  for (size_t k = 0; k < sums.size(); ++k) {
    const BackboneCudaLayer& s = *sums[k];
    const size_t level = 2 - k;  // res4, res3, res2
    SCOPED_TRACE("sum " + std::to_string(k));
    EXPECT_EQ(s.scale, 1.0);
    EXPECT_EQ(s.aux, prev);
    EXPECT_EQ(s.residual, -1);
    EXPECT_EQ(s.relu, 0);
    const BackboneCudaLayer& lateral = writer(net, s.input);
    EXPECT_EQ(lateral.kind, BACKBONE_CUDA_LAYER_CONV);
    EXPECT_EQ(lateral.kernel_size, 1);
    EXPECT_EQ(lateral.relu, 0);
    EXPECT_EQ(lateral.input, net.fpn_inputs[level]);
    EXPECT_NE(lateral.bias, nullptr);  // norm "": the convolution's bias
    const BackboneCudaLayer& out = writer(net, output_value(net, "p" + std::to_string(level + 2)));
    EXPECT_EQ(out.kind, BACKBONE_CUDA_LAYER_CONV);
    EXPECT_EQ(out.kernel_size, 3);
    EXPECT_EQ(out.padding, 1);
    EXPECT_EQ(out.input, s.output);
    prev = s.output;
  }
  const BackboneCudaLayer& p6 = writer(net, output_value(net, "p6"));
  EXPECT_EQ(p6.kind, BACKBONE_CUDA_LAYER_MAX_POOL);
  EXPECT_EQ(p6.kernel_size, 1);
  EXPECT_EQ(p6.stride, 2);
  EXPECT_EQ(p6.padding, 0);
  EXPECT_EQ(p6.input, output_value(net, "p5"));
  EXPECT_TRUE(of_kind(net, BACKBONE_CUDA_LAYER_RELU).empty());
}

TEST(CudaEngineFpnNet, RetinaNetP6P7ReluOnlyIntoP7) {
  const FPN fpn = test::make_seeded_fpn("R-18.yaml", true, "", "avg");
  const detail::CudaNet net = detail::build_cuda_net(fpn.bottom_up(), &fpn);
  expect_well_formed(net);
  EXPECT_EQ(net.output_names, (std::vector<std::string>{"p3", "p4", "p5", "p6", "p7"}));
  for (const auto* s : of_kind(net, BACKBONE_CUDA_LAYER_UPSAMPLE_ADD)) EXPECT_EQ(s->scale, 0.5);
  const BackboneCudaLayer& p6 = writer(net, output_value(net, "p6"));
  EXPECT_EQ(p6.kind, BACKBONE_CUDA_LAYER_CONV);
  EXPECT_EQ(p6.relu, 0);  // p6 is returned without ReLU
  EXPECT_EQ(p6.stride, 2);
  EXPECT_EQ(p6.input, net.fpn_inputs.back());  // res5
  EXPECT_NE(p6.bias, nullptr);
  const BackboneCudaLayer& p7 = writer(net, output_value(net, "p7"));
  EXPECT_EQ(p7.kind, BACKBONE_CUDA_LAYER_CONV);
  EXPECT_EQ(p7.relu, 0);
  const BackboneCudaLayer& relu = writer(net, p7.input);
  EXPECT_EQ(relu.kind, BACKBONE_CUDA_LAYER_RELU);
  EXPECT_EQ(relu.input, p6.output);
  EXPECT_EQ(of_kind(net, BACKBONE_CUDA_LAYER_RELU).size(), 1u);
}

TEST(CudaEngineFpnNet, NormsAsTheResNetsAndOutFeaturesSelection) {
  {
    const FPN fpn = test::make_seeded_fpn("R-18.yaml", false, "GN");
    const detail::CudaNet net = detail::build_cuda_net(fpn.bottom_up(), &fpn);
    // Each lateral and output convolution: CONV without bias, then its GROUP_NORM layer (the
    // bottom-up's FrozenBN is folded).
    const auto norms = of_kind(net, BACKBONE_CUDA_LAYER_GROUP_NORM);
    EXPECT_EQ(norms.size(), 8u);
    for (const auto* g : norms) {
      EXPECT_EQ(g->in_channels, 64);
      EXPECT_EQ(g->num_groups, 32);
      EXPECT_EQ(writer(net, g->input).bias, nullptr);
    }
    for (const auto* s : of_kind(net, BACKBONE_CUDA_LAYER_UPSAMPLE_ADD))
      EXPECT_EQ(writer(net, s->input).kind, BACKBONE_CUDA_LAYER_GROUP_NORM);
  }
  {
    const FPN fpn = test::make_seeded_fpn("R-18.yaml", false, "BN");
    const detail::CudaNet net = detail::build_cuda_net(fpn.bottom_up(), &fpn);
    EXPECT_TRUE(of_kind(net, BACKBONE_CUDA_LAYER_GROUP_NORM).empty());
    for (const auto* s : of_kind(net, BACKBONE_CUDA_LAYER_UPSAMPLE_ADD)) EXPECT_NE(writer(net, s->input).bias, nullptr);
  }
  {
    FPN fpn = test::make_seeded_fpn("R-18.yaml", false);
    fpn.set_out_features({"p3", "res5", "p6", "res2"});
    const detail::CudaNet net = detail::build_cuda_net(fpn.bottom_up(), &fpn);
    EXPECT_EQ(net.output_names, (std::vector<std::string>{"p3", "res5", "p6", "res2"}));
    EXPECT_EQ(net.outputs[1], net.fpn_inputs[3]);
    EXPECT_EQ(net.outputs[3], net.fpn_inputs[0]);
  }
}

// Values an UPSAMPLE_ADD reads keep their channels, and the coarser level stays in its buffer until
// the sum has read it; no two values alive at once share a buffer.
TEST(CudaEngineFpnLayout, StoredChannelsAndBufferLifetimes) {
  const FPN fpn = test::make_seeded_fpn("R-18.yaml", true, "GN");
  const detail::CudaNet net = detail::build_cuda_net(fpn.bottom_up(), &fpn);
  const BackboneCudaNetDesc d = net.desc();
  std::vector<int64_t> channels(static_cast<size_t>(net.num_values), -1);
  channels[0] = net.in_channels;
  for (const auto& l : net.layers) channels[static_cast<size_t>(l.output)] = l.out_channels;
  const auto stored = cuda_module::stored_channels(d, channels, 8);
  EXPECT_EQ(stored[0], 8);
  for (size_t v = 1; v < stored.size(); ++v) EXPECT_EQ(stored[v], channels[v]) << "value " << v;
  const auto last = cuda_module::last_reads(d);
  for (const auto* s : of_kind(net, BACKBONE_CUDA_LAYER_UPSAMPLE_ADD))
    EXPECT_GE(last[static_cast<size_t>(s->aux)], static_cast<int32_t>(s - net.layers.data()));
  const std::vector<std::size_t> bytes(static_cast<size_t>(net.num_values), 4096);
  const auto plan = cuda_module::assign_buffers(d, bytes, last);
  // born[v]: the layer writing v (-1 for the input); alive through last[v] (INT32_MAX: an output).
  std::vector<int32_t> born(static_cast<size_t>(net.num_values), -1);
  for (size_t i = 0; i < net.layers.size(); ++i) born[static_cast<size_t>(net.layers[i].output)] = static_cast<int32_t>(i);
  for (size_t a = 0; a < born.size(); ++a)
    for (size_t b = a + 1; b < born.size(); ++b) {
      const int32_t end_a = std::max(last[a], born[a]), end_b = std::max(last[b], born[b]);
      const bool overlap = born[a] <= end_b && born[b] <= end_a;
      if (overlap) EXPECT_NE(plan.slot_of[a], plan.slot_of[b]) << "values " << a << " and " << b;
    }
}

// ---------------------------------------------------------------------------------------------
// The CPU executor.

struct FpnVariant {
  bool retinanet;
  const char* norm;
  const char* fuse;
};

class CudaEngineFpnExecutor : public ::testing::TestWithParam<FpnVariant> {};

// The description through the kernels' CPU twins against the LibTorch engine's FPN (fp32): within
// 1e-4 of max |ref| per level, as every engine is held to against detectron2.
TEST_P(CudaEngineFpnExecutor, MatchesLibTorchEngine) {
#if !BACKBONE_HAVE_LIBTORCH
  GTEST_SKIP() << "this build has no LibTorch engine";
#else
  const FpnVariant v = GetParam();
  const FPN fpn = test::make_seeded_fpn("R-18.yaml", v.retinanet, v.norm, v.fuse);
  const Tensor x = make_input(2, 64, 96);
  const FeatureMaps out = detail::run_cuda_net_on_cpu(detail::build_cuda_net(fpn.bottom_up(), &fpn), x,
                                                      Precision::Float32);
  EngineOptions o;
  o.engine = "libtorch";
  const FeatureMaps ref = create_engine(fpn, o)->forward(x);
  ASSERT_EQ(out.size(), ref.size());
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i].first, ref[i].first);
    ASSERT_EQ(out[i].second.shape(), ref[i].second.shape()) << out[i].first;
    const double m = test::max_abs(ref[i].second), err = test::max_abs_diff(out[i].second, ref[i].second);
    EXPECT_GT(m, 0.0) << out[i].first;
    EXPECT_LE(err, 1e-4 * m) << out[i].first << ": max |out - ref| = " << err << ", max |ref| = " << m;
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaEngineFpnExecutor,
                         ::testing::Values(FpnVariant{false, "", "sum"}, FpnVariant{false, "BN", "avg"},
                                           FpnVariant{false, "GN", "sum"}, FpnVariant{false, "FrozenBN", "avg"},
                                           FpnVariant{true, "", "sum"}, FpnVariant{true, "LN", "avg"}),
                         [](const ::testing::TestParamInfo<FpnVariant>& info) {
                           std::string n = std::string(info.param.retinanet ? "RetinaNet" : "MaxPool") + "_" +
                                           (info.param.norm[0] ? info.param.norm : "NoNorm") + "_" + info.param.fuse;
                           return n;
                         });

// fp16 / bf16 rounding of the input, weights and every activation, as the module stores them.
TEST(CudaEngineFpnExecutorPrecision, ReducedPrecisionWithinBound) {
  const FPN fpn = test::make_seeded_fpn("R-18.yaml", true, "", "avg");
  const detail::CudaNet net = detail::build_cuda_net(fpn.bottom_up(), &fpn);
  const Tensor x = make_input(1, 64, 64);
  const FeatureMaps f32 = detail::run_cuda_net_on_cpu(net, x, Precision::Float32);
  for (const Precision p : {Precision::Float16, Precision::BFloat16}) {
    SCOPED_TRACE(precision_name(p));
    const FeatureMaps low = detail::run_cuda_net_on_cpu(net, x, p);
    ASSERT_EQ(low.size(), f32.size());
    for (size_t i = 0; i < f32.size(); ++i) {
      const double m = test::max_abs(f32[i].second), err = test::max_abs_diff(low[i].second, f32[i].second);
      EXPECT_GT(err, 0.0) << f32[i].first;
      EXPECT_LE(err, (p == Precision::Float16 ? 1e-2 : 6e-2) * m) << f32[i].first << ": " << err << " of " << m;
    }
  }
}

// An input whose levels are not exactly 2x apart is refused before anything runs, naming the
// FPN's size_divisibility.
TEST(CudaEngineFpnExecutorPrecision, UnpaddedInputIsAShapeError) {
  const FPN fpn = test::make_seeded_fpn("R-18.yaml", false);
  const detail::CudaNet net = detail::build_cuda_net(fpn.bottom_up(), &fpn);
  EXPECT_NO_THROW(detail::check_cuda_net_fpn_sizes(net, 64, 96));
  try {
    detail::run_cuda_net_on_cpu(net, make_input(1, 70, 64), Precision::Float32);
    FAIL() << "an input of 70x64 ran";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("size_divisibility (32)"), std::string::npos) << e.what();
  }
  // The sizes the module will compute: res5 of 70x64 is 3x2, res4 5x4.
  const auto hw = detail::cuda_net_value_sizes(net.desc(), 70, 64);
  EXPECT_EQ(hw[static_cast<size_t>(net.fpn_inputs[3])], (std::pair<int64_t, int64_t>{3, 2}));
  EXPECT_EQ(hw[static_cast<size_t>(net.fpn_inputs[2])], (std::pair<int64_t, int64_t>{5, 4}));
}

// detectron2's FPN goldens through the description and the CPU twins (fp32), every case of the
// manifest: both builders, norms, fuse types, in_features variants, deformable and X bottom-ups.
TEST(CudaEngineFpnGolden, ExecutorMatchesDetectron2) {
  const auto cases = test::fpn_golden::load_cases();
  if (cases.empty()) GTEST_SKIP() << "no " << test::fpn_golden::dir() << "manifest.json";
  for (const auto& c : cases) {
    const FPN model = test::fpn_golden::build_case(c);
    const detail::CudaNet net = detail::build_cuda_net(model.bottom_up(), &model);
    expect_well_formed(net);
    test::fpn_golden::expect_matches(
        detail::run_cuda_net_on_cpu(net, test::fpn_golden::input_of(c), Precision::Float32), c);
  }
}

}  // namespace
