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
 * holds one tensor per level, named by the level ("res2", ...) and shaped [frames, C, H, W] in
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

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <gst/featuremeta/featuremeta.h>
#include <gst/video/video.h>
#include <nlohmann/json.hpp>

#include "safetensors_writer.h"

GST_DEBUG_CATEGORY_STATIC (gst_feature_sink_debug);
#define GST_CAT_DEFAULT gst_feature_sink_debug

using backbone::gst::SafetensorsDType;
using backbone::gst::SafetensorsWriter;
using backbone::gst::Spool;
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

namespace {

struct LevelSpec {
  std::string name;
  int64_t c = 0, h = 0, w = 0;
  guint stride = 0;

  bool operator== (const LevelSpec & o) const
  {
    return name == o.name && c == o.c && h == o.h && w == o.w;
  }
};

/* The file being filled. */
struct OpenFile {
  std::string name;             /* file name inside location */
  guint stream = 0;
  std::string caps;
  std::string model_name;
  guint unique_id = 0;
  guint frame_width = 0, frame_height = 0;
  guint input_width = 0, input_height = 0;
  guint padded_width = 0, padded_height = 0;
  std::vector<LevelSpec> levels;
  std::vector<std::unique_ptr<Spool>> spools;
  std::vector<int64_t> pts;
  guint64 first_frame = 0, last_frame = 0;
};

std::vector<std::string>
split_levels (const std::string & text)
{
  std::vector<std::string> out;
  std::string item;
  std::istringstream in (text);
  while (std::getline (in, item, ',')) {
    auto b = item.find_first_not_of (" \t");
    auto e = item.find_last_not_of (" \t");
    if (b == std::string::npos)
      continue;
    out.push_back (item.substr (b, e - b + 1));
  }
  return out;
}

std::string
level_names (const GstFeatureMeta * meta)
{
  std::string s;
  for (guint i = 0; i < meta->num_levels; ++i) {
    if (i)
      s += ", ";
    s += g_quark_to_string (meta->levels[i].name);
  }
  return s.empty ()? std::string ("no levels") : s;
}

/* A failure that becomes a GST_ELEMENT_ERROR of the STREAM domain. */
struct StreamError : std::runtime_error {
  StreamError (std::string msg, std::string dbg)
  :  std::runtime_error (std::move (msg)), debug (std::move (dbg)) {}
  std::string debug;
};

}  // namespace

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

  /* streaming state, from start() to stop(): a copy of the properties and the files */
  std::string dir;
  std::string prefix;
  guint max = DEFAULT_MAX_FRAMES;
  SafetensorsDType out_dtype = SafetensorsDType::F32;
  std::vector<std::string> wanted;
  gint want_id = DEFAULT_UNIQUE_ID;

  std::unique_ptr<OpenFile> file;
  nlohmann::ordered_json files = nlohmann::ordered_json::array ();
  guint file_count = 0;
  guint stream = 0;
  gboolean seen_stream_start = FALSE;
  guint64 frame_index = 0;
  guint64 frames_written = 0;
  guint64 frames_without = 0;
  std::string caps;
  gboolean have_model = FALSE;
  std::string model_name;
  guint model_unique_id = 0;
  gboolean failed = FALSE;
  gboolean index_written = FALSE;
  std::vector<uint8_t> scratch;
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
   * Comma-separated levels to write ("res4,res5"); empty writes every level of the meta. A listed
   * level missing from a frame's meta is an error.
   */
  g_object_class_install_property (gobject_class, PROP_LEVELS,
      g_param_spec_string ("levels", "Levels",
          "Comma-separated levels to write, e.g. \"res4,res5\" (empty = every level of the meta)",
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

/* ---- index and files ---- */

static std::string
join_path (const std::string & dir, const std::string & name)
{
  if (dir.empty () || dir.back () == '/')
    return dir + name;
  return dir + "/" + name;
}

static const char *
out_dtype_name (SafetensorsDType d)
{
  return d == SafetensorsDType::F16 ? "float16" : "float32";
}

/* Writes index.json, once per run: @end is "eos", "stopped" (READY without EOS) or "error". */
static void
write_index (GstFeatureSinkPrivate * priv, const char *end)
{
  nlohmann::ordered_json index = nlohmann::ordered_json::object ();
  index["format"] = "gst-backbone featuresink";
  index["version"] = 1;
  index["end"] = end;
  index["dtype"] = out_dtype_name (priv->out_dtype);
  if (priv->have_model) {
    index["model_name"] = priv->model_name;
    index["unique_id"] = priv->model_unique_id;
  } else {
    index["model_name"] = nullptr;
    index["unique_id"] = nullptr;
  }
  index["frames"] = priv->frames_written;
  index["frames_without_features"] = priv->frames_without;
  index["frames_seen"] = priv->frame_index;
  index["files"] = priv->files;
  backbone::gst::write_file_atomically (join_path (priv->dir, "index.json"),
      index.dump (2) + "\n");
  priv->index_written = TRUE;
}

/* Completes the open file: header + spools -> <file>.tmp -> fsync -> rename; listed in the
 * index written at the end. */
static void
close_file (GstFeatureSinkPrivate * priv)
{
  if (!priv->file)
    return;
  std::unique_ptr<OpenFile> f = std::move (priv->file);
  const int64_t n = static_cast<int64_t> (f->pts.size ());

  nlohmann::ordered_json strides = nlohmann::ordered_json::object ();
  nlohmann::ordered_json shapes = nlohmann::ordered_json::object ();
  for (const auto & l : f->levels) {
    shapes[l.name] = {n, l.c, l.h, l.w};
    strides[l.name] = l.stride;
  }
  nlohmann::ordered_json geometry = {
    {"frame_width", f->frame_width}, {"frame_height", f->frame_height},
    {"input_width", f->input_width}, {"input_height", f->input_height},
    {"padded_width", f->padded_width}, {"padded_height", f->padded_height},
  };

  SafetensorsWriter writer (join_path (priv->dir, f->name));
  writer.set_metadata ("format", "gst-backbone featuresink");
  writer.set_metadata ("model_name", f->model_name);
  writer.set_metadata ("unique_id", std::to_string (f->unique_id));
  writer.set_metadata ("caps", f->caps);
  writer.set_metadata ("first_frame", std::to_string (f->first_frame));
  writer.set_metadata ("strides", strides.dump ());
  writer.set_metadata ("geometry", geometry.dump ());
  for (std::size_t i = 0; i < f->levels.size (); ++i) {
    const LevelSpec & l = f->levels[i];
    writer.add_tensor (l.name, priv->out_dtype, {n, l.c, l.h, l.w}, *f->spools[i]);
  }
  writer.add_tensor ("pts", SafetensorsDType::I64, {n}, f->pts.data (),
      f->pts.size () * sizeof (int64_t));
  writer.commit ();
  f->spools.clear ();           /* removes the spool files */

  nlohmann::ordered_json entry = nlohmann::ordered_json::object ();
  entry["file"] = f->name;
  entry["stream"] = f->stream;
  entry["first_frame"] = f->first_frame;
  entry["last_frame"] = f->last_frame;
  entry["frames"] = n;
  entry["first_pts"] = f->pts.front ();
  entry["last_pts"] = f->pts.back ();
  entry["shapes"] = shapes;
  entry["strides"] = strides;
  entry["dtype"] = out_dtype_name (priv->out_dtype);
  entry["caps"] = f->caps;
  entry["model_name"] = f->model_name;
  entry["unique_id"] = f->unique_id;
  entry["geometry"] = geometry;
  priv->files.push_back (std::move (entry));
}

/* The meta dtype of an output dtype. */
static GstFeatureDType
feature_dtype_of (SafetensorsDType d)
{
  return d == SafetensorsDType::F16 ? GST_FEATURE_DTYPE_FLOAT16 : GST_FEATURE_DTYPE_FLOAT32;
}

/* Appends one frame of @level (converted to the output dtype, C,H,W order) to @spool. */
static void
append_level (GstFeatureSinkPrivate * priv, const GstFeatureLevel * level, Spool & spool)
{
  GstMapInfo map;
  if (!gst_feature_level_map (level, &map, GST_MAP_READ))
    throw StreamError ("Could not map a feature level for reading",
        std::string ("level ") + g_quark_to_string (level->name) + ": gst_feature_level_map failed");

  const gsize C = level->dims[1], H = level->dims[2], W = level->dims[3];
  const gsize sc = level->strides[1], sh = level->strides[2], sw = level->strides[3];
  const bool contiguous = sw == 1 && sh == W && sc == H * W;
  const guint8 *src = map.data;
  const gsize count = C * H * W;
  const GstFeatureDType out = feature_dtype_of (priv->out_dtype);
  const gsize in_es = gst_feature_dtype_size (level->dtype);
  const gsize out_es = gst_feature_dtype_size (out);

  try {
    if (contiguous && level->dtype == out) {
      spool.append (src, count * in_es);
    } else {
      /* row by row: rows of strided levels gathered first (sw != 1), then converted */
      priv->scratch.resize (count * out_es + (sw == 1 ? 0 : W * in_es));
      guint8 *dst = priv->scratch.data ();
      guint8 *row = dst + count * out_es;
      for (gsize c = 0; c < C; ++c)
        for (gsize y = 0; y < H; ++y, dst += W * out_es) {
          const guint8 *first = src + (c * sc + y * sh) * in_es;
          if (sw != 1) {
            for (gsize x = 0; x < W; ++x)
              std::memcpy (row + x * in_es, first + x * sw * in_es, in_es);
            first = row;
          }
          if (!gst_feature_dtype_convert (level->dtype, first, W * in_es, out, dst, W * out_es))
            throw StreamError ("Could not convert a feature level",
                std::string ("level ") + g_quark_to_string (level->name) + ": " +
                gst_feature_dtype_to_string (level->dtype) + " -> " +
                gst_feature_dtype_to_string (out));
        }
      spool.append (priv->scratch.data (), count * out_es);
    }
  } catch (...) {
    gst_feature_level_unmap (level, &map);
    throw;
  }
  gst_feature_level_unmap (level, &map);
}

static void
write_frame (GstFeatureSinkPrivate * priv, GstBuffer * buffer, GstFeatureMeta * meta)
{
  /* the levels of this frame, in file order */
  std::vector<const GstFeatureLevel *> chosen;
  if (priv->wanted.empty ()) {
    for (guint i = 0; i < meta->num_levels; ++i)
      chosen.push_back (&meta->levels[i]);
  } else {
    for (const auto & name : priv->wanted) {
      const GstFeatureLevel *l = gst_feature_meta_get_level (meta, name.c_str ());
      if (!l)
        throw StreamError ("Level \"" + name + "\" is not in the feature meta",
            "levels=\"" + name + "\" was asked for; the meta of unique-id " +
            std::to_string (meta->unique_id) + " has " + level_names (meta));
      chosen.push_back (l);
    }
  }
  if (chosen.empty ())
    throw StreamError ("The feature meta has no levels",
        "meta of unique-id " + std::to_string (meta->unique_id) + " has no levels");

  std::vector<LevelSpec> specs;
  for (const GstFeatureLevel *l : chosen) {
    const char *name = g_quark_to_string (l->name);
    if (l->num_dims != 4 || l->dims[0] != 1)
      throw StreamError (std::string ("Level \"") + name + "\" is not one frame of N,C,H,W",
          "num_dims " + std::to_string (l->num_dims) + ", N " + std::to_string (l->dims[0]) +
          " (expected 4 dims and N 1)");
    if (l->dtype != GST_FEATURE_DTYPE_FLOAT32 && l->dtype != GST_FEATURE_DTYPE_FLOAT16 &&
        l->dtype != GST_FEATURE_DTYPE_BFLOAT16)
      throw StreamError (std::string ("Level \"") + name + "\" has an unsupported dtype",
          "dtype " + std::to_string ((int) l->dtype));
    LevelSpec s;
    s.name = name;
    s.c = (int64_t) l->dims[1];
    s.h = (int64_t) l->dims[2];
    s.w = (int64_t) l->dims[3];
    s.stride = l->stride;
    specs.push_back (std::move (s));
  }

  /* a new file for a new shape, new caps, a new stream or a full file */
  if (priv->file && (priv->file->levels != specs || priv->file->caps != priv->caps ||
          priv->file->stream != priv->stream || priv->file->pts.size () >= priv->max))
    close_file (priv);

  if (!priv->file) {
    auto f = std::make_unique < OpenFile > ();
    gchar *name = g_strdup_printf ("%s-%05u.safetensors", priv->prefix.c_str (),
        priv->file_count);
    f->name = name;
    g_free (name);
    priv->file_count++;
    f->stream = priv->stream;
    f->caps = priv->caps;
    f->model_name = meta->model_name ? meta->model_name : "";
    f->unique_id = meta->unique_id;
    f->frame_width = meta->frame_width;
    f->frame_height = meta->frame_height;
    f->input_width = meta->input_width;
    f->input_height = meta->input_height;
    f->padded_width = meta->padded_width;
    f->padded_height = meta->padded_height;
    f->levels = specs;
    f->first_frame = priv->frame_index;
    for (const auto & s : specs)
      f->spools.push_back (std::make_unique < Spool > (join_path (priv->dir,
                  f->name + "." + s.name + ".spool.tmp")));
    priv->file = std::move (f);
  }

  for (std::size_t i = 0; i < chosen.size (); ++i)
    append_level (priv, chosen[i], *priv->file->spools[i]);
  GstClockTime pts = GST_BUFFER_PTS (buffer);
  priv->file->pts.push_back (GST_CLOCK_TIME_IS_VALID (pts) ? (int64_t) pts : -1);
  priv->file->last_frame = priv->frame_index;
  priv->frames_written++;

  if (!priv->have_model) {
    priv->have_model = TRUE;
    priv->model_name = meta->model_name ? meta->model_name : "";
    priv->model_unique_id = meta->unique_id;
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

  {
    std::lock_guard < std::mutex > lk (priv->lock);
    priv->dir = priv->location;
    priv->prefix = priv->file_prefix;
    priv->max = priv->max_frames;
    priv->out_dtype = priv->dtype == GST_FEATURE_SINK_DTYPE_FLOAT16 ?
        SafetensorsDType::F16 : SafetensorsDType::F32;
    priv->wanted = split_levels (priv->levels);
    priv->want_id = priv->unique_id;
  }
  priv->file.reset ();
  priv->files = nlohmann::ordered_json::array ();
  priv->file_count = 0;
  priv->stream = 0;
  priv->seen_stream_start = FALSE;
  priv->frame_index = 0;
  priv->frames_written = 0;
  priv->frames_without = 0;
  priv->caps.clear ();
  priv->have_model = FALSE;
  priv->model_name.clear ();
  priv->model_unique_id = 0;
  priv->failed = FALSE;
  priv->index_written = FALSE;

  if (priv->dir.empty ()) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("No output location set."),
        ("the location property is empty"));
    return FALSE;
  }
  if (g_mkdir_with_parents (priv->dir.c_str (), 0755) != 0) {
    int err = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Could not create the output directory \"%s\".", priv->dir.c_str ()),
        ("g_mkdir_with_parents: %s", g_strerror (err)));
    return FALSE;
  }
  /* fail now rather than at the first file: the directory must take new files */
  if (g_access (priv->dir.c_str (), W_OK | X_OK) != 0) {
    int err = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Could not write into the output directory \"%s\".", priv->dir.c_str ()),
        ("access (W_OK | X_OK): %s", g_strerror (err)));
    return FALSE;
  }
  /* an index.json present means a finished run: that of an earlier run goes now */
  const std::string index_path = join_path (priv->dir, "index.json");
  if (g_unlink (index_path.c_str ()) != 0 && errno != ENOENT) {
    int err = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Could not remove the index of an earlier run, \"%s\".", index_path.c_str ()),
        ("unlink: %s", g_strerror (err)));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "writing %s-NNNNN.safetensors into %s", priv->prefix.c_str (),
      priv->dir.c_str ());
  return TRUE;
}

/* The run ends without EOS (PAUSED -> READY, or READY -> NULL when it never streamed): the open
 * file is completed unless the stream failed, then the index is written (after an error: the
 * files completed before it). Called with the streaming thread stopped. */
static gboolean
finish_without_eos (GstFeatureSink * self)
{
  GstFeatureSinkPrivate *priv = self->priv;

  if (priv->index_written)
    return TRUE;
  try {
    if (!priv->failed)
      close_file (priv);
    priv->file.reset ();
    write_index (priv, priv->failed ? "error" : "stopped");
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

  priv->file.reset ();          /* removes any spools left */
  priv->scratch.clear ();
  priv->scratch.shrink_to_fit ();
  return ok;
}

static gboolean
gst_feature_sink_set_caps (GstBaseSink * sink, GstCaps * caps)
{
  GstFeatureSink *self = GST_FEATURE_SINK (sink);
  gchar *s = gst_caps_to_string (caps);

  GST_DEBUG_OBJECT (self, "caps %s", s);
  self->priv->caps = s;
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
      if (priv->seen_stream_start)
        priv->stream++;
      priv->seen_stream_start = TRUE;
      break;
    case GST_EVENT_EOS:
      if (!priv->failed) {
        try {
          close_file (priv);
          write_index (priv, "eos");
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

  if (priv->failed)
    return GST_FLOW_ERROR;
  /* data after EOS (a flush, then more): the index is written again at its end */
  priv->index_written = FALSE;

  GstFeatureMeta *meta = priv->want_id < 0 ? gst_buffer_get_feature_meta (buffer) :
      gst_buffer_get_feature_meta_by_id (buffer, (guint) priv->want_id);
  try {
    if (meta) {
      write_frame (priv, buffer, meta);
    } else {
      GST_LOG_OBJECT (self, "frame %" G_GUINT64_FORMAT " has no feature meta",
          priv->frame_index);
      priv->frames_without++;
    }
  } catch (const std::exception & e) {
    post_error (self, e);
    priv->file.reset ();
    return GST_FLOW_ERROR;
  }
  priv->frame_index++;
  return GST_FLOW_OK;
}
