/* SPDX-License-Identifier: Apache-2.0
 *
 * The files of one featuresink run: see featurefiles.h.
 */
#include "featurefiles.h"

#include <cstring>
#include <sstream>
#include <utility>

namespace backbone {
namespace gst {

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

const char *
dtype_name (SafetensorsDType d)
{
  return d == SafetensorsDType::F16 ? "float16" : "float32";
}

/* The meta dtype of an output dtype. */
GstFeatureDType
feature_dtype_of (SafetensorsDType d)
{
  return d == SafetensorsDType::F16 ? GST_FEATURE_DTYPE_FLOAT16 : GST_FEATURE_DTYPE_FLOAT32;
}

}  // namespace

/* The file being filled. */
struct OpenFile {
  std::string name;             /* file name inside the location */
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
join_path (const std::string & dir, const std::string & name)
{
  if (dir.empty () || dir.back () == '/')
    return dir + name;
  return dir + "/" + name;
}

FeatureFiles::FeatureFiles (FeatureFilesOptions options) : opt_ (std::move (options))
{
}

FeatureFiles::~FeatureFiles () = default;

void
FeatureFiles::set_caps (std::string caps)
{
  caps_ = std::move (caps);
}

void
FeatureFiles::new_stream ()
{
  stream_++;
}

void
FeatureFiles::discard_file ()
{
  file_.reset ();               /* removes the spools */
}

void
FeatureFiles::write_index (const char *end)
{
  nlohmann::ordered_json index = nlohmann::ordered_json::object ();
  index["format"] = "gst-backbone featuresink";
  index["version"] = 1;
  index["end"] = end;
  index["dtype"] = dtype_name (opt_.dtype);
  if (have_model_) {
    index["model_name"] = model_name_;
    index["unique_id"] = model_unique_id_;
  } else {
    index["model_name"] = nullptr;
    index["unique_id"] = nullptr;
  }
  index["frames"] = frames_written_;
  index["frames_without_features"] = frames_without_;
  index["frames_seen"] = frame_index_;
  index["files"] = files_;
  write_file_atomically (join_path (opt_.dir, "index.json"), index.dump (2) + "\n");
  index_written_ = true;
}

void
FeatureFiles::close_file ()
{
  if (!file_)
    return;
  std::unique_ptr<OpenFile> f = std::move (file_);
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

  SafetensorsWriter writer (join_path (opt_.dir, f->name));
  writer.set_metadata ("format", "gst-backbone featuresink");
  writer.set_metadata ("model_name", f->model_name);
  writer.set_metadata ("unique_id", std::to_string (f->unique_id));
  writer.set_metadata ("caps", f->caps);
  writer.set_metadata ("first_frame", std::to_string (f->first_frame));
  writer.set_metadata ("strides", strides.dump ());
  writer.set_metadata ("geometry", geometry.dump ());
  for (std::size_t i = 0; i < f->levels.size (); ++i) {
    const LevelSpec & l = f->levels[i];
    writer.add_tensor (l.name, opt_.dtype, {n, l.c, l.h, l.w}, *f->spools[i]);
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
  entry["dtype"] = dtype_name (opt_.dtype);
  entry["caps"] = f->caps;
  entry["model_name"] = f->model_name;
  entry["unique_id"] = f->unique_id;
  entry["geometry"] = geometry;
  files_.push_back (std::move (entry));
}

/* Appends one frame of @level (converted to the output dtype, C,H,W order) to @spool. */
void
FeatureFiles::append_level (const GstFeatureLevel * level, Spool & spool)
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
  const GstFeatureDType out = feature_dtype_of (opt_.dtype);
  const gsize in_es = gst_feature_dtype_size (level->dtype);
  const gsize out_es = gst_feature_dtype_size (out);

  try {
    if (contiguous && level->dtype == out) {
      spool.append (src, count * in_es);
    } else {
      /* row by row: rows of strided levels gathered first (sw != 1), then converted */
      scratch_.resize (count * out_es + (sw == 1 ? 0 : W * in_es));
      guint8 *dst = scratch_.data ();
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
      spool.append (scratch_.data (), count * out_es);
    }
  } catch (...) {
    gst_feature_level_unmap (level, &map);
    throw;
  }
  gst_feature_level_unmap (level, &map);
}

void
FeatureFiles::add_frame (GstBuffer * buffer, const GstFeatureMeta * meta)
{
  index_written_ = false;       /* more data (after an EOS and a flush): a new index at the end */
  if (!meta) {
    frames_without_++;
    frame_index_++;
    return;
  }

  /* the levels of this frame, in file order */
  std::vector<const GstFeatureLevel *> chosen;
  if (opt_.levels.empty ()) {
    for (guint i = 0; i < meta->num_levels; ++i)
      chosen.push_back (&meta->levels[i]);
  } else {
    for (const auto & name : opt_.levels) {
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
    if (gst_feature_dtype_size (l->dtype) == 0)
      throw StreamError (std::string ("Level \"") + name + "\" has an unsupported dtype",
          "dtype " + std::to_string ((int) l->dtype) + " (expected float32, float16 or bfloat16)");
    LevelSpec s;
    s.name = name;
    s.c = (int64_t) l->dims[1];
    s.h = (int64_t) l->dims[2];
    s.w = (int64_t) l->dims[3];
    s.stride = l->stride;
    specs.push_back (std::move (s));
  }

  /* a new file for a new shape, new caps, a new stream or a full file */
  if (file_ && (file_->levels != specs || file_->caps != caps_ || file_->stream != stream_ ||
          file_->pts.size () >= opt_.max_frames))
    close_file ();

  if (!file_) {
    auto f = std::make_unique < OpenFile > ();
    gchar *name = g_strdup_printf ("%s-%05u.safetensors", opt_.prefix.c_str (), file_count_);
    f->name = name;
    g_free (name);
    file_count_++;
    f->stream = stream_;
    f->caps = caps_;
    f->model_name = meta->model_name ? meta->model_name : "";
    f->unique_id = meta->unique_id;
    f->frame_width = meta->frame_width;
    f->frame_height = meta->frame_height;
    f->input_width = meta->input_width;
    f->input_height = meta->input_height;
    f->padded_width = meta->padded_width;
    f->padded_height = meta->padded_height;
    f->levels = specs;
    f->first_frame = frame_index_;
    for (const auto & s : specs)
      f->spools.push_back (std::make_unique < Spool > (join_path (opt_.dir,
                  f->name + "." + s.name + ".spool.tmp")));
    file_ = std::move (f);
  }

  for (std::size_t i = 0; i < chosen.size (); ++i)
    append_level (chosen[i], *file_->spools[i]);
  GstClockTime pts = GST_BUFFER_PTS (buffer);
  file_->pts.push_back (GST_CLOCK_TIME_IS_VALID (pts) ? (int64_t) pts : -1);
  file_->last_frame = frame_index_;
  frames_written_++;
  frame_index_++;

  if (!have_model_) {
    have_model_ = true;
    model_name_ = meta->model_name ? meta->model_name : "";
    model_unique_id_ = meta->unique_id;
  }
}

}  // namespace gst
}  // namespace backbone
