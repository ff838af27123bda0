// SPDX-License-Identifier: Apache-2.0
// The OpenCV DNN engine: a cv::dnn::Net built layer by layer from the ResNet's own weights (no
// ONNX, no Python), for machines that have OpenCV and no LibTorch. Every BatchNorm/FrozenBN is
// folded into its convolution in double precision at load time; OpenCV's CPU backend then fuses
// convolution + ReLU and residual add + ReLU. Three custom layers, registered
// once under names of their own, run what cv::dnn 4.6 lacks:
//   BackboneDeformIm2col: this project's deformable im2col (ops/cpu/deform_conv2d_kernel.h), v1 or
//     v2 (modulated: the mask is the sigmoid of the last third of conv2_offset's channels); the
//     GEMM with the folded weights is then a grouped 1x1 "Convolution" layer of OpenCV's own.
//   BackboneGroupNorm: GroupNorm (statistics in double).
//   BackboneChannelLayerNorm: detectron2's LayerNorm over the channels of NCHW.
// With an FPN (detectron2's fpn.py), its lateral and output convolutions, the top-down nearest 2x
// upsampling (a "Resize" layer: cv::resize INTER_NEAREST, exactly F.interpolate's nearest) with
// an "Eltwise" sum (avg: coefficients 0.5, 0.5) and the top block are layers of the same net
// (add_fpn), whose outputs are fpn->out_features() (p-levels and bottom-up maps).
//
// OpenCV 4.6 quirks, checked against the LibTorch engine at 64x64, 224x224, 320x480 and 200x312
// (tests/backbone/opencv_engine_test.cpp), and once by hand at 800x1216 and 801x1199:
//  - "Pooling" defaults to Caffe's ceil_mode=true; PyTorch's max_pool2d floors (the stem's pool
//    would give 57x57 instead of 56x56 at 224x224), so ceil_mode=false is set explicitly.
//  - On the CPU, 4.6 fuses Convolution+ReLU and Eltwise(sum)+ReLU; it does not fuse the residual
//    add into the convolution (that fusion is OpenCL/CUDA only there). Every fusion it makes is
//    kept: none of them gave a wrong result at any size here, with fusion on or off. A reported
//    "right at 64x64, wrong at 224x224" (an ONNX import) did not reproduce with this Debian
//    OpenCV 4.6.0 either, neither with torch 1.13 exports of torchvision's ResNet-50 (opsets 9-17,
//    fixed or dynamic input size) nor of detectron2's R-50 (FrozenBN as Mul/Add): relative error
//    <= 3e-6 at 64x64, 224x224 and 320x480.
//  - FPN layers read the same way in OpenCV 4.10 (Debian 13; from its source, not run here):
//    Resize nearest without half_pixel_centers is cv::resize INTER_NEAREST, Pooling's floor size
//    formula, Eltwise's coefficients and the fusion guard for kept outputs are unchanged, and
//    4.10's CPU Convolution+Add fusion takes operation "add" only (these are "sum").
//  - cv::setNumThreads is process-wide (and with Debian's TBB build it rebuilds the task arena),
//    so it is called only when the count differs from this engine's.
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/dnn/layer.details.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>

#include "backbone/error.h"
#include "backbone/ops.h"
#include "engines/engines.h"
#include "ops/cpu/deform_conv2d_kernel.h"

namespace backbone::detail {
namespace {

using cv::dnn::LayerParams;
using cv::dnn::MatShape;

constexpr const char* kDeformIm2colType = "BackboneDeformIm2col";
constexpr const char* kGroupNormType = "BackboneGroupNorm";
constexpr const char* kChannelLayerNormType = "BackboneChannelLayerNorm";

[[noreturn]] void layer_error(const std::string& message) { CV_Error(cv::Error::StsBadArg, message); }

// Deformable im2col: inputs x [N, C, H, W] and conv2_offset's output [N, (2 or 3) * G * k * k, Ho, Wo];
// output the columns [N, C * k * k, Ho, Wo], rows ordered (c, i, j) like the weights' [O, C/g, k, k].
class DeformIm2colLayer final : public cv::dnn::Layer {
 public:
  explicit DeformIm2colLayer(const LayerParams& p) {
    setParamsFrom(p);
    kernel_ = p.get<int>("kernel");
    params_.stride_h = params_.stride_w = p.get<int>("stride");
    params_.pad_h = params_.pad_w = p.get<int>("pad");
    params_.dilation_h = params_.dilation_w = p.get<int>("dilation");
    params_.deformable_groups = p.get<int>("deformable_groups");
    modulated_ = p.get<bool>("modulated");
  }
  static cv::Ptr<cv::dnn::Layer> create(LayerParams& p) { return cv::makePtr<DeformIm2colLayer>(p); }

  bool getMemoryShapes(const std::vector<MatShape>& inputs, const int, std::vector<MatShape>& outputs,
                       std::vector<MatShape>&) const override {
    if (inputs.size() != 2 || inputs[0].size() != 4 || inputs[1].size() != 4)
      layer_error(name + ": expected two 4-d inputs (features, offsets)");
    const int n = inputs[0][0], c = inputs[0][1];
    const int ho = out_size(inputs[0][2]), wo = out_size(inputs[0][3]);
    const int taps = kernel_ * kernel_;
    const int offset_channels = (modulated_ ? 3 : 2) * static_cast<int>(params_.deformable_groups) * taps;
    if (inputs[1][0] != n || inputs[1][1] != offset_channels || inputs[1][2] != ho || inputs[1][3] != wo)
      layer_error(name + ": expected offsets [" + std::to_string(n) + ", " + std::to_string(offset_channels) + ", " +
                  std::to_string(ho) + ", " + std::to_string(wo) + "], found [" + std::to_string(inputs[1][0]) + ", " +
                  std::to_string(inputs[1][1]) + ", " + std::to_string(inputs[1][2]) + ", " +
                  std::to_string(inputs[1][3]) + "]");
    if (c % params_.deformable_groups != 0)
      layer_error(name + ": " + std::to_string(c) + " channels are not divisible by " +
                  std::to_string(params_.deformable_groups) + " deformable groups");
    outputs.assign(1, MatShape{n, c * taps, ho, wo});
    return false;
  }

  void forward(cv::InputArrayOfArrays inputs_arr, cv::OutputArrayOfArrays outputs_arr,
               cv::OutputArrayOfArrays) override {
    std::vector<cv::Mat> inputs, outputs;
    inputs_arr.getMatVector(inputs);
    outputs_arr.getMatVector(outputs);
    const cv::Mat &x = inputs[0], &om = inputs[1];
    cv::Mat& cols = outputs[0];
    const int64_t n = x.size[0], c = x.size[1], h = x.size[2], w = x.size[3];
    const int64_t ho = om.size[2], wo = om.size[3], plane = ho * wo;
    const int64_t taps = int64_t{kernel_} * kernel_, groups = params_.deformable_groups;
    const int64_t om_channels = om.size[1];
    if (modulated_) mask_.resize(static_cast<size_t>(groups * taps * plane));
    for (int64_t i = 0; i < n; ++i) {
      const float* image = x.ptr<float>() + i * c * h * w;
      const float* offset = om.ptr<float>() + i * om_channels * plane;  // first 2 * G * k * k channels
      const float* mask = nullptr;
      if (modulated_) {
        // torch.chunk(offset_mask, 3, dim=1): offset_x, offset_y, mask; the mask goes through sigmoid.
        const float* raw = offset + 2 * groups * taps * plane;
        float* m = mask_.data();
        const int64_t total = groups * taps * plane;
        for (int64_t k = 0; k < total; ++k) m[k] = 1.0f / (1.0f + std::exp(-raw[k]));
        mask = m;
      }
      detail::deformable_im2col(image, offset, mask, c, h, w, kernel_, kernel_, params_, ho, wo,
                                cols.ptr<float>() + i * c * taps * plane);
    }
  }

 private:
  int out_size(int in) const {
    return static_cast<int>((in + 2 * params_.pad_h - params_.dilation_h * (kernel_ - 1) - 1) / params_.stride_h + 1);
  }

  int kernel_ = 3;
  ops::DeformConv2dParams params_;
  bool modulated_ = false;
  std::vector<float> mask_;
};

// GroupNorm(num_groups, C, eps) with affine weight (blobs[0]) and bias (blobs[1]).
class GroupNormLayer final : public cv::dnn::Layer {
 public:
  explicit GroupNormLayer(const LayerParams& p) {
    setParamsFrom(p);
    groups_ = p.get<int>("groups");
    eps_ = p.get<double>("eps");
  }
  static cv::Ptr<cv::dnn::Layer> create(LayerParams& p) { return cv::makePtr<GroupNormLayer>(p); }

  bool getMemoryShapes(const std::vector<MatShape>& inputs, const int, std::vector<MatShape>& outputs,
                       std::vector<MatShape>&) const override {
    if (inputs.size() != 1 || inputs[0].size() != 4 || inputs[0][1] != static_cast<int>(blobs[0].total()) ||
        inputs[0][1] % groups_ != 0)
      layer_error(name + ": expected one [N, " + std::to_string(blobs[0].total()) + ", H, W] input");
    outputs.assign(1, inputs[0]);
    return false;
  }

  void forward(cv::InputArrayOfArrays inputs_arr, cv::OutputArrayOfArrays outputs_arr,
               cv::OutputArrayOfArrays) override {
    std::vector<cv::Mat> inputs, outputs;
    inputs_arr.getMatVector(inputs);
    outputs_arr.getMatVector(outputs);
    const cv::Mat& x = inputs[0];
    const int n = x.size[0], c = x.size[1];
    const size_t plane = static_cast<size_t>(x.size[2]) * x.size[3];
    const int per_group = c / groups_;
    const size_t group_size = per_group * plane;
    const float* gamma = blobs[0].ptr<float>();
    const float* beta = blobs[1].ptr<float>();
    const float* in = x.ptr<float>();
    float* out = outputs[0].ptr<float>();
    cv::parallel_for_(cv::Range(0, n * groups_), [&](const cv::Range& r) {
      for (int ng = r.start; ng < r.end; ++ng) {
        const float* src = in + ng * group_size;
        float* dst = out + ng * group_size;
        double sum = 0;
        for (size_t k = 0; k < group_size; ++k) sum += src[k];
        const double mean = sum / static_cast<double>(group_size);
        double sq = 0;
        for (size_t k = 0; k < group_size; ++k) sq += (src[k] - mean) * (src[k] - mean);
        const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(group_size) + eps_);
        for (int cc = 0; cc < per_group; ++cc) {
          const int channel = (ng % groups_) * per_group + cc;
          const float scale = static_cast<float>(gamma[channel] * rstd);
          const float shift = static_cast<float>(beta[channel] - mean * gamma[channel] * rstd);
          const float* s = src + cc * plane;
          float* d = dst + cc * plane;
          for (size_t k = 0; k < plane; ++k) d[k] = s[k] * scale + shift;
        }
      }
    });
  }

 private:
  int groups_ = 32;
  double eps_ = 1e-5;
};

// detectron2's LayerNorm on NCHW: per pixel, normalised over the channels; weight blobs[0], bias blobs[1].
class ChannelLayerNormLayer final : public cv::dnn::Layer {
 public:
  explicit ChannelLayerNormLayer(const LayerParams& p) {
    setParamsFrom(p);
    eps_ = p.get<double>("eps");
  }
  static cv::Ptr<cv::dnn::Layer> create(LayerParams& p) { return cv::makePtr<ChannelLayerNormLayer>(p); }

  bool getMemoryShapes(const std::vector<MatShape>& inputs, const int, std::vector<MatShape>& outputs,
                       std::vector<MatShape>&) const override {
    if (inputs.size() != 1 || inputs[0].size() != 4 || inputs[0][1] != static_cast<int>(blobs[0].total()))
      layer_error(name + ": expected one [N, " + std::to_string(blobs[0].total()) + ", H, W] input");
    outputs.assign(1, inputs[0]);
    return false;
  }

  void forward(cv::InputArrayOfArrays inputs_arr, cv::OutputArrayOfArrays outputs_arr,
               cv::OutputArrayOfArrays) override {
    std::vector<cv::Mat> inputs, outputs;
    inputs_arr.getMatVector(inputs);
    outputs_arr.getMatVector(outputs);
    const cv::Mat& x = inputs[0];
    const int n = x.size[0], c = x.size[1];
    const int plane = x.size[2] * x.size[3];
    constexpr int kBlock = 256;  // pixels per task
    const int blocks = (plane + kBlock - 1) / kBlock;
    const float* gamma = blobs[0].ptr<float>();
    const float* beta = blobs[1].ptr<float>();
    const float* in = x.ptr<float>();
    float* out = outputs[0].ptr<float>();
    cv::parallel_for_(cv::Range(0, n * blocks), [&](const cv::Range& r) {
      double mean[kBlock], var[kBlock];
      for (int task = r.start; task < r.end; ++task) {
        const int b = task / blocks, p0 = (task % blocks) * kBlock, len = std::min(kBlock, plane - p0);
        const float* src = in + static_cast<size_t>(b) * c * plane + p0;
        float* dst = out + static_cast<size_t>(b) * c * plane + p0;
        std::fill(mean, mean + len, 0.0);
        std::fill(var, var + len, 0.0);
        for (int ch = 0; ch < c; ++ch)
          for (int k = 0; k < len; ++k) mean[k] += src[static_cast<size_t>(ch) * plane + k];
        for (int k = 0; k < len; ++k) mean[k] /= c;
        for (int ch = 0; ch < c; ++ch)
          for (int k = 0; k < len; ++k) {
            const double d = src[static_cast<size_t>(ch) * plane + k] - mean[k];
            var[k] += d * d;
          }
        for (int k = 0; k < len; ++k) var[k] = 1.0 / std::sqrt(var[k] / c + eps_);  // now 1 / std
        for (int ch = 0; ch < c; ++ch)
          for (int k = 0; k < len; ++k) {
            const size_t at = static_cast<size_t>(ch) * plane + k;
            dst[at] = static_cast<float>((src[at] - mean[k]) * var[k] * gamma[ch] + beta[ch]);
          }
      }
    });
  }

 private:
  double eps_ = 1e-6;
};

// OpenCV's layer factory is process-wide: register the custom layers once, whichever thread
// creates the first engine.
void register_custom_layers() {
  static std::once_flag once;
  std::call_once(once, [] {
    cv::dnn::LayerFactory::registerLayer(kDeformIm2colType, DeformIm2colLayer::create);
    cv::dnn::LayerFactory::registerLayer(kGroupNormType, GroupNormLayer::create);
    cv::dnn::LayerFactory::registerLayer(kChannelLayerNormType, ChannelLayerNormLayer::create);
  });
}

// A float32 cv::Mat copy of a 1-d tensor as [1, n].
cv::Mat row_mat(const Tensor& t) {
  const Tensor f = t.to(Device::cpu()).to(DType::Float32).contiguous();
  cv::Mat m(1, static_cast<int>(f.numel()), CV_32F);
  std::memcpy(m.ptr<float>(), f.data_ptr<float>(), f.nbytes());
  return m;
}

std::vector<double> to_doubles(const Tensor& t) {
  const Tensor d = t.to(Device::cpu()).to(DType::Float64).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// Builds the cv::dnn::Net; each add*() returns the id of the layer whose output 0 is the result.
class NetBuilder {
 public:
  cv::dnn::Net net;
  static constexpr int kInput = 0;  // the net's input layer
  int folded_batch_norms = 0;

  NetBuilder() { net.setInputsNames({"images"}); }

  int add(const std::string& name, const std::string& type, LayerParams& params, const std::vector<int>& inputs) {
    params.name = name;
    params.type = type;
    const int id = net.addLayer(name, type, params);
    for (size_t i = 0; i < inputs.size(); ++i) net.connect(inputs[i], 0, id, static_cast<int>(i));
    names_[id] = name;
    return id;
  }

  // The name of the layer add() returned `id` for (what Net::forward takes as an output name).
  const std::string& name_of(int id) const { return names_.at(id); }

  int relu(const std::string& name, int input) {
    LayerParams p;
    return add(name, "ReLU", p, {input});
  }

  // A convolution (BN family folded in double precision: W' = W * s, b' = (b - mean) * s + beta with
  // s = gamma / sqrt(var + eps)), then its GroupNorm / LayerNorm when it has one.
  // `as_1x1_over_columns` runs it as the GEMM of a deformable convolution: weights [O, C/g*k*k, 1, 1].
  int conv(const std::string& name, const Conv2d& c, int input, bool as_1x1_over_columns = false) {
    const int64_t out = c.weight.size(0), per_out = c.weight.numel() / out;
    std::vector<double> w = to_doubles(c.weight);
    std::vector<double> b = c.bias.defined() ? to_doubles(c.bias) : std::vector<double>(out, 0.0);
    if (c.norm.is_batch_norm()) {
      ++folded_batch_norms;
      const std::vector<double> gamma = to_doubles(c.norm.weight), beta = to_doubles(c.norm.bias),
                                mean = to_doubles(c.norm.running_mean), var = to_doubles(c.norm.running_var);
      for (int64_t o = 0; o < out; ++o) {
        const double s = gamma[o] / std::sqrt(var[o] + c.norm.eps());
        for (int64_t k = 0; k < per_out; ++k) w[o * per_out + k] *= s;
        b[o] = (b[o] - mean[o]) * s + beta[o];
      }
    }
    const int k = static_cast<int>(c.kernel_size);
    std::vector<int> wshape = {static_cast<int>(out), static_cast<int>(c.weight.size(1)), k, k};
    if (as_1x1_over_columns) wshape = {static_cast<int>(out), static_cast<int>(per_out), 1, 1};
    cv::Mat weight(wshape, CV_32F), bias(1, static_cast<int>(out), CV_32F);
    for (size_t i = 0; i < w.size(); ++i) weight.ptr<float>()[i] = static_cast<float>(w[i]);
    for (int64_t o = 0; o < out; ++o) bias.ptr<float>()[o] = static_cast<float>(b[o]);

    LayerParams p;
    p.set("num_output", static_cast<int>(out));
    p.set("group", static_cast<int>(c.groups));
    p.set("bias_term", true);
    p.set("kernel_size", as_1x1_over_columns ? 1 : k);
    p.set("stride", as_1x1_over_columns ? 1 : static_cast<int>(c.stride));
    p.set("pad", as_1x1_over_columns ? 0 : static_cast<int>(c.padding));
    p.set("dilation", as_1x1_over_columns ? 1 : static_cast<int>(c.dilation));
    p.blobs = {weight, bias};
    int id = add(name, "Convolution", p, {input});
    if (!c.norm.empty() && !c.norm.is_batch_norm()) {
      LayerParams n;
      n.set("eps", c.norm.eps());
      n.blobs = {row_mat(c.norm.weight), row_mat(c.norm.bias)};
      if (c.norm.kind == "GN") {
        n.set("groups", static_cast<int>(c.norm.num_groups()));
        id = add(name + ".norm", kGroupNormType, n, {id});
      } else if (c.norm.kind == "LN") {
        id = add(name + ".norm", kChannelLayerNormType, n, {id});
      } else {
        throw UnsupportedError("OpenCV engine: norm '" + c.norm.kind + "' of " + name + " is not supported");
      }
    }
    return id;
  }

  // detectron2's deformable conv2: offsets (and mask) from conv2_offset, then im2col and a GEMM.
  int deform_conv(const std::string& name, const DeformBottleneckBlock& b, int input) {
    const int offsets = conv(name + "_offset", b.conv2_offset, input);
    LayerParams p;
    p.set("kernel", static_cast<int>(b.conv2.kernel_size));
    p.set("stride", static_cast<int>(b.conv2.stride));
    p.set("pad", static_cast<int>(b.conv2.padding));
    p.set("dilation", static_cast<int>(b.conv2.dilation));
    p.set("deformable_groups", static_cast<int>(b.deform_num_groups));
    p.set("modulated", b.deform_modulated);
    const int columns = add(name + ".im2col", kDeformIm2colType, p, {input, offsets});
    return conv(name, b.conv2, columns, /*as_1x1_over_columns=*/true);
  }

  int block(const std::string& name, const CNNBlockBase& block, int input) {
    int out = -1;
    const Conv2d* shortcut = nullptr;
    if (block.kind() == BlockKind::BasicBlock) {
      const auto& b = static_cast<const BasicBlock&>(block);
      out = relu(name + ".conv1.relu", conv(name + ".conv1", b.conv1, input));
      out = conv(name + ".conv2", b.conv2, out);
      if (b.shortcut) shortcut = &*b.shortcut;
    } else {
      const auto& b = static_cast<const BottleneckBlock&>(block);
      out = relu(name + ".conv1.relu", conv(name + ".conv1", b.conv1, input));
      out = block.kind() == BlockKind::DeformBottleneckBlock
                ? deform_conv(name + ".conv2", static_cast<const DeformBottleneckBlock&>(block), out)
                : conv(name + ".conv2", b.conv2, out);
      out = relu(name + ".conv2.relu", out);
      out = conv(name + ".conv3", b.conv3, out);
      if (b.shortcut) shortcut = &*b.shortcut;
    }
    const int identity = shortcut ? conv(name + ".shortcut", *shortcut, input) : input;
    LayerParams sum;
    sum.set("operation", "sum");
    out = add(name + ".add", "Eltwise", sum, {out, identity});
    return relu(name + ".relu", out);
  }

 private:
  std::map<int, std::string> names_;
};

// detectron2's FPN.forward as layers of the net, on the bottom-up outputs `features` (layer ids by
// name); returns the layer of each p-level (fpn.output_shape() names, high to low resolution):
//   prev = lateral[last](C_last); p_last = output[last](prev);
//   for i = last-1 .. 0: prev = lateral[i](C_i) + upsample_nearest_2x(prev) (avg: both halved, which
//     in float32 is exactly (a + b) / 2); p_i = output[i](prev)
// then the top block: LastLevelMaxPool p6 = max_pool2d(p5, kernel 1, stride 2) (floor: (n-1)/2+1);
// LastLevelP6P7 p6 = conv(res5), p7 = conv(relu(p6)). OpenCV fuses a ReLU into the convolution
// before it, and runs an activation in place, only when that convolution's output is not one the
// net returns (Net::Impl::fuseLayers skips pins to keep; BlobManager counts them as references),
// so p6 comes out without the ReLU whenever it is an output.
std::vector<int> add_fpn(NetBuilder& b, const FPN& fpn, const std::map<std::string, int>& features) {
  auto feature = [&](const std::string& name) {
    auto it = features.find(name);
    if (it == features.end()) throw Error("OpenCV engine: FPN input " + name + " is not an output of the bottom-up");
    return it->second;
  };
  const auto& in = fpn.in_features();
  const size_t levels = in.size();
  auto stage = [&](size_t i) { return std::to_string(fpn.stages()[i]); };
  std::vector<int> results(levels);
  int prev = b.conv("fpn_lateral" + stage(levels - 1), fpn.lateral_convs[levels - 1], feature(in[levels - 1]));
  results[levels - 1] = b.conv("fpn_output" + stage(levels - 1), fpn.output_convs[levels - 1], prev);
  for (size_t i = levels - 1; i-- > 0;) {
    LayerParams up;
    up.set("interpolation", "nearest");  // cv::resize INTER_NEAREST: source pixel floor(x / 2), as F.interpolate
    up.set("zoom_factor", 2);
    const int top_down = b.add("fpn_topdown" + stage(i) + ".upsample", "Resize", up, {prev});
    const int lateral = b.conv("fpn_lateral" + stage(i), fpn.lateral_convs[i], feature(in[i]));
    LayerParams sum;
    sum.set("operation", "sum");
    if (fpn.fuse_type() == "avg") {
      const float halves[2] = {0.5f, 0.5f};
      sum.set("coeff", cv::dnn::DictValue::arrayReal(halves, 2));
    }
    prev = b.add("fpn_topdown" + stage(i) + ".sum", "Eltwise", sum, {lateral, top_down});
    results[i] = b.conv("fpn_output" + stage(i), fpn.output_convs[i], prev);
  }
  const TopBlock& top = fpn.top_block;
  if (top.kind == TopBlockKind::LastLevelMaxPool) {
    LayerParams pool;
    pool.set("pool", "max");
    pool.set("kernel_size", 1);
    pool.set("stride", 2);
    pool.set("pad", 0);
    pool.set("ceil_mode", false);  // (n - 1) / 2 + 1, as max_pool2d
    results.push_back(b.add("top_block.max_pool", "Pooling", pool, {results[levels - 1]}));
  } else if (top.kind == TopBlockKind::LastLevelP6P7) {
    const int source = top.in_feature == "p5" ? results[levels - 1] : feature(top.in_feature);
    const int p6 = b.conv("top_block.p6", top.p6, source);
    results.push_back(p6);
    results.push_back(b.conv("top_block.p7", top.p7, b.relu("top_block.p6.relu", p6)));
  }
  return results;
}

std::string cpu_features() {
  // cv::getBuildInformation() lists the baseline and the dispatched CPU code paths.
  std::istringstream info(cv::getBuildInformation());
  std::string line, baseline, dispatched;
  auto trim = [](std::string s) {
    s.erase(0, s.find_first_not_of(" \t"));
    s.erase(s.find_last_not_of(" \t") + 1);
    return s;
  };
  while (std::getline(info, line)) {
    const std::string t = trim(line);
    if (baseline.empty() && t.rfind("Baseline:", 0) == 0) baseline = trim(t.substr(9));
    if (dispatched.empty() && t.rfind("Dispatched code generation:", 0) == 0) dispatched = trim(t.substr(27));
  }
  std::string out = "CPU baseline " + (baseline.empty() ? std::string("?") : baseline);
  if (!dispatched.empty()) out += ", dispatched " + dispatched;
  // The widest of OpenCV's dispatched kernels that this CPU runs.
  const std::pair<int, const char*> levels[] = {{CV_CPU_AVX512_SKX, "AVX512_SKX"}, {CV_CPU_AVX2, "AVX2"},
                                                {CV_CPU_AVX, "AVX"}, {CV_CPU_SSE4_2, "SSE4_2"}};
  for (const auto& [feature, level] : levels)
    if (dispatched.find(level) != std::string::npos && cv::checkHardwareSupport(feature)) {
      out += std::string(", running ") + level;
      break;
    }
  return out;
}

// "49 Convolution+ReLU, 16 Eltwise+ReLU" from Net::dump() (Graphviz text of the set-up net, where
// a fused group is one record node: label="{name\\nType\\n... | name\\nType\\n...}").
std::string fusion_summary(const std::string& dot) {
  std::map<std::string, int> counts;
  const std::string open = "label=\"{";
  for (size_t at = dot.find(open); at != std::string::npos; at = dot.find(open, at + 1)) {
    const size_t end = dot.find('"', at + open.size());
    if (end == std::string::npos) break;
    const std::string label = dot.substr(at + open.size(), end - at - open.size());
    std::string key;
    for (size_t part = 0; part != std::string::npos;) {
      const size_t type_at = label.find("\\n", part);  // after the layer name
      if (type_at == std::string::npos) break;
      const size_t type_end = label.find("\\n", type_at + 2);
      key += (key.empty() ? "" : "+") + label.substr(type_at + 2, type_end == std::string::npos ? std::string::npos
                                                                                            : type_end - type_at - 2);
      part = label.find(" | ", type_at);
      if (part != std::string::npos) part += 3;
    }
    if (!key.empty()) ++counts[key];
  }
  std::string out;
  for (const auto& [key, n] : counts) out += (out.empty() ? "" : ", ") + std::to_string(n) + " " + key;
  return out.empty() ? std::string("nothing") : out;
}

class OpenCVEngine final : public Engine {
 public:
  OpenCVEngine(const ResNet& model, const FPN* fpn, const EngineOptions& options) {
    if (options.precision != Precision::Float32)
      throw UnsupportedError(std::string("OpenCV engine: precision ") + precision_name(options.precision) +
                             " is not supported (engine opencv runs fp32 only); use fp32, or engine onednn for bf16");
    if (!options.device.is_cpu())
      throw DeviceError("device " + options.device.str() +
                        " is not available to the OpenCV engine: it runs on the CPU only (backend OpenCV, target CPU)");
    threads_ = engine_threads(options);
    register_custom_layers();

    out_features_ = fpn ? fpn->out_features() : model.out_features();
    auto wanted = [&](const std::string& n) {
      return std::find(out_features_.begin(), out_features_.end(), n) != out_features_.end();
    };
    std::map<std::string, int> feature_layer;  // layer id of each output by name
    NetBuilder b;
    try {
      int x = b.relu("stem.conv1.relu", b.conv("stem.conv1", model.stem().conv1, NetBuilder::kInput));
      LayerParams pool;
      pool.set("pool", "max");
      pool.set("kernel_size", 3);
      pool.set("stride", 2);
      pool.set("pad", 1);
      pool.set("ceil_mode", false);  // PyTorch's floor; OpenCV (Caffe) defaults to ceil
      x = b.add("stem.pool", "Pooling", pool, {x});
      feature_layer["stem"] = x;
      windows_.push_back({model.stem().conv1, {3, 2, 1, 1}});
      const auto& names = model.stage_names();
      for (size_t s = 0; s < model.stages().size(); ++s) {
        std::vector<Window> path;
        for (size_t i = 0; i < model.stages()[s].size(); ++i) {
          const CNNBlockBase& block = *model.stages()[s][i];
          x = b.block(names[s] + "." + std::to_string(i), block, x);
          if (block.kind() == BlockKind::BasicBlock) {
            const auto& bb = static_cast<const BasicBlock&>(block);
            path.insert(path.end(), {bb.conv1, bb.conv2});
          } else {
            const auto& bb = static_cast<const BottleneckBlock&>(block);
            path.insert(path.end(), {bb.conv1, bb.conv2, bb.conv3});
          }
        }
        feature_layer[names[s]] = x;
        windows_.push_back(std::move(path));
      }
      if (model.num_classes() && wanted("linear")) {
        LayerParams gap;
        gap.set("pool", "ave");
        gap.set("global_pooling", true);
        x = b.add("avgpool", "Pooling", gap, {x});
        LayerParams fc;
        fc.set("num_output", static_cast<int>(*model.num_classes()));
        fc.set("bias_term", true);
        fc.set("axis", 1);
        const Tensor w = model.linear_weight.to(Device::cpu()).to(DType::Float32).contiguous();
        cv::Mat weight(static_cast<int>(w.size(0)), static_cast<int>(w.size(1)), CV_32F);
        std::memcpy(weight.ptr<float>(), w.data_ptr<float>(), w.nbytes());
        fc.blobs = {weight, row_mat(model.linear_bias)};
        feature_layer["linear"] = b.add("linear", "InnerProduct", fc, {x});
      }
      if (fpn) {
        fpn_levels_ = FpnLevels(*fpn);
        const std::vector<int> levels = add_fpn(b, *fpn, feature_layer);
        const auto shapes = fpn->output_shape();
        for (size_t i = 0; i < levels.size() && i < shapes.size(); ++i) feature_layer[shapes[i].first] = levels[i];
        for (const auto& f : fpn->in_features()) {
          const auto it = std::find(names.begin(), names.end(), f);
          if (it == names.end()) throw Error("OpenCV engine: FPN in_feature " + f + " is not a stage of the bottom-up");
          fpn_in_stages_.push_back(static_cast<size_t>(it - names.begin()) + 1);  // windows_[0] is the stem
        }
      }
    } catch (const cv::Exception& e) {
      throw Error(std::string("OpenCV engine: building the network failed: ") + e.what());
    }
    for (const auto& f : out_features_) {
      auto it = feature_layer.find(f);
      if (it == feature_layer.end()) throw Error("OpenCV engine: the model has no layer for out_feature '" + f + "'");
      out_layers_.push_back(b.name_of(it->second));
    }
    net_ = b.net;
    folded_batch_norms_ = b.folded_batch_norms;
    net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    in_channels_ = model.stem().in_channels();
    std::vector<cv::String> types;
    net_.getLayerTypes(types);
    for (const auto& t : types) {
      if (t == "__NetInputLayer__") continue;
      layer_counts_ += (layer_counts_.empty() ? "" : ", ") + std::to_string(net_.getLayersCount(t)) + " " + t;
      if (t == kDeformIm2colType) deformable_ = true;
    }
    // One forward of a small image sets the net up (OpenCV packs the weights and fuses layers
    // then) so that describe() can name the fusions OpenCV made. 64 is a multiple of every FPN's
    // size_divisibility on a ResNet (at most 32).
    std::vector<cv::Mat> outs;
    try {
      set_threads();
      const int side = static_cast<int>(std::max<int64_t>(64, 2 * fpn_levels_.size_divisibility));
      const int sizes[4] = {1, static_cast<int>(in_channels_), side, side};
      net_.setInput(cv::Mat(4, sizes, CV_32F, cv::Scalar(0)));
      net_.forward(outs, out_layers_);
      fusions_ = fusion_summary(net_.dump());
    } catch (const cv::Exception& e) {
      throw Error(std::string("OpenCV engine: setting the network up failed: ") + e.what());
    }
  }

  std::string name() const override { return "opencv"; }
  Device device() const override { return Device::cpu(); }
  std::string describe() const override {
    return "opencv fp32 on cpu, " + std::to_string(threads_) + " threads (OpenCV " CV_VERSION
           " dnn, backend OpenCV, target CPU; " + cpu_features() + "; layers: " + layer_counts_ +
           (folded_batch_norms_ ? "; " + std::to_string(folded_batch_norms_) + " BN folded" : std::string()) +
           "; fused by OpenCV: " + fusions_ +
           (deformable_ ? "; deformable im2col: backbone CPU kernel, GEMM: OpenCV 1x1 Convolution" : "") +
           "; thread count set process-wide by cv::setNumThreads)";
  }

  FeatureMaps forward(const Tensor& images) override {
    const Tensor host = engine_input(images, in_channels_);
    const int sizes[4] = {static_cast<int>(host.size(0)), static_cast<int>(host.size(1)),
                          static_cast<int>(host.size(2)), static_cast<int>(host.size(3))};
    const cv::Mat blob(4, sizes, CV_32F, const_cast<void*>(host.data()));

    if (!fpn_in_stages_.empty()) check_fpn_level_sizes(fpn_levels_, lateral_sizes(host.size(2), host.size(3)));

    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<cv::Mat> outs;
    try {
      set_threads();
      net_.setInput(blob);
      net_.forward(outs, out_layers_);
    } catch (const cv::Exception& e) {
      throw Error("OpenCV engine: forward of input " + shape_str(images.shape()) + " failed: " + e.what());
    }
    FeatureMaps result;
    for (size_t i = 0; i < out_features_.size(); ++i) {
      const cv::Mat& m = outs[i];
      Shape shape(m.size.p, m.size.p + m.dims);
      Tensor t = Tensor::empty(shape, DType::Float32);
      if (!m.isContinuous() || m.type() != CV_32F || static_cast<int64_t>(m.total()) != t.numel())
        throw Error("OpenCV engine: output " + out_layers_[i] + " is not a contiguous float32 blob of " +
                    shape_str(shape));
      std::memcpy(t.data(), m.data, t.nbytes());  // the net reuses its blobs on the next forward
      result.emplace_back(out_features_[i], std::move(t));
    }
    return result;
  }

 private:
  // A convolution's or pooling's window: the output size floor((n + 2p - d(k - 1) - 1) / s) + 1.
  struct Window {
    int64_t kernel = 1, stride = 1, padding = 0, dilation = 1;
    Window(int64_t k, int64_t s, int64_t p, int64_t d) : kernel(k), stride(s), padding(p), dilation(d) {}
    Window(const Conv2d& c) : Window(c.kernel_size, c.stride, c.padding, c.dilation) {}  // NOLINT: implicit
    int64_t out(int64_t n) const { return (n + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1; }
  };

  // The height and width of each FPN in_feature for an input of h x w (the bottom-up's main path).
  std::vector<std::pair<int64_t, int64_t>> lateral_sizes(int64_t h, int64_t w) const {
    std::vector<std::pair<int64_t, int64_t>> sizes;
    size_t done = 0;
    for (const size_t stage : fpn_in_stages_) {
      for (; done <= stage; ++done)
        for (const Window& window : windows_[done]) {
          h = window.out(h);
          w = window.out(w);
        }
      sizes.emplace_back(h, w);
    }
    return sizes;
  }

  // cv::setNumThreads is process-wide (with TBB it rebuilds the task arena): set it only when
  // someone else changed it.
  void set_threads() const {
    if (cv::getNumThreads() != threads_) cv::setNumThreads(threads_);
  }

  cv::dnn::Net net_;
  std::vector<std::string> out_features_;
  std::vector<cv::String> out_layers_;
  int64_t in_channels_ = 3;
  int threads_ = 1;
  std::string layer_counts_, fusions_;
  bool deformable_ = false;
  int folded_batch_norms_ = 0;
  // FPN: the windows along the bottom-up (stem, then each stage) and the index there of each
  // in_feature, to check the level sizes before the net runs.
  std::vector<std::vector<Window>> windows_;
  std::vector<size_t> fpn_in_stages_;
  FpnLevels fpn_levels_;
  std::mutex mutex_;
};

}  // namespace

std::unique_ptr<Engine> create_opencv_engine(const ResNet& model, const FPN* fpn, const EngineOptions& options) {
  return std::make_unique<OpenCVEngine>(model, fpn, options);
}

}  // namespace backbone::detail
