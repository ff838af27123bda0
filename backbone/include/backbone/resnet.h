// SPDX-License-Identifier: Apache-2.0
// detectron2's modeling/backbone/resnet.py in C++: BasicStem, BasicBlock, BottleneckBlock,
// DeformBottleneckBlock, ResNet (make_stage, make_default_stages, output_shape, freeze) and
// build_resnet_backbone. These classes describe the network and hold its parameters under
// detectron2's names ("res2.0.conv1.weight", "stem.conv1.norm.running_mean"); an Engine
// (engine.h) runs them.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backbone/shape_spec.h"
#include "backbone/tensor.h"

namespace backbone {

class Config;

// Ordered name -> tensor map, as a PyTorch state_dict.
using StateDict = std::vector<std::pair<std::string, Tensor>>;

// A normalisation layer as detectron2's get_norm(norm, channels) builds it. Kinds:
// "" (none), "BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N" (all plain BatchNorm2d at
// inference, eps 1e-5), "FrozenBN" (eps 1e-5), "GN" (GroupNorm with 32 groups, eps 1e-5), "LN"
// (detectron2's channel LayerNorm, eps 1e-6).
struct Norm {
  std::string kind;  // as given to get_norm
  int64_t channels = 0;
  Tensor weight, bias, running_mean, running_var;  // running_* only for the BN family

  bool empty() const { return kind.empty(); }
  bool is_batch_norm() const;  // BN, SyncBN variants and FrozenBN
  double eps() const;          // 1e-5, or 1e-6 for LN
  int64_t num_groups() const;  // 32 for GN
};

// Throws ConfigError unless `kind` is one of the names get_norm knows.
void check_norm_name(const std::string& kind);

// detectron2.layers.Conv2d: a convolution with an optional norm (the activation is the block's).
struct Conv2d {
  int64_t in_channels = 0, out_channels = 0;
  int64_t kernel_size = 1, stride = 1, padding = 0, dilation = 1, groups = 1;
  Tensor weight;  // [out, in/groups, k, k]
  Tensor bias;    // [out] or undefined
  Norm norm;
};

// detectron2's DeformConv / ModulatedDeformConv (bias-free) with its offset conv conv2_offset.
struct DeformConv2d : Conv2d {
  int64_t deformable_groups = 1;
  bool modulated = false;
};

enum class BlockKind { BasicStem, BasicBlock, BottleneckBlock, DeformBottleneckBlock };

// detectron2's CNNBlockBase.
class CNNBlockBase {
 public:
  CNNBlockBase(BlockKind kind, int64_t in_channels, int64_t out_channels, int64_t stride);
  virtual ~CNNBlockBase() = default;
  BlockKind kind() const { return kind_; }
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t stride() const { return stride_; }
  // Training-only in detectron2 (requires_grad off, BN -> FrozenBN); recorded here.
  void freeze() { frozen_ = true; }
  bool frozen() const { return frozen_; }
  // The convolutions in the order of detectron2's registration, with their names relative to the
  // block ("shortcut", "conv1", ..., "conv2_offset").
  virtual std::vector<std::pair<std::string, Conv2d*>> convs() = 0;
  std::vector<std::pair<std::string, const Conv2d*>> convs() const;

 private:
  BlockKind kind_;
  int64_t in_channels_, out_channels_, stride_;
  bool frozen_ = false;
};

// conv1 (7x7, stride 2, padding 3) + norm + ReLU + max_pool2d(3, stride 2, padding 1). Stride 4.
class BasicStem : public CNNBlockBase {
 public:
  explicit BasicStem(int64_t in_channels = 3, int64_t out_channels = 64, const std::string& norm = "BN");
  using CNNBlockBase::convs;
  std::vector<std::pair<std::string, Conv2d*>> convs() override;
  Conv2d conv1;
};

class BasicBlock : public CNNBlockBase {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride = 1, const std::string& norm = "BN");
  using CNNBlockBase::convs;
  std::vector<std::pair<std::string, Conv2d*>> convs() override;
  std::optional<Conv2d> shortcut;
  Conv2d conv1, conv2;
};

// Arguments of BottleneckBlock / DeformBottleneckBlock (and of make_stage for them).
struct BottleneckArgs {
  int64_t bottleneck_channels = 0;
  int64_t stride = 1;
  int64_t num_groups = 1;
  std::string norm = "BN";
  bool stride_in_1x1 = false;
  int64_t dilation = 1;
  // DeformBottleneckBlock only
  bool deform_modulated = false;
  int64_t deform_num_groups = 1;
};

class BottleneckBlock : public CNNBlockBase {
 public:
  BottleneckBlock(int64_t in_channels, int64_t out_channels, const BottleneckArgs& args);
  using CNNBlockBase::convs;
  std::vector<std::pair<std::string, Conv2d*>> convs() override;
  std::optional<Conv2d> shortcut;
  Conv2d conv1, conv2, conv3;
  int64_t dilation = 1;

 protected:
  BottleneckBlock(BlockKind kind, int64_t in_channels, int64_t out_channels, const BottleneckArgs& args);
};

class DeformBottleneckBlock : public BottleneckBlock {
 public:
  DeformBottleneckBlock(int64_t in_channels, int64_t out_channels, const BottleneckArgs& args);
  using CNNBlockBase::convs;
  std::vector<std::pair<std::string, Conv2d*>> convs() override;
  bool deform_modulated = false;
  int64_t deform_num_groups = 1;
  Conv2d conv2_offset;  // 18*G (v1) or 27*G (v2) channels, with bias, no norm
};

using Stage = std::vector<std::unique_ptr<CNNBlockBase>>;

// make_stage arguments. A `*_per_block` vector, when not empty, must have num_blocks entries and
// gives each block its own value; it cannot be combined with the same argument given for all
// blocks (detectron2: "Cannot call make_stage with both stride_per_block and stride!").
struct StageArgs {
  BlockKind block_class = BlockKind::BottleneckBlock;
  int64_t num_blocks = 1;
  int64_t in_channels = 0, out_channels = 0;
  BottleneckArgs block;  // for BasicBlock only stride and norm are used
  std::vector<int64_t> stride_per_block;
  std::vector<int64_t> dilation_per_block;
  std::vector<int64_t> bottleneck_channels_per_block;
  std::vector<int64_t> num_groups_per_block;
  std::vector<std::string> norm_per_block;
  std::vector<bool> stride_in_1x1_per_block;
  std::vector<bool> deform_modulated_per_block;
  std::vector<int64_t> deform_num_groups_per_block;
  // Whether the plain (all-blocks) argument was given explicitly; set by the caller that mirrors
  // a Python call so that the both-given check can fire.
  bool stride_given = false, dilation_given = false;
};

class ResNet {
 public:
  // detectron2's ResNet(stem, stages, num_classes, out_features, freeze_at). Stages after the
  // last requested res* output are not built. Empty out_features means the last layer.
  ResNet(std::unique_ptr<BasicStem> stem, std::vector<Stage> stages, std::optional<int64_t> num_classes = std::nullopt,
         std::vector<std::string> out_features = {}, int freeze_at = 0);
  ResNet(ResNet&&) noexcept;
  ResNet& operator=(ResNet&&) noexcept;
  ~ResNet();

  static Stage make_stage(const StageArgs& args);
  // Stages of ResNet-{18,34,50,101,152}: BasicBlock below 50, BottleneckBlock from 50 on.
  // `block` carries the other arguments (norm, stride_in_1x1, num_groups, ...); the
  // bottleneck_channels of each stage is out_channels / 4, as detectron2 sets it.
  static std::vector<Stage> make_default_stages(int depth, std::optional<BlockKind> block_class = std::nullopt,
                                                const BottleneckArgs& block = {});

  ResNet& freeze(int freeze_at = 0);
  int freeze_at() const { return freeze_at_; }

  // {name: ShapeSpec(channels, stride)} for each out_feature, in out_features order.
  std::vector<std::pair<std::string, ShapeSpec>> output_shape() const;
  const std::vector<std::string>& out_features() const { return out_features_; }
  // Names of the built stages ("res2", ...).
  const std::vector<std::string>& stage_names() const { return stage_names_; }
  int64_t size_divisibility() const { return 0; }
  std::optional<int64_t> num_classes() const { return num_classes_; }

  BasicStem& stem() { return *stem_; }
  const BasicStem& stem() const { return *stem_; }
  std::vector<Stage>& stages() { return stages_; }
  const std::vector<Stage>& stages() const { return stages_; }
  // linear (num_classes x channels) after global average pooling, when num_classes is set.
  Tensor linear_weight, linear_bias;

  // Every parameter and buffer, with detectron2's names and shapes, in registration order.
  StateDict state_dict() const;
  // Replaces parameters by name. Shapes must match exactly. Returns the names of the model's
  // entries that `state` lacks (missing) and of `state` entries the model lacks (unexpected).
  struct LoadResult {
    std::vector<std::string> missing, unexpected;
  };
  LoadResult load_state_dict(const StateDict& state);

  // detectron2's initialisation (c2_msra_fill for convolutions, zero conv2_offset, identity
  // norms, N(0, 0.01) linear) from a fixed seed. Not bit-identical to PyTorch's generator.
  void init_weights(uint64_t seed = 0);

 private:
  std::unique_ptr<BasicStem> stem_;
  std::vector<Stage> stages_;
  std::vector<std::string> stage_names_;
  std::optional<int64_t> num_classes_;
  std::vector<std::string> out_features_;
  std::map<std::string, int64_t> feature_channels_, feature_strides_;
  int freeze_at_ = 0;
};

// build_resnet_backbone(cfg, input_shape) with every check detectron2 makes, as ConfigError.
ResNet build_resnet_backbone(const Config& cfg, const ShapeSpec& input_shape = ShapeSpec{3});

}  // namespace backbone
