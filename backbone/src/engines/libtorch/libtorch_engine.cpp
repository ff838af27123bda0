// SPDX-License-Identifier: Apache-2.0
// The LibTorch engine: runs a ResNet with ATen operators (oneDNN convolutions on the CPU).
// At load time every BatchNorm/FrozenBN is folded into its convolution, so each conv carries a
// bias and the ReLU and residual add run in place. GroupNorm and LayerNorm stay separate.
// This is the only file that includes LibTorch headers (ATen alone, which compiles faster than
// torch/torch.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <algorithm>
#include <thread>

#include "backbone/error.h"
#include "backbone/ops.h"
#include "engines/engines.h"
#include "ops/cpu/deform_conv2d_kernel.h"

namespace backbone::detail {
namespace {

at::ScalarType to_aten(DType d) {
  switch (d) {
    case DType::Float32: return at::kFloat;
    case DType::Float16: return at::kHalf;
    case DType::BFloat16: return at::kBFloat16;
    case DType::Float64: return at::kDouble;
    case DType::Int64: return at::kLong;
    case DType::Int32: return at::kInt;
    case DType::Int16: return at::kShort;
    case DType::Int8: return at::kChar;
    case DType::UInt8: return at::kByte;
    case DType::Bool: return at::kBool;
  }
  throw Error("unsupported dtype");
}

// A CPU float32 backbone::Tensor as an at::Tensor sharing its memory (kept alive by a copy).
at::Tensor to_aten(const Tensor& t) {
  if (!t.device().is_cpu()) throw DeviceError("LibTorch engine: expected a CPU tensor, found " + t.device().str());
  auto holder = new Tensor(t);
  return at::from_blob(const_cast<void*>(t.data()), t.shape(), t.strides(),
                       [holder](void*) { delete holder; }, at::TensorOptions().dtype(to_aten(t.dtype())));
}

// A float32 at::Tensor as a backbone::Tensor on `device` that shares its storage.
Tensor from_aten(const at::Tensor& t_in, Device device = Device::cpu()) {
  at::Tensor t = t_in.contiguous();
  auto owner = std::make_shared<at::Tensor>(t);
  return Tensor::from_blob(t.data_ptr(), t.sizes().vec(), DType::Float32, device,
                           std::shared_ptr<void>(owner, owner.get()));
}

// One convolution ready to run: BN folded in, or a GN/LN applied after it.
struct ConvOp {
  at::Tensor weight, bias;  // bias may be undefined
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
  std::string norm;              // "", "GN" or "LN" (BN family is folded)
  at::Tensor norm_weight, norm_bias;
  double eps = 1e-5;
  int64_t num_groups = 32;

  at::Tensor apply_norm(at::Tensor x) const {
    if (norm == "GN") return at::group_norm(x, num_groups, norm_weight, norm_bias, eps, /*cudnn_enabled=*/false);
    if (norm == "LN") {
      // detectron2's LayerNorm over the channel dimension of NCHW.
      at::Tensor u = x.mean(1, /*keepdim=*/true);
      at::Tensor s = (x - u).pow(2).mean(1, /*keepdim=*/true);
      x = (x - u) / at::sqrt(s + eps);
      return norm_weight.view({-1, 1, 1}) * x + norm_bias.view({-1, 1, 1});
    }
    return x;
  }

  at::Tensor operator()(const at::Tensor& x) const {
    return apply_norm(at::conv2d(x, weight, bias, {stride, stride}, {padding, padding}, {dilation, dilation}, groups));
  }
};

ConvOp make_conv_op(const Conv2d& c, const at::Device& device) {
  ConvOp op;
  op.stride = c.stride;
  op.padding = c.padding;
  op.dilation = c.dilation;
  op.groups = c.groups;
  // Fold in double precision: W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps).
  at::Tensor w = to_aten(c.weight).to(at::kDouble);
  at::Tensor b = c.bias.defined() ? to_aten(c.bias).to(at::kDouble) : at::Tensor();
  if (c.norm.is_batch_norm()) {
    at::Tensor scale = to_aten(c.norm.weight).to(at::kDouble) *
                       at::rsqrt(to_aten(c.norm.running_var).to(at::kDouble) + c.norm.eps());
    at::Tensor shift = to_aten(c.norm.bias).to(at::kDouble) - to_aten(c.norm.running_mean).to(at::kDouble) * scale;
    w = w * scale.view({-1, 1, 1, 1});
    b = b.defined() ? b * scale + shift : shift;
  } else if (!c.norm.empty()) {
    op.norm = c.norm.kind;
    op.eps = c.norm.eps();
    op.num_groups = c.norm.num_groups();
    op.norm_weight = to_aten(c.norm.weight).clone().to(device);
    op.norm_bias = to_aten(c.norm.bias).clone().to(device);
  }
  op.weight = w.to(at::kFloat).contiguous().to(device);
  if (b.defined()) op.bias = b.to(at::kFloat).contiguous().to(device);
  return op;
}

struct BlockOp {
  BlockKind kind;
  bool has_shortcut = false;
  ConvOp shortcut, conv1, conv2, conv3, conv2_offset;
  bool deform_modulated = false;
  int64_t deform_num_groups = 1;

  at::Tensor deform_conv2(const at::Tensor& x) const {
    at::Tensor offset_mask = conv2_offset(x);
    at::Tensor offset, mask;
    if (deform_modulated) {
      // torch.chunk(offset_mask, 3, dim=1): offset_x, offset_y, mask; offset = cat(offset_x, offset_y)
      const int64_t n = offset_mask.size(1) / 3;
      offset = offset_mask.narrow(1, 0, 2 * n);
      mask = offset_mask.narrow(1, 2 * n, n).sigmoid();
    } else {
      offset = offset_mask;
    }
    // This project's deformable im2col (ops/cpu), then the columns [C*kh*kw, Ho*Wo] go through
    // a grouped 1x1 convolution (oneDNN) with the folded weights [O, C/g*kh*kw, 1, 1]: rows of the
    // columns are ordered (c, i, j) exactly as the weights' (c, i, j), group by group.
    const at::Device device = x.device();
    at::Tensor xc = x.cpu().contiguous(), oc = offset.cpu().contiguous();
    at::Tensor mc = mask.defined() ? mask.cpu().contiguous() : at::Tensor();
    const int64_t n = xc.size(0), c = xc.size(1), h = xc.size(2), w = xc.size(3);
    const int64_t ho = oc.size(2), wo = oc.size(3), o = conv2.weight.size(0), g = conv2.groups;
    const int64_t kh = conv2.weight.size(2), kw = conv2.weight.size(3);
    ops::DeformConv2dParams p;
    p.stride_h = p.stride_w = conv2.stride;
    p.pad_h = p.pad_w = conv2.padding;
    p.dilation_h = p.dilation_w = conv2.dilation;
    p.groups = g;
    p.deformable_groups = deform_num_groups;
    at::Tensor weight = conv2.weight.cpu().contiguous().view({o, (c / g) * kh * kw, 1, 1});
    at::Tensor bias = conv2.bias.defined() ? conv2.bias.cpu() : at::Tensor();
    at::Tensor columns = at::empty({1, c * kh * kw, ho, wo}, xc.options());
    std::vector<at::Tensor> outs;
    for (int64_t i = 0; i < n; ++i) {
      detail::deformable_im2col(xc[i].data_ptr<float>(), oc[i].data_ptr<float>(),
                                mc.defined() ? mc[i].data_ptr<float>() : nullptr, c, h, w, kh, kw, p, ho, wo,
                                columns.data_ptr<float>());
      outs.push_back(at::conv2d(columns, weight, bias, at::IntArrayRef{1, 1}, at::IntArrayRef{0, 0}, at::IntArrayRef{1, 1}, g));
    }
    at::Tensor out = n == 1 ? outs[0] : at::cat(outs, 0);
    return conv2.apply_norm(out.to(device));
  }

  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor out;
    if (kind == BlockKind::BasicBlock) {
      out = conv1(x).relu_();
      out = conv2(out);
    } else {
      out = conv1(x).relu_();
      out = (kind == BlockKind::DeformBottleneckBlock ? deform_conv2(out) : conv2(out)).relu_();
      out = conv3(out);
    }
    out.add_(has_shortcut ? shortcut(x) : x);
    return out.relu_();
  }
};

class LibTorchEngine final : public Engine {
 public:
  LibTorchEngine(const ResNet& model, const FPN* fpn, const EngineOptions& options) : device_(options.device) {
    if (options.precision != Precision::Float32)
      throw UnsupportedError(std::string("LibTorch engine: precision ") + precision_name(options.precision) +
                             " is not supported; use fp32, or engine onednn for bf16");
    if (device_.is_cuda()) {
      if (!at::hasCUDA())
        throw DeviceError("device " + device_.str() +
                          " is not available to the LibTorch engine: this LibTorch is built without CUDA "
                          "(Debian's libtorch is CPU-only)");
      at_device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_.index));
    }
    threads_ = engine_threads(options);
    const int threads = threads_;
    // Debian's LibTorch defaults to one thread here, and with one thread it sends 1x1
    // convolutions to a slow reference-BLAS path: set the count explicitly.
    at::set_num_threads(threads);

    stem_ = make_conv_op(model.stem().conv1, at_device_);
    for (size_t s = 0; s < model.stages().size(); ++s) {
      std::vector<BlockOp> blocks;
      for (const auto& b : model.stages()[s]) {
        BlockOp op;
        op.kind = b->kind();
        for (const auto& [name, conv] : b->convs()) {
          ConvOp c = make_conv_op(*conv, at_device_);
          if (name == "shortcut") {
            op.shortcut = c;
            op.has_shortcut = true;
          } else if (name == "conv1") {
            op.conv1 = c;
          } else if (name == "conv2") {
            op.conv2 = c;
          } else if (name == "conv3") {
            op.conv3 = c;
          } else if (name == "conv2_offset") {
            op.conv2_offset = c;
          }
        }
        if (b->kind() == BlockKind::DeformBottleneckBlock) {
          const auto& d = static_cast<const DeformBottleneckBlock&>(*b);
          op.deform_modulated = d.deform_modulated;
          op.deform_num_groups = d.deform_num_groups;
        }
        blocks.push_back(std::move(op));
      }
      stages_.push_back(std::move(blocks));
    }
    stage_names_ = model.stage_names();
    out_features_ = model.out_features();
    if (fpn) {
      fpn_ = true;
      fpn_geometry_ = FpnLevels(*fpn);
      for (size_t i = 0; i < fpn->in_features().size(); ++i) {
        laterals_.push_back(make_conv_op(fpn->lateral_convs[i], at_device_));
        outputs_.push_back(make_conv_op(fpn->output_convs[i], at_device_));
      }
      if (fpn->top_block.kind == TopBlockKind::LastLevelP6P7) {
        p6_ = make_conv_op(fpn->top_block.p6, at_device_);
        p7_ = make_conv_op(fpn->top_block.p7, at_device_);
      }
      fpn_in_features_ = fpn->in_features();
      for (const auto& [n, s] : fpn->output_shape()) fpn_levels_.push_back(n);
      fpn_avg_ = fpn->fuse_type() == "avg";
      top_block_ = fpn->top_block.kind;
      // The bottom-up's maps every later step reads; the selection is fpn->out_features().
      selection_ = fpn->out_features();
    }
    if (model.num_classes()) {
      linear_weight_ = to_aten(model.linear_weight).clone().to(at_device_);
      linear_bias_ = to_aten(model.linear_bias).clone().to(at_device_);
    }
    in_channels_ = model.stem().in_channels();
  }

  std::string name() const override { return "libtorch"; }
  Device device() const override { return device_; }
  std::string describe() const override {
    return "libtorch fp32 on " + device_.str() + ", " + std::to_string(threads_) +
           " threads (LibTorch " TORCH_VERSION ": ATen conv2d, oneDNN on the CPU; BN folded; set process-wide)";
  }

  FeatureMaps forward(const Tensor& images) override {
    c10::InferenceMode guard;
    const Tensor host = engine_input(images, in_channels_);
    at::Tensor x = to_aten(host).to(at_device_).contiguous();

    std::vector<std::pair<std::string, at::Tensor>> outputs;
    auto wanted = [&](const std::string& n) {
      return std::find(out_features_.begin(), out_features_.end(), n) != out_features_.end();
    };
    x = stem_(x).relu_();
    x = at::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
    if (wanted("stem")) outputs.emplace_back("stem", x);
    for (size_t s = 0; s < stages_.size(); ++s) {
      for (const auto& block : stages_[s]) x = block(x);
      if (wanted(stage_names_[s])) outputs.emplace_back(stage_names_[s], x);
    }
    if (linear_weight_.defined()) {
      x = at::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
      x = at::linear(x, linear_weight_, linear_bias_);
      if (wanted("linear")) outputs.emplace_back("linear", x);
    }
    if (fpn_) fpn_forward(outputs);
    FeatureMaps result;
    for (const auto& name : fpn_ ? selection_ : out_features_)
      for (const auto& [n, t] : outputs)
        if (n == name) result.emplace_back(n, from_aten(t, device_));
    return result;
  }

  // detectron2's FPN.forward on the bottom-up's outputs; appends the p-levels to `maps`.
  void fpn_forward(std::vector<std::pair<std::string, at::Tensor>>& maps) const {
    auto find = [&](const std::string& name) {
      for (const auto& [n, t] : maps)
        if (n == name) return t;
      throw Error("FPN: bottom-up output " + name + " was not computed");
    };
    const size_t levels = fpn_in_features_.size();
    std::vector<std::pair<int64_t, int64_t>> hw;
    for (const auto& f : fpn_in_features_) {
      const at::Tensor t = find(f);
      hw.emplace_back(t.size(2), t.size(3));
    }
    check_fpn_level_sizes(fpn_geometry_, hw);
    std::vector<at::Tensor> results(levels);
    at::Tensor prev = laterals_[levels - 1](find(fpn_in_features_[levels - 1]));
    results[levels - 1] = outputs_[levels - 1](prev);
    for (size_t i = levels - 1; i-- > 0;) {
      at::Tensor top_down = at::upsample_nearest2d(prev, {prev.size(2) * 2, prev.size(3) * 2});
      prev = laterals_[i](find(fpn_in_features_[i])).add_(top_down);
      if (fpn_avg_) prev.div_(2);
      results[i] = outputs_[i](prev);
    }
    if (top_block_ == TopBlockKind::LastLevelMaxPool) {
      results.push_back(at::max_pool2d(results[levels - 1], {1, 1}, {2, 2}, {0, 0}));
    } else if (top_block_ == TopBlockKind::LastLevelP6P7) {
      at::Tensor p6 = p6_(find("res5"));
      at::Tensor p7 = p7_(at::relu(p6));
      results.push_back(p6);
      results.push_back(p7);
    }
    for (size_t i = 0; i < results.size() && i < fpn_levels_.size(); ++i) maps.emplace_back(fpn_levels_[i], results[i]);
  }

 private:
  Device device_;
  at::Device at_device_ = at::Device(at::kCPU);
  ConvOp stem_;
  std::vector<std::vector<BlockOp>> stages_;
  std::vector<std::string> stage_names_, out_features_;
  at::Tensor linear_weight_, linear_bias_;
  // FPN (fpn_ set): its layers in in_features order, its top block and the selection returned.
  bool fpn_ = false;
  FpnLevels fpn_geometry_;
  std::vector<ConvOp> laterals_, outputs_;
  ConvOp p6_, p7_;
  std::vector<std::string> fpn_in_features_, fpn_levels_, selection_;
  bool fpn_avg_ = false;
  TopBlockKind top_block_ = TopBlockKind::None;
  int64_t in_channels_ = 3;
  int threads_ = 1;
};

}  // namespace

std::unique_ptr<Engine> create_libtorch_engine(const ResNet& model, const FPN* fpn, const EngineOptions& options) {
  return std::make_unique<LibTorchEngine>(model, fpn, options);
}

}  // namespace backbone::detail
