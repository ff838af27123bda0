/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone: detectron2's ResNet backbone as an in-place GstBaseTransform. The video passes
 * through unchanged; each processed frame gets a GstFeatureMeta with the multi-level feature maps.
 */

/**
 * SECTION:element-resnetbackbone
 * @title: resnetbackbone
 *
 * Runs detectron2's ResNet backbone (build_resnet_backbone) on every video frame (or every Nth,
 * see #GstResnetBackbone:inference-interval) and attaches the feature maps it computes (stem,
 * res2 .. res5) to the buffer as a #GstFeatureMeta. The video itself is never modified: pixels,
 * timestamps, flags and every other meta pass through untouched.
 *
 * Each level's data is the backbone's own output storage wrapped in a read-only GstBuffer, without
 * a copy. That storage comes from a bounded pool (#GstResnetBackbone:pool-size): storage still
 * referenced downstream is never reused, and when all of it is in use the element waits.
 *
 * The model is loaded in the READY to PAUSED transition: a missing or bad config or weights file,
 * an unknown out feature, an unknown engine, a precision the engine does not run or an unavailable
 * device fails the state change with an error message naming the cause. Properties changed later
 * take effect at the next READY to PAUSED transition.
 *
 * The engine (#GstResnetBackbone:engine, "auto" by default) and the arithmetic
 * (#GstResnetBackbone:precision) are chosen by property. Once the model is loaded, the element
 * says which engine runs, with its kernels, precision and thread count: in the debug log
 * (GST_DEBUG=resnetbackbone:4), in an INFO message on the bus (gst-launch-1.0 prints it unless
 * -q), and in the read-only #GstResnetBackbone:engine-description property. Engines that choose
 * their kernels per input shape (oneDNN) name them after the first frame of each caps: the
 * property is then updated (before that frame leaves the element) and the new line logged. E.g.
 * "libtorch fp32 on cpu, 2 threads (LibTorch 1.13.0: ATen conv2d, oneDNN on the CPU; ...)".
 *
 * With a live source and a sink that sends QoS events, frames that are already late skip
 * inference (they still flow, without new features); the element adds its measured inference
 * time (the largest of the last 16) to the latency it reports, and posts a LATENCY message when
 * that grows. Leave the base class's #GstBaseTransform:qos property at its default (FALSE): set
 * to TRUE, GstBaseTransform itself drops late frames instead of letting them flow. GAP buffers
 * flow without inference.
 *
 * ## Example launch lines
 * |[
 * gst-launch-1.0 videotestsrc num-buffers=10 ! video/x-raw,width=320,height=240 ! resnetbackbone ! fakesink
 * ]| The built-in R-50 (detectron2's defaults), seeded weights, features res2 .. res5.
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! resnetbackbone config-file=configs/R-50.yaml weights=R-50.pkl \
 *     resize=shortest-edge min-size=480 inference-interval=2 ! queue ! featureoverlay ! autovideosink
 * ]| A camera with MSRA's ImageNet R-50, resized as detectron2 does at test time.
 */

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "resnetbackbone.h"

#include <gst/featuremeta/featuredevicememory.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/video/video.h>

#if BACKBONE_HAVE_GST_CUDA
#include <gst/cuda/gstcudacontext.h>
#include <gst/cuda/gstcudaloader.h>
#include <gst/cuda/gstcudamemory.h>
#include <gst/cuda/gstcudautils.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "backbone/checkpoint.h"
#include "backbone/config.h"
#include "backbone/engine.h"
#include "backbone/error.h"
#include "backbone/frame.h"
#include "backbone/preprocess.h"
#include "backbone/resnet.h"
#include "featurepool.h"
#include "videoframe.h"

GST_DEBUG_CATEGORY_STATIC (gst_resnet_backbone_debug);
#define GST_CAT_DEFAULT gst_resnet_backbone_debug

/* Enum types of the properties. */

typedef enum
{
  GST_RESNET_BACKBONE_PRECISION_FP32,
  GST_RESNET_BACKBONE_PRECISION_FP16,
  GST_RESNET_BACKBONE_PRECISION_BF16,
} GstResnetBackbonePrecision;

typedef enum
{
  GST_RESNET_BACKBONE_INPUT_FORMAT_CONFIG,
  GST_RESNET_BACKBONE_INPUT_FORMAT_BGR,
  GST_RESNET_BACKBONE_INPUT_FORMAT_RGB,
} GstResnetBackboneInputFormat;

typedef enum
{
  GST_RESNET_BACKBONE_RESIZE_NONE,
  GST_RESNET_BACKBONE_RESIZE_SHORTEST_EDGE,
  GST_RESNET_BACKBONE_RESIZE_FIXED,
} GstResnetBackboneResize;

#define GST_TYPE_RESNET_BACKBONE_PRECISION (gst_resnet_backbone_precision_get_type ())
static GType
gst_resnet_backbone_precision_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_RESNET_BACKBONE_PRECISION_FP32, "32-bit float", "fp32"},
    {GST_RESNET_BACKBONE_PRECISION_FP16, "16-bit float (engines that support it)", "fp16"},
    {GST_RESNET_BACKBONE_PRECISION_BF16, "bfloat16 (engines that support it)", "bf16"},
    {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstResnetBackbonePrecision", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_RESNET_BACKBONE_INPUT_FORMAT (gst_resnet_backbone_input_format_get_type ())
static GType
gst_resnet_backbone_input_format_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_RESNET_BACKBONE_INPUT_FORMAT_CONFIG, "The config's INPUT.FORMAT", "config"},
    {GST_RESNET_BACKBONE_INPUT_FORMAT_BGR, "Blue, green, red (MSRA/Caffe2 models)", "BGR"},
    {GST_RESNET_BACKBONE_INPUT_FORMAT_RGB, "Red, green, blue (torchvision models)", "RGB"},
    {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstResnetBackboneInputFormat", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_RESNET_BACKBONE_RESIZE (gst_resnet_backbone_resize_get_type ())
static GType
gst_resnet_backbone_resize_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_RESNET_BACKBONE_RESIZE_NONE, "Keep the frame size", "none"},
    {GST_RESNET_BACKBONE_RESIZE_SHORTEST_EDGE,
        "detectron2's test-time ResizeShortestEdge (min-size, max-size)", "shortest-edge"},
    {GST_RESNET_BACKBONE_RESIZE_FIXED, "Exactly width x height", "fixed"},
    {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstResnetBackboneResize", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

enum
{
  PROP_0,
  PROP_CONFIG_FILE,
  PROP_WEIGHTS,
  PROP_OUT_FEATURES,
  PROP_ENGINE,
  PROP_DEVICE,
  PROP_PRECISION,
  PROP_NUM_THREADS,
  PROP_WINOGRAD,
  PROP_ALLOW_TF32,
  PROP_INPUT_FORMAT,
  PROP_PIXEL_MEAN,
  PROP_PIXEL_STD,
  PROP_RESIZE,
  PROP_MIN_SIZE,
  PROP_MAX_SIZE,
  PROP_WIDTH,
  PROP_HEIGHT,
  PROP_SIZE_DIVISIBILITY,
  PROP_INFERENCE_INTERVAL,
  PROP_POOL_SIZE,
  PROP_UNIQUE_ID,
  PROP_MODEL_NAME,
  PROP_ENGINE_DESCRIPTION,
};

#define DEFAULT_CONFIG_FILE nullptr
#define DEFAULT_WEIGHTS nullptr
#define DEFAULT_OUT_FEATURES ""
#define DEFAULT_ENGINE "auto"
#define DEFAULT_DEVICE "auto"
#define DEFAULT_PRECISION GST_RESNET_BACKBONE_PRECISION_FP32
#define DEFAULT_NUM_THREADS 0
#define DEFAULT_WINOGRAD FALSE
#define DEFAULT_ALLOW_TF32 FALSE
#define DEFAULT_INPUT_FORMAT GST_RESNET_BACKBONE_INPUT_FORMAT_CONFIG
#define DEFAULT_RESIZE GST_RESNET_BACKBONE_RESIZE_NONE
#define DEFAULT_MIN_SIZE 0
#define DEFAULT_MAX_SIZE 0
#define DEFAULT_WIDTH 0
#define DEFAULT_HEIGHT 0
#define DEFAULT_SIZE_DIVISIBILITY 0
#define DEFAULT_INFERENCE_INTERVAL 1
#define DEFAULT_POOL_SIZE 4
#define DEFAULT_UNIQUE_ID 0

#define MAX_IMAGE_SIZE 16384
/* Caps feature of frames in CUDA memory (GST_CAPS_FEATURE_MEMORY_CUDA_MEMORY of GStreamer's CUDA
 * library), spelt out so that builds without that library filter it too. */
#define CUDA_MEMORY_FEATURE "memory:CUDAMemory"
/* The formats the cuda engine takes in CUDA memory. */
#define BACKBONE_CUDA_VIDEO_FORMATS "{ NV12, I420, RGBA, BGRA, RGBx, BGRx }"
/* Inference times kept for the LATENCY query (the largest of them is reported). */
#define LATENCY_WINDOW 16

/* The out features of the built-in model (no config-file). */
static const char *const kDefaultOutFeatures = "['res2', 'res3', 'res4', 'res5']";

/* *INDENT-OFF* */
/* What the properties say; read under the object lock, applied at start(). */
struct Settings {
  std::string config_file;
  std::string weights;
  std::string out_features;
  std::string engine = DEFAULT_ENGINE;
  std::string device = DEFAULT_DEVICE;
  GstResnetBackbonePrecision precision = DEFAULT_PRECISION;
  guint num_threads = DEFAULT_NUM_THREADS;
  gboolean winograd = DEFAULT_WINOGRAD;
  gboolean allow_tf32 = DEFAULT_ALLOW_TF32;
  GstResnetBackboneInputFormat input_format = DEFAULT_INPUT_FORMAT;
  std::vector<double> pixel_mean, pixel_std;
  GstResnetBackboneResize resize = DEFAULT_RESIZE;
  guint min_size = DEFAULT_MIN_SIZE, max_size = DEFAULT_MAX_SIZE;
  guint width = DEFAULT_WIDTH, height = DEFAULT_HEIGHT;
  guint size_divisibility = DEFAULT_SIZE_DIVISIBILITY;
  guint inference_interval = DEFAULT_INFERENCE_INTERVAL;
  guint pool_size = DEFAULT_POOL_SIZE;
  guint unique_id = DEFAULT_UNIQUE_ID;
};

/* The CUDA context every CUDA call of the element runs in: GStreamer's GstCudaContext (shared with
 * upstream CUDA elements, so that their frames' device pointers are valid in it) when the plugin
 * is built with GStreamer's CUDA library and the engine is "cuda". Without one (a build without
 * that library) the CUDA module uses the device's primary context. Held by the model and by every
 * level left on the GPU (its download and its release run in the context). */
struct CudaContextHolder {
#if BACKBONE_HAVE_GST_CUDA
  GstCudaContext *context;

  explicit CudaContextHolder (GstCudaContext * c) : context ((GstCudaContext *) gst_object_ref (c)) {}
  ~CudaContextHolder () { gst_object_unref (context); }
  CudaContextHolder (const CudaContextHolder &) = delete;
  CudaContextHolder & operator= (const CudaContextHolder &) = delete;
#endif
};
using CudaContextPtr = std::shared_ptr<CudaContextHolder>;

/* Makes the context current on the calling thread for the scope (gst_cuda_context_push / pop);
 * nothing without one. Throws backbone::DeviceError when the push fails. */
class CudaContextScope {
 public:
  explicit CudaContextScope (const CudaContextPtr & holder) {
#if BACKBONE_HAVE_GST_CUDA
    if (holder) {
      if (!gst_cuda_context_push (holder->context))
        throw backbone::DeviceError ("gst_cuda_context_push failed: cannot make GStreamer's CUDA "
            "context current on this thread");
      pushed_ = true;
    }
#endif
  }
  ~CudaContextScope () {
#if BACKBONE_HAVE_GST_CUDA
    if (pushed_)
      gst_cuda_context_pop (nullptr);
#endif
  }
  CudaContextScope (const CudaContextScope &) = delete;
  CudaContextScope & operator= (const CudaContextScope &) = delete;

 private:
  bool pushed_ = false;
};

/* A loaded model, built in start() and freed in stop(). */
struct Model {
  std::unique_ptr<backbone::Engine> engine;
  bool cuda_engine = false;      /* engine "cuda": frames go through forward_frame */
  int cuda_device = 0;           /* its N of cuda:N */
  CudaContextPtr cuda;           /* the context it runs in (GstCudaContext), or none */
  bool cuda_frames = false;      /* takes frames in CUDA memory (cuda engine with a GstCudaContext) */
  std::string engine_description;  /* engine->describe () */
  backbone::FramePreprocessOptions preprocess;
  std::map<std::string, int> strides;  /* out feature -> stride in input pixels */
  std::string name;
  guint inference_interval = 1;
  guint unique_id = 0;
};

struct GstResnetBackbonePrivate {
  Settings settings;          /* under the object lock */
  std::string model_name;     /* under the object lock */
  std::string engine_description;  /* under the object lock */

  std::unique_ptr<Model> model;  /* streaming thread, between start() and stop() */
  GstVideoInfo info;
  gboolean have_info = FALSE;
  gboolean describe_pending = FALSE;  /* describe the engine again after the next inference */
  guint64 frames = 0;            /* frames seen since start() */
  guint64 inferences = 0;
  guint64 qos_skipped = 0;

  gboolean cuda_input = FALSE;   /* the negotiated caps are memory:CUDAMemory */
  gboolean warned_foreign_cuda = FALSE;
  /* Whether the pads offer memory:CUDAMemory: -1 before start() (from the properties), else
   * whether the loaded model takes CUDA frames. */
  std::atomic<int> cuda_caps {-1};
#if BACKBONE_HAVE_GST_CUDA
  /* Guards cuda_context. Recursive: gst_cuda_ensure_element_context (called with it held) calls
   * gst_element_set_context on this element itself with the context it found by query or created,
   * and its NEED_CONTEXT message is answered the same way (by a bin holding a CUDA context or an
   * application's sync handler) on the posting thread: each re-enters set_context. */
  std::recursive_mutex cuda_lock;
  GstCudaContext *cuda_context = nullptr;  /* shared with upstream/downstream CUDA elements */
#endif

  std::mutex lock;               /* guards pool, earliest_time, latencies */
  std::shared_ptr<gstbackbone::FeaturePool> pool;
  GstClockTime earliest_time = GST_CLOCK_TIME_NONE;
  std::deque<GstClockTime> latencies;
  GstClockTime posted_latency = 0;
};
/* *INDENT-ON* */

struct _GstResnetBackbone
{
  GstBaseTransform parent;
  GstResnetBackbonePrivate *priv;
};

/* Frames in CUDA memory first (preferred where the engine is "cuda"; removed from every caps
 * answer otherwise), then system memory. */
#if BACKBONE_HAVE_GST_CUDA
#define BACKBONE_CAPS \
  GST_VIDEO_CAPS_MAKE_WITH_FEATURES (CUDA_MEMORY_FEATURE, BACKBONE_CUDA_VIDEO_FORMATS) "; " \
  GST_VIDEO_CAPS_MAKE (BACKBONE_VIDEO_FORMATS)
#else
#define BACKBONE_CAPS GST_VIDEO_CAPS_MAKE (BACKBONE_VIDEO_FORMATS)
#endif

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (BACKBONE_CAPS));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (BACKBONE_CAPS));

#define gst_resnet_backbone_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstResnetBackbone, gst_resnet_backbone, GST_TYPE_BASE_TRANSFORM,
    GST_DEBUG_CATEGORY_INIT (gst_resnet_backbone_debug, "resnetbackbone", 0,
        "detectron2 ResNet backbone features"));

GST_ELEMENT_REGISTER_DEFINE (resnetbackbone, "resnetbackbone", GST_RANK_NONE,
    GST_TYPE_RESNET_BACKBONE);

static void gst_resnet_backbone_finalize (GObject * object);
static void gst_resnet_backbone_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_resnet_backbone_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static GstStateChangeReturn gst_resnet_backbone_change_state (GstElement * element,
    GstStateChange transition);
static gboolean gst_resnet_backbone_start (GstBaseTransform * trans);
static gboolean gst_resnet_backbone_stop (GstBaseTransform * trans);
static gboolean gst_resnet_backbone_set_caps (GstBaseTransform * trans, GstCaps * incaps,
    GstCaps * outcaps);
static gboolean gst_resnet_backbone_sink_event (GstBaseTransform * trans, GstEvent * event);
static gboolean gst_resnet_backbone_src_event (GstBaseTransform * trans, GstEvent * event);
static gboolean gst_resnet_backbone_query (GstBaseTransform * trans, GstPadDirection direction,
    GstQuery * query);
static GstFlowReturn gst_resnet_backbone_transform_ip (GstBaseTransform * trans, GstBuffer * buf);
static GstCaps *gst_resnet_backbone_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter);
static gboolean gst_resnet_backbone_accept_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps);
static void gst_resnet_backbone_set_context (GstElement * element, GstContext * context);

static void
gst_resnet_backbone_class_init (GstResnetBackboneClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  const GParamFlags flags = (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY);

  gobject_class->finalize = gst_resnet_backbone_finalize;
  gobject_class->set_property = gst_resnet_backbone_set_property;
  gobject_class->get_property = gst_resnet_backbone_get_property;

  /**
   * GstResnetBackbone:config-file:
   *
   * A detectron2 YAML config (with _BASE_ chains), e.g. configs/R-50.yaml. Without one the
   * element builds detectron2's defaults (an R-50 with FrozenBN) with out features res2 .. res5.
   */
  g_object_class_install_property (gobject_class, PROP_CONFIG_FILE,
      g_param_spec_string ("config-file", "Config file",
          "detectron2 YAML config of the backbone (empty: detectron2's defaults, an R-50 with "
          "out features res2..res5)", DEFAULT_CONFIG_FILE, flags));

  /**
   * GstResnetBackbone:weights:
   *
   * A checkpoint in any format of the backbone library: detectron2 model-zoo .pkl, PyTorch
   * .pth/.pt, .safetensors. Without one (and without MODEL.WEIGHTS in the config) the weights are
   * initialised from a fixed seed as detectron2 initialises them, and a warning says that the
   * features are not those of a trained model.
   */
  g_object_class_install_property (gobject_class, PROP_WEIGHTS,
      g_param_spec_string ("weights", "Weights",
          "Checkpoint file (.pkl, .pth, .pt, .safetensors; empty: the config's MODEL.WEIGHTS, or "
          "seeded initialisation with a warning)", DEFAULT_WEIGHTS, flags));

  /**
   * GstResnetBackbone:out-features:
   *
   * Comma-separated feature maps to output, from stem, res2, res3, res4, res5 (the config's
   * MODEL.RESNETS.OUT_FEATURES when empty). Stages after the last one requested are not built.
   */
  g_object_class_install_property (gobject_class, PROP_OUT_FEATURES,
      g_param_spec_string ("out-features", "Out features",
          "Comma-separated outputs among stem,res2,res3,res4,res5 (empty: the config's "
          "MODEL.RESNETS.OUT_FEATURES)", DEFAULT_OUT_FEATURES, flags));

  /**
   * GstResnetBackbone:engine:
   *
   * The inference engine: "auto" (the default) takes the first engine of this build that runs on
   * the device at the precision, in the order "onednn" (this project's oneDNN route: fp32 and
   * bf16), "libtorch" (LibTorch's ATen operators, fp32), "opencv" (OpenCV's dnn module, fp32).
   * Which of them a build has is the backbone library's backbone::available_engines(); an engine
   * this build lacks fails the start with an error that lists the ones it has. The one "auto"
   * picked is in #GstResnetBackbone:engine-description.
   *
   * "cuda" (the project's CUDA/cuDNN engine, device cuda:N; also what "auto" picks for a CUDA
   * device) takes frames in system memory or, with GStreamer's CUDA library, in CUDA memory
   * (video/x-raw(memory:CUDAMemory) in NV12, I420, RGBA, BGRA, RGBx, BGRx from nvh264dec,
   * cudaupload, ...) without a copy through the host, sharing the CUDA context with the upstream
   * CUDA elements. The pads offer CUDA memory only with engine=cuda, or engine=auto with
   * device=cuda:N. Its levels stay in GPU memory: each level's data is one feature device memory
   * (<gst/featuremeta/featuredevicememory.h>) with the event that marks it ready; mapping a level
   * on the host downloads it once.
   */
  g_object_class_install_property (gobject_class, PROP_ENGINE,
      g_param_spec_string ("engine", "Engine",
          "Inference engine: auto (the first of this build's engines that runs the device and "
          "precision), cuda (device cuda:N; also takes frames in CUDA memory), onednn, libtorch or "
          "opencv; an engine this build lacks fails the start with the list of those it has",
          DEFAULT_ENGINE, flags));

  /**
   * GstResnetBackbone:device:
   *
   * "cpu", "cuda:N" or "auto": cuda:0 when a CUDA device is available and the engine runs on it,
   * the CPU otherwise.
   */
  g_object_class_install_property (gobject_class, PROP_DEVICE,
      g_param_spec_string ("device", "Device",
          "Device to run on: cpu, cuda:N, or auto (cuda:0 when available to the engine, else cpu)",
          DEFAULT_DEVICE, flags));

  /**
   * GstResnetBackbone:precision:
   *
   * Arithmetic of the engine. The features in the meta are float32 whatever the precision.
   * fp32 runs on every engine, bf16 on "onednn", fp16 on none of the CPU engines. With
   * engine=auto the first engine that runs the precision is taken; a named engine that does not
   * run it fails the start with an error naming the engine and the precision.
   */
  g_object_class_install_property (gobject_class, PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "Arithmetic precision of the engine (fp32: every engine; bf16: onednn; an engine that "
          "does not run it fails the start)",
          GST_TYPE_RESNET_BACKBONE_PRECISION, DEFAULT_PRECISION, flags));

  /**
   * GstResnetBackbone:num-threads:
   *
   * CPU threads of the engine; 0 uses every core.
   */
  g_object_class_install_property (gobject_class, PROP_NUM_THREADS,
      g_param_spec_uint ("num-threads", "Number of threads",
          "CPU threads of the engine (0 = every core)", 0, 1024, DEFAULT_NUM_THREADS, flags));

  /**
   * GstResnetBackbone:winograd:
   *
   * Run float32 3x3 stride-1 convolutions with Winograd's algorithm where the engine has it (the
   * onednn engine on AVX-512 CPUs): about 1.2x faster on R-50, features about 1e-6 (relative)
   * off the direct convolution. Other engines ignore it.
   */
  g_object_class_install_property (gobject_class, PROP_WINOGRAD,
      g_param_spec_boolean ("winograd", "Winograd",
          "Float32 3x3 convolutions by Winograd's algorithm where the engine has it (onednn): "
          "faster, about 1e-6 off the direct convolution", DEFAULT_WINOGRAD, flags));

  /**
   * GstResnetBackbone:allow-tf32:
   *
   * Let the cuda engine run float32 convolutions on TF32 tensor cores (PyTorch's default for
   * cuDNN): faster, with inputs rounded to 10 mantissa bits (features about 1e-3 off detectron2).
   * Off by default. Other engines ignore it.
   */
  g_object_class_install_property (gobject_class, PROP_ALLOW_TF32,
      g_param_spec_boolean ("allow-tf32", "Allow TF32",
          "Float32 convolutions of the cuda engine on TF32 tensor cores (faster, about 1e-3 off)",
          DEFAULT_ALLOW_TF32, flags));

  /**
   * GstResnetBackbone:input-format:
   *
   * Channel order the model expects (detectron2's INPUT.FORMAT); "config" takes the config's.
   */
  g_object_class_install_property (gobject_class, PROP_INPUT_FORMAT,
      g_param_spec_enum ("input-format", "Input format",
          "Channel order the model expects (config: the config's INPUT.FORMAT)",
          GST_TYPE_RESNET_BACKBONE_INPUT_FORMAT, DEFAULT_INPUT_FORMAT, flags));

  /**
   * GstResnetBackbone:pixel-mean:
   *
   * Three values subtracted from the channels, in input-format order (detectron2's
   * MODEL.PIXEL_MEAN); empty takes the config's. E.g. pixel-mean="<103.53, 116.28, 123.675>".
   */
  g_object_class_install_property (gobject_class, PROP_PIXEL_MEAN,
      gst_param_spec_array ("pixel-mean", "Pixel mean",
          "3 values subtracted per channel in input-format order (empty: the config's "
          "MODEL.PIXEL_MEAN), e.g. \"<103.53, 116.28, 123.675>\"",
          g_param_spec_double ("mean", "Mean", "Channel mean", -G_MAXDOUBLE, G_MAXDOUBLE, 0.0,
              (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS)), flags));

  /**
   * GstResnetBackbone:pixel-std:
   *
   * Three values the channels are divided by, in input-format order (detectron2's
   * MODEL.PIXEL_STD); empty takes the config's.
   */
  g_object_class_install_property (gobject_class, PROP_PIXEL_STD,
      gst_param_spec_array ("pixel-std", "Pixel std",
          "3 non-zero values the channels are divided by, in input-format order (empty: the "
          "config's MODEL.PIXEL_STD), e.g. \"<58.395, 57.12, 57.375>\"",
          g_param_spec_double ("std", "Std", "Channel standard deviation", -G_MAXDOUBLE,
              G_MAXDOUBLE, 1.0, (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS)),
          flags));

  /**
   * GstResnetBackbone:resize:
   *
   * How the frame is resized before the network: not at all (the features follow the frame size),
   * as detectron2's test-time ResizeShortestEdge (min-size, max-size), or to a fixed width x
   * height. Resizing is PIL's bilinear filter, as detectron2 does it.
   */
  g_object_class_install_property (gobject_class, PROP_RESIZE,
      g_param_spec_enum ("resize", "Resize", "Resizing of the frame before the network",
          GST_TYPE_RESNET_BACKBONE_RESIZE, DEFAULT_RESIZE, flags));

  /**
   * GstResnetBackbone:min-size:
   *
   * Shortest edge for resize=shortest-edge; 0 takes the config's INPUT.MIN_SIZE_TEST (800 in
   * detectron2's defaults).
   */
  g_object_class_install_property (gobject_class, PROP_MIN_SIZE,
      g_param_spec_uint ("min-size", "Min size",
          "Shortest edge for resize=shortest-edge (0 = the config's INPUT.MIN_SIZE_TEST)", 0,
          MAX_IMAGE_SIZE, DEFAULT_MIN_SIZE, flags));

  /**
   * GstResnetBackbone:max-size:
   *
   * Longest edge limit for resize=shortest-edge; 0 takes the config's INPUT.MAX_SIZE_TEST (1333
   * in detectron2's defaults).
   */
  g_object_class_install_property (gobject_class, PROP_MAX_SIZE,
      g_param_spec_uint ("max-size", "Max size",
          "Longest edge limit for resize=shortest-edge (0 = the config's INPUT.MAX_SIZE_TEST)", 0,
          MAX_IMAGE_SIZE, DEFAULT_MAX_SIZE, flags));

  /**
   * GstResnetBackbone:width:
   *
   * Network input width for resize=fixed (required there).
   */
  g_object_class_install_property (gobject_class, PROP_WIDTH,
      g_param_spec_uint ("width", "Width", "Network input width for resize=fixed", 0,
          MAX_IMAGE_SIZE, DEFAULT_WIDTH, flags));

  /**
   * GstResnetBackbone:height:
   *
   * Network input height for resize=fixed (required there).
   */
  g_object_class_install_property (gobject_class, PROP_HEIGHT,
      g_param_spec_uint ("height", "Height", "Network input height for resize=fixed", 0,
          MAX_IMAGE_SIZE, DEFAULT_HEIGHT, flags));

  /**
   * GstResnetBackbone:size-divisibility:
   *
   * Zero padding at the bottom and right up to a multiple of this (detectron2's ImageList); 0 or
   * 1 pads nothing. 32 suits an FPN on top.
   */
  g_object_class_install_property (gobject_class, PROP_SIZE_DIVISIBILITY,
      g_param_spec_uint ("size-divisibility", "Size divisibility",
          "Pad the network input at the bottom/right to a multiple of this (0 = no padding)", 0,
          1024, DEFAULT_SIZE_DIVISIBILITY, flags));

  /**
   * GstResnetBackbone:inference-interval:
   *
   * Run the backbone on every Nth frame (the first, then N later, ...). The other frames still
   * flow, without new features.
   */
  g_object_class_install_property (gobject_class, PROP_INFERENCE_INTERVAL,
      g_param_spec_uint ("inference-interval", "Inference interval",
          "Run on every Nth frame; the other frames pass without features", 1, G_MAXINT,
          DEFAULT_INFERENCE_INTERVAL, flags));

  /**
   * GstResnetBackbone:pool-size:
   *
   * Frames whose features may be referenced downstream at once. When all are held the element
   * waits until one is released (a flush or a state change to READY unblocks it).
   */
  g_object_class_install_property (gobject_class, PROP_POOL_SIZE,
      g_param_spec_uint ("pool-size", "Pool size",
          "Outputs that may be held downstream at once; the element waits when all are in use",
          1, 1024, DEFAULT_POOL_SIZE, flags));

  /**
   * GstResnetBackbone:unique-id:
   *
   * Written into each meta this element adds, so that several backbones in one pipeline never
   * overwrite each other (each adds its own meta; see gst_buffer_get_feature_meta_by_id()).
   */
  g_object_class_install_property (gobject_class, PROP_UNIQUE_ID,
      g_param_spec_uint ("unique-id", "Unique ID",
          "Producer id written into the meta (one meta per producer on a buffer)", 0, G_MAXUINT,
          DEFAULT_UNIQUE_ID, flags));

  /**
   * GstResnetBackbone:model-name:
   *
   * The loaded model's name as the meta carries it ("R-50", "X-101-32x8d"); empty before the
   * model is loaded.
   */
  g_object_class_install_property (gobject_class, PROP_MODEL_NAME,
      g_param_spec_string ("model-name", "Model name",
          "Name of the loaded model (e.g. R-50), written into the meta", "",
          (GParamFlags) (G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

  /**
   * GstResnetBackbone:engine-description:
   *
   * The engine the element runs, as the engine describes itself in one line: its name, the
   * kernels it runs, the precision, the device and the thread count, e.g. "libtorch fp32 on cpu,
   * 2 threads (LibTorch 1.13.0: ...)". Set when the model is loaded (READY to PAUSED), updated
   * after the first frame of new caps when the engine then names the kernels it chose, kept after
   * the element stops (it describes the last run), empty before the first load and after a load
   * that failed. With engine=auto this is where an application reads which engine was chosen.
   */
  g_object_class_install_property (gobject_class, PROP_ENGINE_DESCRIPTION,
      g_param_spec_string ("engine-description", "Engine description",
          "The running engine's kernels, precision, device and threads (set when the model "
          "loads; empty before)", "",
          (GParamFlags) (G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

  gst_element_class_set_static_metadata (element_class, "ResNet backbone",
      "Filter/Analyzer/Video",
      "Runs detectron2's ResNet backbone on each frame and attaches the multi-level feature maps "
      "as GstFeatureMeta; the video passes through unchanged",
      "gst-backbone developers <https://github.com/gst-backbone/gst-backbone>");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  element_class->change_state = GST_DEBUG_FUNCPTR (gst_resnet_backbone_change_state);
  element_class->set_context = GST_DEBUG_FUNCPTR (gst_resnet_backbone_set_context);

  trans_class->start = GST_DEBUG_FUNCPTR (gst_resnet_backbone_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_resnet_backbone_stop);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_resnet_backbone_set_caps);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_resnet_backbone_sink_event);
  trans_class->src_event = GST_DEBUG_FUNCPTR (gst_resnet_backbone_src_event);
  trans_class->query = GST_DEBUG_FUNCPTR (gst_resnet_backbone_query);
  trans_class->transform_ip = GST_DEBUG_FUNCPTR (gst_resnet_backbone_transform_ip);
  trans_class->transform_caps = GST_DEBUG_FUNCPTR (gst_resnet_backbone_transform_caps);
  trans_class->accept_caps = GST_DEBUG_FUNCPTR (gst_resnet_backbone_accept_caps);
  trans_class->passthrough_on_same_caps = FALSE;
  trans_class->transform_ip_on_passthrough = FALSE;

  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_PRECISION, (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_INPUT_FORMAT, (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_RESIZE, (GstPluginAPIFlags) 0);
}

static void
gst_resnet_backbone_init (GstResnetBackbone * self)
{
  self->priv = new GstResnetBackbonePrivate ();
  gst_video_info_init (&self->priv->info);
  /* In place, and never passthrough: the buffer must be writable to take the meta. */
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
  gst_base_transform_set_passthrough (GST_BASE_TRANSFORM (self), FALSE);
}

static void
gst_resnet_backbone_finalize (GObject * object)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (object);

#if BACKBONE_HAVE_GST_CUDA
  gst_clear_object (&self->priv->cuda_context);
#endif
  delete self->priv;
  self->priv = nullptr;

  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static std::vector<double>
doubles_from_array (const GValue * value)
{
  std::vector<double> out;
  const guint n = gst_value_array_get_size (value);
  for (guint i = 0; i < n; ++i) {
    const GValue *v = gst_value_array_get_value (value, i);
    GValue d = G_VALUE_INIT;
    g_value_init (&d, G_TYPE_DOUBLE);
    if (g_value_transform (v, &d))
      out.push_back (g_value_get_double (&d));
    else
      g_warning ("resnetbackbone: a value of type %s in a pixel-mean/pixel-std array is not a number",
          G_VALUE_TYPE_NAME (v));
    g_value_unset (&d);
  }
  return out;
}

static void
doubles_to_array (const std::vector<double> &values, GValue * value)
{
  for (double x : values) {
    GValue v = G_VALUE_INIT;
    g_value_init (&v, G_TYPE_DOUBLE);
    g_value_set_double (&v, x);
    gst_value_array_append_and_take_value (value, &v);
  }
}

static void
gst_resnet_backbone_set_property (GObject * object, guint prop_id, const GValue * value,
    GParamSpec * pspec)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (object);
  Settings & s = self->priv->settings;
  auto str = [value]() {
    const gchar *v = g_value_get_string (value);
    return std::string (v ? v : "");
  };

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_CONFIG_FILE:
      s.config_file = str ();
      break;
    case PROP_WEIGHTS:
      s.weights = str ();
      break;
    case PROP_OUT_FEATURES:
      s.out_features = str ();
      break;
    case PROP_ENGINE:
      s.engine = str ();
      break;
    case PROP_DEVICE:
      s.device = str ();
      break;
    case PROP_PRECISION:
      s.precision = (GstResnetBackbonePrecision) g_value_get_enum (value);
      break;
    case PROP_NUM_THREADS:
      s.num_threads = g_value_get_uint (value);
      break;
    case PROP_WINOGRAD:
      s.winograd = g_value_get_boolean (value);
      break;
    case PROP_ALLOW_TF32:
      s.allow_tf32 = g_value_get_boolean (value);
      break;
    case PROP_INPUT_FORMAT:
      s.input_format = (GstResnetBackboneInputFormat) g_value_get_enum (value);
      break;
    case PROP_PIXEL_MEAN:
      s.pixel_mean = doubles_from_array (value);
      break;
    case PROP_PIXEL_STD:
      s.pixel_std = doubles_from_array (value);
      break;
    case PROP_RESIZE:
      s.resize = (GstResnetBackboneResize) g_value_get_enum (value);
      break;
    case PROP_MIN_SIZE:
      s.min_size = g_value_get_uint (value);
      break;
    case PROP_MAX_SIZE:
      s.max_size = g_value_get_uint (value);
      break;
    case PROP_WIDTH:
      s.width = g_value_get_uint (value);
      break;
    case PROP_HEIGHT:
      s.height = g_value_get_uint (value);
      break;
    case PROP_SIZE_DIVISIBILITY:
      s.size_divisibility = g_value_get_uint (value);
      break;
    case PROP_INFERENCE_INTERVAL:
      s.inference_interval = g_value_get_uint (value);
      break;
    case PROP_POOL_SIZE:
      s.pool_size = g_value_get_uint (value);
      break;
    case PROP_UNIQUE_ID:
      s.unique_id = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_resnet_backbone_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (object);
  const Settings & s = self->priv->settings;
  auto set_str = [value](const std::string & v, bool null_when_empty) {
    g_value_set_string (value, (v.empty () && null_when_empty) ? nullptr : v.c_str ());
  };

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_CONFIG_FILE:
      set_str (s.config_file, true);
      break;
    case PROP_WEIGHTS:
      set_str (s.weights, true);
      break;
    case PROP_OUT_FEATURES:
      set_str (s.out_features, false);
      break;
    case PROP_ENGINE:
      set_str (s.engine, false);
      break;
    case PROP_DEVICE:
      set_str (s.device, false);
      break;
    case PROP_PRECISION:
      g_value_set_enum (value, s.precision);
      break;
    case PROP_NUM_THREADS:
      g_value_set_uint (value, s.num_threads);
      break;
    case PROP_WINOGRAD:
      g_value_set_boolean (value, s.winograd);
      break;
    case PROP_ALLOW_TF32:
      g_value_set_boolean (value, s.allow_tf32);
      break;
    case PROP_INPUT_FORMAT:
      g_value_set_enum (value, s.input_format);
      break;
    case PROP_PIXEL_MEAN:
      doubles_to_array (s.pixel_mean, value);
      break;
    case PROP_PIXEL_STD:
      doubles_to_array (s.pixel_std, value);
      break;
    case PROP_RESIZE:
      g_value_set_enum (value, s.resize);
      break;
    case PROP_MIN_SIZE:
      g_value_set_uint (value, s.min_size);
      break;
    case PROP_MAX_SIZE:
      g_value_set_uint (value, s.max_size);
      break;
    case PROP_WIDTH:
      g_value_set_uint (value, s.width);
      break;
    case PROP_HEIGHT:
      g_value_set_uint (value, s.height);
      break;
    case PROP_SIZE_DIVISIBILITY:
      g_value_set_uint (value, s.size_divisibility);
      break;
    case PROP_INFERENCE_INTERVAL:
      g_value_set_uint (value, s.inference_interval);
      break;
    case PROP_POOL_SIZE:
      g_value_set_uint (value, s.pool_size);
      break;
    case PROP_UNIQUE_ID:
      g_value_set_uint (value, s.unique_id);
      break;
    case PROP_MODEL_NAME:
      set_str (self->priv->model_name, false);
      break;
    case PROP_ENGINE_DESCRIPTION:
      set_str (self->priv->engine_description, false);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* "res2, res3" -> "['res2', 'res3']" for merge_from_list. */
static std::string
out_features_literal (const std::string & csv)
{
  std::string out = "[";
  std::stringstream in (csv);
  std::string item;
  bool first = true;
  while (std::getline (in, item, ',')) {
    const auto b = item.find_first_not_of (" \t");
    const auto e = item.find_last_not_of (" \t");
    if (b == std::string::npos)
      throw backbone::ConfigError ("out-features \"" + csv + "\" has an empty entry");
    item = item.substr (b, e - b + 1);
    if (item != "stem" && item != "res2" && item != "res3" && item != "res4" && item != "res5")
      throw backbone::ConfigError ("out-features \"" + csv + "\": unknown out feature \"" + item +
          "\" (expected stem, res2, res3, res4 or res5)");
    out += std::string (first ? "" : ", ") + "'" + item + "'";
    first = false;
  }
  return out + "]";
}

/* detectron2's naming of its ImageNet backbones: R-50, X-101-32x8d. */
static std::string
model_name_from_config (const backbone::Config & cfg)
{
  const int64_t depth = cfg.get_int ("MODEL.RESNETS.DEPTH");
  const int64_t groups = cfg.get_int ("MODEL.RESNETS.NUM_GROUPS");
  const int64_t width = cfg.get_int ("MODEL.RESNETS.WIDTH_PER_GROUP");
  std::string name = groups > 1 ? "X-" + std::to_string (depth) + "-" + std::to_string (groups) +
      "x" + std::to_string (width) + "d" : "R-" + std::to_string (depth);
  if (cfg.get_int ("MODEL.RESNETS.RES5_DILATION") == 2)
    name += "-DC5";
  return name;
}

/* The failure of one step of start(), with the GStreamer error it is posted as. */
struct StartError {
  GQuark domain;
  gint code;
  std::string message;
};

static std::unique_ptr<Model>
load_model (GstResnetBackbone * self, const Settings & s)
{
  auto fail = [](gint code, const std::string & message) {
    return StartError {GST_RESOURCE_ERROR, code, message};
  };
  auto model = std::make_unique<Model> ();

  /* The config, with out-features overriding it. */
  if (!s.config_file.empty () && !g_file_test (s.config_file.c_str (), G_FILE_TEST_IS_REGULAR))
    throw fail (GST_RESOURCE_ERROR_NOT_FOUND, "config-file \"" + s.config_file +
        "\" does not exist or is not a regular file");
  backbone::Config cfg;
  try {
    std::vector<std::string> overrides;
    if (!s.out_features.empty ())
      overrides = {"MODEL.RESNETS.OUT_FEATURES", out_features_literal (s.out_features)};
    else if (s.config_file.empty ())
      overrides = {"MODEL.RESNETS.OUT_FEATURES", kDefaultOutFeatures};
    cfg = backbone::load_config (s.config_file, overrides);
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_SETTINGS, std::string ("config-file \"") + s.config_file +
        "\": " + e.what ());
  }

  std::optional<backbone::ResNet> built;
  try {
    built.emplace (backbone::build_resnet_backbone (cfg));
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_SETTINGS, std::string ("cannot build the backbone: ") + e.what ());
  }
  backbone::ResNet &net = *built;
  for (const auto &[name, spec] : net.output_shape ()) {
    if (name == "linear")
      throw fail (GST_RESOURCE_ERROR_SETTINGS,
          "out feature \"linear\" is not a feature map: the meta holds N,C,H,W maps "
          "(stem, res2 .. res5)");
    model->strides[name] = spec.stride.value_or (0);
  }

  /* Weights: the property, else the config's MODEL.WEIGHTS, else seeded initialisation. */
  std::string weights = s.weights;
  if (weights.empty ())
    weights = cfg.get_string ("MODEL.WEIGHTS");
  if (!weights.empty ()) {
    if (!g_file_test (weights.c_str (), G_FILE_TEST_IS_REGULAR))
      throw fail (GST_RESOURCE_ERROR_NOT_FOUND, "weights \"" + weights +
          "\" does not exist or is not a regular file" +
          (s.weights.empty () ? " (from the config's MODEL.WEIGHTS)" : ""));
    try {
      backbone::LoadReport report = backbone::load_checkpoint (net, weights, true);
      GST_INFO_OBJECT (self, "%s", report.summary ().c_str ());
    } catch (const std::exception &e) {
      throw fail (GST_RESOURCE_ERROR_READ, std::string ("weights \"") + weights + "\": " + e.what ());
    }
  } else {
    net.init_weights (0);
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("No weights given: the backbone uses seeded initial weights, so its features are not "
            "those of a trained model"),
        ("set the weights property (or MODEL.WEIGHTS in the config) to a checkpoint"));
  }

  /* The engine: "auto" or one of this build's, at the precision of the property. */
  const std::vector<std::string> engines = backbone::available_engines ();
  std::string engine_list;
  for (const auto &e : engines)
    engine_list += (engine_list.empty ()? "" : ", ") + e;
  if (engine_list.empty ())
    engine_list = "none";
  if (s.engine == "cuda" && std::find (engines.begin (), engines.end (), s.engine) == engines.end ()) {
    /* Built in (its library side always is) but the CUDA module or a device is missing: say why. */
    std::string why = "the CUDA module sees no device";
    try {
      const backbone::Device d = s.device == "auto" || s.device.empty ()? backbone::Device::cuda (0) :
          backbone::Device::parse (s.device);
      backbone::cuda_device_info (d.is_cuda ()? d.index : 0);
    } catch (const std::exception &e) {
      why = e.what ();
    }
    throw fail (GST_RESOURCE_ERROR_NOT_FOUND, "engine \"cuda\" on " + (s.device.empty () ?
            std::string ("auto") : s.device) + " cannot run: " + why +
        " (the engines of this build that run here: " + engine_list + ")");
  }
  if (s.engine != "auto" && std::find (engines.begin (), engines.end (), s.engine) == engines.end ()) {
    const bool known = s.engine == "onednn" || s.engine == "libtorch" || s.engine == "opencv";
    throw fail (GST_RESOURCE_ERROR_SETTINGS, (known ? "engine \"" + s.engine +
            "\" is not built into this copy of the backbone library" : "unknown engine \"" +
            s.engine + "\"") + ": expected auto or one of this build's engines (" + engine_list + ")");
  }
  backbone::EngineOptions options;
  options.engine = s.engine;
  options.num_threads = static_cast<int> (s.num_threads);
  options.winograd = s.winograd;
  options.allow_tf32 = s.allow_tf32;
  switch (s.precision) {
    case GST_RESNET_BACKBONE_PRECISION_FP16:
      options.precision = backbone::Precision::Float16;
      break;
    case GST_RESNET_BACKBONE_PRECISION_BF16:
      options.precision = backbone::Precision::BFloat16;
      break;
    default:
      options.precision = backbone::Precision::Float32;
      break;
  }
  const bool auto_device = s.device == "auto" || s.device.empty ();
  if (auto_device) {
    options.device = backbone::cuda_is_available ()? backbone::Device::cuda (0) :
        backbone::Device::cpu ();
  } else {
    try {
      options.device = backbone::Device::parse (s.device);
    } catch (const std::exception &e) {
      throw fail (GST_RESOURCE_ERROR_SETTINGS, std::string ("device: ") + e.what ());
    }
  }
  /* "engine "libtorch", precision bf16, on cpu: " */
  auto what = [&s, &options]() {
    return std::string ("engine \"") + s.engine + "\", precision " +
        backbone::precision_name (options.precision) + ", on " + options.device.str () + ": ";
  };
  try {
    try {
      model->engine = backbone::create_engine (net, options);
    } catch (const backbone::Error &e) {
      /* device=auto: CUDA is there but no engine of this build runs on it; the CPU then. */
      if (!auto_device || options.device.is_cpu () ||
          dynamic_cast<const backbone::UnsupportedError *> (&e) != nullptr)
        throw;
      GST_INFO_OBJECT (self, "device auto: %s; using the CPU", e.what ());
      options.device = backbone::Device::cpu ();
      model->engine = backbone::create_engine (net, options);
    }
  } catch (const backbone::UnsupportedError &e) {
    throw fail (GST_RESOURCE_ERROR_SETTINGS, what () + e.what ());
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_FAILED, what () + e.what ());
  }
  try {
    model->engine_description = model->engine->describe ();
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_FAILED, what () + "describe(): " + e.what ());
  }

  /* Preprocessing: the config, then the properties. */
  try {
    const backbone::PreprocessOptions base = backbone::PreprocessOptions::from_config (cfg);
    backbone::FramePreprocessOptions &p = model->preprocess;
    p.input_format = base.input_format;
    p.pixel_mean = base.pixel_mean;
    p.pixel_std = base.pixel_std;
    p.min_size = base.min_size_test;
    p.max_size = base.max_size_test;
    if (s.input_format == GST_RESNET_BACKBONE_INPUT_FORMAT_BGR)
      p.input_format = "BGR";
    else if (s.input_format == GST_RESNET_BACKBONE_INPUT_FORMAT_RGB)
      p.input_format = "RGB";
    if (!s.pixel_mean.empty ())
      p.pixel_mean = s.pixel_mean;
    if (!s.pixel_std.empty ())
      p.pixel_std = s.pixel_std;
    if (p.pixel_mean.size () != 3 || p.pixel_std.size () != 3)
      throw backbone::ConfigError ("pixel-mean and pixel-std need 3 values each (one per channel), "
          "found " + std::to_string (p.pixel_mean.size ()) + " and " +
          std::to_string (p.pixel_std.size ()));
    for (double v : p.pixel_std)
      if (v == 0.0 || !std::isfinite (v))
        throw backbone::ConfigError ("pixel-std values must be non-zero and finite, found " +
            std::to_string (v));
    switch (s.resize) {
      case GST_RESNET_BACKBONE_RESIZE_SHORTEST_EDGE:
        p.resize = backbone::ResizeMode::ShortestEdge;
        if (s.min_size > 0)
          p.min_size = s.min_size;
        if (s.max_size > 0)
          p.max_size = s.max_size;
        if (p.min_size <= 0 || p.max_size <= 0)
          throw backbone::ConfigError ("resize=shortest-edge needs min-size and max-size > 0 "
              "(here or as INPUT.MIN_SIZE_TEST / INPUT.MAX_SIZE_TEST), found " +
              std::to_string (p.min_size) + " and " + std::to_string (p.max_size));
        break;
      case GST_RESNET_BACKBONE_RESIZE_FIXED:
        p.resize = backbone::ResizeMode::Fixed;
        if (s.width == 0 || s.height == 0)
          throw backbone::ConfigError ("resize=fixed needs width and height > 0, found " +
              std::to_string (s.width) + "x" + std::to_string (s.height));
        p.width = s.width;
        p.height = s.height;
        break;
      default:
        p.resize = backbone::ResizeMode::None;
        break;
    }
    p.size_divisibility = s.size_divisibility;
  } catch (const std::exception &e) {
    throw fail (GST_RESOURCE_ERROR_SETTINGS, e.what ());
  }

  model->name = model_name_from_config (cfg);
  model->inference_interval = MAX (s.inference_interval, 1u);
  model->unique_id = s.unique_id;
  GST_INFO_OBJECT (self, "engine (engine=%s precision=%s num-threads=%u): %s", s.engine.c_str (),
      backbone::precision_name (options.precision), s.num_threads,
      model->engine_description.c_str ());
  GST_INFO_OBJECT (self, "loaded %s on %s (engine %s), %zu out features, input %s, mean %g,%g,%g, "
      "std %g,%g,%g", model->name.c_str (), model->engine->device ().str ().c_str (),
      model->engine->name ().c_str (), model->strides.size (),
      model->preprocess.input_format.c_str (), model->preprocess.pixel_mean[0],
      model->preprocess.pixel_mean[1], model->preprocess.pixel_mean[2],
      model->preprocess.pixel_std[0], model->preprocess.pixel_std[1],
      model->preprocess.pixel_std[2]);
  return model;
}

/* Whether the properties ask for the cuda engine (engine=cuda, or engine=auto on a CUDA device),
 * and on which device. @explicit_request: the properties name CUDA (engine=cuda or device=cuda:N),
 * rather than device=auto finding a GPU. */
static bool
settings_want_cuda (const Settings & s, int *device, bool *explicit_request)
{
  const bool auto_device = s.device == "auto" || s.device.empty ();
  backbone::Device d = backbone::Device::cpu ();
  if (!auto_device) {
    try {
      d = backbone::Device::parse (s.device);
    } catch (const std::exception &) {
      return false;             /* load_model reports the bad device */
    }
  }
  *device = d.is_cuda ()? d.index : 0;
  *explicit_request = s.engine == "cuda" || d.is_cuda ();
  if (s.engine == "cuda")
    return auto_device || d.is_cuda ();
  if (s.engine == "auto")
    return d.is_cuda () || (auto_device && backbone::cuda_is_available ());
  return false;
}

/* Whether the pads offer memory:CUDAMemory now: what the loaded model takes, or before start()
 * what the properties ask for (engine=cuda, or engine=auto with device=cuda:N). */
static bool
gst_resnet_backbone_cuda_caps_allowed (GstResnetBackbone * self)
{
#if BACKBONE_HAVE_GST_CUDA
  const int state = self->priv->cuda_caps.load ();
  if (state >= 0)
    return state == 1;
  GST_OBJECT_LOCK (self);
  const std::string engine = self->priv->settings.engine;
  const std::string device = self->priv->settings.device;
  GST_OBJECT_UNLOCK (self);
  return engine == "cuda" || (engine == "auto" && device.rfind ("cuda", 0) == 0);
#else
  return false;
#endif
}

/* For the cuda engine: GStreamer's CUDA library loaded and a GstCudaContext of the device, shared
 * with the neighbours (gst_cuda_ensure_element_context), in @cuda. Leaves @cuda empty for other
 * engines and in builds without GStreamer's CUDA library. FALSE (with an error posted) when the
 * properties ask for CUDA and it cannot be had. */
static gboolean
gst_resnet_backbone_open_cuda_context (GstResnetBackbone * self, const Settings & s,
    CudaContextPtr * cuda)
{
  int device = 0;
  bool explicit_request = false;
  cuda->reset ();
  if (!settings_want_cuda (s, &device, &explicit_request))
    return TRUE;
#if BACKBONE_HAVE_GST_CUDA
  GstResnetBackbonePrivate *priv = self->priv;
  if (!gst_cuda_load_library ()) {
    if (!explicit_request) {
      GST_WARNING_OBJECT (self, "device=auto: GStreamer's CUDA library cannot load the CUDA driver "
          "(libcuda.so.1); no CUDA context shared with other elements");
      return TRUE;
    }
    GST_ELEMENT_ERROR (self, RESOURCE, FAILED,
        ("engine \"%s\" on cuda:%d needs the NVIDIA driver's CUDA library (libcuda.so.1), which "
            "GStreamer's CUDA library could not load: no usable NVIDIA driver or GPU on this "
            "machine", s.engine.c_str (), device),
        ("gst_cuda_load_library() failed (engine=%s device=%s)", s.engine.c_str (),
            s.device.c_str ()));
    return FALSE;
  }
  std::lock_guard<std::recursive_mutex> guard (priv->cuda_lock);
  if (priv->cuda_context) {
    /* A context set by a neighbour (set_context) for another device is not ours. */
    guint ctx_device = 0;
    g_object_get (priv->cuda_context, "cuda-device-id", &ctx_device, nullptr);
    if ((int) ctx_device != device) {
      GST_INFO_OBJECT (self, "dropping the CUDA context of device %u: the engine runs on cuda:%d",
          ctx_device, device);
      gst_clear_object (&priv->cuda_context);
    }
  }
  if (!gst_cuda_ensure_element_context (GST_ELEMENT (self), device, &priv->cuda_context)) {
    if (!explicit_request) {
      GST_WARNING_OBJECT (self, "device=auto: no CUDA context for cuda:%d", device);
      return TRUE;
    }
    GST_ELEMENT_ERROR (self, RESOURCE, FAILED,
        ("engine \"%s\" on cuda:%d: cannot create or share a CUDA context on that device",
            s.engine.c_str (), device),
        ("gst_cuda_ensure_element_context() failed for device %d", device));
    return FALSE;
  }
  *cuda = std::make_shared<CudaContextHolder> (priv->cuda_context);
  GST_INFO_OBJECT (self, "CUDA context %" GST_PTR_FORMAT " for cuda:%d", priv->cuda_context, device);
#else
  GST_DEBUG_OBJECT (self, "engine on cuda:%d: this build has no GStreamer CUDA library, so the "
      "engine takes frames in system memory only, in the CUDA module's own context", device);
#endif
  return TRUE;
}

static gboolean
gst_resnet_backbone_start (GstBaseTransform * trans)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);
  GstResnetBackbonePrivate *priv = self->priv;

  GST_OBJECT_LOCK (self);
  const Settings settings = priv->settings;
  priv->engine_description.clear ();
  GST_OBJECT_UNLOCK (self);

  /* The cuda engine runs in GStreamer's CUDA context (shared with the neighbours), taken here. */
  CudaContextPtr cuda;
  if (!gst_resnet_backbone_open_cuda_context (self, settings, &cuda))
    return FALSE;

  std::unique_ptr<Model> model;
  try {
    /* The whole load in the context: the engine uploads its weights there, and a model that fails
     * half-way is destroyed there. */
    CudaContextScope scope (cuda);
    model = load_model (self, settings);
  } catch (const StartError &e) {
    gst_element_message_full (GST_ELEMENT (self), GST_MESSAGE_ERROR, e.domain, e.code,
        g_strdup (e.message.c_str ()), g_strdup ("resnetbackbone could not load its model"),
        __FILE__, GST_FUNCTION, __LINE__);
    return FALSE;
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR (self, RESOURCE, FAILED, ("%s", e.what ()),
        ("resnetbackbone could not load its model"));
    return FALSE;
  } catch (...) {
    GST_ELEMENT_ERROR (self, RESOURCE, FAILED, ("unknown exception while loading the model"),
        ("resnetbackbone could not load its model"));
    return FALSE;
  }

  model->cuda_engine = model->engine->name () == "cuda" && model->engine->device ().is_cuda ();
  model->cuda_device = model->engine->device ().index;
  if (model->cuda_engine)
    model->cuda = cuda;
  model->cuda_frames = model->cuda_engine && model->cuda != nullptr;
#if BACKBONE_HAVE_GST_CUDA
  if (!model->cuda_engine && cuda) {
    /* device=auto: the context was taken for an engine that did not come to run on CUDA. */
    std::lock_guard<std::recursive_mutex> guard (priv->cuda_lock);
    gst_clear_object (&priv->cuda_context);
  }
#endif
  priv->cuda_caps = model->cuda_frames ? 1 : 0;
  GST_INFO_OBJECT (self, "engine %s on %s: %s", model->engine->name ().c_str (),
      model->engine->device ().str ().c_str (), model->cuda_frames ?
      "takes frames in CUDA memory (GStreamer's CUDA context) or system memory, levels stay on "
      "the GPU" : model->cuda_engine ? "takes frames in system memory, levels stay on the GPU" :
      "takes frames in system memory");

  GST_OBJECT_LOCK (self);
  priv->model_name = model->name;
  priv->engine_description = model->engine_description;
  GST_OBJECT_UNLOCK (self);
  g_object_notify (G_OBJECT (self), "engine-description");
  /* Once per start, on the bus: gst-launch-1.0 prints an INFO message's debug text. */
  GST_ELEMENT_INFO (self, RESOURCE, SETTINGS, ("%s", model->engine_description.c_str ()),
      ("%s runs on engine %s (engine=%s): %s", model->name.c_str (),
          model->engine->name ().c_str (), settings.engine.c_str (),
          model->engine_description.c_str ()));

  priv->have_info = FALSE;
  priv->describe_pending = TRUE;
  priv->frames = 0;
  priv->inferences = 0;
  priv->qos_skipped = 0;
  priv->warned_foreign_cuda = FALSE;
  {
    std::lock_guard<std::mutex> guard (priv->lock);
    priv->pool = std::make_shared<gstbackbone::FeaturePool> (MAX (settings.pool_size, 1u));
    priv->earliest_time = GST_CLOCK_TIME_NONE;
    priv->latencies.clear ();
    priv->posted_latency = 0;
  }
  priv->model = std::move (model);
  return TRUE;
}

static gboolean
gst_resnet_backbone_stop (GstBaseTransform * trans)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);
  GstResnetBackbonePrivate *priv = self->priv;

  GST_DEBUG_OBJECT (self, "stop: %" G_GUINT64_FORMAT " frames, %" G_GUINT64_FORMAT
      " inferences, %" G_GUINT64_FORMAT " skipped for QoS", priv->frames, priv->inferences,
      priv->qos_skipped);
  {
    std::lock_guard<std::mutex> guard (priv->lock);
    if (priv->pool)
      priv->pool->set_flushing (true);
    /* Buffers still held downstream keep their storage (and the pool's shared state) alive. */
    priv->pool.reset ();
  }
  if (priv->model) {
    /* The engine is destroyed in its CUDA context (levels still held downstream keep their part
     * of it, and the context, alive). */
    const CudaContextPtr cuda = priv->model->cuda;
    try {
      CudaContextScope scope (cuda);
      priv->model.reset ();
    } catch (const std::exception &e) {
      GST_WARNING_OBJECT (self, "%s; releasing the engine without it", e.what ());
      priv->model.reset ();
    }
  }
  priv->cuda_caps = -1;
  priv->cuda_input = FALSE;
#if BACKBONE_HAVE_GST_CUDA
  {
    std::lock_guard<std::recursive_mutex> guard (priv->cuda_lock);
    gst_clear_object (&priv->cuda_context);
  }
#endif
  priv->have_info = FALSE;
  return TRUE;
}

static void
gst_resnet_backbone_set_flushing (GstResnetBackbone * self, bool flushing)
{
  std::lock_guard<std::mutex> guard (self->priv->lock);
  if (self->priv->pool)
    self->priv->pool->set_flushing (flushing);
  if (!flushing)
    self->priv->earliest_time = GST_CLOCK_TIME_NONE;
}

static GstStateChangeReturn
gst_resnet_backbone_change_state (GstElement * element, GstStateChange transition)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (element);

  /* A streaming thread waiting for a free slot must wake before the pads deactivate (which
   * waits for the streaming thread): there is no unlock vfunc in GstBaseTransform. */
  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY)
    gst_resnet_backbone_set_flushing (self, true);

  return GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
}

static gboolean
gst_resnet_backbone_set_caps (GstBaseTransform * trans, GstCaps * incaps, GstCaps * outcaps)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);
  GstVideoInfo info;

  if (!gst_video_info_from_caps (&info, incaps)) {
    GST_ERROR_OBJECT (self, "caps %" GST_PTR_FORMAT " are not video caps", incaps);
    return FALSE;
  }
  if (!gstbackbone::pixel_format_from_video_format (GST_VIDEO_INFO_FORMAT (&info), nullptr)) {
    GST_ERROR_OBJECT (self, "format %s is not supported; supported: " BACKBONE_VIDEO_FORMATS,
        gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&info)));
    return FALSE;
  }
  const GstCapsFeatures *features = gst_caps_get_features (incaps, 0);
  const gboolean cuda_input = features != nullptr &&
      gst_caps_features_contains (features, CUDA_MEMORY_FEATURE);
  if (cuda_input && !(self->priv->model && self->priv->model->cuda_frames)) {
    GST_ERROR_OBJECT (self, "caps %" GST_PTR_FORMAT " are in CUDA memory, which only the cuda "
        "engine with GStreamer's CUDA library takes", incaps);
    return FALSE;
  }
  GST_DEBUG_OBJECT (self, "caps %" GST_PTR_FORMAT, incaps);
  self->priv->cuda_input = cuda_input;
  self->priv->info = info;
  self->priv->have_info = TRUE;
  /* Engines may choose their kernels per input shape, at the first frame of it. */
  self->priv->describe_pending = TRUE;
  return TRUE;
}

/* @caps without its structures in CUDA memory. (transfer full) */
static GstCaps *
caps_without_cuda_memory (GstCaps * caps)
{
  if (gst_caps_is_any (caps))
    return gst_caps_ref (caps);
  GstCaps *out = gst_caps_new_empty ();
  const guint n = gst_caps_get_size (caps);
  for (guint i = 0; i < n; ++i) {
    const GstCapsFeatures *f = gst_caps_get_features (caps, i);
    if (f != nullptr && !gst_caps_features_is_any (f) &&
        gst_caps_features_contains (f, CUDA_MEMORY_FEATURE))
      continue;
    gst_caps_append_structure_full (out, gst_structure_copy (gst_caps_get_structure (caps, i)),
        f ? gst_caps_features_copy (f) : nullptr);
  }
  return out;
}

static gboolean
caps_have_cuda_memory (GstCaps * caps)
{
  const guint n = gst_caps_get_size (caps);
  for (guint i = 0; i < n; ++i) {
    const GstCapsFeatures *f = gst_caps_get_features (caps, i);
    if (f != nullptr && !gst_caps_features_is_any (f) &&
        gst_caps_features_contains (f, CUDA_MEMORY_FEATURE))
      return TRUE;
  }
  return FALSE;
}

/* In place: the same caps on both sides, less CUDA memory where the engine does not take it. */
static GstCaps *
gst_resnet_backbone_transform_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps, GstCaps * filter)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);
  GstCaps *ret = gst_resnet_backbone_cuda_caps_allowed (self) ? gst_caps_ref (caps) :
      caps_without_cuda_memory (caps);
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, ret, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (ret);
    ret = tmp;
  }
  GST_LOG_OBJECT (self, "%s caps %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
      direction == GST_PAD_SINK ? "sink" : "src", caps, ret);
  return ret;
}

static gboolean
gst_resnet_backbone_accept_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);

  if (caps_have_cuda_memory (caps) && !gst_resnet_backbone_cuda_caps_allowed (self)) {
    GST_DEBUG_OBJECT (self, "refusing %" GST_PTR_FORMAT ": frames in CUDA memory need the cuda "
        "engine (engine=cuda, or engine=auto with device=cuda:N)", caps);
    return FALSE;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->accept_caps (trans, direction, caps);
}

static void
gst_resnet_backbone_set_context (GstElement * element, GstContext * context)
{
#if BACKBONE_HAVE_GST_CUDA
  GstResnetBackbone *self = GST_RESNET_BACKBONE (element);
  GstResnetBackbonePrivate *priv = self->priv;

  /* The device of the properties (cuda:N; 0 for auto): a context of another device is refused. */
  GST_OBJECT_LOCK (self);
  const std::string device_name = priv->settings.device;
  GST_OBJECT_UNLOCK (self);
  int device = 0;
  try {
    const backbone::Device d = backbone::Device::parse (device_name);
    device = d.is_cuda ()? d.index : 0;
  } catch (const std::exception &) {
    /* "auto" (or a bad name, which the start reports) */
  }
  {
    std::lock_guard<std::recursive_mutex> guard (priv->cuda_lock);
    gst_cuda_handle_set_context (element, context, device, &priv->cuda_context);
  }
#endif
  GST_ELEMENT_CLASS (parent_class)->set_context (element, context);
}

static gboolean
gst_resnet_backbone_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_START:
      gst_resnet_backbone_set_flushing (self, true);
      break;
    case GST_EVENT_FLUSH_STOP:
      gst_resnet_backbone_set_flushing (self, false);
      break;
    default:
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

static gboolean
gst_resnet_backbone_src_event (GstBaseTransform * trans, GstEvent * event)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);

  if (GST_EVENT_TYPE (event) == GST_EVENT_QOS) {
    GstQOSType type;
    gdouble proportion;
    GstClockTimeDiff diff;
    GstClockTime timestamp;

    gst_event_parse_qos (event, &type, &proportion, &diff, &timestamp);
    if (GST_CLOCK_TIME_IS_VALID (timestamp)) {
      GstClockTime earliest;
      /* As GstBaseTransform and the video decoders do: when late, aim further ahead. */
      if (diff > 0)
        earliest = timestamp + 2 * diff;
      else
        earliest = (GstClockTimeDiff) timestamp + diff > 0 ? timestamp + diff : 0;
      std::lock_guard<std::mutex> guard (self->priv->lock);
      self->priv->earliest_time = earliest;
      GST_DEBUG_OBJECT (self, "QoS: proportion %g, diff %" G_GINT64_FORMAT ", earliest time %"
          GST_TIME_FORMAT, proportion, diff, GST_TIME_ARGS (earliest));
    }
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->src_event (trans, event);
}

static GstClockTime
gst_resnet_backbone_latency (GstResnetBackbone * self)
{
  std::lock_guard<std::mutex> guard (self->priv->lock);
  GstClockTime lat = 0;
  for (GstClockTime t : self->priv->latencies)
    lat = MAX (lat, t);
  return lat;
}

static gboolean
gst_resnet_backbone_query (GstBaseTransform * trans, GstPadDirection direction, GstQuery * query)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);

  if (direction == GST_PAD_SRC && GST_QUERY_TYPE (query) == GST_QUERY_LATENCY) {
    gboolean live;
    GstClockTime min, max;

    if (!gst_pad_peer_query (GST_BASE_TRANSFORM_SINK_PAD (trans), query))
      return FALSE;
    gst_query_parse_latency (query, &live, &min, &max);
    const GstClockTime own = gst_resnet_backbone_latency (self);
    min += own;
    if (GST_CLOCK_TIME_IS_VALID (max))
      max += own;
    GST_DEBUG_OBJECT (self, "latency: ours %" GST_TIME_FORMAT ", total min %" GST_TIME_FORMAT
        " max %" GST_TIME_FORMAT, GST_TIME_ARGS (own), GST_TIME_ARGS (min), GST_TIME_ARGS (max));
    gst_query_set_latency (query, live, min, max);
    return TRUE;
  }
#if BACKBONE_HAVE_GST_CUDA
  if (GST_QUERY_TYPE (query) == GST_QUERY_CONTEXT) {
    GstCudaContext *context = nullptr;
    {
      std::lock_guard<std::recursive_mutex> guard (self->priv->cuda_lock);
      if (self->priv->cuda_context)
        context = (GstCudaContext *) gst_object_ref (self->priv->cuda_context);
    }
    const gboolean handled = context != nullptr &&
        gst_cuda_handle_context_query (GST_ELEMENT (self), query, context);
    gst_clear_object (&context);
    if (handled)
      return TRUE;
  }
#endif
  if (!GST_BASE_TRANSFORM_CLASS (parent_class)->query (trans, direction, query))
    return FALSE;
  /* Without a peer the caps answer is the pad template, which lists CUDA memory. */
  if (GST_QUERY_TYPE (query) == GST_QUERY_CAPS && !gst_resnet_backbone_cuda_caps_allowed (self)) {
    GstCaps *caps = nullptr;
    gst_query_parse_caps_result (query, &caps);
    if (caps && caps_have_cuda_memory (caps)) {
      GstCaps *filtered = caps_without_cuda_memory (caps);
      gst_query_set_caps_result (query, filtered);
      gst_caps_unref (filtered);
    }
  }
  return TRUE;
}

/* Records one inference time; returns TRUE when the reported latency should be renewed. */
static gboolean
gst_resnet_backbone_record_latency (GstResnetBackbone * self, GstClockTime t)
{
  GstResnetBackbonePrivate *priv = self->priv;
  std::lock_guard<std::mutex> guard (priv->lock);
  priv->latencies.push_back (t);
  while (priv->latencies.size () > LATENCY_WINDOW)
    priv->latencies.pop_front ();
  GstClockTime lat = 0;
  for (GstClockTime x : priv->latencies)
    lat = MAX (lat, x);
  /* Renew when it grew by more than a quarter (not on every frame's jitter). */
  if (lat > priv->posted_latency + priv->posted_latency / 4) {
    priv->posted_latency = lat;
    return TRUE;
  }
  return FALSE;
}

/* References to the memories of a frame in CUDA memory. The engine reads the frame on its own
 * stream after forward_frame returns; while these are held the memory does not go back to the
 * upstream pool, so the next frame is not written into it before the engine has read it. A pool
 * reuses a returned buffer whose memories are all writable, and a plain reference leaves a memory
 * writable (only the lock state counts): each memory is also locked exclusively, which makes it
 * shared (not writable), so the pool drops that buffer instead of reusing its memory. */
struct FrameMemories {
  std::vector<GstMemory *> memories;

  explicit FrameMemories (GstBuffer * buf) {
    for (guint i = 0; i < gst_buffer_n_memory (buf); ++i) {
      GstMemory *m = gst_memory_ref (gst_buffer_peek_memory (buf, i));
      gst_memory_lock (m, GST_LOCK_FLAG_EXCLUSIVE);
      memories.push_back (m);
    }
  }
  ~FrameMemories () {
    for (GstMemory * m : memories) {
      gst_memory_unlock (m, GST_LOCK_FLAG_EXCLUSIVE);
      gst_memory_unref (m);
    }
  }
  FrameMemories (const FrameMemories &) = delete;
  FrameMemories & operator= (const FrameMemories &) = delete;
};

/* What a level left on the GPU holds: the engine's output tensor (its pooled storage is not
 * reused while held), the output slot, the CUDA context its download and release run in, and,
 * for a frame in CUDA memory, that frame's memories until the level is complete. */
struct DeviceLevel {
  backbone::Tensor tensor;
  std::shared_ptr<gstbackbone::FeatureSlot> slot;
  CudaContextPtr cuda;
  std::shared_ptr<FrameMemories> frame;
};

/* GstFeatureDeviceMemoryFuncs.download: waits for the tensor's ready event and copies it into
 * @dest, in the context. Never throws (a C callback). */
static gboolean
device_level_download (gpointer user_data, gpointer dest, gsize size, GError ** error)
{
  auto *level = static_cast<DeviceLevel *> (user_data);
  try {
    if (size != level->tensor.nbytes ())
      throw backbone::Error ("asked for " + std::to_string (size) + " bytes, the level holds " +
          std::to_string (level->tensor.nbytes ()));
    CudaContextScope scope (level->cuda);
    backbone::cuda_wait_ready (level->tensor);
    backbone::Tensor host = backbone::Tensor::from_blob (dest, level->tensor.shape (),
        level->tensor.dtype (), backbone::Device::cpu ());
    host.copy_ (level->tensor);
    return TRUE;
  } catch (const std::exception &e) {
    g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ,
        "resnetbackbone: copying a feature level %s from %s to the host failed: %s",
        backbone::shape_str (level->tensor.shape ()).c_str (),
        level->tensor.device ().str ().c_str (), e.what ());
  } catch (...) {
    g_set_error (error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ,
        "resnetbackbone: copying a feature level to the host failed: unknown exception");
  }
  return FALSE;
}

/* GstFeatureDeviceMemoryFuncs.free: the tensor (back to the engine's pool, or freed) in the
 * context. Never throws. */
static void
device_level_free (gpointer user_data)
{
  auto *level = static_cast<DeviceLevel *> (user_data);
  try {
    CudaContextScope scope (level->cuda);
    /* The level complete means the engine has read the frame: only then may its memory go back
     * upstream (normally long done; the event has completed). */
    if (level->frame)
      backbone::cuda_wait_ready (level->tensor);
    level->frame.reset ();
    level->tensor = backbone::Tensor ();
    level->slot.reset ();
  } catch (const std::exception &e) {
    GST_WARNING ("releasing a feature level: %s; releasing it without the context", e.what ());
  } catch (...) {
  }
  delete level;
}

/* A level's data buffer: one feature device memory around a contiguous CUDA tensor, which it
 * keeps (with @slot and @cuda) until the last buffer holding it is gone. */
static GstBuffer *
wrap_device_level (const backbone::Tensor & tensor,
    const std::shared_ptr<gstbackbone::FeatureSlot> &slot, const CudaContextPtr & cuda,
    const std::shared_ptr<FrameMemories> &frame)
{
  static const GstFeatureDeviceMemoryFuncs funcs = [] {
    GstFeatureDeviceMemoryFuncs f;
    memset (&f, 0, sizeof (f));
    f.download = device_level_download;
    f.free = device_level_free;
    return f;
  }();
  if (!tensor.is_contiguous () || tensor.nbytes () == 0)
    throw backbone::Error ("a CUDA output must be a contiguous, non-empty tensor, found " +
        backbone::shape_str (tensor.shape ()) + " with strides " +
        backbone::shape_str (tensor.strides ()));
  auto *level = new DeviceLevel {tensor, slot, cuda, frame};
  GstMemory *mem = gst_feature_device_memory_new (GST_FEATURE_DEVICE_CUDA,
      tensor.device ().index, const_cast<void *> (level->tensor.data ()), tensor.nbytes (),
      backbone::cuda_ready_event (tensor), &funcs, level);
  if (!mem)                     /* level already released by the call */
    throw backbone::Error ("gst_feature_device_memory_new refused a CUDA output " +
        backbone::shape_str (tensor.shape ()));
  GstBuffer *buf = gst_buffer_new ();
  gst_buffer_append_memory (buf, mem);
  return buf;
}

/* Runs the backbone on one mapped frame and adds the meta. Throws on failure. CPU engines
 * preprocess the host frame (Engine::forward_frame's default) and hand out host levels; the cuda
 * engine takes the frame's planes in CUDA memory when @on_device (else in host memory, which it
 * uploads), converts, resizes, normalises and pads in one kernel, and its levels stay on the GPU. */
static void
gst_resnet_backbone_infer (GstResnetBackbone * self, Model & model,
    const std::shared_ptr<gstbackbone::FeatureSlot> &slot, const GstVideoFrame * frame,
    bool on_device, GstBuffer * buf)
{
  backbone::FrameView view = gstbackbone::frame_view_from_video_frame (frame);
  if (on_device)
    view.device = backbone::Device::cuda (model.cuda_device);

  CudaContextScope scope (model.cuda);
  backbone::PreprocessResult info;
  backbone::FeatureMaps maps = model.engine->forward_frame (view, model.preprocess, &info);
  /* A frame in host memory is copied (staged for the upload) before forward_frame returns; one in
   * CUDA memory is read by the engine's kernel later, on its stream. */
  const std::shared_ptr<FrameMemories> frame_memories = on_device ?
      std::make_shared<FrameMemories> (buf) : nullptr;

  GstFeatureMeta *meta = gst_buffer_add_feature_meta (buf);
  if (!meta)
    throw backbone::Error ("gst_buffer_add_feature_meta failed (is the buffer writable?)");
  meta->unique_id = model.unique_id;
  gst_feature_meta_set_model_name (meta, model.name.c_str ());
  meta->frame_width = static_cast<guint> (view.width);
  meta->frame_height = static_cast<guint> (view.height);
  meta->input_width = static_cast<guint> (info.resized_width);
  meta->input_height = static_cast<guint> (info.resized_height);
  /* The engine pads on its device and leaves info.tensor undefined: the padded size is the
   * resized size up to the size divisibility (detectron2's ImageList). */
  const int64_t div = model.preprocess.size_divisibility;
  auto padded = [div](int64_t v) {
    return div > 1 ? (v + div - 1) / div * div : v;
  };
  meta->padded_width = static_cast<guint> (info.tensor.defined ()? info.tensor.size (3) :
      padded (info.resized_width));
  meta->padded_height = static_cast<guint> (info.tensor.defined ()? info.tensor.size (2) :
      padded (info.resized_height));
  meta->scale_x = info.scale_x;
  meta->scale_y = info.scale_y;

  for (auto &[name, tensor] : maps) {
    if (tensor.dim () != 4 || tensor.dtype () != backbone::DType::Float32)
      throw backbone::ShapeError ("output \"" + name + "\" is " + backbone::dtype_name (tensor.dtype ()) +
          " " + backbone::shape_str (tensor.shape ()) + ", expected float32 N,C,H,W");
    /* Levels stay on the GPU for the cuda engine; any other engine's are handed out on the host. */
    const bool on_gpu = model.cuda_engine && tensor.device ().is_cuda ();
    /* A strided CUDA output (none of this engine's) goes through the host to be made contiguous. */
    const backbone::Tensor level_tensor = on_gpu ? (tensor.is_contiguous ()? tensor :
        (backbone::cuda_wait_ready (tensor), tensor.contiguous ())) :
        tensor.device ().is_cpu ()? tensor.contiguous () : tensor.to (backbone::Device::cpu ()).contiguous ();
    gsize dims[4], strides[4];
    for (int d = 0; d < 4; ++d) {
      dims[d] = static_cast<gsize> (level_tensor.size (d));
      strides[d] = static_cast<gsize> (level_tensor.stride (d));
    }
    auto it = model.strides.find (name);
    const guint stride = it != model.strides.end ()? static_cast<guint> (it->second) : 0;
    GstBuffer *data = on_gpu ? wrap_device_level (level_tensor, slot, model.cuda, frame_memories) :
        gstbackbone::FeaturePool::wrap (level_tensor, slot);
    if (!gst_feature_meta_add_level (meta, name.c_str (), GST_FEATURE_DTYPE_FLOAT32, dims, strides,
            stride, on_gpu ? GST_FEATURE_DEVICE_CUDA : GST_FEATURE_DEVICE_CPU,
            on_gpu ? level_tensor.device ().index : 0, data, 0))
      throw backbone::Error ("gst_feature_meta_add_level refused level \"" + name + "\" " +
          backbone::shape_str (level_tensor.shape ()));
  }
  if (model.cuda_engine)
    GST_LOG_OBJECT (self, "cuda engine: %s frame %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT ", %zu levels",
        on_device ? "CUDA-memory" : "system-memory", view.width, view.height, maps.size ());
}

/* After the first inference of a start or of new caps: engines that choose their kernels per
 * input shape (oneDNN) name them only now. Updates engine-description (before the buffer goes
 * downstream) and logs the new line. */
static void
gst_resnet_backbone_redescribe (GstResnetBackbone * self, Model & model)
{
  std::string description;
  try {
    description = model.engine->describe ();
  } catch (const std::exception &e) {
    GST_WARNING_OBJECT (self, "describing the engine failed: %s", e.what ());
    return;
  }
  if (description == model.engine_description)
    return;
  model.engine_description = description;
  GST_INFO_OBJECT (self, "engine after the first frame of %dx%d: %s",
      GST_VIDEO_INFO_WIDTH (&self->priv->info), GST_VIDEO_INFO_HEIGHT (&self->priv->info),
      description.c_str ());
  GST_OBJECT_LOCK (self);
  self->priv->engine_description = description;
  GST_OBJECT_UNLOCK (self);
  g_object_notify (G_OBJECT (self), "engine-description");
}

/* Whether @buf's frame goes to the engine as device pointers: CUDA memory (negotiated caps) of
 * the element's own GstCudaContext. CUDA memory of another context (a neighbour that did not share
 * its context) is read through the host instead (GStreamer downloads it when mapped without
 * GST_MAP_CUDA). */
static bool
gst_resnet_backbone_frame_on_device (GstResnetBackbone * self, const Model & model, GstBuffer * buf)
{
#if BACKBONE_HAVE_GST_CUDA
  if (!self->priv->cuda_input || !model.cuda_frames)
    return false;
  const guint n = gst_buffer_n_memory (buf);
  bool ours = n > 0;
  for (guint i = 0; i < n && ours; ++i) {
    GstMemory *mem = gst_buffer_peek_memory (buf, i);
    ours = gst_is_cuda_memory (mem) && GST_CUDA_MEMORY_CAST (mem)->context == model.cuda->context;
  }
  if (!ours && !self->priv->warned_foreign_cuda) {
    self->priv->warned_foreign_cuda = TRUE;
    GST_WARNING_OBJECT (self, "frames in CUDA memory of another CUDA context (or not CUDA memory "
        "at all): reading them through host memory (slower)");
  }
  return ours;
#else
  return false;
#endif
}

static GstFlowReturn
gst_resnet_backbone_transform_ip (GstBaseTransform * trans, GstBuffer * buf)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);
  GstResnetBackbonePrivate *priv = self->priv;

  if (!priv->model) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (nullptr), ("no model loaded (not started)"));
    return GST_FLOW_ERROR;
  }
  if (!priv->have_info) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (nullptr), ("received a buffer before caps"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  Model & model = *priv->model;

  const guint64 index = priv->frames++;
  if (index % model.inference_interval != 0) {
    GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": no inference (inference-interval %u)",
        index, model.inference_interval);
    return GST_FLOW_OK;
  }

  /* A GAP buffer has no meaningful pixels. */
  if (GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_GAP)) {
    GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": GAP buffer, no inference", index);
    return GST_FLOW_OK;
  }

  /* QoS: a frame already late downstream skips inference and flows on. */
  std::shared_ptr<gstbackbone::FeaturePool> pool;
  GstClockTime earliest;
  {
    std::lock_guard<std::mutex> guard (priv->lock);
    pool = priv->pool;
    earliest = priv->earliest_time;
  }
  if (GST_CLOCK_TIME_IS_VALID (earliest) && GST_BUFFER_PTS_IS_VALID (buf)) {
    const GstClockTime running_time = gst_segment_to_running_time (&trans->segment,
        GST_FORMAT_TIME, GST_BUFFER_PTS (buf));
    if (GST_CLOCK_TIME_IS_VALID (running_time) && running_time <= earliest) {
      priv->qos_skipped++;
      GST_DEBUG_OBJECT (self, "frame %" G_GUINT64_FORMAT " is late (running time %" GST_TIME_FORMAT
          " <= earliest %" GST_TIME_FORMAT "): skipping inference, %" G_GUINT64_FORMAT
          " skipped so far", index, GST_TIME_ARGS (running_time), GST_TIME_ARGS (earliest),
          priv->qos_skipped);
      return GST_FLOW_OK;
    }
  }

  if (!gst_buffer_is_writable (buf)) {
    GST_ELEMENT_ERROR (self, CORE, FAILED, (nullptr),
        ("the buffer is not writable: cannot add the feature meta"));
    return GST_FLOW_ERROR;
  }
  if (!pool)
    return GST_FLOW_FLUSHING;

  /* A slot before anything is allocated: waits while pool-size outputs are held downstream. */
  std::shared_ptr<gstbackbone::FeatureSlot> slot;
  try {
    slot = pool->acquire ();
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Inference failed: %s", e.what ()), (nullptr));
    return GST_FLOW_ERROR;
  }
  if (!slot) {
    GST_DEBUG_OBJECT (self, "flushing while waiting for a free output slot");
    return GST_FLOW_FLUSHING;
  }

  GstVideoFrame frame;
  /* NO_REF: a mapped frame must not hold a second reference, or the buffer is not writable
   * for the meta any more. */
  int map_flags = GST_MAP_READ | GST_VIDEO_FRAME_MAP_FLAG_NO_REF;
  const bool on_device = gst_resnet_backbone_frame_on_device (self, model, buf);
#if BACKBONE_HAVE_GST_CUDA
  if (on_device)
    map_flags |= GST_MAP_CUDA;  /* device plane pointers, no download */
#endif
  if (!gst_video_frame_map (&frame, &priv->info, buf, (GstMapFlags) map_flags)) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, (nullptr), ("cannot map the video frame for reading%s",
            on_device ? " (CUDA memory)" : ""));
    return GST_FLOW_ERROR;
  }
  const gint64 t0 = g_get_monotonic_time ();
  GstFlowReturn ret = GST_FLOW_OK;
  try {
    gst_resnet_backbone_infer (self, model, slot, &frame, on_device, buf);
  } catch (const std::exception &e) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Inference failed: %s", e.what ()),
        ("frame %" G_GUINT64_FORMAT ", %dx%d %s", index, GST_VIDEO_INFO_WIDTH (&priv->info),
            GST_VIDEO_INFO_HEIGHT (&priv->info),
            gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&priv->info))));
    ret = GST_FLOW_ERROR;
  } catch (...) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Inference failed: unknown exception"), (nullptr));
    ret = GST_FLOW_ERROR;
  }
  gst_video_frame_unmap (&frame);
  slot.reset ();
  if (ret != GST_FLOW_OK)
    return ret;

  const GstClockTime took = (GstClockTime) (g_get_monotonic_time () - t0) * GST_USECOND;
  priv->inferences++;
  if (priv->describe_pending) {
    priv->describe_pending = FALSE;
    gst_resnet_backbone_redescribe (self, model);
  }
  GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": inference took %" GST_TIME_FORMAT, index,
      GST_TIME_ARGS (took));
  if (gst_resnet_backbone_record_latency (self, took))
    gst_element_post_message (GST_ELEMENT (self),
        gst_message_new_latency (GST_OBJECT (self)));
  return GST_FLOW_OK;
}
