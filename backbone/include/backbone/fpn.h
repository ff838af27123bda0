// SPDX-License-Identifier: Apache-2.0
// detectron2's modeling/backbone/fpn.py in C++: FPN (lateral 1x1 and output 3x3 convolutions on a
// ResNet bottom-up, top-down nearest 2x upsampling, sum or avg fusion), its top blocks
// LastLevelMaxPool (p6 = max_pool2d(p5, kernel 1, stride 2)) and LastLevelP6P7 (RetinaNet: p6 and p7
// from res5, ReLU between), and build_resnet_fpn_backbone / build_retinanet_resnet_fpn_backbone.
//
// Parameters carry the FPN module's own state_dict names: "bottom_up.stem.conv1.weight",
// "bottom_up.res2.0.conv1.norm.running_mean", "fpn_lateral2.weight", "fpn_output2.norm.weight",
// "top_block.p6.weight". An Engine (engine.h) runs it: create_engine(const FPN&, options) returns
// the levels named by out_features() (every p-level by default).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backbone/resnet.h"
#include "backbone/shape_spec.h"
#include "backbone/tensor.h"

namespace backbone {

class Config;

enum class TopBlockKind {
  None,
  LastLevelMaxPool,  // build_resnet_fpn_backbone: p6 from p5 by max_pool2d(kernel_size=1, stride=2)
  LastLevelP6P7,     // build_retinanet_resnet_fpn_backbone: p6 = conv(res5), p7 = conv(relu(p6))
};

struct TopBlock {
  TopBlockKind kind = TopBlockKind::None;
  std::string in_feature;  // "p5" (LastLevelMaxPool) or "res5" (LastLevelP6P7)
  int num_levels = 0;      // 1 or 2
  // LastLevelP6P7 only: nn.Conv2d(in, out, 3, 2, 1) with bias, no norm.
  Conv2d p6, p7;
};

class FPN {
 public:
  // detectron2's FPN(bottom_up, in_features, out_channels, norm, top_block, fuse_type) with each
  // of its asserts as a ConfigError: in_features non-empty, each an output of bottom_up
  // (MODEL.RESNETS.OUT_FEATURES), strides log2 contiguous ("Strides 16 4 are not log2
  // contiguous"), fuse_type "sum" or "avg", norm a name get_norm knows. The top block must be
  // computable as detectron2's forward computes it: LastLevelMaxPool reads p5 (in_features must end
  // at res5, stride 32), LastLevelP6P7 reads res5 (an output of bottom_up). Weights start as
  // init_weights(0).
  FPN(ResNet bottom_up, std::vector<std::string> in_features, int64_t out_channels, const std::string& norm = "",
      TopBlockKind top_block = TopBlockKind::None, const std::string& fuse_type = "sum");
  FPN(FPN&&) noexcept;
  FPN& operator=(FPN&&) noexcept;
  ~FPN();

  const ResNet& bottom_up() const { return bottom_up_; }
  ResNet& bottom_up() { return bottom_up_; }
  const std::vector<std::string>& in_features() const { return in_features_; }
  int64_t out_channels() const { return out_channels_; }
  const std::string& norm() const { return norm_; }
  const std::string& fuse_type() const { return fuse_type_; }
  // log2 of each in_feature's stride (2 for res2), in in_features order.
  const std::vector<int>& stages() const { return stages_; }

  // One per in_feature, in in_features order (high to low resolution; detectron2 keeps them
  // reversed in lateral_convs/output_convs and registers them as fpn_lateral{stage} /
  // fpn_output{stage}): 1x1 lateral, 3x3 output (padding 1); bias unless norm is set.
  std::vector<Conv2d> lateral_convs, output_convs;
  TopBlock top_block;

  // detectron2's output_shape(): every p-level ("p2" .. "p6", RetinaNet "p3" .. "p7") with
  // ShapeSpec(channels=out_channels, stride), high to low resolution.
  std::vector<std::pair<std::string, ShapeSpec>> output_shape() const;
  // The FPN's size_divisibility: the stride of its last in_feature (32 for res5). Inputs must be
  // padded to a multiple of it, as detectron2's model pads them (ImageList.from_tensors).
  int64_t size_divisibility() const { return size_divisibility_; }

  // The maps an engine returns, in this order: by default every p-level of output_shape(). May be
  // set to any of the p-levels and of bottom_up().out_features() (e.g. {"p3", "res5"}); unknown
  // names are a ConfigError naming the available ones.
  const std::vector<std::string>& out_features() const { return out_features_; }
  void set_out_features(std::vector<std::string> names);
  // {name: ShapeSpec} of out_features() (p-levels from output_shape(), res* from the bottom-up).
  std::vector<std::pair<std::string, ShapeSpec>> out_feature_shapes() const;

  // Every parameter and buffer with the FPN module's names, in detectron2's registration order
  // (fpn_lateral/fpn_output per stage, top_block, then bottom_up.*).
  StateDict state_dict() const;
  // As ResNet::load_state_dict, by the names of state_dict().
  ResNet::LoadResult load_state_dict(const StateDict& state);
  // Names of state_dict() that belong to the FPN itself (fpn_*, top_block.*), not to bottom_up.
  static bool is_fpn_entry(const std::string& name);

  // The bottom-up's init_weights(seed) and, for the FPN's own layers, detectron2's c2_xavier_fill
  // (kaiming_uniform_(a=1): U(-sqrt(3/fan_in), sqrt(3/fan_in)), bias 0) and identity norms, from a
  // generator seeded with `seed` (not bit-identical to PyTorch's).
  void init_weights(uint64_t seed = 0);
  // The FPN's own layers only (fpn_*, top_block.*), as init_weights does them.
  void init_fpn_weights(uint64_t seed = 0);

 private:
  ResNet bottom_up_;
  std::vector<std::string> in_features_;
  std::vector<int> stages_;
  int64_t out_channels_ = 0;
  std::string norm_, fuse_type_;
  int64_t size_divisibility_ = 0;
  std::vector<std::pair<std::string, int>> out_strides_;  // p-levels
  std::vector<std::string> out_features_;
};

// The backbone names of MODEL.BACKBONE.NAME this project builds.
bool is_fpn_backbone_name(const std::string& name);  // the two FPN builders
// "build_resnet_backbone, build_resnet_fpn_backbone or build_retinanet_resnet_fpn_backbone"
std::string supported_backbone_names();

// detectron2's builders, with every check as ConfigError (MODEL.FPN.IN_FEATURES, OUT_CHANNELS,
// NORM, FUSE_TYPE; the bottom-up from build_resnet_backbone).
FPN build_resnet_fpn_backbone(const Config& cfg, const ShapeSpec& input_shape = ShapeSpec{3});
FPN build_retinanet_resnet_fpn_backbone(const Config& cfg, const ShapeSpec& input_shape = ShapeSpec{3});

}  // namespace backbone
