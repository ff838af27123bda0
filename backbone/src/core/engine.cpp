// SPDX-License-Identifier: Apache-2.0
#include "backbone/engine.h"

#include "backbone/engine_table.h"
#include "backbone/error.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include "build_config.h"
#include "cuda/loader.h"
#include "engines/engines.h"

namespace backbone {

namespace {

using Factory = std::unique_ptr<Engine> (*)(const ResNet&, const FPN*, const EngineOptions&);

#if BACKBONE_HAVE_ONEDNN
constexpr Factory kOnednnFactory = detail::create_onednn_engine;
#else
constexpr Factory kOnednnFactory = nullptr;
#endif
#if BACKBONE_HAVE_LIBTORCH
constexpr Factory kLibtorchFactory = detail::create_libtorch_engine;
#else
constexpr Factory kLibtorchFactory = nullptr;
#endif
#if BACKBONE_HAVE_OPENCV_DNN
constexpr Factory kOpencvFactory = detail::create_opencv_engine;
#else
constexpr Factory kOpencvFactory = nullptr;
#endif

struct EngineEntry {
  EngineInfo info;
  Factory factory;     // nullptr when not built
  const char* option;  // the CMake option that builds it
};

// The engine table. First: "auto" on a CUDA device takes cuda; on the CPU it refuses at once
// (DeviceError, nothing loaded) and "auto" moves on.
const std::vector<EngineEntry>& entries() {
  static const std::vector<EngineEntry> table = {
      {{"cuda",
        "this project's native engine on CUDA and cuDNN (module libbackbone-cuda.so): NHWC tensors, BN folded, "
        "fused convolutions, a CUDA graph per input shape",
        true, true, {Precision::Float32, Precision::Float16, Precision::BFloat16}, false, true},
       detail::create_cuda_engine, "BACKBONE_WITH_CUDA"},
      {{"onednn",
        "this project's route to oneDNN on the CPU: pre-packed weights, fused convolutions, Winograd 3x3 per layer where measured faster",
        BACKBONE_HAVE_ONEDNN != 0, false, {Precision::Float32, Precision::BFloat16}, true, false},
       kOnednnFactory, "BACKBONE_WITH_ONEDNN"},
      {{"libtorch", "LibTorch's ATen operators on the CPU", BACKBONE_HAVE_LIBTORCH != 0, false,
        {Precision::Float32}, false, false},
       kLibtorchFactory, "BACKBONE_WITH_LIBTORCH"},
      {{"opencv", "an OpenCV DNN network built from the same model on the CPU, for machines without LibTorch",
        BACKBONE_HAVE_OPENCV_DNN != 0, false, {Precision::Float32}, false, false},
       kOpencvFactory, "BACKBONE_WITH_OPENCV_DNN"},
  };
  return table;
}

}  // namespace

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::Float32: return "fp32";
    case Precision::Float16: return "fp16";
    case Precision::BFloat16: return "bf16";
    case Precision::Auto: return "auto";
  }
  return "unknown";
}

Precision precision_from_name(const std::string& name) {
  if (name == "fp32" || name == "float32") return Precision::Float32;
  if (name == "fp16" || name == "float16") return Precision::Float16;
  if (name == "bf16" || name == "bfloat16") return Precision::BFloat16;
  if (name == "auto") return Precision::Auto;
  throw Error("unknown precision '" + name + "': expected fp32, fp16, bf16 or auto");
}

const char* conv_algorithm_name(ConvAlgorithm a) {
  switch (a) {
    case ConvAlgorithm::Auto: return "auto";
    case ConvAlgorithm::Direct: return "direct";
    case ConvAlgorithm::Winograd: return "winograd";
  }
  return "unknown";
}

ConvAlgorithm conv_algorithm_from_name(const std::string& name) {
  if (name == "auto") return ConvAlgorithm::Auto;
  if (name == "direct") return ConvAlgorithm::Direct;
  if (name == "winograd") return ConvAlgorithm::Winograd;
  throw Error("unknown convolution algorithm '" + name + "': expected auto, direct or winograd");
}

std::vector<std::string> available_engines() {
  std::vector<std::string> names;
  // "cuda" (its library side is always built; it runs through the separately loaded module) is
  // listed, first, where it can run: the module loads and sees a CUDA device. On machines without
  // one the list is that of the CPU engines, whose first one "auto" picks on the CPU.
  for (const auto& e : entries()) {
    if (!e.info.built) continue;
    if (e.info.cuda_device && !detail::cuda_available()) continue;
    names.push_back(e.info.name);
  }
  return names;
}

const std::vector<EngineInfo>& engine_table() {
  static const std::vector<EngineInfo> table = [] {
    std::vector<EngineInfo> t;
    for (const auto& e : entries()) t.push_back(e.info);
    return t;
  }();
  return table;
}

const EngineInfo* find_engine(const std::string& name) {
  for (const auto& e : engine_table())
    if (e.name == name) return &e;
  return nullptr;
}

bool is_known_engine(const std::string& name) { return find_engine(name) != nullptr; }

std::string engine_names(bool built_only) {
  std::vector<std::string> names;
  for (const auto& e : engine_table())
    if (e.built || !built_only) names.push_back(e.name);
  if (names.empty()) return "none";
  std::string s;
  for (size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return s;
}

namespace detail {

Tensor engine_input(const Tensor& images, int64_t in_channels) {
  if (images.dim() != 4)
    throw ShapeError("ResNet takes an input of shape (N, C, H, W). Got " + shape_str(images.shape()) + " instead!");
  if (images.size(1) != in_channels)
    throw ShapeError("ResNet input has " + std::to_string(images.size(1)) + " channels, the stem expects " +
                     std::to_string(in_channels));
  if (images.dtype() != DType::Float32)
    throw ShapeError(std::string("ResNet input must be float32, found ") + dtype_name(images.dtype()));
  return (images.device().is_cpu() ? images : images.to(Device::cpu())).contiguous();
}

std::vector<double> to_doubles(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).to(DType::Float64).contiguous();
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

FoldedConv fold_batch_norm(const Conv2d& c) {
  FoldedConv f;
  f.weight = to_doubles(c.weight);
  f.bias = c.bias.defined() ? to_doubles(c.bias) : std::vector<double>(c.out_channels > 0 ? c.out_channels : 0, 0.0);
  if (!c.norm.is_batch_norm()) return f;
  const auto gamma = to_doubles(c.norm.weight), beta = to_doubles(c.norm.bias);
  const auto mean = to_doubles(c.norm.running_mean), var = to_doubles(c.norm.running_var);
  // (The ResNet API builds consistent layers; this guards the division and the indexing.)
  const size_t out = c.out_channels > 0 ? static_cast<size_t>(c.out_channels) : 0;
  if (out == 0 || f.weight.size() % out != 0 || f.bias.size() != out || gamma.size() != out || beta.size() != out ||
      mean.size() != out || var.size() != out)
    throw ShapeError("cannot fold the batch norm of a convolution with out_channels " +
                     std::to_string(c.out_channels) + ", weights " + shape_str(c.weight.shape()) +
                     " and norm weight " + shape_str(c.norm.weight.shape()));
  const size_t per_out = f.weight.size() / out;
  for (size_t o = 0; o < out; ++o) {
    const double s = gamma[o] / std::sqrt(var[o] + c.norm.eps());
    for (size_t i = 0; i < per_out; ++i) f.weight[o * per_out + i] *= s;
    f.bias[o] = (f.bias[o] - mean[o]) * s + beta[o];
  }
  return f;
}

int engine_threads(const EngineOptions& options) {
  if (options.num_threads > 0) return options.num_threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace detail

namespace {

std::string engine_list() {
  std::string list;
  for (const auto& n : available_engines()) list += (list.empty() ? "" : ", ") + n;
  return list.empty() ? std::string("none") : list;
}

}  // namespace

FeatureMaps Engine::forward_frame(const FrameView& frame, const FramePreprocessOptions& options,
                                  PreprocessResult* info) {
  if (!frame.device.is_cpu())
    throw DeviceError("engine '" + name() + "' preprocesses frames on the CPU: expected a frame in host memory, found "
                      "one on " + frame.device.str() + " (the cuda engine takes frames in CUDA memory)");
  PreprocessResult pre = preprocess_frame(frame, options);
  FeatureMaps features = forward(pre.tensor);
  if (info) *info = std::move(pre);
  return features;
}

namespace {

// precision auto: the oneDNN engine measures it; every other engine runs fp32 (cuda: fp32 until
// its precisions are measured on GPUs; libtorch and opencv have no other).
EngineOptions resolved_options(const EngineInfo& info, const EngineOptions& options) {
  EngineOptions o = options;
  if (o.precision == Precision::Auto && info.name != "onednn") o.precision = Precision::Float32;
  return o;
}

std::unique_ptr<Engine> create_engine_for(const ResNet& model, const FPN* fpn, const EngineOptions& options) {
  if (options.num_threads < 0)
    throw Error("num_threads must be 0 (every core) or positive, got " + std::to_string(options.num_threads));
  if (options.engine == "auto") {
    // The first built engine that accepts the device and precision; the last refusal is kept to
    // say why none did.
    std::string reasons;
    for (const auto& e : entries()) {
      if (!e.factory) continue;
      try {
        return e.factory(model, fpn, resolved_options(e.info, options));
      } catch (const DeviceError& err) {
        reasons += std::string(reasons.empty() ? "" : "; ") + e.info.name + ": " + err.what();
      } catch (const UnsupportedError& err) {
        reasons += std::string(reasons.empty() ? "" : "; ") + e.info.name + ": " + err.what();
      }
    }
    throw Error("engine 'auto': no engine of this build (" + engine_list() + ") runs on " + options.device.str() +
                " at " + precision_name(options.precision) + (reasons.empty() ? "" : " (" + reasons + ")"));
  }
  for (const auto& e : entries()) {
    if (options.engine != e.info.name) continue;
    if (!e.factory)
      throw Error("engine '" + options.engine + "' is not built into this copy of libbackbone (configured with " +
                  e.option + "=OFF or without its library); this build has " + engine_list());
    return e.factory(model, fpn, resolved_options(e.info, options));
  }
  throw Error("unknown engine '" + options.engine + "': expected auto or one of this build's engines (" +
              engine_list() + ")");
}

}  // namespace

std::unique_ptr<Engine> create_engine(const ResNet& model, const EngineOptions& options) {
  return create_engine_for(model, nullptr, options);
}

std::unique_ptr<Engine> create_engine(const FPN& model, const EngineOptions& options) {
  return create_engine_for(model.bottom_up(), &model, options);
}

namespace detail {

void check_fpn_level_sizes(const FpnLevels& fpn, const std::vector<std::pair<int64_t, int64_t>>& lateral_hw) {
  const auto& names = fpn.in_features;
  for (size_t i = 0; i + 1 < lateral_hw.size() && i + 1 < names.size(); ++i) {
    const auto [h, w] = lateral_hw[i];
    const auto [hc, wc] = lateral_hw[i + 1];
    if (h != 2 * hc || w != 2 * wc)
      throw ShapeError("FPN: the top-down features of p" + std::to_string(fpn.stages[i + 1]) + " (" +
                       std::to_string(hc) + "x" + std::to_string(wc) + ", upsampled 2x to " + std::to_string(2 * hc) +
                       "x" + std::to_string(2 * wc) + ") do not match the lateral features of " + names[i] + " (" +
                       std::to_string(h) + "x" + std::to_string(w) +
                       "): pad the input to a multiple of the FPN's size_divisibility (" +
                       std::to_string(fpn.size_divisibility) + ") as detectron2 does");
  }
}

}  // namespace detail

}  // namespace backbone
