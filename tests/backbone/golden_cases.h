// SPDX-License-Identifier: Apache-2.0
// The golden cases of tests/data/resnet (made by tests/data/make_goldens.py: detectron2's own outputs):
// reading the manifest and rebuilding each case's ResNet with the C++ API. Shared by golden_test and
// cuda_engine_test.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "backbone/backbone.h"

namespace backbone::test::golden {

using nlohmann::json;

inline const std::string kDir = std::string(BACKBONE_TEST_DATA_DIR) + "/resnet/";

inline std::vector<json> load_cases() {
  std::ifstream f(kDir + "manifest.json");
  if (!f) return {};
  json m = json::parse(f);
  return m["cases"].get<std::vector<json>>();
}

inline BlockKind block_kind(const std::string& s) {
  if (s == "BasicBlock") return BlockKind::BasicBlock;
  if (s == "BottleneckBlock") return BlockKind::BottleneckBlock;
  if (s == "DeformBottleneckBlock") return BlockKind::DeformBottleneckBlock;
  throw std::runtime_error("unknown block_class " + s);
}

inline ResNet build_from_stages(const json& c) {
  const json& st = c["stem"];
  auto stem = std::make_unique<BasicStem>(st["in_channels"].get<int64_t>(), st["out_channels"].get<int64_t>(),
                                          st["norm"].get<std::string>());
  std::vector<Stage> stages;
  for (const json& s : c["stages"]) {
    StageArgs a;
    a.block_class = block_kind(s["block_class"]);
    a.num_blocks = s["num_blocks"];
    a.in_channels = s["in_channels"];
    a.out_channels = s["out_channels"];
    a.block.norm = s.value("norm", "BN");
    a.block.bottleneck_channels = s.value("bottleneck_channels", int64_t{0});
    a.block.num_groups = s.value("num_groups", int64_t{1});
    a.block.stride_in_1x1 = s.value("stride_in_1x1", false);
    a.block.dilation = s.value("dilation", int64_t{1});
    a.block.stride = s.value("stride", int64_t{1});
    a.block.deform_modulated = s.value("deform_modulated", false);
    a.block.deform_num_groups = s.value("deform_num_groups", int64_t{1});
    if (s.contains("stride_per_block")) a.stride_per_block = s["stride_per_block"].get<std::vector<int64_t>>();
    if (s.contains("dilation_per_block")) a.dilation_per_block = s["dilation_per_block"].get<std::vector<int64_t>>();
    stages.push_back(ResNet::make_stage(a));
  }
  std::optional<int64_t> num_classes;
  if (c.contains("num_classes") && !c["num_classes"].is_null()) num_classes = c["num_classes"].get<int64_t>();
  return ResNet(std::move(stem), std::move(stages), num_classes, c["out_features"].get<std::vector<std::string>>(),
                c.value("freeze_at", 0));
}

inline ResNet build_case(const json& c) {
  if (c["model"] == "config") {
    Config cfg;
    cfg.merge_from_file(kDir + c["config"].get<std::string>());
    return build_resnet_backbone(cfg, ShapeSpec{3});
  }
  return build_from_stages(c);
}

}  // namespace backbone::test::golden
