// SPDX-License-Identifier: Apache-2.0
// One interface for every way of running a ResNet: "onednn" (this project's own route to oneDNN:
// pre-packed weights, fused convolutions, fp32 and bf16), "libtorch" (ATen operators), "opencv"
// (a cv::dnn network built from the same model, for machines without LibTorch); the native CUDA
// engine (a separately loaded module) is a further engine behind the same interface.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backbone/resnet.h"
#include "backbone/tensor.h"

namespace backbone {

enum class Precision { Float32, Float16, BFloat16 };
const char* precision_name(Precision p);               // "fp32", "fp16", "bf16"
Precision precision_from_name(const std::string& name);  // accepts fp32/float32, fp16/float16, bf16/bfloat16

struct EngineOptions {
  // "auto" or one of available_engines(); "auto" takes the first of available_engines() that runs
  // on `device` at `precision`.
  std::string engine = "auto";
  Device device = Device::cpu();
  int num_threads = 0;  // 0: every core of the machine
  Precision precision = Precision::Float32;
  // float32 3x3 stride-1 convolutions by Winograd's algorithm where the engine has it (onednn on
  // AVX-512): about 1.2x faster on R-50, features about 1e-6 (relative to max |feature|) off the
  // direct convolution, which is bit-identical to PyTorch's CPU path on most levels. Off by
  // default, as numerics-changing fast paths are (PyTorch's TF32). Other engines ignore it.
  bool winograd = false;
};

// Named feature maps in the ResNet's out_features order.
using FeatureMaps = std::vector<std::pair<std::string, Tensor>>;

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  // images: [N, C, H, W] float32, already preprocessed (normalised and padded), on any device.
  // Returns each out_feature of the model ([N, C, H/stride, W/stride]; "linear": [N, classes]).
  virtual FeatureMaps forward(const Tensor& images) = 0;
  // One line for logs: the kernels it runs (e.g. oneDNN's implementation names), the precision
  // and the thread count, e.g. "onednn fp32, 2 threads, oneDNN 2.6.3 (avx512_core_bf16): ...".
  virtual std::string describe() const { return name() + " on " + device().str(); }
};

// Names of the engines compiled into this build, fastest first, e.g. {"onednn", "libtorch", "opencv"}.
std::vector<std::string> available_engines();

// Builds `options.engine` for `model` (weights are copied/folded: the model may be destroyed
// afterwards). Throws Error naming the engine when it is unknown or not built, and DeviceError
// when the device is not available to it.
std::unique_ptr<Engine> create_engine(const ResNet& model, const EngineOptions& options = {});

}  // namespace backbone
