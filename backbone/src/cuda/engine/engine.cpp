// SPDX-License-Identifier: Apache-2.0
// The CUDA module's engine (engine=cuda): a ResNet (alone or under detectron2's FPN) described by
// libbackbone as a list of layers (module_api.h), run with NHWC activations of one storage type
// (fp32, fp16 or bf16). The FPN-only layer kinds are checked and launched by fpn.cpp.
//
//  - Weights are converted once in engine_create: OIHW float32 -> [O][kh][kw][I/g] (cuDNN's NHWC
//    filter layout) in the storage type; biases as float32 (this project's kernels) and in the
//    storage type (cuDNN's fused call takes the bias in the type of its output). The stem's input
//    channels are padded to 4 (fp32) or 8 (fp16/bf16) with zero weights, and the offsets of a
//    deformable convolution likewise (vectorised NHWC loads, tensor-core friendly channel counts).
//  - Per input shape a Plan: every value's shape, activation buffers shared between values whose
//    lifetimes do not overlap, one cuDNN workspace, the descriptors and algorithms of each
//    convolution. Up to max_plans plans are kept, least recently used dropped.
//  - Each CONV is cudnnConvolutionBiasActivationForward: bias, the residual (z, alpha2 = 1) and the
//    ReLU in the convolution's epilogue. When cuDNN refuses that call for a layer in the first (eager)
//    run of a shape, the layer falls back to cudnnConvolutionForward + this project's
//    bias/residual/ReLU kernel, and describe() counts it. The other layers are this project's kernels
//    (ops/cuda/kernels.h).
//  - The first forward of a shape runs eagerly (and decides the fallbacks); then, with use_graphs,
//    the layer sequence is captured once on a private non-blocking stream (so that no other thread's
//    legacy-stream call can break the capture) and replayed on the engine's stream for every later
//    forward of that shape. The engine's stream is a blocking one (cudaStreamDefault): libbackbone's
//    synchronous cudaMemcpy (Tensor::to(cpu)) on the legacy stream orders after its work.
//  - Outputs: after the layers, each output value is converted to float32 NCHW into an entry of the
//    output pool (per size; each entry with its own event, recorded after the conversion) that is
//    handed out with a token and reused only after engine_release_output(token): a replayed graph
//    writes only the plan's activations, never storage a downstream holder still has.
//  - Lifetime: engine_destroy frees everything, pool included; the caller must have released every
//    output before (libbackbone's outputs hold a reference on the engine, so it is destroyed only
//    after the last of them is released).
//  - Every call on an engine is serialised by its mutex; engine_release_output takes only the pool's.
#include "cuda/engine/engine.h"
#include "cuda/engine/fpn.h"
#include "cuda/engine/layout.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/module_common.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/preprocess_kernel.h"

// cuDNN 9 marks its legacy convolution API deprecated; it is supported and is what this engine uses.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace backbone::cuda_module {
namespace {

const char* kind_name(int32_t kind) { return backbone_cuda_layer_kind_name(kind); }

const char* algo_name(cudnnConvolutionFwdAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM: return "IMPLICIT_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: return "IMPLICIT_PRECOMP_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM: return "GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT: return "DIRECT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT: return "FFT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING: return "FFT_TILING";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD: return "WINOGRAD";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED: return "WINOGRAD_NONFUSED";
    default: return "unknown";
  }
}

StorageType storage_of(int32_t precision) {
  switch (precision) {
    case BACKBONE_CUDA_FP32: return StorageType::Float32;
    case BACKBONE_CUDA_FP16: return StorageType::Float16;
    case BACKBONE_CUDA_BF16: return StorageType::BFloat16;
    default:
      throw_argument_error("engine_create: precision: expected 0 (fp32), 1 (fp16) or 2 (bf16), found " +
                           std::to_string(precision));
  }
}

cudnnDataType_t cudnn_type(StorageType t) {
  switch (t) {
    case StorageType::Float32: return CUDNN_DATA_FLOAT;
    case StorageType::Float16: return CUDNN_DATA_HALF;
    case StorageType::BFloat16: return CUDNN_DATA_BFLOAT16;
  }
  return CUDNN_DATA_FLOAT;
}


int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

// "engine_create: layer 7 (CONV): <what>"
[[noreturn]] void bad_layer(int32_t index, int32_t kind, const std::string& what) {
  throw_argument_error("engine_create: layer " + std::to_string(index) + " (" + kind_name(kind) + "): " + what);
}

// Host -> device copy of `count` floats converted to the storage type.
DeviceBuffer upload(StorageType t, const std::vector<float>& host) {
  DeviceBuffer d(host.size() * storage_size(t));
  if (host.empty()) return d;
  std::vector<unsigned char> converted(host.size() * storage_size(t));
  convert_from_float(t, host.data(), host.size(), converted.data());
  BACKBONE_CUDA_CHECK(cudaMemcpy(d.get(), converted.data(), converted.size(), cudaMemcpyHostToDevice));
  return d;
}

DeviceBuffer upload_f32(const std::vector<float>& host) { return upload(StorageType::Float32, host); }

// A layer as the engine keeps it: the description (host pointers dropped) and its device arrays.
struct Layer {
  BackboneCudaLayer d{};
  int64_t in_stored = 0, out_stored = 0;  // stored channels of the input and of the output value
  DeviceBuffer weight;        // CONV/DEFORM_CONV: storage type [out_stored][k][k][in_stored / groups]
  DeviceBuffer bias;          // float32 [out_stored] (zeros without a bias); norms: beta; linear: bias
  DeviceBuffer bias_storage;  // CONV: the bias in the storage type (cuDNN's fused call)
  DeviceBuffer gamma;         // norms: gamma [C]; AVGPOOL_LINEAR: weight [classes][C] (float32)
};

// One convolution of a plan: cuDNN's descriptors and the algorithms chosen for its shape.
struct ConvExec {
  TensorDescriptor x, y, bias;
  FilterDescriptor w;
  ConvolutionDescriptor conv;
  ActivationDescriptor act;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;        // unfused
  cudnnConvolutionFwdAlgo_t fused_algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;  // fused call
  bool fused = true;
  bool precomp_ok = false;  // IMPLICIT_PRECOMP_GEMM runs this convolution within the workspace
  std::string refusal;      // why cuDNN refused the fused call
};

struct Plan {
  int64_t n = 0, h = 0, w = 0;
  std::vector<NhwcShape> shapes;  // per value, stored channels
  std::vector<int> slot_of;       // per value: its activation buffer
  std::vector<DeviceBuffer> slots;
  std::vector<std::unique_ptr<ConvExec>> convs;  // per layer (CONV only)
  DeviceBuffer workspace;
  std::size_t workspace_bytes = 0;
  DeviceBuffer norm_workspace;
  GraphExec graph;
  bool warmed = false;          // the eager first run has happened
  bool capture_tried = false;
  std::string capture_failure;  // why the graph could not be captured (then it runs eagerly)
  uint64_t last_use = 0;

  void* ptr(int32_t v) const { return slots[static_cast<size_t>(slot_of[static_cast<size_t>(v)])].get(); }
};

struct PoolEntry {
  DeviceBuffer buffer;
  Event event;
  std::size_t bytes = 0;
  uint64_t token = 0;  // 0: free
};

constexpr std::size_t kMaxWorkspace = std::size_t{512} << 20;  // per convolution algorithm

}  // namespace
}  // namespace backbone::cuda_module

using namespace backbone::cuda_module;

struct BackboneCudaEngine {
  // Declared first, destroyed last: everything below may have work on the stream.
  int device = 0;
  Stream stream;
  std::unique_ptr<Stream> capture_stream;  // non-blocking: graph captures only
  CudnnHandle handle;

  StorageType type = StorageType::Float32;
  BackboneCudaEngineOptions options{};
  cudaDeviceProp prop{};
  int64_t in_channels = 3;
  std::vector<Layer> layers;
  std::vector<int64_t> channels;         // per value (logical)
  std::vector<int64_t> stored_channels;  // per value (as stored: padded)
  std::vector<bool> is_linear;           // per value: float32 [n][classes] (AVGPOOL_LINEAR output)
  std::vector<int32_t> outputs;
  std::vector<int32_t> last_read;  // per value: the last layer reading it (INT32_MAX: an output)
  std::vector<BackboneCudaLayer> descs;  // the layers' descriptions without weights

  std::mutex mutex;
  std::vector<std::unique_ptr<Plan>> plans;
  uint64_t clock = 0;
  Plan* last_plan = nullptr;
  DeviceBuffer staging;  // host NCHW input, uploaded before conversion
  std::unique_ptr<FramePreprocessor> preprocessor;
  std::string description;
  int captured = 0;

  std::mutex pool_mutex;
  std::vector<std::unique_ptr<PoolEntry>> pool;
  uint64_t next_token = 0;

  BackboneCudaEngine(int dev) : device(dev) {}
};

namespace backbone::cuda_module {
namespace {

using Engine = BackboneCudaEngine;

// ---------------------------------------------------------------------------------------------
// engine_create: validation, stored channels, weights.

// Host only (no CUDA call): engine_create checks the description before it touches the device.
void validate(const BackboneCudaNetDesc& net, std::vector<int64_t>& channels, std::vector<bool>& is_linear) {
  if (net.in_channels <= 0)
    throw_argument_error("engine_create: in_channels: expected > 0, found " + std::to_string(net.in_channels));
  if (net.num_layers <= 0 || !net.layers)
    throw_argument_error("engine_create: expected at least one layer, found " + std::to_string(net.num_layers));
  if (net.num_values != net.num_layers + 1)
    throw_argument_error("engine_create: num_values: expected " + std::to_string(net.num_layers + 1) +
                         " (the input and one value per layer), found " + std::to_string(net.num_values));
  if (net.num_outputs <= 0 || !net.outputs)
    throw_argument_error("engine_create: expected at least one output, found " + std::to_string(net.num_outputs));
  const size_t nv = static_cast<size_t>(net.num_values);
  channels.assign(nv, -1);
  is_linear.assign(nv, false);
  channels[0] = net.in_channels;
  auto defined = [&](int32_t v) { return v >= 0 && v < net.num_values && channels[static_cast<size_t>(v)] >= 0; };
  for (int32_t i = 0; i < net.num_layers; ++i) {
    const BackboneCudaLayer& l = net.layers[i];
    if (l.kind < BACKBONE_CUDA_LAYER_CONV || l.kind > BACKBONE_CUDA_LAYER_KIND_LAST)
      bad_layer(i, l.kind, "kind: expected 0.." + std::to_string(BACKBONE_CUDA_LAYER_KIND_LAST) + ", found " +
                               std::to_string(l.kind));
    if (!defined(l.input)) bad_layer(i, l.kind, "input: expected a value computed before, found " + std::to_string(l.input));
    if (l.output <= 0 || l.output >= net.num_values || channels[static_cast<size_t>(l.output)] >= 0)
      bad_layer(i, l.kind, "output: expected a new value in [1, " + std::to_string(net.num_values) + "), found " +
                               std::to_string(l.output));
    if (is_linear[static_cast<size_t>(l.input)])
      bad_layer(i, l.kind, "input: value " + std::to_string(l.input) + " is a classifier output");
    const int64_t in_c = channels[static_cast<size_t>(l.input)];
    if (l.in_channels != in_c)
      bad_layer(i, l.kind, "in_channels: expected " + std::to_string(in_c) + " (channels of value " +
                               std::to_string(l.input) + "), found " + std::to_string(l.in_channels));
    if (l.out_channels <= 0) bad_layer(i, l.kind, "out_channels: expected > 0, found " + std::to_string(l.out_channels));
    const bool conv = l.kind == BACKBONE_CUDA_LAYER_CONV || l.kind == BACKBONE_CUDA_LAYER_DEFORM_CONV;
    if (conv || l.kind == BACKBONE_CUDA_LAYER_MAX_POOL) {
      if (l.kernel_size < 1 || l.stride < 1 || l.padding < 0 || l.dilation < 1)
        bad_layer(i, l.kind, "kernel/stride/padding/dilation: expected >= 1/1/0/1, found " +
                                 std::to_string(l.kernel_size) + "/" + std::to_string(l.stride) + "/" +
                                 std::to_string(l.padding) + "/" + std::to_string(l.dilation));
    }
    if (conv) {
      if (l.groups < 1 || l.in_channels % l.groups != 0 || l.out_channels % l.groups != 0)
        bad_layer(i, l.kind, "groups: expected a divisor of " + std::to_string(l.in_channels) + " and " +
                                 std::to_string(l.out_channels) + ", found " + std::to_string(l.groups));
      if (!l.weight) bad_layer(i, l.kind, "weight: expected an array, found NULL");
    }
    if (l.kind == BACKBONE_CUDA_LAYER_DEFORM_CONV) {
      if (!defined(l.aux)) bad_layer(i, l.kind, "aux: expected the offset value, found " + std::to_string(l.aux));
      if (l.deformable_groups < 1 || l.in_channels % l.deformable_groups != 0)
        bad_layer(i, l.kind, "deformable_groups: expected a divisor of " + std::to_string(l.in_channels) + ", found " +
                                 std::to_string(l.deformable_groups));
      const int64_t need = (l.modulated ? 3 : 2) * l.deformable_groups * l.kernel_size * l.kernel_size;
      const int64_t have = channels[static_cast<size_t>(l.aux)];
      if (have != need)
        bad_layer(i, l.kind, "aux: expected " + std::to_string(need) + " offset" + (l.modulated ? "+mask" : "") +
                                 " channels, found " + std::to_string(have) + " (value " + std::to_string(l.aux) + ")");
    } else if (l.aux != -1 && l.kind != BACKBONE_CUDA_LAYER_UPSAMPLE_ADD) {
      bad_layer(i, l.kind, "aux: expected -1, found " + std::to_string(l.aux));
    }
    if (is_fpn_layer(l.kind)) {
      const std::string why = check_fpn_layer(l, channels);
      if (!why.empty()) bad_layer(i, l.kind, why);
    }
    if (l.kind == BACKBONE_CUDA_LAYER_MAX_POOL || l.kind == BACKBONE_CUDA_LAYER_GROUP_NORM ||
        l.kind == BACKBONE_CUDA_LAYER_LAYER_NORM) {
      if (l.out_channels != l.in_channels)
        bad_layer(i, l.kind, "out_channels: expected " + std::to_string(l.in_channels) + ", found " +
                                 std::to_string(l.out_channels));
    }
    if (l.kind == BACKBONE_CUDA_LAYER_GROUP_NORM || l.kind == BACKBONE_CUDA_LAYER_LAYER_NORM) {
      if (!l.weight) bad_layer(i, l.kind, "weight (gamma): expected an array, found NULL");
      if (!(l.eps > 0)) bad_layer(i, l.kind, "eps: expected > 0, found " + std::to_string(l.eps));
    }
    if (l.kind == BACKBONE_CUDA_LAYER_GROUP_NORM && (l.num_groups < 1 || l.in_channels % l.num_groups != 0))
      bad_layer(i, l.kind, "num_groups: expected a divisor of " + std::to_string(l.in_channels) + ", found " +
                               std::to_string(l.num_groups));
    if (l.kind == BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR && !l.weight)
      bad_layer(i, l.kind, "weight: expected an array, found NULL");
    if (l.residual != -1) {
      if (!defined(l.residual))
        bad_layer(i, l.kind, "residual: expected a value computed before or -1, found " + std::to_string(l.residual));
      if (l.kind == BACKBONE_CUDA_LAYER_MAX_POOL || l.kind == BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR)
        bad_layer(i, l.kind, "residual: expected -1, found " + std::to_string(l.residual));
      if (channels[static_cast<size_t>(l.residual)] != l.out_channels)
        bad_layer(i, l.kind, "residual: expected " + std::to_string(l.out_channels) + " channels, found " +
                                 std::to_string(channels[static_cast<size_t>(l.residual)]) + " (value " +
                                 std::to_string(l.residual) + ")");
    }
    if ((l.kind == BACKBONE_CUDA_LAYER_MAX_POOL || l.kind == BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR) && l.relu)
      bad_layer(i, l.kind, "relu: expected 0, found " + std::to_string(l.relu));
    channels[static_cast<size_t>(l.output)] = l.out_channels;
    is_linear[static_cast<size_t>(l.output)] = l.kind == BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR;
  }
  for (int32_t i = 0; i < net.num_outputs; ++i)
    if (!defined(net.outputs[i]) || net.outputs[i] == 0)
      throw_argument_error("engine_create: output " + std::to_string(i) + ": expected a layer's value, found " +
                           std::to_string(net.outputs[i]));
}

// Stored channels (cuda/engine/layout.h): the stem's input padded to 4 (fp32) or 8 (fp16/bf16)
// channels, offsets likewise; residual operands are never padded (they equal the output channels).
void plan_channels(const BackboneCudaNetDesc& net, Engine& e) {
  e.stored_channels = stored_channels(net, e.channels, e.type == StorageType::Float32 ? 4 : 8);
  e.last_read = last_reads(net);
  e.descs.clear();
  for (int32_t i = 0; i < net.num_layers; ++i) {
    BackboneCudaLayer d = net.layers[i];
    d.weight = d.bias = nullptr;
    e.descs.push_back(d);
  }
}

// The description as the engine keeps it (no weights).
BackboneCudaNetDesc net_view(const Engine& e) {
  BackboneCudaNetDesc d{};
  d.in_channels = e.in_channels;
  d.num_values = static_cast<int32_t>(e.channels.size());
  d.num_layers = static_cast<int32_t>(e.descs.size());
  d.layers = e.descs.data();
  d.num_outputs = static_cast<int32_t>(e.outputs.size());
  d.outputs = e.outputs.data();
  return d;
}

std::vector<float> array(const float* p, int64_t count, int64_t padded_count) {
  std::vector<float> v(static_cast<size_t>(padded_count), 0.0f);
  if (p) std::copy(p, p + count, v.begin());
  return v;
}

void load_layers(const BackboneCudaNetDesc& net, Engine& e) {
  const StorageType t = e.type;
  for (int32_t i = 0; i < net.num_layers; ++i) {
    const BackboneCudaLayer& src = net.layers[i];
    Layer l;
    l.d = src;
    l.d.weight = l.d.bias = nullptr;
    l.in_stored = e.stored_channels[static_cast<size_t>(src.input)];
    l.out_stored = e.stored_channels[static_cast<size_t>(src.output)];
    switch (src.kind) {
      case BACKBONE_CUDA_LAYER_CONV:
      case BACKBONE_CUDA_LAYER_DEFORM_CONV: {
        l.weight = upload(t, filter_to_nhwc(src.weight, src.out_channels, src.in_channels, src.groups, src.kernel_size,
                                            l.out_stored, l.in_stored));
        const std::vector<float> b = array(src.bias, src.out_channels, l.out_stored);
        l.bias = upload_f32(b);
        if (src.kind == BACKBONE_CUDA_LAYER_CONV) l.bias_storage = upload(t, b);
        break;
      }
      case BACKBONE_CUDA_LAYER_GROUP_NORM:
      case BACKBONE_CUDA_LAYER_LAYER_NORM:
        l.gamma = upload_f32(array(src.weight, src.in_channels, src.in_channels));
        l.bias = upload_f32(array(src.bias, src.in_channels, src.in_channels));
        break;
      case BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR:
        l.gamma = upload_f32(array(src.weight, src.out_channels * src.in_channels, src.out_channels * src.in_channels));
        l.bias = upload_f32(array(src.bias, src.out_channels, src.out_channels));
        break;
      default:
        break;
    }
    e.layers.push_back(std::move(l));
  }
}

// ---------------------------------------------------------------------------------------------
// Plans.

std::size_t value_bytes(const Engine& e, const NhwcShape& s, size_t v) {
  return static_cast<std::size_t>(s.numel()) * (e.is_linear[v] ? sizeof(float) : storage_size(e.type));
}

std::string shape_text(int64_t n, int64_t c, int64_t h, int64_t w) {
  return std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

int to_int(int64_t v, int32_t layer, const char* what, int64_t n, int64_t h, int64_t w) {
  if (v > INT_MAX)
    throw ModuleError(BACKBONE_CUDA_ERROR_ARGUMENT,
                      "engine_forward: input " + std::to_string(n) + " x " + std::to_string(h) + " x " +
                          std::to_string(w) + ": layer " + std::to_string(layer) + "'s " + what + " has " +
                          std::to_string(v) + " elements, more than cuDNN's limit of " + std::to_string(INT_MAX) +
                          " per tensor; use a smaller batch or image");
  return static_cast<int>(v);
}

cudnnMathType_t math_type(const Engine& e) {
  if (e.type != StorageType::Float32) return CUDNN_TENSOR_OP_MATH;
  return e.options.allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

void setup_conv(Engine& e, Plan& p, int32_t i) {
  const Layer& l = e.layers[static_cast<size_t>(i)];
  const NhwcShape& xs = p.shapes[static_cast<size_t>(l.d.input)];
  const NhwcShape& ys = p.shapes[static_cast<size_t>(l.d.output)];
  const cudnnDataType_t dt = cudnn_type(e.type);
  auto c = std::make_unique<ConvExec>();
  to_int(xs.numel(), i, "input", p.n, p.h, p.w);
  to_int(ys.numel(), i, "output", p.n, p.h, p.w);
  BACKBONE_CUDNN_CHECK(cudnnSetTensor4dDescriptor(c->x.get(), CUDNN_TENSOR_NHWC, dt, static_cast<int>(xs.n),
                                                  static_cast<int>(xs.c), static_cast<int>(xs.h),
                                                  static_cast<int>(xs.w)));
  BACKBONE_CUDNN_CHECK(cudnnSetTensor4dDescriptor(c->y.get(), CUDNN_TENSOR_NHWC, dt, static_cast<int>(ys.n),
                                                  static_cast<int>(ys.c), static_cast<int>(ys.h),
                                                  static_cast<int>(ys.w)));
  BACKBONE_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(c->bias.get(), CUDNN_TENSOR_NHWC, dt, 1, static_cast<int>(l.out_stored), 1, 1));
  const int k = static_cast<int>(l.d.kernel_size), g = static_cast<int>(l.d.groups);
  BACKBONE_CUDNN_CHECK(cudnnSetFilter4dDescriptor(c->w.get(), dt, CUDNN_TENSOR_NHWC, static_cast<int>(l.out_stored),
                                                  static_cast<int>(l.in_stored / g), k, k));
  const int pad = static_cast<int>(l.d.padding), stride = static_cast<int>(l.d.stride),
            dil = static_cast<int>(l.d.dilation);
  BACKBONE_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(c->conv.get(), pad, pad, stride, stride, dil, dil,
                                                       CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  BACKBONE_CUDNN_CHECK(cudnnSetConvolutionGroupCount(c->conv.get(), g));
  BACKBONE_CUDNN_CHECK(cudnnSetConvolutionMathType(c->conv.get(), math_type(e)));
  BACKBONE_CUDNN_CHECK(cudnnSetActivationDescriptor(
      c->act.get(), l.d.relu ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY, CUDNN_PROPAGATE_NAN, 0.0));

  // The algorithm: cuDNN's heuristics (ranked), the first it can run within the workspace limit.
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int returned = 0;
  BACKBONE_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(e.handle.get(), c->x.get(), c->w.get(), c->conv.get(),
                                                              c->y.get(), CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned,
                                                              perf));
  bool found = false;
  for (int r = 0; r < returned && !found; ++r) {
    if (perf[r].status != CUDNN_STATUS_SUCCESS || perf[r].memory > kMaxWorkspace) continue;
    c->algo = perf[r].algo;
    found = true;
  }
  if (!found)
    throw ModuleError(BACKBONE_CUDA_ERROR_UNSUPPORTED,
                      "engine: layer " + std::to_string(i) + " (" + kind_name(l.d.kind) + ", " +
                          std::to_string(l.d.kernel_size) + "x" + std::to_string(l.d.kernel_size) + ", " +
                          std::to_string(l.in_stored) + " -> " + std::to_string(l.out_stored) + " channels, groups " +
                          std::to_string(g) + ") on input " + shape_text(xs.n, xs.c, xs.h, xs.w) +
                          ": cuDNN offers no forward algorithm for it within " + std::to_string(kMaxWorkspace >> 20) +
                          " MiB of workspace");
  std::size_t ws = 0;
  BACKBONE_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(e.handle.get(), c->x.get(), c->w.get(), c->conv.get(),
                                                               c->y.get(), c->algo, &ws));
  p.workspace_bytes = std::max(p.workspace_bytes, ws);
  // The fused call: with ReLU first the heuristics' algorithm, and IMPLICIT_PRECOMP_GEMM when cuDNN
  // does not fuse that one (decided in the eager first run); with CUDNN_ACTIVATION_IDENTITY only
  // IMPLICIT_PRECOMP_GEMM (cuDNN's rule for the fused call).
  std::size_t pws = 0;
  const cudnnStatus_t s =
      cudnnGetConvolutionForwardWorkspaceSize(e.handle.get(), c->x.get(), c->w.get(), c->conv.get(), c->y.get(),
                                              CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, &pws);
  c->precomp_ok = s == CUDNN_STATUS_SUCCESS && pws <= kMaxWorkspace;
  if (c->precomp_ok) p.workspace_bytes = std::max(p.workspace_bytes, pws);
  c->fused_algo = l.d.relu ? c->algo : CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  if (c->fused_algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM && !c->precomp_ok) {
    c->fused = false;
    c->refusal = std::string("IMPLICIT_PRECOMP_GEMM (required by the fused call without activation): ") +
                 (s == CUDNN_STATUS_SUCCESS ? "workspace of " + std::to_string(pws >> 20) + " MiB"
                                            : cudnnGetErrorString(s));
  }
  p.convs[static_cast<size_t>(i)] = std::move(c);
}

std::unique_ptr<Plan> build_plan(Engine& e, int64_t n, int64_t h, int64_t w) {
  auto plan = std::make_unique<Plan>();
  Plan& p = *plan;
  p.n = n;
  p.h = h;
  p.w = w;
  const size_t nv = e.channels.size();
  p.shapes.assign(nv, NhwcShape{});
  p.shapes[0] = {n, h, w, e.stored_channels[0]};
  for (size_t i = 0; i < e.layers.size(); ++i) {
    const BackboneCudaLayer& l = e.layers[i].d;
    const NhwcShape& x = p.shapes[static_cast<size_t>(l.input)];
    NhwcShape y{x.n, x.h, x.w, e.stored_channels[static_cast<size_t>(l.output)]};
    switch (l.kind) {
      case BACKBONE_CUDA_LAYER_CONV:
      case BACKBONE_CUDA_LAYER_DEFORM_CONV:
        y.h = out_size(x.h, l.kernel_size, l.stride, l.padding, l.dilation);
        y.w = out_size(x.w, l.kernel_size, l.stride, l.padding, l.dilation);
        break;
      case BACKBONE_CUDA_LAYER_MAX_POOL:
        y.h = out_size(x.h, l.kernel_size, l.stride, l.padding, 1);
        y.w = out_size(x.w, l.kernel_size, l.stride, l.padding, 1);
        break;
      case BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR:
        y.h = y.w = 1;
        break;
      default:
        break;
    }
    if (y.h <= 0 || y.w <= 0)
      throw ModuleError(BACKBONE_CUDA_ERROR_ARGUMENT,
                        "engine_forward: input " + shape_text(n, e.channels[0], h, w) + " is too small: layer " +
                            std::to_string(i) + " (" + kind_name(l.kind) + ") would output " + std::to_string(y.h) +
                            "x" + std::to_string(y.w) + " from " + std::to_string(x.h) + "x" + std::to_string(x.w));
    const auto check_same = [&](int32_t v, const char* role) {
      const NhwcShape& r = p.shapes[static_cast<size_t>(v)];
      if (r.n != y.n || r.h != y.h || r.w != y.w)
        throw ModuleError(BACKBONE_CUDA_ERROR_ARGUMENT,
                          "engine_forward: input " + shape_text(n, e.channels[0], h, w) + ": layer " +
                              std::to_string(i) + " (" + kind_name(l.kind) + "): " + role + " value " +
                              std::to_string(v) + " is " + std::to_string(r.h) + "x" + std::to_string(r.w) +
                              ", expected the output's " + std::to_string(y.h) + "x" + std::to_string(y.w));
    };
    if (l.residual >= 0) check_same(l.residual, "residual");
    if (l.kind == BACKBONE_CUDA_LAYER_DEFORM_CONV) check_same(l.aux, "offset");
    if (is_fpn_layer(l.kind)) {
      const std::string why = check_fpn_layer_shapes(l, x, l.aux >= 0 ? p.shapes[static_cast<size_t>(l.aux)] : x);
      if (!why.empty())
        throw ModuleError(BACKBONE_CUDA_ERROR_ARGUMENT, "engine_forward: input " + shape_text(n, e.channels[0], h, w) +
                                                            ": layer " + std::to_string(i) + " (" + kind_name(l.kind) +
                                                            "): " + why);
    }
    p.shapes[static_cast<size_t>(l.output)] = y;
  }

  // Activation buffers shared by values whose lifetimes do not overlap (cuda/engine/layout.h).
  std::vector<std::size_t> bytes(nv);
  for (size_t v = 0; v < nv; ++v) bytes[v] = value_bytes(e, p.shapes[v], v);
  BufferPlan buffers = assign_buffers(net_view(e), bytes, e.last_read);
  p.slot_of = std::move(buffers.slot_of);
  const std::vector<std::size_t>& slot_bytes = buffers.slot_bytes;
  // Memory first (an absurd input fails here as out of memory, with the sizes), descriptors after.
  std::size_t total = 0;
  for (std::size_t b : slot_bytes) total += b;
  try {
    for (std::size_t b : slot_bytes) p.slots.emplace_back(b);
  } catch (const ModuleError& err) {
    if (err.status() != BACKBONE_CUDA_ERROR_OUT_OF_MEMORY) throw;
    throw ModuleError(BACKBONE_CUDA_ERROR_OUT_OF_MEMORY,
                      "out of memory: the activations of input " + shape_text(n, e.channels[0], h, w) + " need " +
                          std::to_string(total >> 20) + " MiB in " + std::to_string(slot_bytes.size()) +
                          " buffers (" + storage_name(e.type) + "): " + err.what());
  }

  p.convs.resize(e.layers.size());
  std::size_t norm_ws = 0;
  for (size_t i = 0; i < e.layers.size(); ++i) {
    const BackboneCudaLayer& l = e.layers[i].d;
    if (l.kind == BACKBONE_CUDA_LAYER_CONV) setup_conv(e, p, static_cast<int32_t>(i));
    if (l.kind == BACKBONE_CUDA_LAYER_GROUP_NORM)
      norm_ws = std::max(norm_ws, group_norm_workspace_bytes(p.shapes[static_cast<size_t>(l.input)], l.num_groups));
  }
  p.workspace = DeviceBuffer(p.workspace_bytes);
  p.norm_workspace = DeviceBuffer(norm_ws);
  return plan;
}

// The plan of an input shape: found, or built (the least recently used one dropped beyond max_plans).
Plan& plan_for(Engine& e, int64_t n, int64_t h, int64_t w) {
  for (auto& p : e.plans)
    if (p->n == n && p->h == h && p->w == w) {
      p->last_use = ++e.clock;
      return *p;
    }
  const size_t max_plans = static_cast<size_t>(std::max(1, e.options.max_plans));
  if (e.plans.size() >= max_plans) {
    // Its buffers may still be read by queued work.
    BACKBONE_CUDA_CHECK(cudaStreamSynchronize(e.stream.get()));
    auto lru = std::min_element(e.plans.begin(), e.plans.end(),
                                [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    if (e.last_plan == lru->get()) e.last_plan = nullptr;
    e.plans.erase(lru);
  }
  e.plans.push_back(build_plan(e, n, h, w));
  e.plans.back()->last_use = ++e.clock;
  return *e.plans.back();
}

// ---------------------------------------------------------------------------------------------
// Running.

void run_conv(Engine& e, Plan& p, int32_t i, cudaStream_t stream, bool warm_up) {
  const Layer& l = e.layers[static_cast<size_t>(i)];
  ConvExec& c = *p.convs[static_cast<size_t>(i)];
  const float one = 1.0f, zero = 0.0f;
  void* y = p.ptr(l.d.output);
  const void* x = p.ptr(l.d.input);
  const void* residual = l.d.residual >= 0 ? p.ptr(l.d.residual) : nullptr;
  while (c.fused) {
    const float alpha2 = residual ? 1.0f : 0.0f;
    try {
      BACKBONE_CUDNN_CHECK(cudnnConvolutionBiasActivationForward(
          e.handle.get(), &one, c.x.get(), x, c.w.get(), l.weight.get(), c.conv.get(), c.fused_algo,
          p.workspace.get(), p.workspace_bytes, &alpha2, c.y.get(), residual ? residual : y, c.bias.get(),
          l.bias_storage.get(), c.act.get(), c.y.get(), y));
      return;
    } catch (const CudnnError& err) {
      // Only the first (eager) run of a shape may decide how cuDNN fuses this layer: another
      // algorithm, else no fusion.
      if (!warm_up || !(err.not_supported() || err.bad_param())) throw;
      c.refusal = std::string(algo_name(c.fused_algo)) + ": " + err.what();
      if (c.fused_algo != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM && c.precomp_ok)
        c.fused_algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
      else
        c.fused = false;
    }
  }
  for (;;) {
    try {
      BACKBONE_CUDNN_CHECK(cudnnConvolutionForward(e.handle.get(), &one, c.x.get(), x, c.w.get(), l.weight.get(),
                                                   c.conv.get(), c.algo, p.workspace.get(), p.workspace_bytes, &zero,
                                                   c.y.get(), y));
      break;
    } catch (const CudnnError& err) {
      // The heuristics' algorithm refused in the first run: IMPLICIT_GEMM (no workspace) runs every
      // configuration.
      if (!warm_up || !(err.not_supported() || err.bad_param()) || c.algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM)
        throw;
      c.algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    }
  }
  launch_bias_residual_act_nhwc(e.type, y, p.shapes[static_cast<size_t>(l.d.output)],
                                static_cast<const float*>(l.bias.get()), residual, l.d.relu != 0, y, stream);
}

void run_layers(Engine& e, Plan& p, cudaStream_t stream, bool warm_up) {
  BACKBONE_CUDNN_CHECK(cudnnSetStream(e.handle.get(), stream));
  for (size_t li = 0; li < e.layers.size(); ++li) {
    const Layer& l = e.layers[li];
    const BackboneCudaLayer& d = l.d;
    const NhwcShape& xs = p.shapes[static_cast<size_t>(d.input)];
    const NhwcShape& ys = p.shapes[static_cast<size_t>(d.output)];
    const void* residual = d.residual >= 0 ? p.ptr(d.residual) : nullptr;
    switch (d.kind) {
      case BACKBONE_CUDA_LAYER_CONV:
        run_conv(e, p, static_cast<int32_t>(li), stream, warm_up);
        break;
      case BACKBONE_CUDA_LAYER_DEFORM_CONV: {
        DeformConvNhwcArgs a;
        a.input = p.ptr(d.input);
        a.offset = p.ptr(d.aux);
        a.offset_channels = p.shapes[static_cast<size_t>(d.aux)].c;
        a.weight = l.weight.get();
        a.bias = static_cast<const float*>(l.bias.get());
        a.residual = residual;
        a.out = p.ptr(d.output);
        a.n = xs.n;
        a.h = xs.h;
        a.w = xs.w;
        a.in_channels = xs.c;
        a.out_channels = ys.c;
        a.out_h = ys.h;
        a.out_w = ys.w;
        a.kernel = d.kernel_size;
        a.stride = d.stride;
        a.padding = d.padding;
        a.dilation = d.dilation;
        a.groups = d.groups;
        a.deformable_groups = d.deformable_groups;
        a.modulated = d.modulated != 0;
        a.relu = d.relu != 0;
        launch_deform_conv_nhwc(e.type, a, stream);
        break;
      }
      case BACKBONE_CUDA_LAYER_MAX_POOL:
        launch_max_pool_nhwc(e.type, p.ptr(d.input), xs, p.ptr(d.output), ys.h, ys.w, static_cast<int>(d.kernel_size),
                             static_cast<int>(d.stride), static_cast<int>(d.padding), stream);
        break;
      case BACKBONE_CUDA_LAYER_GROUP_NORM:
        launch_group_norm_nhwc(e.type, p.ptr(d.input), xs, d.num_groups, d.eps, static_cast<const float*>(l.gamma.get()),
                               static_cast<const float*>(l.bias.get()), residual, d.relu != 0, p.ptr(d.output),
                               p.norm_workspace.get(), stream);
        break;
      case BACKBONE_CUDA_LAYER_LAYER_NORM:
        launch_layer_norm_nhwc(e.type, p.ptr(d.input), xs, d.eps, static_cast<const float*>(l.gamma.get()),
                               static_cast<const float*>(l.bias.get()), residual, d.relu != 0, p.ptr(d.output), stream);
        break;
      case BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR:
        launch_avgpool_linear_nhwc(e.type, p.ptr(d.input), xs, static_cast<const float*>(l.gamma.get()),
                                   static_cast<const float*>(l.bias.get()), d.out_channels,
                                   static_cast<float*>(p.ptr(d.output)), stream);
        break;
      case BACKBONE_CUDA_LAYER_UPSAMPLE_ADD:
      case BACKBONE_CUDA_LAYER_RELU:
        run_fpn_layer(e.type, d, p.ptr(d.input), xs, d.aux >= 0 ? p.ptr(d.aux) : nullptr, p.ptr(d.output), stream);
        break;
      default:
        break;
    }
  }
}

// Captures the plan's layers as a CUDA graph on the private capture stream. On failure the capture
// is ended (cudaStreamEndCapture) and the cuDNN handle bound back to the engine's stream before the
// error propagates.
void capture(Engine& e, Plan& p) {
  if (!e.capture_stream) e.capture_stream = std::make_unique<Stream>(cudaStreamNonBlocking);
  const cudaStream_t cs = e.capture_stream->get();
  BACKBONE_CUDA_CHECK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeThreadLocal));
  Graph graph;
  try {
    run_layers(e, p, cs, false);
  } catch (...) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(cs, &partial);
    if (partial) cudaGraphDestroy(partial);
    cudaGetLastError();
    cudnnSetStream(e.handle.get(), e.stream.get());
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(cs, graph.out());
  BACKBONE_CUDNN_CHECK(cudnnSetStream(e.handle.get(), e.stream.get()));
  if (ended != cudaSuccess) throw_cuda_error(ended, "cudaStreamEndCapture(capture_stream, &graph)", __FILE__, __LINE__);
  cudaGraphExec_t exec = nullptr;
  BACKBONE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph.get(), 0));
  p.graph = GraphExec(exec);
}

// Runs the plan whose input (value 0) is written: eagerly the first time, then as its graph.
void run_plan(Engine& e, Plan& p) {
  if (p.graph) {
    BACKBONE_CUDA_CHECK(cudaGraphLaunch(p.graph.get(), e.stream.get()));
    return;
  }
  run_layers(e, p, e.stream.get(), !p.warmed);
  p.warmed = true;
  if (e.options.use_graphs && !p.capture_tried) {
    p.capture_tried = true;
    try {
      capture(e, p);
      ++e.captured;
    } catch (const ModuleError& err) {
      // Runs eagerly from now on; describe() says why. Not rethrown, out of memory included: this
      // forward's eager run is already queued and valid, and an allocation that cuDNN attempts
      // inside the capture fails (unsupported while capturing) with an allocation status that
      // would read as out of memory.
      p.capture_failure = err.what();
    }
  }
}

PoolEntry& acquire_output(Engine& e, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(e.pool_mutex);
  for (auto& entry : e.pool)
    if (entry->token == 0 && entry->bytes == bytes) {
      entry->token = ++e.next_token;
      return *entry;
    }
  auto entry = std::make_unique<PoolEntry>();
  entry->buffer = DeviceBuffer(bytes);
  entry->bytes = bytes;
  entry->token = ++e.next_token;
  e.pool.push_back(std::move(entry));
  return *e.pool.back();
}

// Idle entries beyond what a few forwards need are freed (a caller that once held many outputs).
void trim_pool(Engine& e) {
  const size_t keep = 4 * e.outputs.size();
  size_t idle = 0;
  {
    std::lock_guard<std::mutex> lock(e.pool_mutex);
    for (const auto& entry : e.pool) idle += entry->token == 0 ? 1 : 0;
  }
  if (idle <= keep) return;
  // An idle entry may still be the target of a queued conversion (its holder released it early).
  BACKBONE_CUDA_CHECK(cudaStreamSynchronize(e.stream.get()));
  std::lock_guard<std::mutex> lock(e.pool_mutex);
  idle = 0;
  for (const auto& entry : e.pool) idle += entry->token == 0 ? 1 : 0;
  for (auto it = e.pool.begin(); it != e.pool.end() && idle > keep;) {
    if ((*it)->token == 0) {
      it = e.pool.erase(it);
      --idle;
    } else {
      ++it;
    }
  }
}

void release_token(Engine& e, uint64_t token) noexcept {
  std::lock_guard<std::mutex> lock(e.pool_mutex);
  for (auto& entry : e.pool)
    if (entry->token == token) {
      entry->token = 0;
      return;
    }
}

// After the plan ran: each output value to float32 NCHW in a pool entry, its event recorded.
void emit_outputs(Engine& e, Plan& p, BackboneCudaOutput* outputs, int32_t num_outputs) {
  std::vector<uint64_t> taken;
  try {
    for (int32_t i = 0; i < num_outputs; ++i) {
      const size_t v = static_cast<size_t>(e.outputs[static_cast<size_t>(i)]);
      const NhwcShape& s = p.shapes[v];
      const int64_t c = e.channels[v];
      const std::size_t bytes = static_cast<std::size_t>(s.n * c * s.h * s.w) * sizeof(float);
      PoolEntry& entry = acquire_output(e, bytes);
      taken.push_back(entry.token);
      launch_nhwc_to_nchw_f32(e.is_linear[v] ? StorageType::Float32 : e.type, p.ptr(static_cast<int32_t>(v)), s.n, s.h,
                              s.w, s.c, c, static_cast<float*>(entry.buffer.get()), e.stream.get());
      BACKBONE_CUDA_CHECK(cudaEventRecord(entry.event.get(), e.stream.get()));
      BackboneCudaOutput& o = outputs[i];
      o.data = entry.buffer.get();
      o.dims[0] = s.n;
      o.dims[1] = c;
      o.dims[2] = s.h;
      o.dims[3] = s.w;
      o.ready_event = entry.event.get();
      o.token = entry.token;
    }
  } catch (...) {
    for (uint64_t t : taken) release_token(e, t);
    throw;
  }
}

void check_outputs(const Engine& e, BackboneCudaOutput* outputs, int32_t num_outputs) {
  if (!outputs || num_outputs != static_cast<int32_t>(e.outputs.size()))
    throw_argument_error("engine_forward: outputs: expected " + std::to_string(e.outputs.size()) + ", found " +
                         std::to_string(outputs ? num_outputs : 0));
}

std::string version_text(int v) {  // cudnnGetVersion(): 91900 -> 9.19.0
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

void update_description(Engine& e) {
  std::ostringstream o;
  o << "cuda " << storage_name(e.type) << " on cuda:" << e.device << ", " << e.prop.name << " (sm_" << e.prop.major
    << e.prop.minor << ", " << e.prop.multiProcessorCount << " SMs), cuDNN " << version_text(static_cast<int>(cudnnGetVersion()))
    << ", NHWC activations, BN folded, CUDA graphs " << (e.options.use_graphs ? "on" : "off");
  if (e.options.use_graphs) {
    o << " (" << e.captured << " shape" << (e.captured == 1 ? "" : "s") << " captured";
    for (const auto& p : e.plans)
      if (!p->capture_failure.empty()) {
        o << "; capture failed for " << p->n << "x" << p->h << "x" << p->w << ": " << p->capture_failure;
        break;
      }
    o << ")";
  }
  if (e.type == StorageType::Float32) o << ", TF32 " << (e.options.allow_tf32 ? "on" : "off");
  const Plan* p = e.last_plan;
  if (!p || !p->warmed) {
    o << "; convolution algorithms are chosen per input shape at its first forward";
  } else {
    int fused = 0, unfused = 0;
    std::map<std::string, int> algos;
    std::string refusal;
    for (const auto& c : p->convs) {
      if (!c) continue;
      (c->fused ? fused : unfused) += 1;
      algos[algo_name(c->fused ? c->fused_algo : c->algo)] += 1;
      if (!c->fused && refusal.empty()) refusal = c->refusal;
    }
    o << "; convolutions (" << p->n << "x" << p->h << "x" << p->w << "): " << fused
      << " fused (cudnnConvolutionBiasActivationForward: bias, residual, ReLU), " << unfused
      << " unfused (cudnnConvolutionForward + bias/residual/ReLU kernel)";
    if (!refusal.empty()) o << " [first refusal: " << refusal << "]";
    o << "; algorithms:";
    for (const auto& [name, count] : algos) o << " " << name << " x" << count;
  }
  o << describe_fpn_layers(e.descs);
  e.description = o.str();
}

void forward_common(Engine& e, Plan& p, BackboneCudaOutput* outputs, int32_t num_outputs) {
  run_plan(e, p);
  e.last_plan = &p;
  emit_outputs(e, p, outputs, num_outputs);
  trim_pool(e);
  update_description(e);
}

}  // namespace

BackboneCudaEngine* engine_create(const BackboneCudaNetDesc& net, const BackboneCudaEngineOptions& options) {
  // The description and the options first: their errors need no device.
  std::vector<int64_t> channels;
  std::vector<bool> is_linear;
  validate(net, channels, is_linear);
  const StorageType type = storage_of(options.precision);
  int count = 0;
  BACKBONE_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (options.device < 0 || options.device >= count)
    throw_argument_error("engine_create: device: expected an index in [0, " + std::to_string(count) + "), found " +
                         std::to_string(options.device));
  set_device(options.device);
  auto e = std::make_unique<BackboneCudaEngine>(options.device);
  e->type = type;
  e->options = options;
  BACKBONE_CUDA_CHECK(cudaGetDeviceProperties(&e->prop, options.device));
  if (type == StorageType::BFloat16 && e->prop.major < 8)
    throw ModuleError(BACKBONE_CUDA_ERROR_UNSUPPORTED,
                      std::string("precision bf16 needs compute capability 8.0 or newer (cuDNN's bf16 convolutions), "
                                  "found sm_") +
                          std::to_string(e->prop.major) + std::to_string(e->prop.minor) + " (" + e->prop.name +
                          "); use fp16 or fp32");
  BACKBONE_CUDNN_CHECK(cudnnSetStream(e->handle.get(), e->stream.get()));
  e->channels = std::move(channels);
  e->is_linear = std::move(is_linear);
  e->in_channels = net.in_channels;
  e->outputs.assign(net.outputs, net.outputs + net.num_outputs);
  plan_channels(net, *e);
  load_layers(net, *e);
  update_description(*e);
  return e.release();
}

void engine_destroy(BackboneCudaEngine* engine) noexcept {
  if (!engine) return;
  int current = -1;  // as set_device, without throwing: keeps a current context of the device
  if (cudaGetDevice(&current) != cudaSuccess || current != engine->device) cudaSetDevice(engine->device);
  cudaStreamSynchronize(engine->stream.get());
  cudaGetLastError();
  delete engine;
}

const char* engine_describe(BackboneCudaEngine* engine) noexcept {
  if (!engine) return "";
  std::lock_guard<std::mutex> lock(engine->mutex);
  return engine->description.c_str();
}

void engine_forward(BackboneCudaEngine* engine, const float* images, bool on_device, int64_t n, int64_t h, int64_t w,
                    BackboneCudaOutput* outputs, int32_t num_outputs) {
  if (!engine) throw_argument_error("engine_forward: null engine");
  Engine& e = *engine;
  std::lock_guard<std::mutex> lock(e.mutex);
  check_outputs(e, outputs, num_outputs);
  if (!images || n <= 0 || h <= 0 || w <= 0)
    throw_argument_error("engine_forward: expected a non-empty input, found " + shape_text(n, e.in_channels, h, w) +
                         (images ? "" : " at NULL"));
  set_device(e.device);
  Plan& p = plan_for(e, n, h, w);
  const float* src = images;
  if (!on_device) {
    const std::size_t bytes = static_cast<std::size_t>(n * e.in_channels * h * w) * sizeof(float);
    if (bytes > e.staging.bytes()) {
      BACKBONE_CUDA_CHECK(cudaStreamSynchronize(e.stream.get()));  // a queued conversion may read the old one
      e.staging.reserve(bytes);
    }
    BACKBONE_CUDA_CHECK(cudaMemcpyAsync(e.staging.get(), images, bytes, cudaMemcpyHostToDevice, e.stream.get()));
    // From pageable memory cudaMemcpyAsync returns once it has taken the data; from page-locked
    // (or managed) memory it returns at once and the DMA reads the caller's array later. The
    // caller may rewrite or free its array when this returns, so wait for that copy here.
    cudaPointerAttributes attr{};
    BACKBONE_CUDA_CHECK(cudaPointerGetAttributes(&attr, images));
    if (attr.type != cudaMemoryTypeUnregistered) BACKBONE_CUDA_CHECK(cudaStreamSynchronize(e.stream.get()));
    src = static_cast<const float*>(e.staging.get());
  }
  launch_nchw_f32_to_nhwc(e.type, src, n, e.in_channels, h, w, e.stored_channels[0], p.ptr(0), e.stream.get());
  forward_common(e, p, outputs, num_outputs);
}

void engine_forward_frame(BackboneCudaEngine* engine, const BackboneCudaFrameArgs& frame, BackboneCudaOutput* outputs,
                          int32_t num_outputs) {
  if (!engine) throw_argument_error("engine_forward_frame: null engine");
  Engine& e = *engine;
  std::lock_guard<std::mutex> lock(e.mutex);
  check_outputs(e, outputs, num_outputs);
  if (e.in_channels != 3)
    throw_argument_error("engine_forward_frame: frames give 3 channels, the stem expects " +
                         std::to_string(e.in_channels));
  if (frame.padded_height <= 0 || frame.padded_width <= 0)
    throw_argument_error("engine_forward_frame: expected a padded size > 0, found " +
                         std::to_string(frame.padded_width) + "x" + std::to_string(frame.padded_height));
  set_device(e.device);
  Plan& p = plan_for(e, 1, frame.padded_height, frame.padded_width);
  if (!e.preprocessor) e.preprocessor = std::make_unique<FramePreprocessor>();
  e.preprocessor->run(frame, e.type, p.ptr(0), e.stored_channels[0], e.stream.get());
  forward_common(e, p, outputs, num_outputs);
}

void engine_release_output(BackboneCudaEngine* engine, uint64_t token) noexcept {
  if (engine && token) release_token(*engine, token);
}

}  // namespace backbone::cuda_module
