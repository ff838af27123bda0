// SPDX-License-Identifier: Apache-2.0
// A full-width network from a shipped config with seeded weights and BatchNorm statistics far from
// the identity, so that folding them into the convolutions matters (engine tests).
#pragma once

#include <random>
#include <string>
#include <vector>

#include "backbone/config.h"
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

}  // namespace backbone::test
