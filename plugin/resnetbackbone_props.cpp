/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone's properties: their documentation, validation at set time, and which of them may
 * change while the element runs.
 */
#include <gst/base/gstbasetransform.h>

#include <algorithm>
#include <string>

#include "backbone/engine.h"
#include "backbone/engine_table.h"
#include "backbone/tensor.h"
#include "resnetbackbone_private.h"

#define GST_CAT_DEFAULT gst_resnet_backbone_debug

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

/* The engine blurb: every engine the library knows, and which of them this build has. */
static const gchar *
engine_blurb ()
{
  static const gchar *blurb = nullptr;
  if (g_once_init_enter (&blurb)) {
    std::string s = "Inference engine: auto (the first of this build's engines that runs the "
        "device and precision)";
    for (const backbone::EngineInfo & e : backbone::engine_table ())
      s += "; " + e.name + " (" + e.description + (e.built ? "" : "; not in this build") + ")";
    g_once_init_leave (&blurb, g_strdup (s.c_str ()));
  }
  return blurb;
}

void
gst_resnet_backbone_install_properties (GObjectClass * gobject_class)
{
  const GParamFlags flags = (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY);
  const GParamFlags playing = (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_PLAYING);

  /**
   * GstResnetBackbone:config-file:
   *
   * A detectron2 YAML config (with _BASE_ chains), e.g. configs/R-50.yaml, or an FPN config
   * (configs/R-50-FPN.yaml: the levels are then the pyramid's p2 .. p6). Without one the element
   * builds detectron2's defaults (an R-50 with FrozenBN) with out features res2 .. res5.
   */
  g_object_class_install_property (gobject_class, PROP_CONFIG_FILE,
      g_param_spec_string ("config-file", "Config file",
          "detectron2 YAML config of the backbone, ResNet or FPN (empty: detectron2's defaults, an "
          "R-50 with out features res2..res5)", nullptr, flags));

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
          "seeded initialisation with a warning)", nullptr, flags));

  /**
   * GstResnetBackbone:out-features:
   *
   * Comma-separated feature maps to output, in that order. A ResNet config: among stem, res2, res3,
   * res4, res5 (empty: the config's MODEL.RESNETS.OUT_FEATURES); stages after the last one
   * requested are not built. An FPN config (MODEL.BACKBONE.NAME build_resnet_fpn_backbone or
   * build_retinanet_resnet_fpn_backbone): among its p-levels (p2 .. p6; RetinaNet p3 .. p7) and its
   * bottom-up's MODEL.RESNETS.OUT_FEATURES (empty: every p-level). Another name fails the start
   * with an error listing the names the config has.
   */
  g_object_class_install_property (gobject_class, PROP_OUT_FEATURES,
      g_param_spec_string ("out-features", "Out features",
          "Comma-separated outputs: among stem,res2,res3,res4,res5 (empty: the config's "
          "MODEL.RESNETS.OUT_FEATURES); with an FPN config its p-levels p2..p6 (RetinaNet p3..p7) "
          "and the bottom-up's outputs (empty: every p-level)", "", flags));

  /**
   * GstResnetBackbone:engine:
   *
   * The inference engine: "auto" (the default) takes the first engine of this build that runs on
   * the device at the precision; otherwise one of the backbone library's engine table (gst-inspect
   * lists them, with those this build lacks marked). A name outside the table is refused when
   * set; an engine this build lacks fails the start with an error that lists the ones it has. The
   * one "auto" picked is in #GstResnetBackbone:engine-description.
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
      g_param_spec_string ("engine", "Engine", engine_blurb (), DEFAULT_ENGINE, flags));

  /**
   * GstResnetBackbone:device:
   *
   * "cpu", "cuda:N" or "auto": cuda:0 when a CUDA device is available and the engine runs on it,
   * the CPU otherwise. Other values are refused when set.
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
   * 1 pads nothing. With an FPN config, 0 pads to the FPN's size_divisibility (32, as detectron2's
   * model does), and another value must be a multiple of it.
   */
  g_object_class_install_property (gobject_class, PROP_SIZE_DIVISIBILITY,
      g_param_spec_uint ("size-divisibility", "Size divisibility",
          "Pad the network input at the bottom/right to a multiple of this (0 = no padding; with an "
          "FPN config 0 = the FPN's 32)", 0,
          1024, DEFAULT_SIZE_DIVISIBILITY, flags));

  /**
   * GstResnetBackbone:inference-interval:
   *
   * Run the backbone on every Nth frame (the first, then N later, ...). The other frames still
   * flow, without new features. A frame that is due but skipped (QoS, full feature memory) does
   * not shift the phase; a flush restarts it. May change while PLAYING: the new interval counts
   * from the next frame that is due.
   */
  g_object_class_install_property (gobject_class, PROP_INFERENCE_INTERVAL,
      g_param_spec_uint ("inference-interval", "Inference interval",
          "Run on every Nth frame; the other frames pass without features", 1, G_MAXINT,
          DEFAULT_INFERENCE_INTERVAL, playing));

  /**
   * GstResnetBackbone:pool-size:
   *
   * Most frames whose features may be held downstream at once; 0 (the default): no count limit,
   * #GstResnetBackbone:feature-memory-limit bounds them. When the limit is reached the element
   * waits at most #GstResnetBackbone:pool-timeout, then passes the frame without features: any
   * value, 1 included, is safe with elements that keep frames (encoders, sinks keeping the last
   * sample).
   */
  g_object_class_install_property (gobject_class, PROP_POOL_SIZE,
      g_param_spec_uint ("pool-size", "Pool size",
          "Most frames whose features are held downstream at once (0 = no count limit: "
          "feature-memory-limit bounds them)", 0, 1 << 20, DEFAULT_POOL_SIZE, playing));

  /**
   * GstResnetBackbone:feature-memory-limit:
   *
   * Most bytes of feature maps held downstream at once (by buffers, or their metas copied onto
   * other buffers, e.g. by an encoder onto its output). 512 MiB by default; 0 removes the limit
   * (memory then grows with what downstream keeps). Features downstream still holds are never
   * overwritten: when taking the next frame's features would pass the limit, the element waits
   * up to #GstResnetBackbone:pool-timeout for downstream to release some, then passes the frame
   * without features, posts a QoS message counting it and a warning (once until features are
   * released again). A wait that times out means downstream keeps the features until it gets more
   * frames (an encoder's lookahead, a muxer, a sink keeping its last sample): frames then pass
   * without waiting whenever the limit is reached, until a consumer on another thread releases
   * features down to half the limit. One frame's features may pass the limit when nothing else is
   * held (the first frame always gets its features).
   */
  g_object_class_install_property (gobject_class, PROP_FEATURE_MEMORY_LIMIT,
      g_param_spec_uint64 ("feature-memory-limit", "Feature memory limit",
          "Most bytes of features held downstream at once; beyond, frames pass without features "
          "(0 = no limit)", 0, G_MAXUINT64, DEFAULT_FEATURE_MEMORY_LIMIT, playing));

  /**
   * GstResnetBackbone:pool-timeout:
   *
   * Longest wait (nanoseconds) of the streaming thread for downstream to release features when
   * #GstResnetBackbone:pool-size or #GstResnetBackbone:feature-memory-limit is reached, before the
   * frame passes without features; 0 never waits. At most 60 s: the element never waits on
   * downstream without a bound.
   */
  g_object_class_install_property (gobject_class, PROP_POOL_TIMEOUT,
      g_param_spec_uint64 ("pool-timeout", "Pool timeout",
          "Longest wait in ns for downstream to release features when the limits are reached, "
          "then the frame passes without features (0 = never wait)", 0, MAX_POOL_TIMEOUT,
          DEFAULT_POOL_TIMEOUT, playing));

  /**
   * GstResnetBackbone:unique-id:
   *
   * Written into each meta this element adds, so that several backbones in one pipeline never
   * overwrite each other (each adds its own meta; see gst_buffer_get_feature_meta_by_id()). May
   * change while PLAYING.
   */
  g_object_class_install_property (gobject_class, PROP_UNIQUE_ID,
      g_param_spec_uint ("unique-id", "Unique ID",
          "Producer id written into the meta (one meta per producer on a buffer)", 0, G_MAXUINT,
          DEFAULT_UNIQUE_ID, playing));

  /**
   * GstResnetBackbone:qos:
   *
   * Skip inference on frames that are already late downstream (QoS events from a synchronising
   * sink), as GstVideoFilter elements do by default: late frames still flow, without features,
   * and each skip is counted in a QoS message. FALSE infers on every due frame. Unlike
   * GstBaseTransform's own qos (which this property shadows: the base class's stays off), no frame
   * is ever dropped.
   */
  g_object_class_install_property (gobject_class, PROP_QOS,
      g_param_spec_boolean ("qos", "QoS",
          "Skip inference on frames already late downstream (they flow on without features; no "
          "frame is dropped)", DEFAULT_QOS, playing));

  /**
   * GstResnetBackbone:max-errors:
   *
   * Consecutive failed inferences tolerated (as GstVideoDecoder's max-errors): each posts a
   * warning and the frame passes without features; one more fails the stream with an error. -1
   * never fails; 0 fails on the first.
   */
  g_object_class_install_property (gobject_class, PROP_MAX_ERRORS,
      g_param_spec_int ("max-errors", "Max errors",
          "Consecutive failed inferences tolerated (frames pass without features) before an error "
          "(-1 = never fail)", -1, G_MAXINT, DEFAULT_MAX_ERRORS, playing));

  /**
   * GstResnetBackbone:latency:
   *
   * The processing latency the element reports (nanoseconds). By default (GST_CLOCK_TIME_NONE)
   * it is measured: when caps are set (or at the first LATENCY query, from the upstream caps when
   * they are fixed) the element runs the model once on a blank frame of that size and reports
   * the time until the features are ready; later inferences that take longer raise it (a
   * LATENCY message is posted). Set a value to report a fixed latency instead.
   */
  g_object_class_install_property (gobject_class, PROP_LATENCY,
      g_param_spec_uint64 ("latency", "Latency",
          "Reported processing latency in ns (default: measured by a warm-up inference at caps "
          "time)", 0, G_MAXUINT64, DEFAULT_LATENCY, playing));

  /**
   * GstResnetBackbone:tensor-meta:
   *
   * Also attach GStreamer's standard tensor meta (GstTensorMeta of the analytics library): one
   * GstTensor per level, id the quark of the level's name, row-major N,C,H,W dims, the level's
   * memory (no copy). Only in a build against GStreamer 1.26 or newer (else the element attaches
   * the GstFeatureMeta only, whatever this says). In GStreamer 1.26 GstTensorMeta has no transform
   * function: copies of the buffer (videoconvert, encoders, gst_buffer_copy) drop it, so read it
   * right after the element.
   */
  g_object_class_install_property (gobject_class, PROP_TENSOR_META,
      g_param_spec_boolean ("tensor-meta", "Tensor meta",
          "Also attach GStreamer's GstTensorMeta (one GstTensor per level; GStreamer 1.26 or newer "
          "builds only)", DEFAULT_TENSOR_META, playing));

  /**
   * GstResnetBackbone:model-name:
   *
   * The loaded model's name as the meta carries it ("R-50", "X-101-32x8d", "R-50-FPN",
   * "RetinaNet-R-50-FPN"); empty before the model is loaded.
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

  /**
   * GstResnetBackbone:stats:
   *
   * What the element did since it started (kept after it stops), as a GstStructure
   * "resnetbackbone-stats" with the fields frames, inferred, skipped-interval, skipped-qos,
   * skipped-pool (the feature memory was full), skipped-gap (GAP buffers), errors (tolerated
   * failed inferences), mean-inference-time and max-inference-time (ns, of the inferred frames),
   * feature-bytes-held, peak-feature-bytes (held downstream), pool-waits and pool-timeouts.
   * The same line is in the debug log when the element stops.
   */
  g_object_class_install_property (gobject_class, PROP_STATS,
      g_param_spec_boxed ("stats", "Statistics",
          "Frames seen, inferred and skipped (by interval, QoS, full feature memory), errors, "
          "inference times, feature memory held", GST_TYPE_STRUCTURE,
          (GParamFlags) (G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_PRECISION, (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_INPUT_FORMAT, (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_RESIZE, (GstPluginAPIFlags) 0);
}

static std::vector<double>
doubles_from_array (GstResnetBackbone * self, const GValue * value, bool *ok)
{
  std::vector<double> out;
  const guint n = gst_value_array_get_size (value);
  *ok = true;
  for (guint i = 0; i < n; ++i) {
    const GValue *v = gst_value_array_get_value (value, i);
    GValue d = G_VALUE_INIT;
    g_value_init (&d, G_TYPE_DOUBLE);
    if (g_value_transform (v, &d)) {
      out.push_back (g_value_get_double (&d));
    } else {
      GST_WARNING_OBJECT (self, "a value of type %s in a pixel-mean/pixel-std array is not a "
          "number: the property keeps its value", G_VALUE_TYPE_NAME (v));
      *ok = false;
    }
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

/* A refused value: in the debug log and as a warning message on the bus (never a g_warning, which
 * applications and tests may make fatal). */
static void
refuse (GstResnetBackbone * self, const std::string & why)
{
  GST_WARNING_OBJECT (self, "%s", why.c_str ());
  gst_element_post_message (GST_ELEMENT (self), gst_message_new_warning (GST_OBJECT (self),
          g_error_new (GST_CORE_ERROR, GST_CORE_ERROR_FAILED, "%s", why.c_str ()), why.c_str ()));
}

void
gst_resnet_backbone_set_property (GObject * object, guint prop_id, const GValue * value,
    GParamSpec * pspec)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (object);
  Settings & s = self->priv->settings;
  auto str = [value]() {
    const gchar *v = g_value_get_string (value);
    return std::string (v ? v : "");
  };

  std::string refused;
  GST_OBJECT_LOCK (self);
  /* The model's settings apply at the next start: refused, not silently stored, while it runs. */
  if (!(pspec->flags & GST_PARAM_MUTABLE_PLAYING) && GST_STATE (self) > GST_STATE_READY) {
    refused = std::string ("property \"") + pspec->name + "\" cannot change in state " +
        gst_element_state_get_name (GST_STATE (self)) + ": set it in the NULL or READY state "
        "(the model is loaded at READY to PAUSED); the element keeps its value";
    GST_OBJECT_UNLOCK (self);
    refuse (self, refused);
    return;
  }
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
    case PROP_ENGINE:{
      std::string v = str ();
      if (v.empty ())
        v = DEFAULT_ENGINE;
      if (v != "auto" && !backbone::is_known_engine (v))
        refused = "engine \"" + v + "\" is unknown: expected auto, " + backbone::engine_names () +
            "; the element keeps engine \"" + s.engine + "\"";
      else
        s.engine = v;
      break;
    }
    case PROP_DEVICE:{
      std::string v = str ();
      if (v.empty ())
        v = DEFAULT_DEVICE;
      try {
        if (v != "auto")
          (void) backbone::Device::parse (v);
        s.device = v;
      } catch (const std::exception &e) {
        refused = "device \"" + v + "\": " + e.what () + " (expected auto, cpu or cuda:N); the "
            "element keeps device \"" + s.device + "\"";
      }
      break;
    }
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
    case PROP_PIXEL_STD:{
      bool ok = true;
      std::vector<double> v = doubles_from_array (self, value, &ok);
      if (ok)
        (prop_id == PROP_PIXEL_MEAN ? s.pixel_mean : s.pixel_std) = v;
      break;
    }
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
    case PROP_FEATURE_MEMORY_LIMIT:
      s.feature_memory_limit = g_value_get_uint64 (value);
      break;
    case PROP_POOL_TIMEOUT:
      s.pool_timeout = g_value_get_uint64 (value);
      break;
    case PROP_UNIQUE_ID:
      s.unique_id = g_value_get_uint (value);
      break;
    case PROP_QOS:
      s.qos = g_value_get_boolean (value);
      break;
    case PROP_MAX_ERRORS:
      s.max_errors = g_value_get_int (value);
      break;
    case PROP_LATENCY:
      s.latency = g_value_get_uint64 (value);
      break;
    case PROP_TENSOR_META:
      s.tensor_meta = g_value_get_boolean (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  const bool pool_changed = prop_id == PROP_POOL_SIZE || prop_id == PROP_FEATURE_MEMORY_LIMIT;
  const gstbackbone::FeaturePoolLimits limits = gst_resnet_backbone_pool_limits (s);
  GST_OBJECT_UNLOCK (self);
  if (!refused.empty ())
    refuse (self, refused);
  if (pool_changed) {
    std::lock_guard<std::mutex> guard (self->priv->lock);
    if (self->priv->pool)
      self->priv->pool->set_limits (limits);
  }
  if (prop_id == PROP_LATENCY)
    gst_element_post_message (GST_ELEMENT (self), gst_message_new_latency (GST_OBJECT (self)));
}

void
gst_resnet_backbone_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (object);
  const Settings & s = self->priv->settings;
  auto set_str = [value](const std::string & v, bool null_when_empty) {
    g_value_set_string (value, (v.empty () && null_when_empty) ? nullptr : v.c_str ());
  };

  if (prop_id == PROP_STATS) {
    g_value_take_boxed (value, gst_resnet_backbone_stats_structure (self));
    return;
  }
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
    case PROP_FEATURE_MEMORY_LIMIT:
      g_value_set_uint64 (value, s.feature_memory_limit);
      break;
    case PROP_POOL_TIMEOUT:
      g_value_set_uint64 (value, s.pool_timeout);
      break;
    case PROP_UNIQUE_ID:
      g_value_set_uint (value, s.unique_id);
      break;
    case PROP_QOS:
      g_value_set_boolean (value, s.qos);
      break;
    case PROP_MAX_ERRORS:
      g_value_set_int (value, s.max_errors);
      break;
    case PROP_LATENCY:
      g_value_set_uint64 (value, s.latency);
      break;
    case PROP_TENSOR_META:
      g_value_set_boolean (value, s.tensor_meta);
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

gstbackbone::FeaturePoolLimits
gst_resnet_backbone_pool_limits (const Settings & s)
{
  gstbackbone::FeaturePoolLimits l;
  l.max_outputs = s.pool_size;
  l.max_bytes = s.feature_memory_limit;
  return l;
}
