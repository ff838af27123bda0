// SPDX-License-Identifier: Apache-2.0
// detectron2/modeling/backbone/resnet.py: the network description and its parameters.
#include "backbone/resnet.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "backbone/error.h"
#include "core/layers.h"
#include "core/model_limits.h"

namespace backbone {

namespace {

const std::vector<std::string>& norm_names() {
  static const std::vector<std::string> names = {"",       "BN",          "SyncBN",        "FrozenBN", "GN",
                                                 "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"};
  return names;
}

Tensor filled(int64_t n, float value) {
  Tensor t = Tensor::empty({n});
  std::fill_n(t.data_ptr<float>(), n, value);
  return t;
}

// Visits every named tensor slot of the model (so loading can replace them in place).
template <typename F>
void for_each_slot(ResNet& model, F&& f) {
  auto conv_slots = [&](const std::string& prefix, Conv2d& c) { detail::for_each_conv_slot(prefix, c, f); };
  for (auto& [name, conv] : model.stem().convs()) conv_slots("stem." + name, *conv);
  for (size_t s = 0; s < model.stages().size(); ++s) {
    const std::string stage = model.stage_names()[s];
    for (size_t b = 0; b < model.stages()[s].size(); ++b)
      for (auto& [name, conv] : model.stages()[s][b]->convs())
        conv_slots(stage + "." + std::to_string(b) + "." + name, *conv);
  }
  if (model.num_classes()) {
    f("linear.weight", model.linear_weight);
    f("linear.bias", model.linear_bias);
  }
}

}  // namespace

namespace detail {

Norm make_norm(const std::string& kind, int64_t channels) {
  check_norm_name(kind);
  Norm n;
  n.kind = kind;
  n.channels = channels;
  if (kind.empty()) return n;
  if (kind == "GN" && channels % 32 != 0)
    throw ConfigError("GroupNorm(32, " + std::to_string(channels) + "): num_channels must be divisible by num_groups (" +
                      std::to_string(channels) + " channels, 32 groups)");
  n.weight = filled(channels, 1.f);
  n.bias = filled(channels, 0.f);
  if (n.is_batch_norm()) {
    n.running_mean = filled(channels, 0.f);
    // FrozenBatchNorm2d starts at running_var = 1 - eps so that it is the identity.
    n.running_var = filled(channels, kind == "FrozenBN" ? static_cast<float>(1.0 - 1e-5) : 1.f);
  }
  return n;
}

Conv2d make_conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, int64_t dilation, int64_t groups,
                 bool bias, const std::string& norm) {
  using detail::kMaxChannels;
  using detail::kMaxConvGeometry;
  auto check = [](const char* what, int64_t value, int64_t lo, int64_t hi) {
    if (value < lo || value > hi)
      throw ConfigError(std::string("Conv2d: ") + what + " must be between " + std::to_string(lo) + " and " +
                        std::to_string(hi) + ", found " + std::to_string(value));
  };
  check("in_channels", in, 1, kMaxChannels);
  check("out_channels", out, 1, kMaxChannels);
  check("kernel_size", k, 1, 7);
  check("stride", stride, 1, kMaxConvGeometry);
  check("padding", padding, 0, kMaxConvGeometry);
  check("dilation", dilation, 1, kMaxConvGeometry);
  if (groups <= 0 || in % groups != 0)
    throw ConfigError("Conv2d: in_channels must be divisible by groups (in_channels " + std::to_string(in) +
                      ", groups " + std::to_string(groups) + ")");
  if (out % groups != 0)
    throw ConfigError("Conv2d: out_channels must be divisible by groups (out_channels " + std::to_string(out) +
                      ", groups " + std::to_string(groups) + ")");
  // All factors are bounded above, so the product fits an int64.
  const int64_t parameters = out * (in / groups) * k * k;
  if (parameters > detail::kMaxModelParameters)
    throw ConfigError("Conv2d(" + std::to_string(in) + ", " + std::to_string(out) + ", kernel_size=" +
                      std::to_string(k) + ", groups=" + std::to_string(groups) + ") has " + std::to_string(parameters) +
                      " weights, more than the " + std::to_string(detail::kMaxModelParameters) + " a model may have");
  Conv2d c;
  c.in_channels = in;
  c.out_channels = out;
  c.kernel_size = k;
  c.stride = stride;
  c.padding = padding;
  c.dilation = dilation;
  c.groups = groups;
  c.weight = Tensor::zeros({out, in / groups, k, k});
  if (bias) c.bias = Tensor::zeros({out});
  c.norm = make_norm(norm, out);
  return c;
}

}  // namespace detail

bool Norm::is_batch_norm() const {
  return kind == "BN" || kind == "SyncBN" || kind == "FrozenBN" || kind == "nnSyncBN" || kind == "naiveSyncBN" ||
         kind == "naiveSyncBN_N";
}
double Norm::eps() const { return kind == "LN" ? 1e-6 : 1e-5; }
int64_t Norm::num_groups() const { return kind == "GN" ? 32 : 1; }

void check_norm_name(const std::string& kind) {
  const auto& names = norm_names();
  if (std::find(names.begin(), names.end(), kind) != names.end()) return;
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + ("\"" + n + "\"");
  throw ConfigError("unknown norm \"" + kind + "\": get_norm accepts " + list);
}

CNNBlockBase::CNNBlockBase(BlockKind kind, int64_t in_channels, int64_t out_channels, int64_t stride)
    : kind_(kind), in_channels_(in_channels), out_channels_(out_channels), stride_(stride) {}

std::vector<std::pair<std::string, const Conv2d*>> CNNBlockBase::convs() const {
  std::vector<std::pair<std::string, const Conv2d*>> out;
  for (auto& [n, c] : const_cast<CNNBlockBase*>(this)->convs()) out.emplace_back(n, c);
  return out;
}

BasicStem::BasicStem(int64_t in_channels, int64_t out_channels, const std::string& norm)
    : CNNBlockBase(BlockKind::BasicStem, in_channels, out_channels, 4),
      conv1(detail::make_conv(in_channels, out_channels, 7, 2, 3, 1, 1, false, norm)) {}

std::vector<std::pair<std::string, Conv2d*>> BasicStem::convs() { return {{"conv1", &conv1}}; }

BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, const std::string& norm)
    : CNNBlockBase(BlockKind::BasicBlock, in_channels, out_channels, stride),
      conv1(detail::make_conv(in_channels, out_channels, 3, stride, 1, 1, 1, false, norm)),
      conv2(detail::make_conv(out_channels, out_channels, 3, 1, 1, 1, 1, false, norm)) {
  if (in_channels != out_channels) shortcut = detail::make_conv(in_channels, out_channels, 1, stride, 0, 1, 1, false, norm);
}

std::vector<std::pair<std::string, Conv2d*>> BasicBlock::convs() {
  std::vector<std::pair<std::string, Conv2d*>> v;
  if (shortcut) v.emplace_back("shortcut", &*shortcut);
  v.emplace_back("conv1", &conv1);
  v.emplace_back("conv2", &conv2);
  return v;
}

BottleneckBlock::BottleneckBlock(int64_t in_channels, int64_t out_channels, const BottleneckArgs& a)
    : BottleneckBlock(BlockKind::BottleneckBlock, in_channels, out_channels, a) {}

BottleneckBlock::BottleneckBlock(BlockKind kind, int64_t in_channels, int64_t out_channels, const BottleneckArgs& a)
    : CNNBlockBase(kind, in_channels, out_channels, a.stride), dilation(a.dilation) {
  if (a.bottleneck_channels <= 0)
    throw ConfigError("BottleneckBlock: bottleneck_channels must be positive, got " +
                      std::to_string(a.bottleneck_channels));
  if (in_channels != out_channels)
    shortcut = detail::make_conv(in_channels, out_channels, 1, a.stride, 0, 1, 1, false, a.norm);
  // The original MSRA ResNet models have stride in the first 1x1 conv; the subsequent
  // fb.torch.resnet and Caffe2 ResNe[X]t implementations have stride in the 3x3 conv.
  const int64_t stride_1x1 = a.stride_in_1x1 ? a.stride : 1;
  const int64_t stride_3x3 = a.stride_in_1x1 ? 1 : a.stride;
  conv1 = detail::make_conv(in_channels, a.bottleneck_channels, 1, stride_1x1, 0, 1, 1, false, a.norm);
  conv2 = detail::make_conv(a.bottleneck_channels, a.bottleneck_channels, 3, stride_3x3, a.dilation, a.dilation, a.num_groups,
                    false, a.norm);
  conv3 = detail::make_conv(a.bottleneck_channels, out_channels, 1, 1, 0, 1, 1, false, a.norm);
}

std::vector<std::pair<std::string, Conv2d*>> BottleneckBlock::convs() {
  std::vector<std::pair<std::string, Conv2d*>> v;
  if (shortcut) v.emplace_back("shortcut", &*shortcut);
  v.emplace_back("conv1", &conv1);
  v.emplace_back("conv2", &conv2);
  v.emplace_back("conv3", &conv3);
  return v;
}

DeformBottleneckBlock::DeformBottleneckBlock(int64_t in_channels, int64_t out_channels, const BottleneckArgs& a)
    : BottleneckBlock(BlockKind::DeformBottleneckBlock, in_channels, out_channels, a),
      deform_modulated(a.deform_modulated),
      deform_num_groups(a.deform_num_groups) {
  if (a.deform_num_groups <= 0 || a.bottleneck_channels % a.deform_num_groups != 0)
    throw ConfigError("DeformBottleneckBlock: bottleneck_channels (" + std::to_string(a.bottleneck_channels) +
                      ") must be divisible by deform_num_groups (" + std::to_string(a.deform_num_groups) + ")");
  // offset channels are 2 or 3 (if with modulated) * kernel_size * kernel_size
  const int64_t offset_channels = a.deform_modulated ? 27 : 18;
  const int64_t stride_3x3 = a.stride_in_1x1 ? 1 : a.stride;
  conv2_offset = detail::make_conv(a.bottleneck_channels, offset_channels * a.deform_num_groups, 3, stride_3x3, a.dilation,
                           a.dilation, 1, true, "");
}

std::vector<std::pair<std::string, Conv2d*>> DeformBottleneckBlock::convs() {
  std::vector<std::pair<std::string, Conv2d*>> v;
  if (shortcut) v.emplace_back("shortcut", &*shortcut);
  v.emplace_back("conv1", &conv1);
  v.emplace_back("conv2_offset", &conv2_offset);
  v.emplace_back("conv2", &conv2);
  v.emplace_back("conv3", &conv3);
  return v;
}

namespace {

// detectron2's deepest stage (R-152's res4) has 36 blocks.
constexpr int64_t kMaxBlocksPerStage = 1024;

template <typename T>
void check_per_block(const char* name, const std::vector<T>& v, int64_t num_blocks) {
  if (!v.empty() && static_cast<int64_t>(v.size()) != num_blocks)
    throw ConfigError(std::string("Argument '") + name + "' of make_stage should have the same length as num_blocks=" +
                      std::to_string(num_blocks) + ".");
}

}  // namespace

Stage ResNet::make_stage(const StageArgs& args) {
  if (args.num_blocks <= 0 || args.num_blocks > kMaxBlocksPerStage)
    throw ConfigError("make_stage: num_blocks must be between 1 and " + std::to_string(kMaxBlocksPerStage) +
                      ", got " + std::to_string(args.num_blocks));
  check_per_block("stride_per_block", args.stride_per_block, args.num_blocks);
  check_per_block("dilation_per_block", args.dilation_per_block, args.num_blocks);
  check_per_block("bottleneck_channels_per_block", args.bottleneck_channels_per_block, args.num_blocks);
  check_per_block("num_groups_per_block", args.num_groups_per_block, args.num_blocks);
  check_per_block("norm_per_block", args.norm_per_block, args.num_blocks);
  check_per_block("stride_in_1x1_per_block", args.stride_in_1x1_per_block, args.num_blocks);
  check_per_block("deform_modulated_per_block", args.deform_modulated_per_block, args.num_blocks);
  check_per_block("deform_num_groups_per_block", args.deform_num_groups_per_block, args.num_blocks);
  if (args.stride_given && !args.stride_per_block.empty())
    throw ConfigError("Cannot call make_stage with both stride_per_block and stride!");
  if (args.dilation_given && !args.dilation_per_block.empty())
    throw ConfigError("Cannot call make_stage with both dilation_per_block and dilation!");

  Stage blocks;
  int64_t in_channels = args.in_channels;
  for (int64_t i = 0; i < args.num_blocks; ++i) {
    BottleneckArgs b = args.block;
    if (!args.stride_per_block.empty()) b.stride = args.stride_per_block[i];
    if (!args.dilation_per_block.empty()) b.dilation = args.dilation_per_block[i];
    if (!args.bottleneck_channels_per_block.empty()) b.bottleneck_channels = args.bottleneck_channels_per_block[i];
    if (!args.num_groups_per_block.empty()) b.num_groups = args.num_groups_per_block[i];
    if (!args.norm_per_block.empty()) b.norm = args.norm_per_block[i];
    if (!args.stride_in_1x1_per_block.empty()) b.stride_in_1x1 = args.stride_in_1x1_per_block[i];
    if (!args.deform_modulated_per_block.empty()) b.deform_modulated = args.deform_modulated_per_block[i];
    if (!args.deform_num_groups_per_block.empty()) b.deform_num_groups = args.deform_num_groups_per_block[i];
    switch (args.block_class) {
      case BlockKind::BasicBlock:
        blocks.push_back(std::make_unique<BasicBlock>(in_channels, args.out_channels, b.stride, b.norm));
        break;
      case BlockKind::BottleneckBlock:
        blocks.push_back(std::make_unique<BottleneckBlock>(in_channels, args.out_channels, b));
        break;
      case BlockKind::DeformBottleneckBlock:
        blocks.push_back(std::make_unique<DeformBottleneckBlock>(in_channels, args.out_channels, b));
        break;
      case BlockKind::BasicStem:
        throw ConfigError("make_stage: block_class must be a residual block, not BasicStem");
    }
    in_channels = args.out_channels;
  }
  return blocks;
}

std::vector<Stage> ResNet::make_default_stages(int depth, std::optional<BlockKind> block_class,
                                               const BottleneckArgs& block) {
  static const std::map<int, std::vector<int64_t>> kBlocksPerStage = {
      {18, {2, 2, 2, 2}}, {34, {3, 4, 6, 3}}, {50, {3, 4, 6, 3}}, {101, {3, 4, 23, 3}}, {152, {3, 8, 36, 3}}};
  auto it = kBlocksPerStage.find(depth);
  if (it == kBlocksPerStage.end())
    throw ConfigError("ResNet depth must be one of 18, 34, 50, 101, 152; got " + std::to_string(depth));
  const BlockKind kind = block_class.value_or(depth < 50 ? BlockKind::BasicBlock : BlockKind::BottleneckBlock);
  const std::vector<int64_t> in_channels =
      depth < 50 ? std::vector<int64_t>{64, 64, 128, 256} : std::vector<int64_t>{64, 256, 512, 1024};
  const std::vector<int64_t> out_channels =
      depth < 50 ? std::vector<int64_t>{64, 128, 256, 512} : std::vector<int64_t>{256, 512, 1024, 2048};
  const int64_t first_strides[4] = {1, 2, 2, 2};
  std::vector<Stage> stages;
  for (int s = 0; s < 4; ++s) {
    StageArgs a;
    a.block_class = kind;
    a.num_blocks = it->second[s];
    a.in_channels = in_channels[s];
    a.out_channels = out_channels[s];
    a.block = block;
    if (depth >= 50) a.block.bottleneck_channels = out_channels[s] / 4;
    a.stride_per_block.assign(a.num_blocks, 1);
    a.stride_per_block[0] = first_strides[s];
    stages.push_back(make_stage(a));
  }
  return stages;
}

ResNet::ResNet(std::unique_ptr<BasicStem> stem, std::vector<Stage> stages, std::optional<int64_t> num_classes,
               std::vector<std::string> out_features, int freeze_at)
    : stem_(std::move(stem)), num_classes_(num_classes) {
  if (!stem_) throw ConfigError("ResNet: a stem is required");
  int64_t current_stride = stem_->stride();
  feature_strides_["stem"] = current_stride;
  feature_channels_["stem"] = stem_->out_channels();

  if (!out_features.empty()) {
    // Avoid keeping unused layers: stages after the last requested one are not built.
    size_t num_stages = 0;
    const std::map<std::string, size_t> index = {{"res2", 1}, {"res3", 2}, {"res4", 3}, {"res5", 4}};
    for (const auto& f : out_features) {
      auto it = index.find(f);
      if (it != index.end()) num_stages = std::max(num_stages, it->second);
    }
    if (stages.size() > num_stages) stages.resize(num_stages);
  }
  std::string name = "stem";
  int64_t curr_channels = stem_->out_channels();
  for (size_t i = 0; i < stages.size(); ++i) {
    if (stages[i].empty()) throw ConfigError("ResNet: stage " + std::to_string(i) + " has no blocks (len(blocks) == 0)");
    name = "res" + std::to_string(i + 2);
    int64_t product = 1;
    for (const auto& b : stages[i]) product *= b->stride();
    current_stride *= product;
    curr_channels = stages[i].back()->out_channels();
    feature_strides_[name] = current_stride;
    feature_channels_[name] = curr_channels;
    stage_names_.push_back(name);
  }
  stages_ = std::move(stages);

  if (num_classes_) {
    if (*num_classes_ <= 0 || *num_classes_ > detail::kMaxChannels)
      throw ConfigError("ResNet: num_classes must be between 1 and " + std::to_string(detail::kMaxChannels) + ", got " +
                        std::to_string(*num_classes_));
    linear_weight = Tensor::zeros({*num_classes_, curr_channels});
    linear_bias = Tensor::zeros({*num_classes_});
    name = "linear";
    feature_channels_["linear"] = *num_classes_;
    feature_strides_["linear"] = current_stride;
  }
  if (out_features.empty()) out_features = {name};
  out_features_ = std::move(out_features);

  std::vector<std::string> children = {"stem"};
  children.insert(children.end(), stage_names_.begin(), stage_names_.end());
  if (num_classes_) children.push_back("linear");
  for (const auto& f : out_features_) {
    if (std::find(children.begin(), children.end(), f) == children.end()) {
      std::string list;
      for (const auto& c : children) list += (list.empty() ? "" : ", ") + c;
      throw ConfigError("unknown out_feature \"" + f + "\": Available children: " + list);
    }
  }
  freeze(freeze_at);
  init_weights(0);
}

ResNet::ResNet(ResNet&&) noexcept = default;
ResNet& ResNet::operator=(ResNet&&) noexcept = default;
ResNet::~ResNet() = default;

ResNet& ResNet::freeze(int freeze_at) {
  freeze_at_ = freeze_at;
  if (freeze_at >= 1) stem_->freeze();
  for (size_t i = 0; i < stages_.size(); ++i)
    if (freeze_at >= static_cast<int>(i) + 2)
      for (auto& b : stages_[i]) b->freeze();
  return *this;
}

std::vector<std::pair<std::string, ShapeSpec>> ResNet::output_shape() const {
  std::vector<std::pair<std::string, ShapeSpec>> out;
  for (const auto& f : out_features_) {
    ShapeSpec s;
    s.channels = static_cast<int>(feature_channels_.at(f));
    s.stride = static_cast<int>(feature_strides_.at(f));
    out.emplace_back(f, s);
  }
  return out;
}

StateDict ResNet::state_dict() const {
  StateDict sd;
  for_each_slot(const_cast<ResNet&>(*this), [&](const std::string& n, Tensor& t) { sd.emplace_back(n, t); });
  return sd;
}

ResNet::LoadResult ResNet::load_state_dict(const StateDict& state) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [n, t] : state) given[n] = &t;
  LoadResult r;
  std::set<std::string> used;
  for_each_slot(*this, [&](const std::string& name, Tensor& slot) {
    auto it = given.find(name);
    if (it == given.end()) {
      r.missing.push_back(name);
      return;
    }
    const Tensor& src = *it->second;
    detail::check_state_entry(name, slot, src);
    slot = detail::float32_copy(src);
    used.insert(name);
  });
  for (const auto& [n, t] : state)
    if (!used.count(n)) r.unexpected.push_back(n);
  return r;
}

void ResNet::init_weights(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto fill_normal = [&](Tensor& t, double stddev) {
    std::normal_distribution<float> dist(0.f, static_cast<float>(stddev));
    float* p = t.data_ptr<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  };
  for_each_slot(*this, [&](const std::string& name, Tensor& t) {
    const bool is_offset = name.find("conv2_offset.") != std::string::npos;
    float* p = t.data_ptr<float>();
    auto ends_with = [&](const char* s) {
      const size_t n = std::strlen(s);
      return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
    };
    if (name == "linear.weight") {
      fill_normal(t, 0.01);  // nn.init.normal_(self.linear.weight, std=0.01)
    } else if (name == "linear.bias") {
      const float bound = 1.f / std::sqrt(static_cast<float>(linear_weight.size(1)));  // 1 / sqrt(fan_in)
      std::uniform_real_distribution<float> u(-bound, bound);  // nn.Linear's default bias init
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
    } else if (is_offset) {
      std::fill_n(p, t.numel(), 0.f);  // conv2_offset: zero init
    } else if (ends_with(".norm.weight")) {
      std::fill_n(p, t.numel(), 1.f);
    } else if (ends_with(".norm.bias") || ends_with(".norm.running_mean") || ends_with(".bias")) {
      std::fill_n(p, t.numel(), 0.f);
    } else if (ends_with(".norm.running_var")) {
      // left as constructed: 1 (BN) or 1 - eps (FrozenBN), so that the norm starts as the identity
    } else if (ends_with(".weight")) {
      // c2_msra_fill: kaiming_normal_(mode="fan_out", nonlinearity="relu")
      const double fan_out = static_cast<double>(t.size(0) * t.size(2) * t.size(3));
      fill_normal(t, std::sqrt(2.0 / fan_out));
    }
  });
}

}  // namespace backbone
