/* SPDX-License-Identifier: Apache-2.0
 *
 * featuresink: writes the feature maps of every frame to safetensors files.
 */
/**
 * SECTION:element-featuresink
 * @title: featuresink
 *
 * Batch feature extraction: writes the #GstFeatureMeta of every buffer (the first one, or the one
 * of the producer with #GstFeatureSink:unique-id) to safetensors files in #GstFeatureSink:location.
 *
 * Files are named `<file-prefix>-00000.safetensors`, `<file-prefix>-00001.safetensors`, ... A new
 * file starts when the shape of any level changes (or the set of levels), when the source caps
 * change, at a new stream (stream-start), and after #GstFeatureSink:max-frames frames. Each file
 * holds one tensor per level, named by the level ("res2", "p3", ...) and shaped [frames, C, H, W] in
 * #GstFeatureSink:dtype, an int64 tensor `pts` (nanoseconds, -1 for GST_CLOCK_TIME_NONE), and
 * `__metadata__` with the model name, the producer's unique-id, the source caps, the frame
 * geometry (frame, input and padded sizes) and the level strides.
 *
 * Beside the files, `index.json` lists every file: its frame range (indices of the buffers that
 * reached the sink, counting those without features), frame count, first and last pts, shapes,
 * strides, dtype, source caps, model name and unique-id; and the totals, among them
 * `frames_without_features` (buffers without a matching meta, e.g. frames that resnetbackbone's
 * inference-interval skipped: they are counted, not written) and `frames_seen`; and `end`, how
 * the run ended: `eos`, `stopped` (the element went to READY without EOS: the open file is
 * completed first) or `error` (the stream failed: the files completed before the error). It is
 * written once, atomically like the files, when the run ends: at EOS, or at the transition to
 * READY when no EOS came. So an index.json present is complete; the index of an earlier run is
 * removed when the element starts, which also fails when the location is not writable. Use one
 * featuresink per location.
 *
 * Memory stays bounded whatever max-frames is: each level of the open file is appended frame by
 * frame to a spool file `<file>.<level>.spool.tmp` (converted to the output dtype), and when the
 * file is complete (the safetensors header needs the frame count first) the header and the spools
 * are assembled into `<file>.tmp`, which is fsync'ed and renamed to its final name; then the
 * spools are removed. A crash therefore never leaves a partial file under a final name, only
 * `.tmp` files. The open file is completed at EOS, and at the transition to READY when no EOS
 * came and the stream did not fail.
 * Files of an earlier run with the same names are replaced.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 -e filesrc location=clip.mp4 ! decodebin ! videoconvert ! resnetbackbone !
 *     featuresink location=features/ dtype=float16 levels=res4,res5
 * ]|
 */
#include "featuresink.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <string>

#include <gst/featuremeta/featuremeta.h>

#include "featurefiles.h"

GST_DEBUG_CATEGORY_STATIC (gst_feature_sink_debug);
#define GST_CAT_DEFAULT gst_feature_sink_debug

using backbone::gst::FeatureFiles;
using backbone::gst::FeatureFilesOptions;
using backbone::gst::SafetensorsDType;
using backbone::gst::StreamError;
using backbone::gst::WriteError;

/**
 * GstFeatureSinkDType:
 * @GST_FEATURE_SINK_DTYPE_FLOAT32: 32-bit floats (F32)
 * @GST_FEATURE_SINK_DTYPE_FLOAT16: IEEE half floats (F16), rounded to nearest even
 *
 * Element type of the level tensors written by featuresink.
 */
typedef enum {
  GST_FEATURE_SINK_DTYPE_FLOAT32 = 0,
  GST_FEATURE_SINK_DTYPE_FLOAT16 = 1,
} GstFeatureSinkDType;

#define GST_TYPE_FEATURE_SINK_DTYPE (gst_feature_sink_dtype_get_type ())
static GType
gst_feature_sink_dtype_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_FEATURE_SINK_DTYPE_FLOAT32, "32-bit float", "float32"},
    {GST_FEATURE_SINK_DTYPE_FLOAT16, "16-bit float (half)", "float16"},
    {0, nullptr, nullptr},
  };
  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstFeatureSinkDType", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define DEFAULT_LOCATION "."
#define DEFAULT_FILE_PREFIX "features"
#define DEFAULT_MAX_FRAMES 256
#define DEFAULT_DTYPE GST_FEATURE_SINK_DTYPE_FLOAT32
#define DEFAULT_LEVELS ""
#define DEFAULT_UNIQUE_ID -1

enum
{
  PROP_0,
  PROP_LOCATION,
  PROP_FILE_PREFIX,
  PROP_MAX_FRAMES,
  PROP_DTYPE,
  PROP_LEVELS,
  PROP_UNIQUE_ID,
};

/* *INDENT-OFF* */
struct GstFeatureSinkPrivate {
  std::mutex lock;
  /* properties */
  std::string location = DEFAULT_LOCATION;
  std::string file_prefix = DEFAULT_FILE_PREFIX;
  guint max_frames = DEFAULT_MAX_FRAMES;
  GstFeatureSinkDType dtype = DEFAULT_DTYPE;
  std::string levels = DEFAULT_LEVELS;
  gint unique_id = DEFAULT_UNIQUE_ID;

  /* streaming state, from start() to stop() */
  gint want_id = DEFAULT_UNIQUE_ID;
  std::unique_ptr<FeatureFiles> files;
  gboolean seen_stream_start = FALSE;
  gboolean failed = FALSE;
};
/* *INDENT-ON* */

struct _GstFeatureSink
{
  GstBaseSink parent;
  GstFeatureSinkPrivate *priv;
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS ("video/x-raw(ANY)"));

#define gst_feature_sink_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstFeatureSink, gst_feature_sink, GST_TYPE_BASE_SINK,
    GST_DEBUG_CATEGORY_INIT (gst_feature_sink_debug, "featuresink", 0,
        "debug category for featuresink element"));
GST_ELEMENT_REGISTER_DEFINE (featuresink, "featuresink", GST_RANK_NONE, GST_TYPE_FEATURE_SINK);

static void gst_feature_sink_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_feature_sink_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static void gst_feature_sink_finalize (GObject * object);
static gboolean gst_feature_sink_start (GstBaseSink * sink);
static gboolean gst_feature_sink_stop (GstBaseSink * sink);
static GstStateChangeReturn gst_feature_sink_change_state (GstElement * element,
    GstStateChange transition);
static gboolean gst_feature_sink_set_caps (GstBaseSink * sink, GstCaps * caps);
static gboolean gst_feature_sink_event (GstBaseSink * sink, GstEvent * event);
static GstFlowReturn gst_feature_sink_render (GstBaseSink * sink, GstBuffer * buffer);

static void
gst_feature_sink_class_init (GstFeatureSinkClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseSinkClass *base_sink_class = GST_BASE_SINK_CLASS (klass);

  gobject_class->set_property = gst_feature_sink_set_property;
  gobject_class->get_property = gst_feature_sink_get_property;
  gobject_class->finalize = gst_feature_sink_finalize;

  /**
   * GstFeatureSink:location:
   *
   * Output directory, created (with its parents) when the element starts.
   */
  g_object_class_install_property (gobject_class, PROP_LOCATION,
      g_param_spec_string ("location", "Location",
          "Output directory for the safetensors files and index.json (created if needed)",
          DEFAULT_LOCATION, (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
              GST_PARAM_MUTABLE_READY)));
  /**
   * GstFeatureSink:file-prefix:
   *
   * Files are named `<file-prefix>-NNNNN.safetensors`.
   */
  g_object_class_install_property (gobject_class, PROP_FILE_PREFIX,
      g_param_spec_string ("file-prefix", "File prefix",
          "Prefix of the file names: <file-prefix>-NNNNN.safetensors",
          DEFAULT_FILE_PREFIX, (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
              GST_PARAM_MUTABLE_READY)));
  /**
   * GstFeatureSink:max-frames:
   *
   * Most frames in one file; a longer run of one shape continues in the next file.
   */
  g_object_class_install_property (gobject_class, PROP_MAX_FRAMES,
      g_param_spec_uint ("max-frames", "Max frames",
          "Most frames per file (a new file starts after that many)",
          1, G_MAXINT, DEFAULT_MAX_FRAMES, (GParamFlags) (G_PARAM_READWRITE |
              G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY)));
  /**
   * GstFeatureSink:dtype:
   *
   * Element type of the level tensors; levels of other types are converted (float16 rounds to
   * nearest even).
   */
  g_object_class_install_property (gobject_class, PROP_DTYPE,
      g_param_spec_enum ("dtype", "Data type",
          "Element type of the level tensors in the files",
          GST_TYPE_FEATURE_SINK_DTYPE, DEFAULT_DTYPE, (GParamFlags) (G_PARAM_READWRITE |
              G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY)));
  /**
   * GstFeatureSink:levels:
   *
   * Comma-separated levels to write ("res4,res5", or an FPN's "p3,p4,p5"); empty writes every
   * level of the meta. A listed level missing from a frame's meta is an error.
   */
  g_object_class_install_property (gobject_class, PROP_LEVELS,
      g_param_spec_string ("levels", "Levels",
          "Comma-separated levels to write, e.g. \"res4,res5\" or \"p3,p4\" (empty = every level of "
          "the meta)",
          DEFAULT_LEVELS, (GParamFlags) (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
              GST_PARAM_MUTABLE_READY)));
  /**
   * GstFeatureSink:unique-id:
   *
   * Write the meta of the producer with this unique-id; -1 takes the first feature meta of each
   * buffer.
   */
  g_object_class_install_property (gobject_class, PROP_UNIQUE_ID,
      g_param_spec_int ("unique-id", "Unique ID",
          "unique-id of the producer whose features are written (-1 = the first feature meta)",
          -1, G_MAXINT, DEFAULT_UNIQUE_ID, (GParamFlags) (G_PARAM_READWRITE |
              G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY)));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_set_static_metadata (element_class,
      "Feature map sink", "Sink/Video/Analyzer",
      "Writes the backbone feature maps of every frame to safetensors files with a JSON index",
      "gst-backbone developers");

  base_sink_class->start = GST_DEBUG_FUNCPTR (gst_feature_sink_start);
  base_sink_class->stop = GST_DEBUG_FUNCPTR (gst_feature_sink_stop);
  element_class->change_state = GST_DEBUG_FUNCPTR (gst_feature_sink_change_state);
  base_sink_class->set_caps = GST_DEBUG_FUNCPTR (gst_feature_sink_set_caps);
  base_sink_class->event = GST_DEBUG_FUNCPTR (gst_feature_sink_event);
  base_sink_class->render = GST_DEBUG_FUNCPTR (gst_feature_sink_render);

  gst_type_mark_as_plugin_api (GST_TYPE_FEATURE_SINK_DTYPE, (GstPluginAPIFlags) 0);
}

static void
gst_feature_sink_init (GstFeatureSink * self)
{
  self->priv = new GstFeatureSinkPrivate ();
  gst_base_sink_set_sync (GST_BASE_SINK (self), FALSE);
}

static void
gst_feature_sink_finalize (GObject * object)
{
  GstFeatureSink *self = GST_FEATURE_SINK (object);

  delete self->priv;
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_feature_sink_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstFeatureSink *self = GST_FEATURE_SINK (object);
  GstFeatureSinkPrivate *priv = self->priv;
  std::lock_guard < std::mutex > lk (priv->lock);

  switch (prop_id) {
    case PROP_LOCATION:{
      const gchar *s = g_value_get_string (value);
      priv->location = s ? s : DEFAULT_LOCATION;
      break;
    }
    case PROP_FILE_PREFIX:{
      const gchar *s = g_value_get_string (value);
      priv->file_prefix = s ? s : DEFAULT_FILE_PREFIX;
      break;
    }
    case PROP_MAX_FRAMES:
      priv->max_frames = g_value_get_uint (value);
      break;
    case PROP_DTYPE:
      priv->dtype = (GstFeatureSinkDType) g_value_get_enum (value);
      break;
    case PROP_LEVELS:{
      const gchar *s = g_value_get_string (value);
      priv->levels = s ? s : "";
      break;
    }
    case PROP_UNIQUE_ID:
      priv->unique_id = g_value_get_int (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static void
gst_feature_sink_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstFeatureSink *self = GST_FEATURE_SINK (object);
  GstFeatureSinkPrivate *priv = self->priv;
  std::lock_guard < std::mutex > lk (priv->lock);

  switch (prop_id) {
    case PROP_LOCATION:
      g_value_set_string (value, priv->location.c_str ());
      break;
    case PROP_FILE_PREFIX:
      g_value_set_string (value, priv->file_prefix.c_str ());
      break;
    case PROP_MAX_FRAMES:
      g_value_set_uint (value, priv->max_frames);
      break;
    case PROP_DTYPE:
      g_value_set_enum (value, priv->dtype);
      break;
    case PROP_LEVELS:
      g_value_set_string (value, priv->levels.c_str ());
      break;
    case PROP_UNIQUE_ID:
      g_value_set_int (value, priv->unique_id);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

/* Posts the element error for an exception escaping the file code. */
static void
post_error (GstFeatureSink * self, const std::exception & e)
{
  self->priv->failed = TRUE;
  if (auto * w = dynamic_cast < const WriteError * >(&e)) {
    if (w->err () == ENOSPC)
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
          ("No space left on the device for the feature files."), ("%s", e.what ()));
    else
      GST_ELEMENT_ERROR (self, RESOURCE, WRITE,
          ("Could not write the feature files."), ("%s", e.what ()));
  } else if (auto * s = dynamic_cast < const StreamError * >(&e)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, ("%s.", e.what ()), ("%s", s->debug.c_str ()));
  } else {
    GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Could not write the feature files."),
        ("%s", e.what ()));
  }
}

/* ---- GstBaseSink ---- */

static gboolean
gst_feature_sink_start (GstBaseSink * sink)
{
  GstFeatureSink *self = GST_FEATURE_SINK (sink);
  GstFeatureSinkPrivate *priv = self->priv;

  FeatureFilesOptions opt;
  {
    std::lock_guard < std::mutex > lk (priv->lock);
    opt.dir = priv->location;
    opt.prefix = priv->file_prefix;
    opt.max_frames = priv->max_frames;
    opt.dtype = priv->dtype == GST_FEATURE_SINK_DTYPE_FLOAT16 ?
        SafetensorsDType::F16 : SafetensorsDType::F32;
    opt.levels = backbone::gst::split_levels (priv->levels);
    priv->want_id = priv->unique_id;
  }
  priv->files.reset ();
  priv->seen_stream_start = FALSE;
  priv->failed = FALSE;

  if (opt.dir.empty ()) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("No output location set."),
        ("the location property is empty"));
    return FALSE;
  }
  if (g_mkdir_with_parents (opt.dir.c_str (), 0755) != 0) {
    int err = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Could not create the output directory \"%s\".", opt.dir.c_str ()),
        ("g_mkdir_with_parents: %s", g_strerror (err)));
    return FALSE;
  }
  /* fail now rather than at the first file: the directory must take new files */
  if (g_access (opt.dir.c_str (), W_OK | X_OK) != 0) {
    int err = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Could not write into the output directory \"%s\".", opt.dir.c_str ()),
        ("access (W_OK | X_OK): %s", g_strerror (err)));
    return FALSE;
  }
  /* an index.json present means a finished run: that of an earlier run goes now */
  const std::string index_path = backbone::gst::join_path (opt.dir, "index.json");
  if (g_unlink (index_path.c_str ()) != 0 && errno != ENOENT) {
    int err = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Could not remove the index of an earlier run, \"%s\".", index_path.c_str ()),
        ("unlink: %s", g_strerror (err)));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "writing %s-NNNNN.safetensors into %s", opt.prefix.c_str (),
      opt.dir.c_str ());
  priv->files = std::make_unique < FeatureFiles > (std::move (opt));
  return TRUE;
}

/* The run ends without EOS (PAUSED -> READY, or READY -> NULL when it never streamed): the open
 * file is completed unless the stream failed, then the index is written (after an error: the
 * files completed before it). Called with the streaming thread stopped. */
static gboolean
finish_without_eos (GstFeatureSink * self)
{
  GstFeatureSinkPrivate *priv = self->priv;

  if (!priv->files || priv->files->index_written ())
    return TRUE;
  try {
    if (!priv->failed)
      priv->files->close_file ();
    priv->files->discard_file ();
    priv->files->write_index (priv->failed ? "error" : "stopped");
  } catch (const std::exception & e) {
    if (priv->failed) {
      GST_WARNING_OBJECT (self, "index.json not written after the error: %s", e.what ());
      return TRUE;
    }
    post_error (self, e);
    return FALSE;
  }
  return TRUE;
}

static GstStateChangeReturn
gst_feature_sink_change_state (GstElement * element, GstStateChange transition)
{
  GstFeatureSink *self = GST_FEATURE_SINK (element);
  GstStateChangeReturn ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);

  /* after the parent: the sink pad is deactivated, no render runs any more */
  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY && ret != GST_STATE_CHANGE_FAILURE)
    finish_without_eos (self);  /* an error is posted; going down does not fail */
  return ret;
}

static gboolean
gst_feature_sink_stop (GstBaseSink * sink)
{
  GstFeatureSink *self = GST_FEATURE_SINK (sink);
  GstFeatureSinkPrivate *priv = self->priv;
  gboolean ok = finish_without_eos (self);

  priv->files.reset ();         /* removes any spools left */
  return ok;
}

static gboolean
gst_feature_sink_set_caps (GstBaseSink * sink, GstCaps * caps)
{
  GstFeatureSink *self = GST_FEATURE_SINK (sink);
  gchar *s = gst_caps_to_string (caps);

  GST_DEBUG_OBJECT (self, "caps %s", s);
  if (self->priv->files)
    self->priv->files->set_caps (s);
  g_free (s);
  return TRUE;
}

static gboolean
gst_feature_sink_event (GstBaseSink * sink, GstEvent * event)
{
  GstFeatureSink *self = GST_FEATURE_SINK (sink);
  GstFeatureSinkPrivate *priv = self->priv;

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_STREAM_START:
      /* a new stream: its frames go to new files */
      if (priv->seen_stream_start && priv->files)
        priv->files->new_stream ();
      priv->seen_stream_start = TRUE;
      break;
    case GST_EVENT_EOS:
      if (!priv->failed && priv->files) {
        try {
          priv->files->close_file ();
          priv->files->write_index ("eos");
        } catch (const std::exception & e) {
          post_error (self, e);
          gst_event_unref (event);
          return FALSE;
        }
      }
      break;
    default:
      break;
  }
  return GST_BASE_SINK_CLASS (parent_class)->event (sink, event);
}

static GstFlowReturn
gst_feature_sink_render (GstBaseSink * sink, GstBuffer * buffer)
{
  GstFeatureSink *self = GST_FEATURE_SINK (sink);
  GstFeatureSinkPrivate *priv = self->priv;

  if (priv->failed || !priv->files)
    return GST_FLOW_ERROR;

  GstFeatureMeta *meta = priv->want_id < 0 ? gst_buffer_get_feature_meta (buffer) :
      gst_buffer_get_feature_meta_by_id (buffer, (guint) priv->want_id);
  if (!meta)
    GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT " has no feature meta",
        priv->files->frames_seen ());
  try {
    priv->files->add_frame (buffer, meta);
  } catch (const std::exception & e) {
    post_error (self, e);
    priv->files->discard_file ();
    return GST_FLOW_ERROR;
  }
  return GST_FLOW_OK;
}
