// SPDX-License-Identifier: Apache-2.0
// One interface for every way of running a ResNet: "onednn" (this project's own route to oneDNN:
// pre-packed weights, fused convolutions, fp32 and bf16), "libtorch" (ATen operators), "opencv"
// (a cv::dnn network built from the same model, for machines without LibTorch), "cuda" (this
// project's native engine on CUDA and cuDNN, in the separately loaded module libbackbone-cuda.so:
// NHWC tensors, BN folded, fused convolutions, a CUDA graph per input shape).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backbone/fpn.h"
#include "backbone/frame.h"
#include "backbone/preprocess.h"
#include "backbone/resnet.h"
#include "backbone/tensor.h"

namespace backbone {

// Auto: the fastest precision of the engine on this machine whose features stay within that
// precision's documented bound of fp32 (bf16: 2e-2 * max |fp32| per level). The oneDNN engine
// measures fp32 against bf16 on the model at each new input shape (once per CPU model, thread count
// and shape: the measurements are cached, see tuning_cache_path()) and takes bf16 only where it is
// faster and within that bound; the other engines run fp32.
enum class Precision { Float32, Float16, BFloat16, Auto };
const char* precision_name(Precision p);               // "fp32", "fp16", "bf16", "auto"
// accepts fp32/float32, fp16/float16, bf16/bfloat16 and auto
Precision precision_from_name(const std::string& name);

// How float32 3x3 stride-1 convolutions run where the engine has Winograd kernels (onednn with
// oneDNN 2.x on AVX-512): Auto (the default) times both algorithms on each such layer's shape once
// per CPU model and thread count (cached, see tuning_cache_path()) and runs Winograd where it is
// faster and the layer's output stays within 1e-6 of max |direct| (the network's features then stay
// within 1e-5 of max |direct path|: checked on every golden case); Direct never uses Winograd;
// Winograd uses it on every layer that has it. Other engines run direct convolutions.
enum class ConvAlgorithm { Auto, Direct, Winograd };
const char* conv_algorithm_name(ConvAlgorithm a);  // "auto", "direct", "winograd"
ConvAlgorithm conv_algorithm_from_name(const std::string& name);

// The file where engines keep their measurements per machine (oneDNN: Winograd or direct per layer
// shape, fp32 against bf16 per model and input shape), one line each, keyed by the CPU model, the
// oneDNN version and ISA and the thread count: $BACKBONE_CACHE_DIR/tuning.txt, else
// $XDG_CACHE_HOME/backbone/tuning.txt, else ~/.cache/backbone/tuning.txt. BACKBONE_CACHE_DIR set
// to an empty string or "none": no file (measured again by each process). Empty when none.
std::string tuning_cache_path();

struct EngineOptions {
  // "auto" or one of available_engines(); "auto" takes the first of available_engines() that runs
  // on `device` at `precision`.
  std::string engine = "auto";
  Device device = Device::cpu();
  int num_threads = 0;  // 0: every core of the machine
  Precision precision = Precision::Float32;
  // float32 3x3 stride-1 convolutions: direct or Winograd per layer (see ConvAlgorithm). Other
  // engines ignore it.
  ConvAlgorithm conv_algorithm = ConvAlgorithm::Auto;
  // cuda: let cuDNN use TF32 tensor cores for float32 convolutions (PyTorch's default for cuDNN).
  // Off by default: TF32 rounds inputs to 10 mantissa bits (features ~1e-3 off detectron2).
  bool allow_tf32 = false;
  // cuda: capture the whole forward once per input shape as a CUDA graph and replay it. Off only
  // for debugging (each kernel is then launched one by one).
  bool cuda_graphs = true;
};

// Named feature maps in the model's out_features order (ResNet::out_features, FPN::out_features).
using FeatureMaps = std::vector<std::pair<std::string, Tensor>>;

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  // images: [N, C, H, W] float32, already preprocessed (normalised and padded), on any device.
  // Returns each out_feature of the model ([N, C, H/stride, W/stride]; "linear": [N, classes]).
  // Features are float32 NCHW on device(). A CUDA engine returns them before they are computed:
  // cuda_ready_event() of each tensor is recorded on the engine's stream when it is complete
  // (Tensor::to(cpu) waits for it). Storage of returned tensors is never written again while any
  // copy of them (or of their storage()) is held: engines recycle it only after release.
  virtual FeatureMaps forward(const Tensor& images) = 0;
  // One frame through the whole test-time path: frame -> preprocess_frame(options) -> forward.
  // `info`, when given, receives the geometry (resized size, scales; its tensor is left undefined
  // by engines that preprocess on their device). The default runs preprocess_frame on the CPU (the
  // frame must be in host memory, else DeviceError); the CUDA engine takes frames in host or CUDA
  // memory and converts, resizes, normalises and pads them in one kernel on its stream.
  virtual FeatureMaps forward_frame(const FrameView& frame, const FramePreprocessOptions& options,
                                    PreprocessResult* info = nullptr);
  // One line for logs: the kernels it runs (e.g. oneDNN's implementation names), the precision
  // and the thread count, e.g. "onednn fp32, 2 threads, oneDNN 2.6.3 (avx512_core_bf16): ...".
  virtual std::string describe() const { return name() + " on " + device().str(); }
};

// Names of the engines of this build that can run here, fastest first, e.g. {"cuda", "onednn",
// "libtorch", "opencv"}: the CPU engines compiled in, and "cuda" first where the CUDA module loads and
// sees a device (it runs only on CUDA devices; "auto" on a CPU device moves past it).
std::vector<std::string> available_engines();

// Builds `options.engine` for `model` (weights are copied/folded: the model may be destroyed
// afterwards). Throws Error naming the engine when it is unknown or not built, and DeviceError
// when the device is not available to it.
std::unique_ptr<Engine> create_engine(const ResNet& model, const EngineOptions& options = {});
// The same for an FPN on a ResNet: forward() returns model.out_features() (every p-level by
// default). Its input must be padded to a multiple of model.size_divisibility() (32 for res5), as
// detectron2 pads it: a size whose top-down level does not meet its lateral is a ShapeError.
std::unique_ptr<Engine> create_engine(const FPN& model, const EngineOptions& options = {});

}  // namespace backbone
