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
#include "backbone/model_instance.h"
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
    {GST_RESNET_BACKBONE_PRECISION_AUTO,
        "The engine's fastest precision within its documented bound (onednn measures fp32 against "
          "bf16; other engines fp32)", "auto"},
    {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstResnetBackbonePrecision", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_RESNET_BACKBONE_CONV_ALGORITHM (gst_resnet_backbone_conv_algorithm_get_type ())
static GType
gst_resnet_backbone_conv_algorithm_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_RESNET_BACKBONE_CONV_ALGORITHM_AUTO,
        "Winograd per layer where measured faster and within 1e-6 of the direct convolution",
        "auto"},
    {GST_RESNET_BACKBONE_CONV_ALGORITHM_DIRECT, "Direct convolutions only", "direct"},
    {GST_RESNET_BACKBONE_CONV_ALGORITHM_WINOGRAD,
        "Winograd on every layer that has it", "winograd"},
    {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstResnetBackboneConvAlgorithm", values);
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
   *
   * auto takes the engine's fastest precision whose features stay within that precision's
   * documented bound of fp32 (bf16: 2e-2 of max |fp32| per level): the onednn engine measures
   * fp32 against bf16 on the model once per CPU model, thread count and input shape (the
   * measurements are cached per machine, see the README's "Engines") and runs bf16 only where it
   * is faster; the other engines run fp32. The engine description says which it chose. The
   * default stays fp32.
   */
  g_object_class_install_property (gobject_class, PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "Arithmetic precision of the engine (fp32: every engine; bf16: onednn; an engine that "
          "does not run it fails the start; auto: the fastest within its documented bound, onednn "
          "measures fp32 against bf16 once per CPU model, thread count and input shape (cached), "
          "other engines fp32)",
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
   * GstResnetBackbone:conv-algorithm:
   *
   * How float32 3x3 stride-1 convolutions run where the engine has Winograd kernels (the onednn
   * engine with oneDNN 2.x on AVX-512 CPUs). auto (the default): each such layer's shape is timed
   * with both algorithms once per CPU model and thread count (cached per machine) and runs
   * Winograd where it is faster and the layer's output stays within 1e-6 of max |direct| (the
   * features then stay within 1e-5 of max |direct path|). direct: never Winograd. winograd:
   * Winograd on every layer that has it (features about 1e-6, relative, off the direct path).
   * Other engines run direct convolutions whatever the value.
   */
  g_object_class_install_property (gobject_class, PROP_CONV_ALGORITHM,
      g_param_spec_enum ("conv-algorithm", "Convolution algorithm",
          "Float32 3x3 convolutions where the engine has Winograd kernels (onednn): auto (Winograd "
          "per layer where measured faster and within 1e-6 of direct), direct, or winograd (every "
          "such layer)", GST_TYPE_RESNET_BACKBONE_CONV_ALGORITHM, DEFAULT_CONV_ALGORITHM, flags));

  /**
   * GstResnetBackbone:winograd:
   *
   * Deprecated alias of #GstResnetBackbone:conv-algorithm: TRUE sets conv-algorithm=winograd,
   * FALSE conv-algorithm=direct; reads TRUE when conv-algorithm is winograd.
   */
  g_object_class_install_property (gobject_class, PROP_WINOGRAD,
      g_param_spec_boolean ("winograd", "Winograd",
          "Deprecated: use conv-algorithm (TRUE: conv-algorithm=winograd, FALSE: "
          "conv-algorithm=direct)", FALSE, (GParamFlags) (flags | G_PARAM_DEPRECATED)));

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
   * GstResnetBackbone:model-instance-id:
   *
   * Share one loaded model between the elements of this process that give the same id (weights
   * loaded once, one engine and one thread pool), and batch their frames (see
   * #GstResnetBackbone:batch-size). The first element to start loads the model; the others must
   * agree on its settings (config-file, weights, out-features, engine, device, precision,
   * num-threads, conv-algorithm, allow-tf32, input-format, pixel-mean, pixel-std, batch-size,
   * batch-timeout): a mismatch fails their start with an error naming the property and both
   * values. Resize settings and size-divisibility may differ per element. The model lives while
   * any of them runs; a state change, error, flush or EOS of one never blocks the others. Frames
   * of a shared model are read in system memory. Empty (the default): a private model.
   */
  g_object_class_install_property (gobject_class, PROP_MODEL_INSTANCE_ID,
      g_param_spec_string ("model-instance-id", "Model instance id",
          "Share the model (and batch frames) with the elements of this process that give the "
          "same id; empty = a private model", nullptr, flags));

  /**
   * GstResnetBackbone:batch-size:
   *
   * With #GstResnetBackbone:model-instance-id: the most frames the shared model runs in one
   * forward. Frames of the elements sharing it are gathered until batch-size frames wait or the
   * oldest has waited #GstResnetBackbone:batch-timeout, then run together as soon as the engine
   * is free; each element gets its own frame's levels (rows of the batch's outputs, no copy).
   * Frames whose network inputs differ in size run in separate batches (nothing is padded to
   * another frame's size). A private model runs each frame alone.
   */
  g_object_class_install_property (gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint ("batch-size", "Batch size",
          "Most frames of the elements sharing a model-instance-id run in one forward", 1,
          backbone::BatchOptions::kMaxBatchSize, DEFAULT_BATCH_SIZE, flags));

  /**
   * GstResnetBackbone:batch-timeout:
   *
   * With #GstResnetBackbone:model-instance-id: how long (nanoseconds) the oldest waiting frame
   * waits for others before its batch runs with fewer than batch-size frames. 0: a frame runs as
   * soon as the engine is free (frames that arrived while it was busy run together). The
   * element's latency includes it.
   */
  g_object_class_install_property (gobject_class, PROP_BATCH_TIMEOUT,
      g_param_spec_uint64 ("batch-timeout", "Batch timeout",
          "How long (ns) the oldest frame waits for a full batch (with model-instance-id)", 0,
          MAX_BATCH_TIMEOUT, DEFAULT_BATCH_TIMEOUT, flags));

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
  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_CONV_ALGORITHM, (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_INPUT_FORMAT, (GstPluginAPIFlags) 0);
  gst_type_mark_as_plugin_api (GST_TYPE_RESNET_BACKBONE_RESIZE, (GstPluginAPIFlags) 0);
}
