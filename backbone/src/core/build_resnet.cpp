// SPDX-License-Identifier: Apache-2.0
// build_resnet_backbone(cfg, input_shape): detectron2's builder with each of its asserts as a
// ConfigError that names the key and the value.
#include <algorithm>
#include <map>
#include <string>

#include "backbone/config.h"
#include "backbone/error.h"
#include "backbone/fpn.h"
#include "backbone/resnet.h"
#include "core/model_limits.h"

namespace backbone {

namespace {

using detail::kMaxChannels;
using detail::kMaxModelParameters;

// A count read from the config: between `lo` and `hi`, or a ConfigError naming the key, the
// bounds and the value.
void check_range(const char* key, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi)
    throw ConfigError(std::string(key) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                      ", found " + std::to_string(value));
}

// Parameters of one convolution as make_conv builds it (weights, bias, norm parameters and
// statistics). Every factor is bounded by kMaxChannels and 7, so the result fits an int64.
int64_t conv_parameters(int64_t in, int64_t out, int64_t k, int64_t groups, bool bias, const std::string& norm) {
  int64_t n = out * (in / groups) * k * k + (bias ? out : 0);
  if (norm == "GN" || norm == "LN") n += 2 * out;
  else if (!norm.empty()) n += 4 * out;  // the BN family: weight, bias, running_mean, running_var
  return n;
}

}  // namespace

ResNet build_resnet_backbone(const Config& cfg, const ShapeSpec& input_shape) {
  if (!input_shape.channels || *input_shape.channels <= 0)
    throw ConfigError("build_resnet_backbone: input_shape.channels must be set to a positive number");
  const std::string name = cfg.get_string("MODEL.BACKBONE.NAME");
  if (name != "build_resnet_backbone" && !is_fpn_backbone_name(name))
    throw ConfigError("MODEL.BACKBONE.NAME is \"" + name + "\": this project builds " + supported_backbone_names() +
                      " (a ResNet, or an FPN on one)");

  // fmt: off
  const std::string norm               = cfg.get_string("MODEL.RESNETS.NORM");
  // FREEZE_AT below 0 freezes nothing and above 5 everything: clamped, it keeps its meaning as an int.
  const int freeze_at = static_cast<int>(std::clamp<int64_t>(cfg.get_int("MODEL.BACKBONE.FREEZE_AT"), -1, 6));
  const std::vector<std::string> out_features = cfg.get_string_list("MODEL.RESNETS.OUT_FEATURES");
  const int64_t depth                  = cfg.get_int("MODEL.RESNETS.DEPTH");
  const int64_t num_groups             = cfg.get_int("MODEL.RESNETS.NUM_GROUPS");
  const int64_t width_per_group        = cfg.get_int("MODEL.RESNETS.WIDTH_PER_GROUP");
  int64_t in_channels                  = cfg.get_int("MODEL.RESNETS.STEM_OUT_CHANNELS");
  int64_t out_channels                 = cfg.get_int("MODEL.RESNETS.RES2_OUT_CHANNELS");
  const bool stride_in_1x1             = cfg.get_bool("MODEL.RESNETS.STRIDE_IN_1X1");
  const int64_t res5_dilation          = cfg.get_int("MODEL.RESNETS.RES5_DILATION");
  const std::vector<bool> deform_on_per_stage = cfg.get_bool_list("MODEL.RESNETS.DEFORM_ON_PER_STAGE");
  const bool deform_modulated          = cfg.get_bool("MODEL.RESNETS.DEFORM_MODULATED");
  const int64_t deform_num_groups      = cfg.get_int("MODEL.RESNETS.DEFORM_NUM_GROUPS");
  // fmt: on

  try {
    check_norm_name(norm);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("MODEL.RESNETS.NORM: ") + e.what());
  }
  // Every count is checked before anything is allocated: zero and negative counts are errors, and
  // the bounds (README.md, "Limits") keep the model within memory and each product within int64.
  check_range("input_shape.channels", *input_shape.channels, 1, kMaxChannels);
  check_range("MODEL.RESNETS.STEM_OUT_CHANNELS", in_channels, 1, kMaxChannels);
  check_range("MODEL.RESNETS.RES2_OUT_CHANNELS", out_channels, 1, kMaxChannels);
  check_range("MODEL.RESNETS.NUM_GROUPS", num_groups, 1, kMaxChannels);
  check_range("MODEL.RESNETS.WIDTH_PER_GROUP", width_per_group, 1, kMaxChannels);
  check_range("MODEL.RESNETS.DEFORM_NUM_GROUPS", deform_num_groups, 1, kMaxChannels);
  int64_t bottleneck_channels = num_groups * width_per_group;  // both factors checked <= 2^16: no overflow
  if (bottleneck_channels > kMaxChannels)
    throw ConfigError("MODEL.RESNETS.NUM_GROUPS * MODEL.RESNETS.WIDTH_PER_GROUP (the bottleneck channels of res2) "
                      "must be at most " + std::to_string(kMaxChannels) + ", found " + std::to_string(num_groups) +
                      " * " + std::to_string(width_per_group) + " = " + std::to_string(bottleneck_channels));

  if (res5_dilation != 1 && res5_dilation != 2)
    throw ConfigError("res5_dilation cannot be " + std::to_string(res5_dilation) +
                      ". (MODEL.RESNETS.RES5_DILATION must be 1 or 2)");

  static const std::map<int64_t, std::vector<int64_t>> kBlocksPerStage = {
      {18, {2, 2, 2, 2}}, {34, {3, 4, 6, 3}}, {50, {3, 4, 6, 3}}, {101, {3, 4, 23, 3}}, {152, {3, 8, 36, 3}}};
  auto it = kBlocksPerStage.find(depth);
  if (it == kBlocksPerStage.end())
    throw ConfigError("MODEL.RESNETS.DEPTH must be one of 18, 34, 50, 101, 152; got " + std::to_string(depth));
  const std::vector<int64_t>& num_blocks_per_stage = it->second;

  if (deform_on_per_stage.size() != 4)
    throw ConfigError("MODEL.RESNETS.DEFORM_ON_PER_STAGE must have 4 entries (res2, res3, res4, res5); got " +
                      std::to_string(deform_on_per_stage.size()));
  bool any_deform = false;
  for (bool d : deform_on_per_stage) any_deform = any_deform || d;

  if (depth == 18 || depth == 34) {
    if (out_channels != 64)
      throw ConfigError("Must set MODEL.RESNETS.RES2_OUT_CHANNELS = 64 for R18/R34 (found " +
                        std::to_string(out_channels) + ")");
    if (any_deform) throw ConfigError("MODEL.RESNETS.DEFORM_ON_PER_STAGE unsupported for R18/R34");
    if (res5_dilation != 1)
      throw ConfigError("Must set MODEL.RESNETS.RES5_DILATION = 1 for R18/R34 (found " +
                        std::to_string(res5_dilation) + ")");
    if (num_groups != 1)
      throw ConfigError("Must set MODEL.RESNETS.NUM_GROUPS = 1 for R18/R34 (found " + std::to_string(num_groups) + ")");
  }

  // Stages after the last requested res* feature are not built (ResNet.__init__ drops them too).
  int num_stages = out_features.empty() ? 4 : 0;
  for (const auto& f : out_features)
    for (int i = 0; i < 4; ++i)
      if (f == "res" + std::to_string(i + 2)) num_stages = std::max(num_stages, i + 1);

  // The widths of the stages that are built (each stage doubles them) and the parameters of the
  // whole model, before any of it is allocated.
  {
    const bool basic = depth == 18 || depth == 34;
    const int64_t offset_per_group = deform_modulated ? 27 : 18;
    int64_t parameters = conv_parameters(*input_shape.channels, in_channels, 7, 1, false, norm);
    int64_t in = in_channels, out = out_channels, bottleneck = bottleneck_channels;
    for (int idx = 0; idx < num_stages; ++idx) {
      const std::string stage = "res" + std::to_string(idx + 2);
      if (out > kMaxChannels)
        throw ConfigError("MODEL.RESNETS.RES2_OUT_CHANNELS = " + std::to_string(out_channels) + " makes " + stage +
                          " " + std::to_string(out) + " channels wide (each stage doubles it); at most " +
                          std::to_string(kMaxChannels) + " are allowed");
      if (!basic && bottleneck > kMaxChannels)
        throw ConfigError("MODEL.RESNETS.NUM_GROUPS * MODEL.RESNETS.WIDTH_PER_GROUP = " +
                          std::to_string(bottleneck_channels) + " makes the bottleneck of " + stage + " " +
                          std::to_string(bottleneck) + " channels wide (each stage doubles it); at most " +
                          std::to_string(kMaxChannels) + " are allowed");
      const bool deform = !basic && deform_on_per_stage[idx];
      if (deform && offset_per_group * deform_num_groups > kMaxChannels)
        throw ConfigError("MODEL.RESNETS.DEFORM_NUM_GROUPS = " + std::to_string(deform_num_groups) + " asks for " +
                          std::to_string(offset_per_group * deform_num_groups) + " offset channels in " + stage +
                          "; at most " + std::to_string(kMaxChannels) + " are allowed");
      for (int64_t b = 0; b < num_blocks_per_stage[idx]; ++b) {
        const int64_t block_in = b == 0 ? in : out;
        if (block_in != out) parameters += conv_parameters(block_in, out, 1, 1, false, norm);
        if (basic) {
          parameters += conv_parameters(block_in, out, 3, 1, false, norm) +
                        conv_parameters(out, out, 3, 1, false, norm);
        } else {
          parameters += conv_parameters(block_in, bottleneck, 1, 1, false, norm) +
                        conv_parameters(bottleneck, bottleneck, 3, num_groups, false, norm) +
                        conv_parameters(bottleneck, out, 1, 1, false, norm);
          if (deform) parameters += conv_parameters(bottleneck, offset_per_group * deform_num_groups, 3, 1, true, "");
        }
      }
      in = out;
      out *= 2;
      bottleneck *= 2;
    }
    if (parameters > kMaxModelParameters)
      throw ConfigError("the ResNet that MODEL.RESNETS describes (DEPTH " + std::to_string(depth) +
                        ", STEM_OUT_CHANNELS " + std::to_string(in_channels) + ", RES2_OUT_CHANNELS " +
                        std::to_string(out_channels) + ", NUM_GROUPS " + std::to_string(num_groups) +
                        ", WIDTH_PER_GROUP " + std::to_string(width_per_group) + ") has " +
                        std::to_string(parameters) + " parameters, more than the " +
                        std::to_string(kMaxModelParameters) + " a model may have");
  }

  auto stem = std::make_unique<BasicStem>(*input_shape.channels, in_channels, norm);

  std::vector<Stage> stages;
  for (int idx = 0; idx < num_stages; ++idx) {
    const int stage_idx = idx + 2;
    // res5_dilation is used this way as a convention in R-FCN & Deformable Conv paper
    const int64_t dilation = stage_idx == 5 ? res5_dilation : 1;
    const int64_t first_stride = (idx == 0 || (stage_idx == 5 && dilation == 2)) ? 1 : 2;
    StageArgs a;
    a.num_blocks = num_blocks_per_stage[idx];
    a.stride_per_block.assign(a.num_blocks, 1);
    a.stride_per_block[0] = first_stride;
    a.in_channels = in_channels;
    a.out_channels = out_channels;
    a.block.norm = norm;
    if (depth == 18 || depth == 34) {
      a.block_class = BlockKind::BasicBlock;
    } else {
      a.block.bottleneck_channels = bottleneck_channels;
      a.block.stride_in_1x1 = stride_in_1x1;
      a.block.dilation = dilation;
      a.block.num_groups = num_groups;
      if (deform_on_per_stage[idx]) {
        a.block_class = BlockKind::DeformBottleneckBlock;
        a.block.deform_modulated = deform_modulated;
        a.block.deform_num_groups = deform_num_groups;
      } else {
        a.block_class = BlockKind::BottleneckBlock;
      }
    }
    stages.push_back(ResNet::make_stage(a));
    in_channels = out_channels;
    out_channels *= 2;
    bottleneck_channels *= 2;
  }
  return ResNet(std::move(stem), std::move(stages), std::nullopt, out_features, freeze_at);
}

}  // namespace backbone
