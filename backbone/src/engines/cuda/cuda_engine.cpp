// SPDX-License-Identifier: Apache-2.0
// engine=cuda, libbackbone's side: describes the ResNet (alone or under detectron2's FPN) as the
// module's layer list (cuda_net.h),
// hands it to the separately loaded CUDA module (cuda/loader.h: no CUDA header here) and wraps the
// module's outputs as Tensors on cuda:N.
//
// Lifetime: the module engine lives in a shared CudaEngineHandle. The engine object holds one
// reference and every output tensor's storage owner holds another, so the module engine (its stream,
// its output pool) is destroyed only after the engine object AND every output it handed out are
// gone. An output's storage owner, when the last copy of the tensor (or of its storage()) goes,
// unregisters the ready event and gives the storage back to the module's pool
// (engine_release_output); the module never writes pool storage that is handed out.
#include <algorithm>
#include <memory>
#include <mutex>

#include "backbone/error.h"
#include "cuda/frame_api.h"
#include "cuda/loader.h"
#include "engines/cuda/cuda_net.h"
#include "engines/engines.h"
#include "frame/cuda_frame.h"

namespace backbone::detail {
namespace {

int32_t module_precision(Precision p) {
  switch (p) {
    case Precision::Float32: return BACKBONE_CUDA_FP32;
    case Precision::Float16: return BACKBONE_CUDA_FP16;
    case Precision::BFloat16: return BACKBONE_CUDA_BF16;
    case Precision::Auto: return BACKBONE_CUDA_FP32;  // create_engine resolves auto to fp32 for cuda
  }
  return BACKBONE_CUDA_FP32;
}

// The storage owner of one output: keeps the module engine alive, and on release unregisters the
// ready event, then gives the storage back to the pool.
struct OutputOwner {
  std::shared_ptr<CudaEngineHandle> engine;
  uint64_t token = 0;
  OutputOwner(std::shared_ptr<CudaEngineHandle> e, uint64_t t) : engine(std::move(e)), token(t) {}
  ~OutputOwner() {
    unregister_ready_event(this);
    engine->release_output(token);
  }
  OutputOwner(const OutputOwner&) = delete;
  OutputOwner& operator=(const OutputOwner&) = delete;
};

// Plans (input shapes) the module keeps: a video's frames have one shape, a second resolution or
// batch size replaces nothing.
constexpr int32_t kMaxPlans = 4;

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ResNet& model, const FPN* fpn, const EngineOptions& options)
      : device_(options.device), precision_(options.precision) {
    net_ = build_cuda_net(model, fpn);
    BackboneCudaEngineOptions o{};
    o.device = device_.index;
    o.precision = module_precision(precision_);
    o.allow_tf32 = options.allow_tf32 ? 1 : 0;
    o.use_graphs = options.cuda_graphs ? 1 : 0;
    o.max_plans = kMaxPlans;
    const BackboneCudaNetDesc desc = net_.desc();
    handle_ = cuda_engine_create(desc, o);
    // The module copied and converted the weights: the host arrays are not needed any more.
    for (auto& a : net_.arrays) std::vector<float>().swap(a);
    for (auto& l : net_.layers) l.weight = l.bias = nullptr;
  }

  std::string name() const override { return "cuda"; }
  Device device() const override { return device_; }
  std::string describe() const override {
    std::lock_guard<std::mutex> lock(mutex_);  // the module's string is valid until the next call
    return handle_->describe();
  }

  FeatureMaps forward(const Tensor& images) override {
    if (images.dim() != 4)
      throw ShapeError("ResNet takes an input of shape (N, C, H, W). Got " + shape_str(images.shape()) + " instead!");
    if (images.size(1) != net_.in_channels)
      throw ShapeError("ResNet input has " + std::to_string(images.size(1)) + " channels, the stem expects " +
                       std::to_string(net_.in_channels));
    if (images.dtype() != DType::Float32)
      throw ShapeError(std::string("ResNet input must be float32, found ") + dtype_name(images.dtype()));
    Tensor in = images;
    if (in.device().is_cuda() && in.device() != device_) in = in.to(Device::cpu());
    in = in.contiguous();
    check_cuda_net_fpn_sizes(net_, in.size(2), in.size(3));  // before anything is planned or launched
    if (in.device().is_cuda()) cuda_wait_ready(in);  // e.g. another engine's output, not yet complete
    std::vector<BackboneCudaOutput> outs(net_.outputs.size());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      handle_->forward(in.data_ptr<float>(), in.device().is_cuda(), in.size(0), in.size(2), in.size(3), outs);
    }
    return wrap(outs);
  }

  FeatureMaps forward_frame(const FrameView& frame, const FramePreprocessOptions& options,
                            PreprocessResult* info) override {
    if (frame.device.is_cuda() && frame.device != device_)
      throw DeviceError("engine 'cuda' on " + device_.str() + ": expected a frame in host memory or on " +
                        device_.str() + ", found one on " + frame.device.str());
    CudaFrameArgs args = make_cuda_frame_args(frame, options);
    check_cuda_net_fpn_sizes(net_, args.args.padded_height, args.args.padded_width);
    std::vector<BackboneCudaOutput> outs(net_.outputs.size());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      handle_->forward_frame(args.args, outs);
    }
    if (info) *info = args.geometry;
    return wrap(outs);
  }

 private:
  FeatureMaps wrap(const std::vector<BackboneCudaOutput>& outs) {
    // Every output is owned (and released) even if a later one fails to wrap.
    std::vector<std::shared_ptr<void>> owners;
    try {
      owners.reserve(outs.size());
      for (const auto& o : outs) {
        owners.push_back(std::make_shared<OutputOwner>(handle_, o.token));
        register_ready_event(owners.back().get(), device_.index, o.ready_event);
      }
    } catch (...) {  // out of host memory: the outputs without an owner go back to the pool here
      for (size_t j = owners.size(); j < outs.size(); ++j) handle_->release_output(outs[j].token);
      throw;
    }
    FeatureMaps result;
    for (size_t i = 0; i < outs.size(); ++i) {
      const BackboneCudaOutput& o = outs[i];
      const bool linear = net_.output_names[i] == "linear";
      const Shape shape = linear ? Shape{o.dims[0], o.dims[1]} : Shape{o.dims[0], o.dims[1], o.dims[2], o.dims[3]};
      result.emplace_back(net_.output_names[i], Tensor::from_blob(o.data, shape, DType::Float32, device_, owners[i]));
    }
    return result;
  }

  Device device_;
  Precision precision_;
  CudaNet net_;
  std::shared_ptr<CudaEngineHandle> handle_;
  mutable std::mutex mutex_;
};

}  // namespace

std::unique_ptr<Engine> create_cuda_engine(const ResNet& model, const FPN* fpn, const EngineOptions& options) {
  // Refused before anything is loaded, so that "auto" on the CPU moves on at no cost.
  if (!options.device.is_cuda())
    throw DeviceError("engine 'cuda' runs on CUDA devices: expected cuda:N, found " + options.device.str());
  std::string why;
  if (!cuda_available(&why))
    throw DeviceError("engine 'cuda' on " + options.device.str() + ": CUDA is not available: " + why);
  return std::make_unique<CudaEngine>(model, fpn, options);
}

}  // namespace backbone::detail
