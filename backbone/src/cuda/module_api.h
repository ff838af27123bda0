/* SPDX-License-Identifier: Apache-2.0
 *
 * Internal: the C interface between libbackbone (backbone/src/cuda/loader.cpp) and the separately
 * loaded CUDA module libbackbone-cuda.so (backbone/src/cuda/module.cpp). Plain C: only fixed-size
 * integers, pointers and function pointers cross it, never C++ types or exceptions, and no CUDA
 * header is needed on either side of it.
 *
 * The module exports exactly one symbol, BACKBONE_CUDA_ENTRY_POINT, returning a static table whose
 * `version` must equal BACKBONE_CUDA_API_VERSION (bump it on any change of this file) and whose
 * `struct_size` is at least sizeof(BackboneCudaApi).
 *
 * Every function returns BACKBONE_CUDA_OK (0) or an error code, and on error writes a
 * NUL-terminated message (truncated to `msg_size`) into `msg` naming the failed call, the CUDA or
 * cuBLAS error and where it happened.
 */
#ifndef BACKBONE_SRC_CUDA_MODULE_API_H_
#define BACKBONE_SRC_CUDA_MODULE_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BACKBONE_CUDA_API_VERSION 3u
#define BACKBONE_CUDA_ENTRY_POINT "backbone_cuda_module_api"

enum BackboneCudaStatus {
  BACKBONE_CUDA_OK = 0,
  BACKBONE_CUDA_ERROR_RUNTIME = 1,   /* a CUDA runtime call failed (message names it) */
  BACKBONE_CUDA_ERROR_CUBLAS = 2,    /* a cuBLAS call failed */
  BACKBONE_CUDA_ERROR_ARGUMENT = 3,  /* an argument the module rejects (bad device, sizes) */
  BACKBONE_CUDA_ERROR_INTERNAL = 4,  /* anything else (e.g. std::bad_alloc inside the module) */
  BACKBONE_CUDA_ERROR_CUDNN = 5,     /* a cuDNN call failed (message names it) */
  BACKBONE_CUDA_ERROR_OUT_OF_MEMORY = 6, /* cudaErrorMemoryAllocation / CUDNN_STATUS_ALLOC_FAILED: message says how much */
  BACKBONE_CUDA_ERROR_UNSUPPORTED = 7    /* a layer/precision the engine does not run on this device */
};

enum BackboneCudaCopyKind {
  BACKBONE_CUDA_HOST_TO_DEVICE = 0,
  BACKBONE_CUDA_DEVICE_TO_HOST = 1,
  BACKBONE_CUDA_DEVICE_TO_DEVICE = 2
};

/* Arguments of deform_conv2d: contiguous float32 arrays on device `device`, shapes as in
 * backbone/include/backbone/ops.h. mask and bias may be NULL. out is [n, out_channels, out_h, out_w]. */
typedef struct BackboneDeformConv2dArgs {
  int32_t device;
  const float* input;  /* [n, channels, height, width] */
  const float* offset; /* [n, 2 * deformable_groups * kernel_h * kernel_w, out_h, out_w] */
  const float* weight; /* [out_channels, channels / groups, kernel_h, kernel_w] */
  const float* mask;   /* [n, deformable_groups * kernel_h * kernel_w, out_h, out_w] or NULL */
  const float* bias;   /* [out_channels] or NULL */
  float* out;
  int64_t n, channels, height, width;
  int64_t out_channels, kernel_h, kernel_w, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups, deformable_groups;
} BackboneDeformConv2dArgs;

/* ---- the engine (engine=cuda) ------------------------------------------------------------------
 * libbackbone describes the network as a list of layers in execution order over numbered values
 * (activations). Value 0 is the network input; every layer writes one new value. Weights are host
 * float32 arrays, BN already folded into weight and bias; the module converts them to its layout and
 * precision and uploads them once in engine_create (the arrays may be freed afterwards). A ResNet
 * with detectron2's FPN on top is one such list: lateral and output convolutions as CONV (norms as
 * the ResNet's), the top-down sum as UPSAMPLE_ADD, LastLevelMaxPool as MAX_POOL 1/2/0, LastLevelP6P7
 * as CONV, RELU, CONV. */
enum BackboneCudaPrecision { BACKBONE_CUDA_FP32 = 0, BACKBONE_CUDA_FP16 = 1, BACKBONE_CUDA_BF16 = 2 };

enum BackboneCudaLayerKind {
  /* output = act(conv(input) + bias + residual): detectron2 Conv2d with its norm folded */
  BACKBONE_CUDA_LAYER_CONV = 0,
  /* deformable convolution (DeformConv / ModulatedDeformConv): `aux` is the value written by the
   * conv2_offset layer (channels [2*G*k*k offsets (dy, dx) per tap] then, modulated, [G*k*k mask
   * logits], sigmoid applied by the kernel), then bias, residual and activation as CONV */
  BACKBONE_CUDA_LAYER_DEFORM_CONV = 1,
  /* max_pool2d(kernel_size, stride, padding) (the stem's 3, 2, 1; LastLevelMaxPool's 1, 2, 0) */
  BACKBONE_CUDA_LAYER_MAX_POOL = 2,
  /* GroupNorm(num_groups, channels, eps) with weight/bias = gamma/beta, then residual and act */
  BACKBONE_CUDA_LAYER_GROUP_NORM = 3,
  /* detectron2's channel LayerNorm (over C per pixel, eps), gamma/beta, then residual and act */
  BACKBONE_CUDA_LAYER_LAYER_NORM = 4,
  /* adaptive_avg_pool2d(1) + flatten + linear: weight [classes, channels], bias [classes] */
  BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR = 5,
  /* FPN top-down step: output = (input + nearest_upsample_2x(aux)) * scale, where input is the
   * lateral convolution's output and aux the coarser level (exactly half its height and width);
   * scale 1 (fuse_type "sum") or 0.5 ("avg"). No residual, no activation. */
  BACKBONE_CUDA_LAYER_UPSAMPLE_ADD = 6,
  /* output = relu(input) into a new value (LastLevelP6P7: p7 = conv(relu(p6)), p6 kept) */
  BACKBONE_CUDA_LAYER_RELU = 7
};
#define BACKBONE_CUDA_LAYER_KIND_LAST BACKBONE_CUDA_LAYER_RELU

/* "CONV", "DEFORM_CONV", ... for messages on both sides of the interface. */
static inline const char* backbone_cuda_layer_kind_name(int32_t kind) {
  switch (kind) {
    case BACKBONE_CUDA_LAYER_CONV: return "CONV";
    case BACKBONE_CUDA_LAYER_DEFORM_CONV: return "DEFORM_CONV";
    case BACKBONE_CUDA_LAYER_MAX_POOL: return "MAX_POOL";
    case BACKBONE_CUDA_LAYER_GROUP_NORM: return "GROUP_NORM";
    case BACKBONE_CUDA_LAYER_LAYER_NORM: return "LAYER_NORM";
    case BACKBONE_CUDA_LAYER_AVGPOOL_LINEAR: return "AVGPOOL_LINEAR";
    case BACKBONE_CUDA_LAYER_UPSAMPLE_ADD: return "UPSAMPLE_ADD";
    case BACKBONE_CUDA_LAYER_RELU: return "RELU";
    default: return "unknown";
  }
}

typedef struct BackboneCudaLayer {
  int32_t kind;     /* BackboneCudaLayerKind */
  int32_t input;    /* value read */
  int32_t output;   /* value written (new) */
  int32_t residual; /* value added before the activation (same shape as output), or -1 */
  int32_t aux;      /* DEFORM_CONV: the offset value; UPSAMPLE_ADD: the coarser level; otherwise -1 */
  int32_t relu;     /* 1: ReLU last; 0: identity */
  int64_t in_channels, out_channels; /* norms: both = channels; AVGPOOL_LINEAR: channels, classes */
  int64_t kernel_size, stride, padding, dilation, groups; /* CONV, DEFORM_CONV, MAX_POOL */
  int64_t deformable_groups;         /* DEFORM_CONV */
  int32_t modulated;                 /* DEFORM_CONV: 1 for v2 (mask) */
  int64_t num_groups;                /* GROUP_NORM */
  double eps;                        /* GROUP_NORM, LAYER_NORM */
  const float* weight; /* CONV/DEFORM_CONV [out, in/groups, k, k]; norms gamma [C]; linear [classes, C] */
  const float* bias;   /* [out] / beta [C] / [classes], or NULL (zero) */
  double scale;        /* UPSAMPLE_ADD: the sum's factor (1 or 0.5); unused otherwise (since version 3) */
} BackboneCudaLayer;

typedef struct BackboneCudaNetDesc {
  int64_t in_channels;   /* of value 0 (3) */
  int32_t num_values;    /* values are 0 .. num_values - 1 */
  int32_t num_layers;
  const BackboneCudaLayer* layers;
  int32_t num_outputs;   /* the out_features, in order */
  const int32_t* outputs; /* value of each output */
} BackboneCudaNetDesc;

typedef struct BackboneCudaEngineOptions {
  int32_t device;        /* cuda:N */
  int32_t precision;     /* BackboneCudaPrecision */
  int32_t allow_tf32;    /* fp32 convolutions may use TF32 tensor cores */
  int32_t use_graphs;    /* capture each input shape's forward as a CUDA graph */
  int32_t max_plans;     /* input shapes kept (plans, graphs, activations); least recently used dropped */
} BackboneCudaEngineOptions;

/* One output of a forward: float32 NCHW contiguous on the engine's device. The storage belongs to
 * the engine's output pool and is handed out until engine_release_output(token); it is never
 * written while handed out. */
typedef struct BackboneCudaOutput {
  void* data;
  int64_t dims[4];       /* N, C, H, W; AVGPOOL_LINEAR: N, classes, 1, 1 */
  void* ready_event;     /* cudaEvent_t recorded on the engine's stream after data was written */
  uint64_t token;
} BackboneCudaOutput;

typedef struct BackboneCudaDeviceProperties {
  char name[256];
  int32_t major, minor;  /* compute capability */
  int32_t sm_count;
  int32_t clock_khz;        /* peak SM clock (cudaDevAttrClockRate) */
  int32_t memory_clock_khz; /* cudaDevAttrMemoryClockRate */
  int32_t memory_bus_width; /* bits */
  int64_t total_memory;     /* bytes */
  int32_t cudnn_version;    /* cudnnGetVersion() */
  int32_t driver_version;   /* cudaDriverGetVersion() */
} BackboneCudaDeviceProperties;

typedef struct BackboneCudaEngine BackboneCudaEngine; /* opaque */
/* A frame to preprocess on the device: defined in cuda/frame_api.h. */
typedef struct BackboneCudaFrameArgs BackboneCudaFrameArgs;

typedef struct BackboneCudaApi {
  uint32_t version;     /* BACKBONE_CUDA_API_VERSION */
  uint32_t struct_size; /* sizeof(BackboneCudaApi) in the module */
  /* "libbackbone-cuda <project version>, CUDA runtime <x.y>, SMs <list>" */
  const char* (*build_info)(void);
  int (*device_count)(int* count, char* msg, size_t msg_size);
  int (*malloc)(int device, size_t bytes, void** ptr, char* msg, size_t msg_size);
  int (*free)(int device, void* ptr, char* msg, size_t msg_size);
  /* Synchronous copy; `kind` is a BackboneCudaCopyKind; `device` is the device to make current. */
  int (*memcpy)(void* dst, const void* src, size_t bytes, int kind, int device, char* msg, size_t msg_size);
  /* Returns when `out` is written (the module synchronises its stream). */
  int (*deform_conv2d)(const BackboneDeformConv2dArgs* args, char* msg, size_t msg_size);
  int (*device_properties)(int device, BackboneCudaDeviceProperties* out, char* msg, size_t msg_size);
  /* Blocks until `event` (a cudaEvent_t) has completed. */
  int (*event_synchronize)(int device, void* event, char* msg, size_t msg_size);

  /* The engine. Creates its stream, cuDNN handle and weights on options->device, in the CUDA
   * context current on the calling thread when it belongs to that device (GStreamer's shared
   * context), else in the device's primary context. Every later call for the engine must run with
   * the same context current (or none, for the primary context). */
  int (*engine_create)(const BackboneCudaNetDesc* net, const BackboneCudaEngineOptions* options,
                       BackboneCudaEngine** engine, char* msg, size_t msg_size);
  void (*engine_destroy)(BackboneCudaEngine* engine); /* waits for its stream; frees everything */
  /* "cuda fp16, NVIDIA H100 80GB HBM3 (sm_90), cuDNN 9.19.0, CUDA graphs: ..." (after the first forward,
   * also the cuDNN engines chosen). Valid until the next call on the engine. */
  const char* (*engine_describe)(BackboneCudaEngine* engine);
  /* images: float32 NCHW [n, in_channels, h, w], contiguous, on the engine's device
   * (on_device = 1) or in host memory (0). Writes num_outputs outputs. Returns without waiting
   * for the GPU. */
  int (*engine_forward)(BackboneCudaEngine* engine, const float* images, int32_t on_device, int64_t n, int64_t h,
                        int64_t w, BackboneCudaOutput* outputs, int32_t num_outputs, char* msg, size_t msg_size);
  /* One frame (host or device memory) converted, resized, normalised and padded by one kernel
   * straight into the engine's input, then forward as engine_forward (n = 1). */
  int (*engine_forward_frame)(BackboneCudaEngine* engine, const BackboneCudaFrameArgs* frame,
                              BackboneCudaOutput* outputs, int32_t num_outputs, char* msg, size_t msg_size);
  /* Gives an output's storage back to the pool (thread-safe; any thread). */
  void (*engine_release_output)(BackboneCudaEngine* engine, uint64_t token);
} BackboneCudaApi;

typedef const BackboneCudaApi* (*BackboneCudaEntryPoint)(void);

#ifdef __cplusplus
}
#endif

#endif /* BACKBONE_SRC_CUDA_MODULE_API_H_ */
