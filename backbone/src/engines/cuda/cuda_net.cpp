// SPDX-License-Identifier: Apache-2.0
// The cuda engine's network description (BN folded; ResNet and FPN) and its CPU executor over the
// NHWC CPU twins.
#include "engines/cuda/cuda_net.h"

#include <algorithm>
#include <cmath>

#include "backbone/error.h"
#include "ops/cpu/nhwc_ops.h"

namespace backbone::detail {
namespace {

class Builder {
 public:
  explicit Builder(CudaNet& net) : net_(net) {}

  const float* keep(const std::vector<double>& v) {
    net_.arrays.emplace_back(v.begin(), v.end());
    return net_.arrays.back().data();
  }

  int32_t new_value() { return net_.num_values++; }

  BackboneCudaLayer base(int32_t kind, int32_t input) {
    BackboneCudaLayer l{};
    l.kind = kind;
    l.input = input;
    l.output = -1;
    l.residual = -1;
    l.aux = -1;
    l.kernel_size = 1;
    l.stride = 1;
    l.dilation = 1;
    l.groups = 1;
    l.deformable_groups = 1;
    l.num_groups = 1;
    l.scale = 1.0;
    return l;
  }

  int32_t push(BackboneCudaLayer l) {
    l.output = new_value();
    net_.layers.push_back(l);
    return l.output;
  }

  // The convolution's weight and bias with a BN-family norm folded in (double precision).
  void fold(const Conv2d& c, BackboneCudaLayer& l) {
    const FoldedConv folded = fold_batch_norm(c);
    const bool has_bias = c.bias.defined();
    const std::vector<double>& w = folded.weight;
    const std::vector<double>& b = folded.bias;
    l.weight = keep(w);
    l.bias = (has_bias || c.norm.is_batch_norm()) ? keep(b) : nullptr;
  }

  void geometry(const Conv2d& c, BackboneCudaLayer& l) {
    l.in_channels = c.in_channels;
    l.out_channels = c.out_channels;
    l.kernel_size = c.kernel_size;
    l.stride = c.stride;
    l.padding = c.padding;
    l.dilation = c.dilation;
    l.groups = c.groups;
  }

  // GN / LN after a convolution (or deformable convolution) without norm: the norm layer carries the
  // residual and the activation.
  int32_t norm_layer(const Norm& n, int32_t input, int32_t residual, bool relu) {
    BackboneCudaLayer l = base(n.kind == "GN" ? BACKBONE_CUDA_LAYER_GROUP_NORM : BACKBONE_CUDA_LAYER_LAYER_NORM, input);
    l.residual = residual;
    l.relu = relu ? 1 : 0;
    l.in_channels = l.out_channels = n.channels;
    l.num_groups = n.kind == "GN" ? n.num_groups() : 1;
    l.eps = n.eps();
    l.weight = keep(to_doubles(n.weight));
    l.bias = keep(to_doubles(n.bias));
    return push(l);
  }

  static bool separate_norm(const Norm& n) { return !n.empty() && !n.is_batch_norm(); }

  int32_t conv(const Conv2d& c, int32_t input, int32_t residual, bool relu) {
    if (!c.norm.empty() && !c.norm.is_batch_norm() && c.norm.kind != "GN" && c.norm.kind != "LN")
      throw UnsupportedError("engine 'cuda': norm '" + c.norm.kind + "' is not supported");
    BackboneCudaLayer l = base(BACKBONE_CUDA_LAYER_CONV, input);
    geometry(c, l);
    fold(c, l);
    if (separate_norm(c.norm)) {
      const int32_t t = push(l);
      return norm_layer(c.norm, t, residual, relu);
    }
    l.residual = residual;
    l.relu = relu ? 1 : 0;
    return push(l);
  }

  int32_t deform(const DeformBottleneckBlock& b, int32_t input) {
    const int32_t offset = conv(b.conv2_offset, input, -1, false);
    const Conv2d& c = b.conv2;
    BackboneCudaLayer l = base(BACKBONE_CUDA_LAYER_DEFORM_CONV, input);
    geometry(c, l);
    l.aux = offset;
    l.deformable_groups = b.deform_num_groups;
    l.modulated = b.deform_modulated ? 1 : 0;
    fold(c, l);
    if (separate_norm(c.norm)) {
      const int32_t t = push(l);
      return norm_layer(c.norm, t, -1, true);
    }
    l.relu = 1;
    return push(l);
  }

  int32_t max_pool(int32_t input, int64_t channels, int64_t kernel = 3, int64_t stride = 2, int64_t padding = 1) {
    BackboneCudaLayer l = base(BACKBONE_CUDA_LAYER_MAX_POOL, input);
    l.in_channels = l.out_channels = channels;
    l.kernel_size = kernel;
    l.stride = stride;
    l.padding = padding;
    return push(l);
  }

  // The FPN's top-down sum: (lateral + nearest_upsample_2x(coarse)) * scale.
  int32_t upsample_add(int32_t lateral, int32_t coarse, int64_t channels, double scale) {
    BackboneCudaLayer l = base(BACKBONE_CUDA_LAYER_UPSAMPLE_ADD, lateral);
    l.in_channels = l.out_channels = channels;
    l.aux = coarse;
    l.scale = scale;
    return push(l);
  }

  int32_t relu(int32_t input, int64_t channels) {
    BackboneCudaLayer l = base(BACKBONE_CUDA_LAYER_RELU, input);
    l.in_channels = l.out_channels = channels;
    l.relu = 1;
    return push(l);
  }

  int32_t avgpool_linear(int32_t input, const ResNet& model, int64_t channels) {
    BackboneCudaLayer l = base(BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR, input);
    l.in_channels = channels;
    l.out_channels = *model.num_classes();
    l.weight = keep(to_doubles(model.linear_weight));
    l.bias = model.linear_bias.defined() ? keep(to_doubles(model.linear_bias)) : nullptr;
    return push(l);
  }

 private:
  CudaNet& net_;
};

}  // namespace

BackboneCudaNetDesc CudaNet::desc() const {
  BackboneCudaNetDesc d{};
  d.in_channels = in_channels;
  d.num_values = num_values;
  d.num_layers = static_cast<int32_t>(layers.size());
  d.layers = layers.data();
  d.num_outputs = static_cast<int32_t>(outputs.size());
  d.outputs = outputs.data();
  return d;
}

const char* cuda_layer_kind_name(int32_t kind) { return backbone_cuda_layer_kind_name(kind); }

namespace {

using Named = std::vector<std::pair<std::string, int32_t>>;

int32_t find_named(const Named& named, const std::string& name, const char* what) {
  const auto it = std::find_if(named.begin(), named.end(), [&](const auto& p) { return p.first == name; });
  if (it == named.end()) throw Error(std::string("engine 'cuda': ") + what + " '" + name + "' is not produced by the model");
  return it->second;
}

// detectron2's FPN.forward on the bottom-up's values; appends the p-levels to `named`.
void build_fpn(Builder& b, const FPN& fpn, CudaNet& net, Named& named) {
  const auto& in = fpn.in_features();
  const size_t levels = in.size();
  if (fpn.lateral_convs.size() != levels || fpn.output_convs.size() != levels)
    throw Error("engine 'cuda': the FPN has " + std::to_string(fpn.lateral_convs.size()) + " lateral and " +
                std::to_string(fpn.output_convs.size()) + " output convolutions for " + std::to_string(levels) +
                " in_features");
  net.fpn = true;
  net.fpn_levels = FpnLevels(fpn);
  for (const auto& f : in) net.fpn_inputs.push_back(find_named(named, f, "FPN in_feature"));
  const double scale = fpn.fuse_type() == "avg" ? 0.5 : 1.0;
  std::vector<int32_t> results(levels);
  int32_t prev = b.conv(fpn.lateral_convs[levels - 1], net.fpn_inputs[levels - 1], -1, false);
  results[levels - 1] = b.conv(fpn.output_convs[levels - 1], prev, -1, false);
  for (size_t i = levels - 1; i-- > 0;) {
    const int32_t lateral = b.conv(fpn.lateral_convs[i], net.fpn_inputs[i], -1, false);
    prev = b.upsample_add(lateral, prev, fpn.lateral_convs[i].out_channels, scale);
    results[i] = b.conv(fpn.output_convs[i], prev, -1, false);
  }
  const TopBlock& top = fpn.top_block;
  if (top.kind == TopBlockKind::LastLevelMaxPool) {
    // max_pool2d(p5, kernel_size=1, stride=2, padding=0)
    results.push_back(b.max_pool(results[levels - 1], fpn.output_convs[levels - 1].out_channels, 1, 2, 0));
  } else if (top.kind == TopBlockKind::LastLevelP6P7) {
    const int32_t p6 = b.conv(top.p6, find_named(named, top.in_feature, "top block in_feature"), -1, false);
    results.push_back(p6);
    results.push_back(b.conv(top.p7, b.relu(p6, top.p6.out_channels), -1, false));
  }
  const auto levels_out = fpn.output_shape();
  if (levels_out.size() != results.size())
    throw Error("engine 'cuda': the FPN names " + std::to_string(levels_out.size()) + " levels, its network computes " +
                std::to_string(results.size()));
  for (size_t i = 0; i < results.size(); ++i) named.emplace_back(levels_out[i].first, results[i]);
}

}  // namespace

CudaNet build_cuda_net(const ResNet& model, const FPN* fpn) {
  if (fpn && &fpn->bottom_up() != &model) throw Error("engine 'cuda': the FPN's bottom_up is not the model given");
  CudaNet net;
  net.in_channels = model.stem().in_channels();
  Builder b(net);
  std::vector<std::pair<std::string, int32_t>> named;  // every candidate output
  const BasicStem& stem = model.stem();
  int32_t x = b.conv(stem.conv1, 0, -1, true);
  x = b.max_pool(x, stem.out_channels());
  named.emplace_back("stem", x);
  int64_t channels = stem.out_channels();
  for (size_t si = 0; si < model.stages().size(); ++si) {
    for (const auto& block : model.stages()[si]) {
      switch (block->kind()) {
        case BlockKind::BasicBlock: {
          const auto& bb = static_cast<const BasicBlock&>(*block);
          const int32_t shortcut = bb.shortcut ? b.conv(*bb.shortcut, x, -1, false) : x;
          const int32_t t1 = b.conv(bb.conv1, x, -1, true);
          x = b.conv(bb.conv2, t1, shortcut, true);
          break;
        }
        case BlockKind::BottleneckBlock:
        case BlockKind::DeformBottleneckBlock: {
          const auto& bb = static_cast<const BottleneckBlock&>(*block);
          const int32_t shortcut = bb.shortcut ? b.conv(*bb.shortcut, x, -1, false) : x;
          const int32_t t1 = b.conv(bb.conv1, x, -1, true);
          const int32_t t2 = block->kind() == BlockKind::DeformBottleneckBlock
                                 ? b.deform(static_cast<const DeformBottleneckBlock&>(bb), t1)
                                 : b.conv(bb.conv2, t1, -1, true);
          x = b.conv(bb.conv3, t2, shortcut, true);
          break;
        }
        case BlockKind::BasicStem:
          throw Error("engine 'cuda': a BasicStem inside stage " + model.stage_names()[si]);
      }
      channels = block->out_channels();
    }
    named.emplace_back(model.stage_names()[si], x);
  }
  const auto& resnet_wanted = model.out_features();
  if (model.num_classes() && std::find(resnet_wanted.begin(), resnet_wanted.end(), "linear") != resnet_wanted.end())
    named.emplace_back("linear", b.avgpool_linear(x, model, channels));
  if (fpn) build_fpn(b, *fpn, net, named);
  for (const auto& name : fpn ? fpn->out_features() : resnet_wanted) {
    net.output_names.push_back(name);
    net.outputs.push_back(find_named(named, name, "out_feature"));
  }
  return net;
}

std::vector<std::pair<int64_t, int64_t>> cuda_net_value_sizes(const BackboneCudaNetDesc& net, int64_t h, int64_t w) {
  std::vector<std::pair<int64_t, int64_t>> hw(static_cast<size_t>(std::max(net.num_values, 1)), {0, 0});
  hw[0] = {h, w};
  for (int32_t i = 0; i < net.num_layers; ++i) {
    const BackboneCudaLayer& l = net.layers[i];
    if (l.input < 0 || l.input >= net.num_values || l.output < 0 || l.output >= net.num_values) continue;
    auto [y, x] = hw[static_cast<size_t>(l.input)];
    switch (l.kind) {
      case BACKBONE_CUDA_LAYER_CONV:
      case BACKBONE_CUDA_LAYER_DEFORM_CONV:
        y = conv_out_size(y, l.kernel_size, l.stride, l.padding, l.dilation);
        x = conv_out_size(x, l.kernel_size, l.stride, l.padding, l.dilation);
        break;
      case BACKBONE_CUDA_LAYER_MAX_POOL:
        y = conv_out_size(y, l.kernel_size, l.stride, l.padding, 1);
        x = conv_out_size(x, l.kernel_size, l.stride, l.padding, 1);
        break;
      case BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR:
        y = x = 1;
        break;
      default:
        break;
    }
    hw[static_cast<size_t>(l.output)] = {y, x};
  }
  return hw;
}

void check_cuda_net_fpn_sizes(const CudaNet& net, int64_t h, int64_t w) {
  if (!net.fpn) return;
  const auto hw = cuda_net_value_sizes(net.desc(), h, w);
  std::vector<std::pair<int64_t, int64_t>> lateral_hw;
  for (int32_t v : net.fpn_inputs) lateral_hw.push_back(hw[static_cast<size_t>(v)]);
  check_fpn_level_sizes(net.fpn_levels, lateral_hw);
}

// ---------------------------------------------------------------------------------------------
// The CPU executor.

namespace {

struct Value {
  nhwc::Shape shape;
  std::vector<float> data;
  bool defined = false;
};

void round_to(Precision p, std::vector<float>& v) {
  if (p == Precision::Float16) nhwc::round_to_half(v.data(), static_cast<int64_t>(v.size()));
  if (p == Precision::BFloat16) nhwc::round_to_bfloat16(v.data(), static_cast<int64_t>(v.size()));
}

// OIHW [out][in/g][k][k] -> [out][k][k][in/g]
std::vector<float> to_ohwi(const float* w, int64_t out, int64_t in_g, int64_t k) {
  std::vector<float> r(static_cast<size_t>(out * in_g * k * k));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in_g; ++i)
      for (int64_t y = 0; y < k; ++y)
        for (int64_t x = 0; x < k; ++x) r[((o * k + y) * k + x) * in_g + i] = w[((o * in_g + i) * k + y) * k + x];
  return r;
}

[[noreturn]] void bad_layer(int32_t index, const BackboneCudaLayer& l, const std::string& what) {
  throw Error("cuda net: layer " + std::to_string(index) + " (" + cuda_layer_kind_name(l.kind) + "): " + what);
}

}  // namespace

std::vector<Tensor> run_cuda_net_on_cpu(const BackboneCudaNetDesc& net, const Tensor& images, Precision precision) {
  if (images.dim() != 4 || images.size(1) != net.in_channels || images.dtype() != DType::Float32)
    throw ShapeError("cuda net: expected a float32 input [N, " + std::to_string(net.in_channels) + ", H, W], found " +
                     std::string(dtype_name(images.dtype())) + " " + shape_str(images.shape()));
  const Tensor in = images.to(Device::cpu()).contiguous();
  std::vector<Value> values(static_cast<size_t>(std::max(net.num_values, 1)));
  {
    Value& v = values[0];
    v.shape = {in.size(0), in.size(2), in.size(3), in.size(1)};
    v.data.resize(static_cast<size_t>(v.shape.numel()));
    nhwc::nchw_to_nhwc(in.data_ptr<float>(), v.shape.n, v.shape.c, v.shape.h, v.shape.w, v.shape.c, v.data.data());
    round_to(precision, v.data);
    v.defined = true;
  }
  auto get = [&](int32_t index, const BackboneCudaLayer& l, int32_t id, const char* role) -> const Value& {
    if (id < 0 || id >= net.num_values || !values[id].defined)
      bad_layer(index, l, std::string(role) + " value " + std::to_string(id) + " is not computed yet");
    return values[id];
  };
  for (int32_t li = 0; li < net.num_layers; ++li) {
    const BackboneCudaLayer& l = net.layers[li];
    const Value& x = get(li, l, l.input, "input");
    if (l.output <= 0 || l.output >= net.num_values || values[l.output].defined)
      bad_layer(li, l, "output value " + std::to_string(l.output) + " is not a new value");
    Value out;
    const Value* res = l.residual >= 0 ? &get(li, l, l.residual, "residual") : nullptr;
    switch (l.kind) {
      case BACKBONE_CUDA_LAYER_CONV:
      case BACKBONE_CUDA_LAYER_DEFORM_CONV: {
        if (x.shape.c != l.in_channels)
          bad_layer(li, l, "expected " + std::to_string(l.in_channels) + " input channels, found " +
                               std::to_string(x.shape.c));
        const int64_t k = l.kernel_size;
        out.shape = {x.shape.n, conv_out_size(x.shape.h, k, l.stride, l.padding, l.dilation),
                     conv_out_size(x.shape.w, k, l.stride, l.padding, l.dilation), l.out_channels};
        out.data.resize(static_cast<size_t>(out.shape.numel()));
        std::vector<float> w = to_ohwi(l.weight, l.out_channels, l.in_channels / l.groups, k);
        round_to(precision, w);
        if (res && (res->shape.n != out.shape.n || res->shape.h != out.shape.h || res->shape.w != out.shape.w ||
                    res->shape.c != out.shape.c))
          bad_layer(li, l, "residual shape does not match the output");
        // The fields nhwc::ConvArgs and nhwc::DeformConvArgs share.
        const auto set_conv_args = [&](auto& a) {
          a.input = x.data.data();
          a.weight = w.data();
          a.bias = l.bias;
          a.residual = res ? res->data.data() : nullptr;
          a.out = out.data.data();
          a.n = x.shape.n;
          a.h = x.shape.h;
          a.w = x.shape.w;
          a.in_channels = l.in_channels;
          a.out_channels = l.out_channels;
          a.out_h = out.shape.h;
          a.out_w = out.shape.w;
          a.kernel = k;
          a.stride = l.stride;
          a.padding = l.padding;
          a.dilation = l.dilation;
          a.groups = l.groups;
          a.relu = l.relu != 0;
        };
        if (l.kind == BACKBONE_CUDA_LAYER_CONV) {
          nhwc::ConvArgs a;
          set_conv_args(a);
          nhwc::conv(a);
        } else {
          const Value& off = get(li, l, l.aux, "offset");
          const int64_t taps = l.deformable_groups * k * k;
          if (off.shape.c < (l.modulated ? 3 : 2) * taps || off.shape.h != out.shape.h || off.shape.w != out.shape.w)
            bad_layer(li, l, "offset value has " + std::to_string(off.shape.c) + " channels of " +
                                 std::to_string(off.shape.h) + "x" + std::to_string(off.shape.w) + ", expected " +
                                 std::to_string((l.modulated ? 3 : 2) * taps) + " of " + std::to_string(out.shape.h) +
                                 "x" + std::to_string(out.shape.w));
          nhwc::DeformConvArgs a;
          set_conv_args(a);
          a.offset = off.data.data();
          a.offset_channels = off.shape.c;
          a.deformable_groups = l.deformable_groups;
          a.modulated = l.modulated != 0;
          nhwc::deform_conv(a);
        }
        break;
      }
      case BACKBONE_CUDA_LAYER_MAX_POOL: {
        const int64_t k = l.kernel_size;
        out.shape = {x.shape.n, conv_out_size(x.shape.h, k, l.stride, l.padding, 1),
                     conv_out_size(x.shape.w, k, l.stride, l.padding, 1), x.shape.c};
        out.data.resize(static_cast<size_t>(out.shape.numel()));
        nhwc::max_pool(x.data.data(), x.shape, out.data.data(), out.shape.h, out.shape.w, static_cast<int>(k),
                       static_cast<int>(l.stride), static_cast<int>(l.padding));
        break;
      }
      case BACKBONE_CUDA_LAYER_GROUP_NORM:
      case BACKBONE_CUDA_LAYER_LAYER_NORM: {
        if (x.shape.c != l.in_channels)
          bad_layer(li, l, "expected " + std::to_string(l.in_channels) + " channels, found " + std::to_string(x.shape.c));
        out.shape = x.shape;
        out.data.resize(x.data.size());
        if (l.kind == BACKBONE_CUDA_LAYER_GROUP_NORM)
          nhwc::group_norm(x.data.data(), x.shape, l.num_groups, l.eps, l.weight, l.bias,
                           res ? res->data.data() : nullptr, l.relu != 0, out.data.data());
        else
          nhwc::layer_norm(x.data.data(), x.shape, l.eps, l.weight, l.bias, res ? res->data.data() : nullptr,
                           l.relu != 0, out.data.data());
        break;
      }
      case BACKBONE_CUDA_LAYER_UPSAMPLE_ADD: {
        const Value& coarse = get(li, l, l.aux, "coarser level");
        if (x.shape.c != l.in_channels || coarse.shape.c != l.in_channels)
          bad_layer(li, l, "expected " + std::to_string(l.in_channels) + " channels, found " +
                               std::to_string(x.shape.c) + " (lateral) and " + std::to_string(coarse.shape.c) +
                               " (coarser level)");
        if (coarse.shape.n != x.shape.n || 2 * coarse.shape.h != x.shape.h || 2 * coarse.shape.w != x.shape.w)
          throw ShapeError("cuda net: layer " + std::to_string(li) + " (UPSAMPLE_ADD): the coarser level (" +
                           std::to_string(coarse.shape.h) + "x" + std::to_string(coarse.shape.w) + ", upsampled 2x to " +
                           std::to_string(2 * coarse.shape.h) + "x" + std::to_string(2 * coarse.shape.w) +
                           ") does not match the lateral features (" + std::to_string(x.shape.h) + "x" +
                           std::to_string(x.shape.w) + "): pad the input to a multiple of the FPN's size_divisibility");
        out.shape = x.shape;
        out.data.resize(x.data.size());
        nhwc::upsample2x_add(x.data.data(), x.shape, coarse.data.data(), static_cast<float>(l.scale), out.data.data());
        break;
      }
      case BACKBONE_CUDA_LAYER_RELU:
        out.shape = x.shape;
        out.data.resize(x.data.size());
        nhwc::bias_residual_act(x.data.data(), x.shape, nullptr, nullptr, true, out.data.data());
        break;
      case BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR: {
        if (x.shape.c != l.in_channels)
          bad_layer(li, l, "expected " + std::to_string(l.in_channels) + " channels, found " + std::to_string(x.shape.c));
        out.shape = {x.shape.n, 1, 1, l.out_channels};
        out.data.resize(static_cast<size_t>(out.shape.numel()));
        nhwc::avgpool_linear(x.data.data(), x.shape, l.weight, l.bias, l.out_channels, out.data.data());
        break;
      }
      default:
        bad_layer(li, l, "unknown layer kind " + std::to_string(l.kind));
    }
    // The module stores every activation in the storage type (the classifier's output stays float32).
    if (l.kind != BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR) round_to(precision, out.data);
    out.defined = true;
    values[l.output] = std::move(out);
  }
  std::vector<Tensor> result;
  for (int32_t i = 0; i < net.num_outputs; ++i) {
    const int32_t id = net.outputs[i];
    if (id < 0 || id >= net.num_values || !values[id].defined)
      throw Error("cuda net: output " + std::to_string(i) + " is value " + std::to_string(id) + ", never computed");
    const Value& v = values[id];
    const bool linear = std::any_of(net.layers, net.layers + net.num_layers, [&](const BackboneCudaLayer& l) {
      return l.output == id && l.kind == BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR;
    });
    Tensor t = Tensor::empty(linear ? Shape{v.shape.n, v.shape.c} : Shape{v.shape.n, v.shape.c, v.shape.h, v.shape.w});
    nhwc::nhwc_to_nchw(v.data.data(), v.shape.n, v.shape.h, v.shape.w, v.shape.c, v.shape.c, t.data_ptr<float>());
    result.push_back(std::move(t));
  }
  return result;
}

FeatureMaps run_cuda_net_on_cpu(const CudaNet& net, const Tensor& images, Precision precision) {
  if (images.dim() == 4) check_cuda_net_fpn_sizes(net, images.size(2), images.size(3));
  std::vector<Tensor> outs = run_cuda_net_on_cpu(net.desc(), images, precision);
  FeatureMaps result;
  for (size_t i = 0; i < outs.size(); ++i) result.emplace_back(net.output_names[i], std::move(outs[i]));
  return result;
}

}  // namespace backbone::detail
