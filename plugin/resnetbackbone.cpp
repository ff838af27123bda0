/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone: detectron2's ResNet backbone as an in-place GstBaseTransform. The video passes
 * through unchanged; each processed frame gets a GstFeatureMeta with the multi-level feature maps.
 * This file: the GObject class, the GstBaseTransform vfuncs and the streaming policy (which frame
 * is inferred, QoS, feature memory, errors, latency). The model comes from the backbone library
 * (resnetbackbone_model.cpp), properties are in resnetbackbone_props.cpp, one frame's inference in
 * resnetbackbone_infer.cpp, the CUDA side in resnetbackbone_cuda.cpp.
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
 * With a config whose MODEL.BACKBONE.NAME is build_resnet_fpn_backbone (e.g. configs/R-50-FPN.yaml)
 * or build_retinanet_resnet_fpn_backbone (configs/RetinaNet-R-50-FPN.yaml), the element runs
 * detectron2's FPN on that ResNet and the levels are the pyramid's: p2 .. p6 (strides 4 .. 64;
 * RetinaNet p3 .. p7, strides 8 .. 128), each with MODEL.FPN.OUT_CHANNELS channels, all of them by
 * default (#GstResnetBackbone:out-features selects some, and may add outputs of the bottom-up such
 * as res5). The frame is then padded to a multiple of the FPN's size_divisibility (32) as
 * detectron2's model pads it, unless #GstResnetBackbone:size-divisibility sets another multiple of
 * it. Weights of an ImageNet ResNet alone load the bottom-up; the FPN's own layers are then seeded
 * and a warning says that the pyramid is not that of a trained model.
 *
 * Each level's data is the backbone's own output storage wrapped in a read-only GstBuffer, without
 * a copy. Storage still referenced downstream is never reused. What downstream may hold at once
 * is bounded (#GstResnetBackbone:feature-memory-limit, 512 MiB by default, and optionally
 * #GstResnetBackbone:pool-size): beyond it the element waits at most
 * #GstResnetBackbone:pool-timeout for downstream to release features, then passes the frame
 * without features (a QoS message counts it, a warning says why). The streaming thread never
 * waits on downstream without a bound, so pipelines whose elements keep frames (encoders with
 * lookahead, muxers, sinks keeping their last sample, a tee to several of them) always run.
 *
 * The model is loaded in the READY to PAUSED transition: a missing or bad config or weights file,
 * an unknown out feature, an engine this build lacks, a precision the engine does not run or an
 * unavailable device fails the state change with an error message naming the cause. The model's
 * properties cannot change while the element is PAUSED or PLAYING (a change is refused with a
 * warning); inference-interval, unique-id, qos, max-errors, latency and the feature memory
 * properties may.
 *
 * The engine (#GstResnetBackbone:engine, "auto" by default) and the arithmetic
 * (#GstResnetBackbone:precision) are chosen by property. Once the model is loaded, the element
 * says which engine runs, with its kernels, precision and thread count: in the debug log
 * (GST_DEBUG=resnetbackbone:4), in an INFO message on the bus (gst-launch-1.0 prints it unless
 * -q), and in the read-only #GstResnetBackbone:engine-description property.
 *
 * Live use: the element reports its processing latency from the first LATENCY query: when caps
 * are set it runs the model once on a blank frame of that size and reports the time until the
 * features are ready (#GstResnetBackbone:latency fixes it instead). With #GstResnetBackbone:qos
 * (TRUE by default) frames that are already late downstream skip inference and flow on without
 * features; no frame is ever dropped. The usual live line puts a leaky queue before the element,
 * so that frames arriving while it runs are dropped there rather than piling up:
 * `v4l2src ! videoconvert ! queue leaky=downstream max-size-buffers=1 ! resnetbackbone ! ...`.
 * A failed inference is tolerated #GstResnetBackbone:max-errors times in a row (a warning, the
 * frame passes without features) before the element errors out. GAP buffers flow without
 * inference. The read-only #GstResnetBackbone:stats property counts all of this.
 *
 * The meta carries the tags video, size and orientation: elements that scale the video update its
 * geometry, and elements that crop or flip drop it. A frame with a GstVideoCropMeta is inferred on
 * its crop rectangle (the meta's geometry describes the crop); the element does not offer crop
 * metas upstream in the allocation query.
 *
 * ## Example launch lines
 * |[
 * gst-launch-1.0 videotestsrc num-buffers=10 ! video/x-raw,width=320,height=240 ! resnetbackbone ! fakesink
 * ]| The built-in R-50 (detectron2's defaults), seeded weights, features res2 .. res5.
 * |[
 * gst-launch-1.0 v4l2src ! videoconvert ! queue leaky=downstream max-size-buffers=1 ! \
 *     resnetbackbone config-file=configs/R-50.yaml weights=R-50.pkl resize=shortest-edge \
 *     min-size=480 ! queue ! featureoverlay ! autovideosink
 * ]| A camera with MSRA's ImageNet R-50, resized as detectron2 does at test time.
 * |[
 * gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! videoconvert ! \
 *     resnetbackbone config-file=configs/R-50-FPN.yaml weights=model_final_280758.pkl \
 *     resize=shortest-edge out-features=p3,p4,p5 ! featuresink location=features/
 * ]| The pyramid of detectron2's Faster R-CNN R-50-FPN (model zoo), levels p3 .. p5 written to files.
 */

#include "resnetbackbone.h"

#include <gst/featuremeta/featuremeta.h>
#include <gst/video/video.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <string>

#include "backbone/error.h"
#include "resnetbackbone_private.h"
#include "videoframe.h"

GST_DEBUG_CATEGORY (gst_resnet_backbone_debug);
#define GST_CAT_DEFAULT gst_resnet_backbone_debug

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

gpointer
gst_resnet_backbone_parent_class_ptr (void)
{
  return parent_class;
}

static void gst_resnet_backbone_finalize (GObject * object);
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
static gboolean gst_resnet_backbone_propose_allocation (GstBaseTransform * trans,
    GstQuery * decide_query, GstQuery * query);
static GstFlowReturn gst_resnet_backbone_transform_ip (GstBaseTransform * trans, GstBuffer * buf);
static void gst_resnet_backbone_set_context (GstElement * element, GstContext * context);

static void
gst_resnet_backbone_class_init (GstResnetBackboneClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);

  gobject_class->finalize = gst_resnet_backbone_finalize;
  gobject_class->set_property = gst_resnet_backbone_set_property;
  gobject_class->get_property = gst_resnet_backbone_get_property;
  gst_resnet_backbone_install_properties (gobject_class);

  gst_element_class_set_static_metadata (element_class, "ResNet backbone",
      "Filter/Analyzer/Video",
      "Runs detectron2's ResNet backbone on each frame and attaches the multi-level feature maps "
      "as GstFeatureMeta; the video passes through unchanged", "gst-backbone developers");
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
  trans_class->propose_allocation = GST_DEBUG_FUNCPTR (gst_resnet_backbone_propose_allocation);
  trans_class->transform_ip = GST_DEBUG_FUNCPTR (gst_resnet_backbone_transform_ip);
  trans_class->transform_caps = GST_DEBUG_FUNCPTR (gst_resnet_backbone_transform_caps);
  trans_class->accept_caps = GST_DEBUG_FUNCPTR (gst_resnet_backbone_accept_caps);
  trans_class->passthrough_on_same_caps = FALSE;
  trans_class->transform_ip_on_passthrough = FALSE;
}

static void
gst_resnet_backbone_init (GstResnetBackbone * self)
{
  self->priv = new GstResnetBackbonePrivate ();
  gst_video_info_init (&self->priv->info);
  /* In place, and never passthrough: the buffer must be writable to take the meta. */
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);
  gst_base_transform_set_passthrough (GST_BASE_TRANSFORM (self), FALSE);
  /* The base class's own QoS drops late buffers: ours (the qos property) only skips inference. */
  gst_base_transform_set_qos_enabled (GST_BASE_TRANSFORM (self), FALSE);
}

static void
gst_resnet_backbone_finalize (GObject * object)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (object);

  delete self->priv;
  self->priv = nullptr;

  G_OBJECT_CLASS (parent_class)->finalize (object);
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
  gstbackbone::CudaContextPtr cuda;
  int cuda_device = 0;
  bool explicit_cuda = false;
  const bool want_cuda = gst_resnet_backbone_settings_want_cuda (settings, &cuda_device,
      &explicit_cuda);
  if (!priv->cuda_sharing.open (GST_ELEMENT (self), want_cuda, cuda_device, explicit_cuda,
          settings.engine, settings.device, &cuda))
    return FALSE;

  std::unique_ptr<Model> model;
  try {
    /* The whole load in the context: the engine uploads its weights there, and a model that fails
     * half-way is destroyed there. */
    gstbackbone::CudaContextScope scope (cuda);
    model = gst_resnet_backbone_load_model (self, settings);
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

  model->cuda_engine = model->engine->device ().is_cuda ();
  model->cuda_device = model->engine->device ().index;
  if (model->cuda_engine)
    model->cuda = cuda;
  /* A shared instance's batcher preprocesses frames on the host. */
  model->cuda_frames = model->cuda_engine && model->cuda != nullptr && !model->stream;
  if (!model->cuda_engine && cuda)
    priv->cuda_sharing.clear ();  /* device=auto: the engine did not come to run on CUDA */
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
  priv->interval_countdown = 0;
  priv->consecutive_errors = 0;
  priv->expected_bytes = 0;
  priv->warned_pool_full = FALSE;
  priv->warned_foreign_cuda = FALSE;
  {
    std::lock_guard<std::mutex> guard (priv->lock);
    priv->pool = std::make_shared<gstbackbone::FeaturePool> (
        gst_resnet_backbone_pool_limits (settings));
    priv->earliest_time = GST_CLOCK_TIME_NONE;
    priv->latencies.clear ();
    priv->warmup_latency = GST_CLOCK_TIME_NONE;
    priv->posted_latency = 0;
    priv->stats = Stats ();
    priv->qos_processed_at_flush = 0;
    priv->qos_dropped_at_flush = 0;
    priv->pool_stats = gstbackbone::FeaturePoolStats ();
    priv->stream = model->stream;
  }
  std::lock_guard<std::mutex> engine_guard (priv->engine_lock);
  priv->model = std::move (model);
  return TRUE;
}

static gboolean
gst_resnet_backbone_stop (GstBaseTransform * trans)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);
  GstResnetBackbonePrivate *priv = self->priv;

  {
    GstStructure *stats = gst_resnet_backbone_stats_structure (self);
    gchar *line = gst_structure_to_string (stats);
    GST_INFO_OBJECT (self, "stop: %s", line);
    g_free (line);
    gst_structure_free (stats);
  }
  {
    std::lock_guard<std::mutex> guard (priv->lock);
    if (priv->pool) {
      priv->pool->set_flushing (true);
      priv->pool_stats = priv->pool->stats ();
    }
    /* Buffers still held downstream keep their storage (and the pool's shared state) alive. */
    priv->pool.reset ();
    if (priv->stream)
      priv->stream->set_flushing (true);
    priv->stream.reset ();
  }
  std::unique_ptr<Model> model;
  {
    std::lock_guard<std::mutex> engine_guard (priv->engine_lock);
    model = std::move (priv->model);
  }
  if (model) {
    /* The engine is destroyed in its CUDA context (levels still held downstream keep their part
     * of it, and the context, alive). */
    const gstbackbone::CudaContextPtr cuda = model->cuda;
    try {
      gstbackbone::CudaContextScope scope (cuda);
      model.reset ();
    } catch (const std::exception &e) {
      GST_WARNING_OBJECT (self, "%s; releasing the engine without it", e.what ());
      model.reset ();
    }
  }
  priv->cuda_caps = -1;
  priv->cuda_input = FALSE;
  priv->cuda_sharing.clear ();
  priv->have_info = FALSE;
  return TRUE;
}

static void
gst_resnet_backbone_set_flushing (GstResnetBackbone * self, bool flushing)
{
  std::lock_guard<std::mutex> guard (self->priv->lock);
  if (self->priv->pool)
    self->priv->pool->set_flushing (flushing);
  /* A frame waiting for its batch returns at once; the other streams' frames wait on. */
  if (self->priv->stream)
    self->priv->stream->set_flushing (flushing);
  if (!flushing) {
    self->priv->earliest_time = GST_CLOCK_TIME_NONE;
    /* QoS messages count "since the last state change to READY or a flushing operation". */
    self->priv->qos_processed_at_flush = self->priv->stats.inferred;
    self->priv->qos_dropped_at_flush = self->priv->stats.skipped_qos + self->priv->stats.skipped_pool;
  }
}

static GstStateChangeReturn
gst_resnet_backbone_change_state (GstElement * element, GstStateChange transition)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (element);

  /* A streaming thread waiting for room must wake before the pads deactivate (which waits for
   * the streaming thread): there is no unlock vfunc in GstBaseTransform. */
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
  const bool same_size = self->priv->have_info &&
      GST_VIDEO_INFO_WIDTH (&info) == GST_VIDEO_INFO_WIDTH (&self->priv->info) &&
      GST_VIDEO_INFO_HEIGHT (&info) == GST_VIDEO_INFO_HEIGHT (&self->priv->info);
  self->priv->cuda_input = cuda_input;
  self->priv->info = info;
  self->priv->have_info = TRUE;
  if (!same_size)
    self->priv->expected_bytes = 0;
  /* Engines may choose their kernels per input shape, at the first frame of it. */
  self->priv->describe_pending = TRUE;
  /* The latency is known before the first frame (and the engine has set up for the shape). */
  gst_resnet_backbone_ensure_warm_up (self, &info, TRUE);
  return TRUE;
}

static void
gst_resnet_backbone_set_context (GstElement * element, GstContext * context)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (element);

  /* The device of the properties (cuda:N; 0 for auto): a context of another device is refused. */
  GST_OBJECT_LOCK (self);
  const std::string device_name = self->priv->settings.device;
  GST_OBJECT_UNLOCK (self);
  int device = 0;
  try {
    const backbone::Device d = backbone::Device::parse (device_name);
    device = d.is_cuda ()? d.index : 0;
  } catch (const std::exception &) {
    /* "auto" */
  }
  self->priv->cuda_sharing.set_context (element, context, device);
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
      /* A flush restarts the inference-interval phase (serialised with the streaming thread). */
      self->priv->interval_countdown = 0;
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
    /* Asked before any frame: measure now, on the caps upstream will send when they are known. */
    GST_OBJECT_LOCK (self);
    const bool fixed = GST_CLOCK_TIME_IS_VALID (self->priv->settings.latency);
    GST_OBJECT_UNLOCK (self);
    if (!fixed) {
      GstVideoInfo info;
      gboolean have = FALSE;
      if (self->priv->have_info) {
        info = self->priv->info;
        have = TRUE;
      } else {
        have = gst_resnet_backbone_peer_video_info (self, &info);
      }
      if (have)
        gst_resnet_backbone_ensure_warm_up (self, &info, FALSE);
    }
    const GstClockTime own = gst_resnet_backbone_own_latency (self);
    min += own;
    if (GST_CLOCK_TIME_IS_VALID (max))
      max += own;
    GST_DEBUG_OBJECT (self, "latency: ours %" GST_TIME_FORMAT ", total min %" GST_TIME_FORMAT
        " max %" GST_TIME_FORMAT, GST_TIME_ARGS (own), GST_TIME_ARGS (min), GST_TIME_ARGS (max));
    gst_query_set_latency (query, live, min, max);
    return TRUE;
  }
  if (self->priv->cuda_sharing.handle_query (GST_ELEMENT (self), query))
    return TRUE;
  if (!GST_BASE_TRANSFORM_CLASS (parent_class)->query (trans, direction, query))
    return FALSE;
  /* Without a peer the caps answer is the pad template, which lists CUDA memory. */
  if (GST_QUERY_TYPE (query) == GST_QUERY_CAPS && !gst_resnet_backbone_cuda_caps_allowed (self)) {
    GstCaps *caps = nullptr;
    gst_query_parse_caps_result (query, &caps);
    if (caps && gst_resnet_backbone_caps_have_cuda_memory (caps)) {
      GstCaps *filtered = gst_resnet_backbone_caps_without_cuda_memory (caps);
      gst_query_set_caps_result (query, filtered);
      gst_caps_unref (filtered);
    }
  }
  return TRUE;
}

/* Upstream may crop by attaching a GstVideoCropMeta instead of copying when the allocation query
 * offers it. The element infers on such a crop, but does not ask for it: the crop meta API is
 * taken out of what it proposes upstream. */
static gboolean
gst_resnet_backbone_propose_allocation (GstBaseTransform * trans, GstQuery * decide_query,
    GstQuery * query)
{
  if (!GST_BASE_TRANSFORM_CLASS (parent_class)->propose_allocation (trans, decide_query, query))
    return FALSE;
  guint index = 0;
  while (gst_query_find_allocation_meta (query, GST_VIDEO_CROP_META_API_TYPE, &index))
    gst_query_remove_nth_allocation_meta (query, index);
  return TRUE;
}

/* A QoS message for a frame that passed without features (late, or no room for its features). */
static void
gst_resnet_backbone_post_qos (GstResnetBackbone * self, GstBuffer * buf, GstClockTime running_time,
    GstClockTimeDiff jitter)
{
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  guint64 processed, dropped;
  {
    std::lock_guard<std::mutex> guard (self->priv->lock);
    processed = self->priv->stats.inferred - self->priv->qos_processed_at_flush;
    dropped = self->priv->stats.skipped_qos + self->priv->stats.skipped_pool -
        self->priv->qos_dropped_at_flush;
  }
  const GstClockTime stream_time = GST_BUFFER_PTS_IS_VALID (buf) ?
      gst_segment_to_stream_time (&trans->segment, GST_FORMAT_TIME, GST_BUFFER_PTS (buf)) :
      GST_CLOCK_TIME_NONE;
  GstMessage *msg = gst_message_new_qos (GST_OBJECT (self), FALSE, running_time, stream_time,
      GST_BUFFER_PTS (buf), GST_BUFFER_DURATION (buf));
  gst_message_set_qos_values (msg, jitter, 1.0, 1000000);
  gst_message_set_qos_stats (msg, GST_FORMAT_BUFFERS, processed, dropped);
  gst_element_post_message (GST_ELEMENT (self), msg);
}

static GstFlowReturn
gst_resnet_backbone_transform_ip (GstBaseTransform * trans, GstBuffer * buf)
{
  GstResnetBackbone *self = GST_RESNET_BACKBONE (trans);
  GstResnetBackbonePrivate *priv = self->priv;

  if (!priv->have_info) {
    /* Upstream's error to report (GstBaseTransform posts not-negotiated). */
    GST_DEBUG_OBJECT (self, "received a buffer before caps");
    return GST_FLOW_NOT_NEGOTIATED;
  }
  GST_OBJECT_LOCK (self);
  const guint interval = MAX (priv->settings.inference_interval, 1u);
  const gboolean qos = priv->settings.qos;
  const gint64 timeout_us = (gint64) (priv->settings.pool_timeout / GST_USECOND);
  const guint unique_id = priv->settings.unique_id;
  const gint max_errors = priv->settings.max_errors;
  GST_OBJECT_UNLOCK (self);

  std::shared_ptr<gstbackbone::FeaturePool> pool;
  GstClockTime earliest;
  guint64 index;
  {
    std::lock_guard<std::mutex> guard (priv->lock);
    pool = priv->pool;
    earliest = priv->earliest_time;
    index = priv->stats.frames++;
  }
  if (!pool)
    return GST_FLOW_FLUSHING;

  /* inference-interval: due every Nth frame; a due frame skipped below keeps the phase. */
  priv->interval_countdown = MIN (priv->interval_countdown, interval - 1);
  if (priv->interval_countdown > 0) {
    priv->interval_countdown--;
    std::lock_guard<std::mutex> guard (priv->lock);
    priv->stats.skipped_interval++;
    GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": not due (inference-interval %u)", index,
        interval);
    return GST_FLOW_OK;
  }
  priv->interval_countdown = interval - 1;

  /* A GAP buffer has no meaningful pixels. */
  if (GST_BUFFER_FLAG_IS_SET (buf, GST_BUFFER_FLAG_GAP)) {
    std::lock_guard<std::mutex> guard (priv->lock);
    priv->stats.skipped_gap++;
    GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": GAP buffer, no inference", index);
    return GST_FLOW_OK;
  }

  /* QoS: a frame already late downstream skips inference and flows on. */
  const GstClockTime running_time = GST_BUFFER_PTS_IS_VALID (buf) ?
      gst_segment_to_running_time (&trans->segment, GST_FORMAT_TIME, GST_BUFFER_PTS (buf)) :
      GST_CLOCK_TIME_NONE;
  if (qos && GST_CLOCK_TIME_IS_VALID (earliest) && GST_CLOCK_TIME_IS_VALID (running_time) &&
      running_time <= earliest) {
    {
      std::lock_guard<std::mutex> guard (priv->lock);
      priv->stats.skipped_qos++;
    }
    GST_DEBUG_OBJECT (self, "frame %" G_GUINT64_FORMAT " is late (running time %" GST_TIME_FORMAT
        " <= earliest %" GST_TIME_FORMAT "): skipping inference", index,
        GST_TIME_ARGS (running_time), GST_TIME_ARGS (earliest));
    gst_resnet_backbone_post_qos (self, buf, running_time,
        GST_CLOCK_DIFF (running_time, earliest));
    return GST_FLOW_OK;
  }

  /* Room for the features before anything is computed: waits at most pool-timeout. */
  std::shared_ptr<gstbackbone::FeatureSlot> slot;
  switch (pool->acquire (priv->expected_bytes, timeout_us, &slot)) {
    case gstbackbone::FeaturePool::Acquire::Flushing:
      GST_DEBUG_OBJECT (self, "flushing while waiting for room for features");
      return GST_FLOW_FLUSHING;
    case gstbackbone::FeaturePool::Acquire::Full:{
      const gstbackbone::FeaturePoolStats ps = pool->stats ();
      const gstbackbone::FeaturePoolLimits limits = pool->limits ();
      {
        std::lock_guard<std::mutex> guard (priv->lock);
        priv->stats.skipped_pool++;
      }
      GST_DEBUG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": downstream holds %u frames' features "
          "(%" G_GUINT64_FORMAT " bytes): passing it without features", index, ps.in_use,
          ps.bytes_in_use);
      if (!priv->warned_pool_full) {
        priv->warned_pool_full = TRUE;
        GST_ELEMENT_WARNING (self, RESOURCE, NO_SPACE_LEFT,
            ("Downstream holds the features of %u frame(s) (%" G_GUINT64_FORMAT " bytes), the most "
                "allowed (pool-size %u, feature-memory-limit %" G_GUINT64_FORMAT " bytes): frames "
                "pass without features until it releases some", ps.in_use, ps.bytes_in_use,
                limits.max_outputs, limits.max_bytes),
            ("elements keeping frames (encoders' lookahead, muxers, sinks keeping the last "
                "sample, queues) hold the features riding them; raise feature-memory-limit, or "
                "let them release the frames sooner"));
      }
      gst_resnet_backbone_post_qos (self, buf, running_time, 0);
      return GST_FLOW_OK;
    }
    case gstbackbone::FeaturePool::Acquire::Ok:
      break;
  }
  if (!pool->stats ().stalled)
    priv->warned_pool_full = FALSE;

  std::unique_lock<std::mutex> engine_guard (priv->engine_lock);
  if (!priv->model)
    return GST_FLOW_FLUSHING;
  Model & model = *priv->model;
  GstVideoFrame frame;
  /* NO_REF: a mapped frame must not hold a second reference, or the buffer is not writable
   * for the meta any more. */
  int map_flags = GST_MAP_READ | GST_VIDEO_FRAME_MAP_FLAG_NO_REF;
  bool on_device = false;
  if (priv->cuda_input && model.cuda_frames) {
    on_device = gstbackbone::buffer_in_cuda_context (buf, model.cuda);
    if (!on_device && !priv->warned_foreign_cuda) {
      priv->warned_foreign_cuda = TRUE;
      GST_WARNING_OBJECT (self, "frames in CUDA memory of another CUDA context (or not CUDA "
          "memory at all): reading them through host memory (slower)");
    }
  }
  if (on_device)
    map_flags |= gstbackbone::cuda_map_flags ();
  if (!gst_video_frame_map (&frame, &priv->info, buf, (GstMapFlags) map_flags)) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, (nullptr), ("cannot map the video frame for reading%s",
            on_device ? " (CUDA memory)" : ""));
    return GST_FLOW_ERROR;
  }
  const gint64 t0 = g_get_monotonic_time ();
  std::string failure;
  guint64 bytes = 0;
  GstClockTime batch_wait = 0;
  try {
    const backbone::FrameView view = gst_resnet_backbone_frame_view (self, model, &frame, buf,
        on_device);
    bytes = gst_resnet_backbone_infer (self, model, slot, view, on_device, buf, unique_id,
        &batch_wait);
  } catch (const FlushingInterrupt &) {
    gst_video_frame_unmap (&frame);
    GST_DEBUG_OBJECT (self, "flushing while the frame waited for its batch");
    return GST_FLOW_FLUSHING;
  } catch (const std::exception &e) {
    failure = e.what ();
  } catch (...) {
    failure = "unknown exception";
  }
  gst_video_frame_unmap (&frame);
  /* A shared instance's wait for other frames is not inference time (the latency adds
   * batch-timeout). */
  const GstClockTime elapsed = (GstClockTime) (g_get_monotonic_time () - t0) * GST_USECOND;
  const GstClockTime took = elapsed > batch_wait ? elapsed - batch_wait : 0;
  const bool redescribe = failure.empty () && priv->describe_pending;
  if (redescribe) {
    priv->describe_pending = FALSE;
    gst_resnet_backbone_redescribe (self, model);
  }
  const bool cuda_engine = model.cuda_engine;
  engine_guard.unlock ();

  if (!failure.empty ()) {
    slot.reset ();
    priv->consecutive_errors++;
    if (max_errors >= 0 && priv->consecutive_errors > (guint) max_errors) {
      GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Inference failed: %s", failure.c_str ()),
          ("frame %" G_GUINT64_FORMAT ", %dx%d %s; %u failures in a row (max-errors %d)", index,
              GST_VIDEO_INFO_WIDTH (&priv->info), GST_VIDEO_INFO_HEIGHT (&priv->info),
              gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&priv->info)),
              priv->consecutive_errors, max_errors));
      return GST_FLOW_ERROR;
    }
    {
      std::lock_guard<std::mutex> guard (priv->lock);
      priv->stats.errors++;
    }
    GST_ELEMENT_WARNING (self, STREAM, FAILED, ("Inference failed: %s", failure.c_str ()),
        ("frame %" G_GUINT64_FORMAT " passes without features (%u failures in a row, max-errors "
            "%d)", index, priv->consecutive_errors, max_errors));
    return GST_FLOW_OK;
  }
  priv->consecutive_errors = 0;
  gstbackbone::FeaturePool::set_bytes (slot, bytes);
  priv->expected_bytes = bytes;
  slot.reset ();
  {
    std::lock_guard<std::mutex> guard (priv->lock);
    priv->stats.inferred++;
    priv->stats.time_total += took;
    priv->stats.time_max = MAX (priv->stats.time_max, took);
  }
  GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT ": inference took %" GST_TIME_FORMAT ", %"
      G_GUINT64_FORMAT " bytes of features", index, GST_TIME_ARGS (took), bytes);
  /* An engine that only queues work (cuda) returns before the features are ready: its latency
   * is the warm-up's, measured until ready. */
  if (!cuda_engine && gst_resnet_backbone_record_latency (self, took, false))
    gst_element_post_message (GST_ELEMENT (self), gst_message_new_latency (GST_OBJECT (self)));
  return GST_FLOW_OK;
}
