// SPDX-License-Identifier: Apache-2.0
// detectron2/modeling/backbone/fpn.py: the network description and its parameters.
#include "backbone/fpn.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "backbone/config.h"
#include "backbone/error.h"
#include "core/layers.h"
#include "core/model_limits.h"

namespace backbone {

namespace {

std::string list_text(const std::vector<std::string>& names) {
  std::string s = "[";
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s + "]";
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// Every slot of the FPN's own layers, in detectron2's registration order.
template <typename F>
void for_each_fpn_slot(FPN& fpn, F&& f) {
  for (size_t i = 0; i < fpn.in_features().size(); ++i) {
    const std::string stage = std::to_string(fpn.stages()[i]);
    detail::for_each_conv_slot("fpn_lateral" + stage, fpn.lateral_convs[i], f);
    detail::for_each_conv_slot("fpn_output" + stage, fpn.output_convs[i], f);
  }
  if (fpn.top_block.kind == TopBlockKind::LastLevelP6P7) {
    detail::for_each_conv_slot("top_block.p6", fpn.top_block.p6, f);
    detail::for_each_conv_slot("top_block.p7", fpn.top_block.p7, f);
  }
}

const char* const kBottomUp = "bottom_up.";

}  // namespace

FPN::FPN(ResNet bottom_up, std::vector<std::string> in_features, int64_t out_channels, const std::string& norm,
         TopBlockKind top_block_kind, const std::string& fuse_type)
    : bottom_up_(std::move(bottom_up)),
      in_features_(std::move(in_features)),
      out_channels_(out_channels),
      norm_(norm),
      fuse_type_(fuse_type) {
  // assert in_features, in_features
  if (in_features_.empty()) throw ConfigError("FPN: in_features is empty (MODEL.FPN.IN_FEATURES)");
  // assert fuse_type in {"avg", "sum"}
  if (fuse_type_ != "sum" && fuse_type_ != "avg")
    throw ConfigError("FPN: fuse_type must be \"sum\" or \"avg\" (MODEL.FPN.FUSE_TYPE), found \"" + fuse_type_ + "\"");
  if (out_channels_ < 1 || out_channels_ > detail::kMaxChannels)
    throw ConfigError("MODEL.FPN.OUT_CHANNELS must be between 1 and " + std::to_string(detail::kMaxChannels) +
                      ", found " + std::to_string(out_channels_));
  check_norm_name(norm_);

  // input_shapes = bottom_up.output_shape(); strides = [input_shapes[f].stride for f in in_features]
  const auto input_shapes = bottom_up_.output_shape();
  std::vector<std::string> available;
  for (const auto& [n, s] : input_shapes) available.push_back(n);
  std::vector<int64_t> strides, channels;
  std::set<std::string> seen;
  for (const auto& f : in_features_) {
    auto it = std::find_if(input_shapes.begin(), input_shapes.end(), [&](const auto& p) { return p.first == f; });
    if (it == input_shapes.end() || f == "linear" || f == "stem")
      throw ConfigError("FPN: in_feature \"" + f + "\" (MODEL.FPN.IN_FEATURES " + list_text(in_features_) +
                        ") is not a stage output of the bottom-up ResNet, whose outputs are " + list_text(available) +
                        " (MODEL.RESNETS.OUT_FEATURES)");
    if (!seen.insert(f).second)
      throw ConfigError("FPN: in_feature \"" + f + "\" is listed twice in MODEL.FPN.IN_FEATURES " +
                        list_text(in_features_));
    strides.push_back(*it->second.stride);
    channels.push_back(*it->second.channels);
  }
  // _assert_strides_are_log2_contiguous
  for (size_t i = 1; i < strides.size(); ++i)
    if (strides[i] != 2 * strides[i - 1])
      throw ConfigError("Strides " + std::to_string(strides[i]) + " " + std::to_string(strides[i - 1]) +
                        " are not log2 contiguous (MODEL.FPN.IN_FEATURES " + list_text(in_features_) + ")");

  const bool use_bias = norm_.empty();
  for (size_t i = 0; i < in_features_.size(); ++i) {
    lateral_convs.push_back(detail::make_conv(channels[i], out_channels_, 1, 1, 0, 1, 1, use_bias, norm_));
    output_convs.push_back(detail::make_conv(out_channels_, out_channels_, 3, 1, 1, 1, 1, use_bias, norm_));
    const int stage = static_cast<int>(std::lround(std::log2(static_cast<double>(strides[i]))));
    stages_.push_back(stage);
    out_strides_.emplace_back("p" + std::to_string(stage), static_cast<int>(strides[i]));
  }
  size_divisibility_ = strides.back();

  top_block.kind = top_block_kind;
  const int last_stage = stages_.back();
  if (top_block_kind == TopBlockKind::LastLevelMaxPool) {
    top_block.in_feature = "p5";
    top_block.num_levels = 1;
    // detectron2 finds p5 among the results by its index in the output names: without an in_feature
    // of stride 32 its forward fails (IndexError); refused here, at load.
    if (std::none_of(out_strides_.begin(), out_strides_.end(), [](const auto& p) { return p.first == "p5"; }))
      throw ConfigError("FPN: LastLevelMaxPool (build_resnet_fpn_backbone) computes p6 from p5, so "
                        "MODEL.FPN.IN_FEATURES must end at res5 (stride 32); found " +
                        list_text(in_features_) + ", whose last level is p" + std::to_string(last_stage));
  } else if (top_block_kind == TopBlockKind::LastLevelP6P7) {
    top_block.in_feature = "res5";
    top_block.num_levels = 2;
    auto it =
        std::find_if(input_shapes.begin(), input_shapes.end(), [](const auto& p) { return p.first == "res5"; });
    if (it == input_shapes.end())
      throw ConfigError("FPN: LastLevelP6P7 (build_retinanet_resnet_fpn_backbone) computes p6 and p7 from res5, which "
                        "is not an output of the bottom-up ResNet (MODEL.RESNETS.OUT_FEATURES " +
                        list_text(available) + ")");
    const int64_t in_p6p7 = *it->second.channels;
    top_block.p6 = detail::make_conv(in_p6p7, out_channels_, 3, 2, 1, 1, 1, true, "");
    top_block.p7 = detail::make_conv(out_channels_, out_channels_, 3, 2, 1, 1, 1, true, "");
  }
  for (int s = last_stage; s < last_stage + top_block.num_levels; ++s)
    out_strides_.emplace_back("p" + std::to_string(s + 1), 1 << (s + 1));

  int64_t parameters = 0;
  for (const auto& [n, t] : state_dict()) parameters += t.numel();
  if (parameters > detail::kMaxModelParameters)
    throw ConfigError("FPN: the model has " + std::to_string(parameters) + " parameters, more than the " +
                      std::to_string(detail::kMaxModelParameters) + " a model may have");

  for (const auto& [n, s] : out_strides_) out_features_.push_back(n);
  init_fpn_weights(0);
}

FPN::FPN(FPN&&) noexcept = default;
FPN& FPN::operator=(FPN&&) noexcept = default;
FPN::~FPN() = default;

std::vector<std::pair<std::string, ShapeSpec>> FPN::output_shape() const {
  std::vector<std::pair<std::string, ShapeSpec>> out;
  for (const auto& [n, stride] : out_strides_) {
    ShapeSpec s;
    s.channels = static_cast<int>(out_channels_);
    s.stride = stride;
    out.emplace_back(n, s);
  }
  return out;
}

void FPN::set_out_features(std::vector<std::string> names) {
  if (names.empty()) {
    out_features_.clear();
    for (const auto& [n, s] : out_strides_) out_features_.push_back(n);
    return;
  }
  std::vector<std::string> available;
  for (const auto& [n, s] : out_strides_) available.push_back(n);
  for (const auto& n : bottom_up_.out_features())
    if (n != "linear") available.push_back(n);
  std::set<std::string> seen;
  for (const auto& n : names) {
    if (std::find(available.begin(), available.end(), n) == available.end())
      throw ConfigError("unknown out feature \"" + n + "\" of the FPN: expected one of " + list_text(available) +
                        " (its p-levels and the bottom-up's MODEL.RESNETS.OUT_FEATURES)");
    if (!seen.insert(n).second) throw ConfigError("out feature \"" + n + "\" is listed twice");
  }
  out_features_ = std::move(names);
}

std::vector<std::pair<std::string, ShapeSpec>> FPN::out_feature_shapes() const {
  const auto p = output_shape();
  const auto r = bottom_up_.output_shape();
  std::vector<std::pair<std::string, ShapeSpec>> out;
  for (const auto& n : out_features_) {
    for (const auto* list : {&p, &r})
      for (const auto& [name, s] : *list)
        if (name == n) out.emplace_back(n, s);
  }
  return out;
}

bool FPN::is_fpn_entry(const std::string& name) {
  return starts_with(name, "fpn_lateral") || starts_with(name, "fpn_output") || starts_with(name, "top_block.");
}

StateDict FPN::state_dict() const {
  StateDict sd;
  for_each_fpn_slot(const_cast<FPN&>(*this), [&](const std::string& n, Tensor& t) { sd.emplace_back(n, t); });
  for (auto& [n, t] : bottom_up_.state_dict()) sd.emplace_back(kBottomUp + n, t);
  return sd;
}

ResNet::LoadResult FPN::load_state_dict(const StateDict& state) {
  StateDict bottom;
  std::map<std::string, const Tensor*> given;
  ResNet::LoadResult r;
  for (const auto& [n, t] : state) {
    if (starts_with(n, kBottomUp)) bottom.emplace_back(n.substr(std::string(kBottomUp).size()), t);
    else if (is_fpn_entry(n)) given[n] = &t;
    else r.unexpected.push_back(n);
  }
  std::set<std::string> used;
  // Checked first, replaced after: a shape mismatch leaves the FPN as it was.
  std::vector<std::pair<Tensor*, const Tensor*>> assign;
  for_each_fpn_slot(*this, [&](const std::string& name, Tensor& slot) {
    auto it = given.find(name);
    if (it == given.end()) {
      r.missing.push_back(name);
      return;
    }
    const Tensor& src = *it->second;
    detail::check_state_entry(name, slot, src);
    assign.emplace_back(&slot, &src);
    used.insert(name);
  });
  for (const auto& [n, t] : given)
    if (!used.count(n)) r.unexpected.push_back(n);
  const ResNet::LoadResult b = bottom_up_.load_state_dict(bottom);
  for (const auto& [slot, src] : assign) *slot = detail::float32_copy(*src);
  for (const auto& n : b.missing) r.missing.push_back(kBottomUp + n);
  for (const auto& n : b.unexpected) r.unexpected.push_back(kBottomUp + n);
  return r;
}

void FPN::init_weights(uint64_t seed) {
  bottom_up_.init_weights(seed);
  init_fpn_weights(seed);
}

void FPN::init_fpn_weights(uint64_t seed) {
  // Its own stream, so that the FPN's values do not repeat the bottom-up's.
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for_each_fpn_slot(*this, [&](const std::string& name, Tensor& t) {
    Tensor fresh = Tensor::empty(t.shape());  // never write into storage a checkpoint may share
    float* p = fresh.data_ptr<float>();
    if (ends_with(name, ".norm.weight") || ends_with(name, ".norm.running_var")) {
      // identity norm; FrozenBN's running_var starts at 1 - eps, as detectron2's
      const bool frozen = norm_ == "FrozenBN" && ends_with(name, ".norm.running_var");
      std::fill_n(p, fresh.numel(), frozen ? static_cast<float>(1.0 - 1e-5) : 1.f);
    } else if (ends_with(name, ".weight")) {
      // c2_xavier_fill: kaiming_uniform_(weight, a=1), bound sqrt(3 / fan_in)
      const double fan_in = static_cast<double>(t.size(1) * t.size(2) * t.size(3));
      const float bound = static_cast<float>(std::sqrt(3.0 / fan_in));
      std::uniform_real_distribution<float> u(-bound, bound);
      for (int64_t i = 0; i < fresh.numel(); ++i) p[i] = u(rng);
    } else {
      std::fill_n(p, fresh.numel(), 0.f);  // bias, norm.bias, norm.running_mean
    }
    t = fresh;
  });
}

bool is_fpn_backbone_name(const std::string& name) {
  return name == "build_resnet_fpn_backbone" || name == "build_retinanet_resnet_fpn_backbone";
}

std::string supported_backbone_names() {
  return "build_resnet_backbone, build_resnet_fpn_backbone or build_retinanet_resnet_fpn_backbone";
}

namespace {

FPN build_fpn(const Config& cfg, const ShapeSpec& input_shape, TopBlockKind top) {
  ResNet bottom_up = build_resnet_backbone(cfg, input_shape);
  return FPN(std::move(bottom_up), cfg.get_string_list("MODEL.FPN.IN_FEATURES"), cfg.get_int("MODEL.FPN.OUT_CHANNELS"),
             cfg.get_string("MODEL.FPN.NORM"), top, cfg.get_string("MODEL.FPN.FUSE_TYPE"));
}

}  // namespace

FPN build_resnet_fpn_backbone(const Config& cfg, const ShapeSpec& input_shape) {
  return build_fpn(cfg, input_shape, TopBlockKind::LastLevelMaxPool);
}

FPN build_retinanet_resnet_fpn_backbone(const Config& cfg, const ShapeSpec& input_shape) {
  return build_fpn(cfg, input_shape, TopBlockKind::LastLevelP6P7);
}

}  // namespace backbone
