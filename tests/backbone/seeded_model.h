// SPDX-License-Identifier: Apache-2.0
// A full-width network from a shipped config with seeded weights and BatchNorm statistics far from
// the identity, so that folding them into the convolutions matters (engine tests); the same for an
// FPN on top of it.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "backbone/config.h"
#include "backbone/fpn.h"
#include "backbone/resnet.h"

namespace backbone::test {

// `out_features`: MODEL.RESNETS.OUT_FEATURES as a Python list, e.g. "['res2', 'res3', 'res4', 'res5']".
inline ResNet make_seeded_model(const std::string& config, const std::string& out_features,
                                const std::vector<std::string>& overrides = {}) {
  std::vector<std::string> o = {"MODEL.RESNETS.OUT_FEATURES", out_features};
  o.insert(o.end(), overrides.begin(), overrides.end());
  Config cfg = load_config(std::string(BACKBONE_SOURCE_DIR) + "/configs/" + config, o);
  ResNet model = build_resnet_backbone(cfg, ShapeSpec{3});
  model.init_weights(7);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(0.5f, 1.5f), c(-0.2f, 0.2f);
  auto fill = [&](Tensor& t, auto& dist) {
    if (!t.defined()) return;
    float* p = t.data_ptr<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  };
  auto perturb = [&](Conv2d& conv) {
    fill(conv.norm.weight, u);
    fill(conv.norm.bias, c);
    fill(conv.norm.running_mean, c);
    fill(conv.norm.running_var, u);
  };
  perturb(model.stem().conv1);
  for (auto& stage : model.stages())
    for (auto& block : stage)
      for (auto& [name, conv] : block->convs()) perturb(*conv);
  return model;
}

// detectron2's FPN builders on a seeded bottom-up (res2..res5): `retinanet` selects
// build_retinanet_resnet_fpn_backbone (LastLevelP6P7, in_features res3..res5), else
// build_resnet_fpn_backbone (LastLevelMaxPool, res2..res5). The FPN's own layers get
// c2_xavier_fill's distribution and, with a norm, statistics / affine parameters far from the identity.
inline FPN make_seeded_fpn(const std::string& config, bool retinanet, const std::string& norm = "",
                           const std::string& fuse_type = "sum", int64_t out_channels = 64,
                           const std::vector<std::string>& overrides = {}) {
  std::vector<std::string> o = {"MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
                                "MODEL.FPN.IN_FEATURES",
                                retinanet ? "['res3', 'res4', 'res5']" : "['res2', 'res3', 'res4', 'res5']",
                                "MODEL.FPN.OUT_CHANNELS", std::to_string(out_channels),
                                "MODEL.FPN.NORM", norm.empty() ? "''" : norm,
                                "MODEL.FPN.FUSE_TYPE", fuse_type};
  o.insert(o.end(), overrides.begin(), overrides.end());
  Config cfg = load_config(std::string(BACKBONE_SOURCE_DIR) + "/configs/" + config, o);
  FPN fpn = retinanet ? build_retinanet_resnet_fpn_backbone(cfg) : build_resnet_fpn_backbone(cfg);
  fpn.init_weights(7);
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> u(0.5f, 1.5f), c(-0.2f, 0.2f);
  auto fill = [&](Tensor& t, auto& dist) {
    if (!t.defined()) return;
    float* p = t.data_ptr<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  };
  auto perturb = [&](Conv2d& conv) {
    fill(conv.norm.weight, u);
    fill(conv.norm.bias, c);
    fill(conv.norm.running_mean, c);
    fill(conv.norm.running_var, u);
    fill(conv.bias, c);
  };
  ResNet& model = fpn.bottom_up();
  perturb(model.stem().conv1);
  for (auto& stage : model.stages())
    for (auto& block : stage)
      for (auto& [name, conv] : block->convs()) perturb(*conv);
  for (auto& conv : fpn.lateral_convs) perturb(conv);
  for (auto& conv : fpn.output_convs) perturb(conv);
  if (fpn.top_block.kind == TopBlockKind::LastLevelP6P7) {
    perturb(fpn.top_block.p6);
    perturb(fpn.top_block.p7);
  }
  return fpn;
}

}  // namespace backbone::test
