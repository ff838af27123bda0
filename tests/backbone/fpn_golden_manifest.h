// SPDX-License-Identifier: Apache-2.0
// detectron2's FPN goldens (tests/data/fpn/manifest.json, made by tests/data/make_fpn_goldens.py)
// for the cuda engine's tests: each case built from its config.yaml by its builder, its checkpoint
// loaded strictly (a ResNet-only checkpoint: the selection is the bottom-up outputs the references
// hold), and the features compared per level with the case's tolerance (1e-4 of max |ref|; 2e-3
// with deformable stages). No manifest: no cases (the tests using it skip).
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "test_util.h"

namespace backbone::test::fpn_golden {

using nlohmann::json;

inline const std::string& dir() {
  static const std::string d = std::string(BACKBONE_TEST_DATA_DIR) + "/fpn/";
  return d;
}

inline std::vector<json> load_cases() {
  std::ifstream f(dir() + "manifest.json");
  if (!f) return {};
  const json manifest = json::parse(f);
  return std::vector<json>(manifest["cases"].begin(), manifest["cases"].end());
}

inline std::string path_of(const json& c, const char* key) { return dir() + c[key].get<std::string>(); }

// The levels the references hold, in the order the FPN returns them.
inline std::vector<std::string> compared_features(const json& c) {
  std::vector<std::string> names;
  if (c["bottom_up_only"].get<bool>()) {
    for (const auto& [name, file] : c["outputs"].items()) names.push_back(name);
    return names;
  }
  for (const json& s : c["output_shape"]) names.push_back(s[0].get<std::string>());
  return names;
}

inline FPN build_case(const json& c) {
  Config cfg;
  cfg.merge_from_file(path_of(c, "config"));
  FPN model = c["backbone_name"] == "build_retinanet_resnet_fpn_backbone" ? build_retinanet_resnet_fpn_backbone(cfg)
                                                                          : build_resnet_fpn_backbone(cfg);
  load_checkpoint(model, path_of(c, "weights"), /*strict=*/true);
  if (c["bottom_up_only"].get<bool>()) model.set_out_features(compared_features(c));
  return model;
}

inline Tensor input_of(const json& c) { return load_npy(path_of(c, "input")); }

inline void expect_matches(const FeatureMaps& out, const json& c) {
  SCOPED_TRACE(c["name"].get<std::string>());
  const auto names = compared_features(c);
  ASSERT_EQ(out.size(), names.size());
  const double tol = c["tolerance"].get<double>();
  for (size_t i = 0; i < names.size(); ++i) {
    const Tensor t = out[i].second.to(Device::cpu());
    EXPECT_EQ(out[i].first, names[i]);
    const Tensor ref = load_npy(dir() + c["outputs"][names[i]].get<std::string>());
    ASSERT_EQ(t.shape(), ref.shape()) << names[i];
    const double max_ref = max_abs(ref), max_err = max_abs_diff(t, ref);
    EXPECT_GT(max_ref, 0.0) << names[i];
    EXPECT_LE(max_err, tol * max_ref) << names[i] << ": max |out - ref| = " << max_err << ", max |ref| = " << max_ref
                                      << ", tolerance " << tol;
  }
}

}  // namespace backbone::test::fpn_golden
