/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone's state, shared by its source files: resnetbackbone.cpp (the GObject class, the
 * GstBaseTransform vfuncs, the streaming policy), resnetbackbone_props.cpp (properties),
 * resnetbackbone_caps.cpp (caps), resnetbackbone_model.cpp (the properties to the library's model),
 * resnetbackbone_infer.cpp (one frame through the engine into the meta, warm-up, latency, stats),
 * resnetbackbone_cuda.cpp (CUDA context sharing, device-memory levels).
 */
#ifndef __GST_RESNET_BACKBONE_PRIVATE_H__
#define __GST_RESNET_BACKBONE_PRIVATE_H__

#include <gst/video/video.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backbone/engine.h"
#include "backbone/frame.h"
#include "backbone/model_instance.h"
#include "featurepool.h"
#include "resnetbackbone.h"
#include "resnetbackbone_cuda.h"

GST_DEBUG_CATEGORY_EXTERN (gst_resnet_backbone_debug);

typedef enum
{
  GST_RESNET_BACKBONE_PRECISION_FP32,
  GST_RESNET_BACKBONE_PRECISION_FP16,
  GST_RESNET_BACKBONE_PRECISION_BF16,
  GST_RESNET_BACKBONE_PRECISION_AUTO,
} GstResnetBackbonePrecision;

typedef enum
{
  GST_RESNET_BACKBONE_CONV_ALGORITHM_AUTO,
  GST_RESNET_BACKBONE_CONV_ALGORITHM_DIRECT,
  GST_RESNET_BACKBONE_CONV_ALGORITHM_WINOGRAD,
} GstResnetBackboneConvAlgorithm;

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

#define DEFAULT_ENGINE "auto"
#define DEFAULT_DEVICE "auto"
#define DEFAULT_PRECISION GST_RESNET_BACKBONE_PRECISION_FP32
#define DEFAULT_NUM_THREADS 0
#define DEFAULT_CONV_ALGORITHM GST_RESNET_BACKBONE_CONV_ALGORITHM_AUTO
#define DEFAULT_ALLOW_TF32 FALSE
#define DEFAULT_INPUT_FORMAT GST_RESNET_BACKBONE_INPUT_FORMAT_CONFIG
#define DEFAULT_RESIZE GST_RESNET_BACKBONE_RESIZE_NONE
#define DEFAULT_MIN_SIZE 0
#define DEFAULT_MAX_SIZE 0
#define DEFAULT_WIDTH 0
#define DEFAULT_HEIGHT 0
#define DEFAULT_SIZE_DIVISIBILITY 0
#define DEFAULT_INFERENCE_INTERVAL 1
#define DEFAULT_POOL_SIZE 0
#define DEFAULT_FEATURE_MEMORY_LIMIT (G_GUINT64_CONSTANT (512) << 20)
#define DEFAULT_POOL_TIMEOUT GST_SECOND
#define MAX_POOL_TIMEOUT (60 * GST_SECOND)
#define DEFAULT_UNIQUE_ID 0
#define DEFAULT_QOS TRUE
#define DEFAULT_MAX_ERRORS 10
#define DEFAULT_LATENCY GST_CLOCK_TIME_NONE
#define DEFAULT_TENSOR_META TRUE
#define DEFAULT_BATCH_SIZE 1
#define DEFAULT_BATCH_TIMEOUT 0
#define MAX_BATCH_TIMEOUT (10 * GST_SECOND)

#define MAX_IMAGE_SIZE 16384
/* Inference times kept for the LATENCY query (the largest of them is reported). */
#define LATENCY_WINDOW 16

/* What the properties say; read under the object lock, applied at start() (the model's settings)
 * or at the next frame (those that may change while PLAYING). */
struct Settings {
  std::string config_file;
  std::string weights;
  std::string out_features;
  std::string engine = DEFAULT_ENGINE;
  std::string device = DEFAULT_DEVICE;
  GstResnetBackbonePrecision precision = DEFAULT_PRECISION;
  guint num_threads = DEFAULT_NUM_THREADS;
  GstResnetBackboneConvAlgorithm conv_algorithm = DEFAULT_CONV_ALGORITHM;
  gboolean allow_tf32 = DEFAULT_ALLOW_TF32;
  GstResnetBackboneInputFormat input_format = DEFAULT_INPUT_FORMAT;
  std::vector<double> pixel_mean, pixel_std;
  GstResnetBackboneResize resize = DEFAULT_RESIZE;
  guint min_size = DEFAULT_MIN_SIZE, max_size = DEFAULT_MAX_SIZE;
  guint width = DEFAULT_WIDTH, height = DEFAULT_HEIGHT;
  guint size_divisibility = DEFAULT_SIZE_DIVISIBILITY;
  std::string model_instance_id;  /* "": a private model */
  guint batch_size = DEFAULT_BATCH_SIZE;
  guint64 batch_timeout = DEFAULT_BATCH_TIMEOUT;
  /* Mutable while PLAYING. */
  guint inference_interval = DEFAULT_INFERENCE_INTERVAL;
  guint pool_size = DEFAULT_POOL_SIZE;
  guint64 feature_memory_limit = DEFAULT_FEATURE_MEMORY_LIMIT;
  guint64 pool_timeout = DEFAULT_POOL_TIMEOUT;
  guint unique_id = DEFAULT_UNIQUE_ID;
  gboolean qos = DEFAULT_QOS;
  gint max_errors = DEFAULT_MAX_ERRORS;
  GstClockTime latency = DEFAULT_LATENCY;
  gboolean tensor_meta = DEFAULT_TENSOR_META;
};

/* A loaded model, built in start() and freed in stop(). */
struct Model {
  /* A shared instance (model-instance-id) and this element's stream into its batcher; or none. */
  std::shared_ptr<backbone::ModelInstance> instance;
  std::shared_ptr<backbone::ModelInstance::Stream> stream;
  std::unique_ptr<backbone::Engine> own_engine;  /* a private model's */
  backbone::Engine *engine = nullptr;            /* own_engine, or the instance's */
  bool cuda_engine = false;      /* engine "cuda": levels stay on the GPU */
  int cuda_device = 0;           /* its N of cuda:N */
  gstbackbone::CudaContextPtr cuda;  /* the context it runs in (GstCudaContext), or none */
  bool cuda_frames = false;      /* takes frames in CUDA memory (cuda engine with a GstCudaContext) */
  std::string engine_description;  /* engine->describe () */
  backbone::FramePreprocessOptions preprocess;
  std::map<std::string, int> strides;  /* out feature -> stride in input pixels */
  std::string name;
};

/* What the element did, for the stats property and the log at stop. Under GstResnetBackbonePrivate::lock. */
struct Stats {
  guint64 frames = 0;            /* buffers seen */
  guint64 inferred = 0;          /* frames that got features */
  guint64 skipped_interval = 0;  /* not due (inference-interval) */
  guint64 skipped_qos = 0;       /* late (QoS) */
  guint64 skipped_pool = 0;      /* the feature memory was full */
  guint64 skipped_gap = 0;       /* GAP buffers */
  guint64 errors = 0;            /* failed inferences tolerated (max-errors) */
  GstClockTime time_total = 0;   /* inference time of the inferred frames */
  GstClockTime time_max = 0;
  /* Frames of a shared instance: the sizes of the batches they ran in, and their wait for one. */
  guint64 batched_frames = 0;      /* frames through the instance's batcher */
  guint64 batch_size_total = 0;    /* sum over them of their batch's size */
  GstClockTime batch_wait_total = 0, batch_wait_max = 0;
};

struct GstResnetBackbonePrivate {
  Settings settings;          /* under the object lock */
  std::string model_name;     /* under the object lock */
  std::string engine_description;  /* under the object lock */

  std::unique_ptr<Model> model;  /* between start() and stop() */
  /* Serialises the engine: the streaming thread's frames and a LATENCY query's warm-up. */
  std::mutex engine_lock;
  GstVideoInfo info;
  gboolean have_info = FALSE;
  gboolean describe_pending = FALSE;  /* describe the engine again after the next inference */
  guint interval_countdown = 0;  /* frames until the next one due (0: this one) */
  guint consecutive_errors = 0;
  guint64 expected_bytes = 0;    /* bytes of the last output (for the feature memory limit) */
  gboolean warned_pool_full = FALSE;  /* once per stall, on the bus */

  gboolean cuda_input = FALSE;   /* the negotiated caps are memory:CUDAMemory */
  gboolean warned_foreign_cuda = FALSE;
  /* Whether the pads offer memory:CUDAMemory: -1 before start() (from the properties), else
   * whether the loaded model takes CUDA frames. */
  std::atomic<int> cuda_caps {-1};
  gstbackbone::CudaContextSharing cuda_sharing;

  std::mutex lock;               /* guards pool, earliest_time, latency state, stats */
  std::shared_ptr<gstbackbone::FeaturePool> pool;
  /* The model's stream into a shared instance (none for a private model): flushed without the
   * engine lock, which the streaming thread holds while its frame waits for its batch. */
  std::shared_ptr<backbone::ModelInstance::Stream> stream;
  GstClockTime earliest_time = GST_CLOCK_TIME_NONE;
  std::deque<GstClockTime> latencies;
  GstClockTime warmup_latency = GST_CLOCK_TIME_NONE;  /* measured at caps (or by the query) */
  GstClockTime posted_latency = 0;
  Stats stats;
  /* stats.inferred and the skipped ones at the last flush: QoS messages count from there. */
  guint64 qos_processed_at_flush = 0, qos_dropped_at_flush = 0;
  gstbackbone::FeaturePoolStats pool_stats;  /* the last pool's, kept at stop() */
};

struct _GstResnetBackbone
{
  GstBaseTransform parent;
  GstResnetBackbonePrivate *priv;
};

/* Thrown by gst_resnet_backbone_infer when the element flushes while its frame waits for a batch
 * of a shared instance. */
struct FlushingInterrupt {};

/* resnetbackbone_props.cpp */
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
  PROP_CONV_ALGORITHM,
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
  PROP_FEATURE_MEMORY_LIMIT,
  PROP_POOL_TIMEOUT,
  PROP_UNIQUE_ID,
  PROP_QOS,
  PROP_MAX_ERRORS,
  PROP_LATENCY,
  PROP_MODEL_NAME,
  PROP_ENGINE_DESCRIPTION,
  PROP_STATS,
  PROP_TENSOR_META,
  PROP_MODEL_INSTANCE_ID,
  PROP_BATCH_SIZE,
  PROP_BATCH_TIMEOUT,
};

void gst_resnet_backbone_install_properties (GObjectClass * gobject_class);
void gst_resnet_backbone_set_property (GObject * object, guint prop_id, const GValue * value,
    GParamSpec * pspec);
void gst_resnet_backbone_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec);
/* The pool limits of the settings. */
gstbackbone::FeaturePoolLimits gst_resnet_backbone_pool_limits (const Settings & s);

/* resnetbackbone.cpp: GstBaseTransform's class, for the vfuncs of the other files. */
gpointer gst_resnet_backbone_parent_class_ptr (void);

/* resnetbackbone_caps.cpp */
/* @caps without its structures in CUDA memory. (transfer full) */
GstCaps *gst_resnet_backbone_caps_without_cuda_memory (GstCaps * caps);
gboolean gst_resnet_backbone_caps_have_cuda_memory (GstCaps * caps);
/* Whether the pads offer memory:CUDAMemory now. */
bool gst_resnet_backbone_cuda_caps_allowed (GstResnetBackbone * self);
GstCaps *gst_resnet_backbone_transform_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps, GstCaps * filter);
gboolean gst_resnet_backbone_accept_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps);
/* Fixed video caps (in system memory) upstream offers before any caps event. */
gboolean gst_resnet_backbone_peer_video_info (GstResnetBackbone * self, GstVideoInfo * info);

/* resnetbackbone_model.cpp */
/* The failure of one step of start(), with the GStreamer error it is posted as. */
struct StartError {
  GQuark domain;
  gint code;
  std::string message;
};
/* Whether the properties ask for the cuda engine, on which device, and whether they name CUDA. */
bool gst_resnet_backbone_settings_want_cuda (const Settings & s, int *device, bool *explicit_request);
/* Loads the model of @s. Throws StartError. */
std::unique_ptr<Model> gst_resnet_backbone_load_model (GstResnetBackbone * self, const Settings & s);

/* resnetbackbone_infer.cpp */
/* Runs the backbone on one mapped frame and adds the meta. Returns the bytes of the features.
 * Throws on failure. */
/* The frame to infer on: the buffer's crop rectangle (GstVideoCropMeta) or the whole frame. */
backbone::FrameView gst_resnet_backbone_frame_view (GstResnetBackbone * self, const Model & model,
    const GstVideoFrame * frame, GstBuffer * buf, bool on_device);
guint64 gst_resnet_backbone_infer (GstResnetBackbone * self, Model & model,
    const std::shared_ptr<gstbackbone::FeatureSlot> & slot, const backbone::FrameView & view,
    bool on_device, GstBuffer * buf, guint unique_id, GstClockTime * batch_wait);
/* One forward on a black frame of @info's size, discarded, timed until its features are ready
 * (a first one untimed: engines set up per shape). The time, or GST_CLOCK_TIME_NONE on failure. */
GstClockTime gst_resnet_backbone_warm_up (GstResnetBackbone * self, Model & model,
    const GstVideoInfo * info);
/* Our latency now: the latency property, else the largest of the warm-up and recent inferences
 * as last reported (it changes only with a LATENCY message). */
GstClockTime gst_resnet_backbone_own_latency (GstResnetBackbone * self);
/* Records a measured time; TRUE when the reported latency grew and a LATENCY message is due. */
gboolean gst_resnet_backbone_record_latency (GstResnetBackbone * self, GstClockTime t, bool warm_up);
/* The warm-up on @info unless one ran for this start (posting a LATENCY message when @post). */
void gst_resnet_backbone_ensure_warm_up (GstResnetBackbone * self, const GstVideoInfo * info,
    gboolean post);
/* The stats as the stats property's structure. (transfer full) */
GstStructure *gst_resnet_backbone_stats_structure (GstResnetBackbone * self);
/* Updates engine-description after the first inference of a start or of new caps. */
void gst_resnet_backbone_redescribe (GstResnetBackbone * self, Model & model);

#endif /* __GST_RESNET_BACKBONE_PRIVATE_H__ */
