/* SPDX-License-Identifier: Apache-2.0
 *
 * GstFeatureMeta: multi-level backbone feature maps attached to a video buffer.
 */

/**
 * SECTION:gstfeaturemeta
 * @title: GstFeatureMeta
 * @short_description: backbone feature maps (stem, res2..res5, FPN p-levels) attached to a video buffer
 *
 * The resnetbackbone element adds one #GstFeatureMeta per frame it runs on (one per producer:
 * see #GstFeatureMeta.unique_id). Each #GstFeatureLevel describes one 4-D feature map (N, C, H, W
 * with strides in elements) whose storage is a reference-counted #GstBuffer that wraps the
 * backbone's output without a copy.
 *
 * The meta API has the tags of #GstVideoRegionOfInterestMeta: #GST_META_TAG_VIDEO_STR,
 * #GST_META_TAG_VIDEO_SIZE_STR and #GST_META_TAG_VIDEO_ORIENTATION_STR. Its transform function
 * handles two transform types and refuses every other one (the meta is dropped, never left with a
 * geometry that no longer describes the frame):
 *
 * - copy (GST_META_TRANSFORM_IS_COPY()): the new meta holds new references to the same level
 *   buffers (shared, never copied) and the same geometry;
 * - video scale (GST_VIDEO_META_TRANSFORM_IS_SCALE(), a #GstVideoMetaTransform): the frame was
 *   resized from in_info's size to out_info's; frame_width/height become out_info's size and
 *   scale_x/y are multiplied by in/out, so every frame point still maps to the same network-input
 *   point; the input and padded sizes and the levels are unchanged. A meta whose frame size is
 *   not in_info's is dropped.
 *
 * What GStreamer 1.22's elements do with it:
 *
 * - queue, tee, capsfilter, appsink and every element in passthrough pass the buffer, meta
 *   included, unchanged; #GstBaseTransform and #GstVideoEncoder copy with the copy transform.
 * - videoconvert, videoscale and videoconvertscale call the video scale transform (videoconvert
 *   with equal sizes: the geometry stays). Borders that videoscale adds (add-borders, when the
 *   caps force another display aspect ratio) are not told to the transform: the geometry then
 *   spans the whole output frame.
 * - #GstVideoFilter elements without their own meta handling drop it, as #GstBaseTransform does
 *   with tagged metas: videocrop when it copies the cropped region, videoflip (at identity too,
 *   as it still copies), videobox. Newer videoflip (GStreamer 1.24) sends a matrix transform
 *   instead, which is refused: dropped too. videocrop and videobox with nothing to crop are in
 *   passthrough: the buffer and the meta pass unchanged.
 * - videocrop crops in place when downstream accepts #GstVideoCropMeta: the buffer keeps the
 *   whole frame, this meta (describing the whole frame) and a #GstVideoCropMeta, which consumers
 *   apply: point (x, y) of the cropped view is (crop.x + x, crop.y + y) of the meta's frame.
 * - Encoders built on #GstVideoEncoder with its default transform_meta (x264enc, x265enc,
 *   jpegenc, ...) copy the metas whose tags are only video, size and orientation onto the encoded
 *   buffers (vp8enc and vp9enc copy every meta): this meta rides the encoded frames, and its level
 *   data lives as long as they do (encoder lookahead, muxer queues).
 *
 * Reading a level:
 * |[<!-- language="C" -->
 *   GstFeatureMeta *meta = gst_buffer_get_feature_meta (buffer);
 *   const GstFeatureLevel *res4 = meta ?
 *       gst_feature_meta_get_typed_level (meta, "res4", GST_FEATURE_DTYPE_FLOAT32) : NULL;
 *   GstMapInfo map;
 *   if (res4 && gst_feature_level_map (res4, &map, GST_MAP_READ)) {
 *     const gfloat *d = (const gfloat *) map.data;
 *     gfloat v = d[c * res4->strides[1] + y * res4->strides[2] + x * res4->strides[3]];
 *     gst_feature_level_unmap (res4, &map);
 *   }
 * ]|
 */

#include "featuremeta.h"

#include <gst/video/video.h>
#include <string.h>

#define GST_CAT_DEFAULT gst_feature_meta_debug
GST_DEBUG_CATEGORY_STATIC (GST_CAT_DEFAULT);

static void
ensure_debug_category (void)
{
  static gsize cat_done = 0;

  if (g_once_init_enter (&cat_done)) {
    GST_DEBUG_CATEGORY_INIT (gst_feature_meta_debug, "featuremeta", 0, "GstFeatureMeta");
    g_once_init_leave (&cat_done, 1);
  }
}

/**
 * gst_feature_meta_api_get_type:
 *
 * Returns: the #GType of the GstFeatureMetaAPI, registered once, with the tags
 * #GST_META_TAG_VIDEO_STR, #GST_META_TAG_VIDEO_SIZE_STR and #GST_META_TAG_VIDEO_ORIENTATION_STR
 * (those of #GstVideoRegionOfInterestMeta): the meta describes the video frame's content, its
 * size and its orientation.
 */
GType
gst_feature_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[] = { GST_META_TAG_VIDEO_STR, GST_META_TAG_VIDEO_SIZE_STR,
    GST_META_TAG_VIDEO_ORIENTATION_STR, NULL
  };

  if (g_once_init_enter (&type)) {
    GType _type = gst_meta_api_type_register ("GstFeatureMetaAPI", tags);
    g_once_init_leave (&type, _type);
  }
  return type;
}

static gboolean
gst_feature_meta_init (GstMeta * meta, gpointer params, GstBuffer * buffer)
{
  GstFeatureMeta *fmeta = (GstFeatureMeta *) meta;

  fmeta->version = GST_FEATURE_META_VERSION;
  fmeta->unique_id = 0;
  fmeta->model_name = NULL;
  fmeta->frame_width = fmeta->frame_height = 0;
  fmeta->input_width = fmeta->input_height = 0;
  fmeta->padded_width = fmeta->padded_height = 0;
  fmeta->scale_x = fmeta->scale_y = 1.0;
  fmeta->num_levels = 0;
  fmeta->levels = NULL;
  memset (fmeta->_gst_reserved, 0, sizeof (fmeta->_gst_reserved));
  return TRUE;
}

static void
gst_feature_meta_free (GstMeta * meta, GstBuffer * buffer)
{
  GstFeatureMeta *fmeta = (GstFeatureMeta *) meta;
  guint i;

  for (i = 0; i < fmeta->num_levels; i++)
    gst_clear_buffer (&fmeta->levels[i].data);
  g_clear_pointer (&fmeta->levels, g_free);
  fmeta->num_levels = 0;
  g_clear_pointer (&fmeta->model_name, g_free);
}

/* Copies every field of @smeta into a new meta on @dest; the level data is shared. */
static GstFeatureMeta *
copy_meta (GstBuffer * dest, const GstFeatureMeta * smeta)
{
  GstFeatureMeta *dmeta;
  guint i;

  dmeta = gst_buffer_add_feature_meta (dest);
  if (dmeta == NULL)
    return NULL;

  dmeta->version = smeta->version;
  dmeta->unique_id = smeta->unique_id;
  dmeta->model_name = g_strdup (smeta->model_name);
  dmeta->frame_width = smeta->frame_width;
  dmeta->frame_height = smeta->frame_height;
  dmeta->input_width = smeta->input_width;
  dmeta->input_height = smeta->input_height;
  dmeta->padded_width = smeta->padded_width;
  dmeta->padded_height = smeta->padded_height;
  dmeta->scale_x = smeta->scale_x;
  dmeta->scale_y = smeta->scale_y;

  if (smeta->num_levels > 0) {
    dmeta->levels = g_new (GstFeatureLevel, smeta->num_levels);
    memcpy (dmeta->levels, smeta->levels, smeta->num_levels * sizeof (GstFeatureLevel));
    for (i = 0; i < smeta->num_levels; i++)
      gst_buffer_ref (dmeta->levels[i].data);   /* shared, zero copy */
  }
  dmeta->num_levels = smeta->num_levels;
  return dmeta;
}

/* The video scale transform (videoscale, videoconvert, videoconvertscale): the frame was resized
 * from in_info's size to out_info's. The features and the network input are unchanged; the frame
 * they describe is now out_info's, so frame_width/height take its size and the scales the ratio
 * that keeps every frame point on the same network-input point. A meta whose frame size is not
 * in_info's (it did not describe this frame) is refused rather than given a false geometry. */
static gboolean
transform_scale (GstBuffer * dest, const GstFeatureMeta * smeta, const GstVideoMetaTransform * t)
{
  GstFeatureMeta *dmeta;
  gint in_w, in_h, out_w, out_h;

  if (t == NULL || t->in_info == NULL || t->out_info == NULL) {
    GST_WARNING ("scale transform of the feature meta of producer %u without video infos: "
        "meta dropped", smeta->unique_id);
    return FALSE;
  }
  in_w = GST_VIDEO_INFO_WIDTH (t->in_info);
  in_h = GST_VIDEO_INFO_HEIGHT (t->in_info);
  out_w = GST_VIDEO_INFO_WIDTH (t->out_info);
  out_h = GST_VIDEO_INFO_HEIGHT (t->out_info);
  if (in_w <= 0 || in_h <= 0 || out_w <= 0 || out_h <= 0) {
    GST_WARNING ("scale transform %dx%d -> %dx%d of the feature meta of producer %u: expected "
        "positive sizes; meta dropped", in_w, in_h, out_w, out_h, smeta->unique_id);
    return FALSE;
  }
  if (smeta->frame_width != (guint) in_w || smeta->frame_height != (guint) in_h) {
    GST_WARNING ("scale transform %dx%d -> %dx%d of the feature meta of producer %u: the meta "
        "describes a %ux%u frame, not the %dx%d input; meta dropped", in_w, in_h, out_w, out_h,
        smeta->unique_id, smeta->frame_width, smeta->frame_height, in_w, in_h);
    return FALSE;
  }

  dmeta = copy_meta (dest, smeta);
  if (dmeta == NULL)
    return FALSE;
  dmeta->frame_width = (guint) out_w;
  dmeta->frame_height = (guint) out_h;
  dmeta->scale_x = smeta->scale_x * in_w / out_w;
  dmeta->scale_y = smeta->scale_y * in_h / out_h;
  GST_LOG ("scaled the feature meta of producer %u: frame %dx%d -> %dx%d, scale %g x %g -> "
      "%g x %g (data shared)", smeta->unique_id, in_w, in_h, out_w, out_h, smeta->scale_x,
      smeta->scale_y, dmeta->scale_x, dmeta->scale_y);
  return TRUE;
}

static gboolean
gst_feature_meta_transform (GstBuffer * dest, GstMeta * meta, GstBuffer * buffer,
    GQuark type, gpointer data)
{
  GstFeatureMeta *smeta = (GstFeatureMeta *) meta;

  if (GST_META_TRANSFORM_IS_COPY (type)) {
    if (copy_meta (dest, smeta) == NULL)
      return FALSE;
    GST_LOG ("copied the feature meta of producer %u (%u levels, data shared)",
        smeta->unique_id, smeta->num_levels);
    return TRUE;
  }
  if (GST_VIDEO_META_TRANSFORM_IS_SCALE (type))
    return transform_scale (dest, smeta, (const GstVideoMetaTransform *) data);

  /* Anything else (a matrix transform of a newer videoflip, a crop, ...) would leave a
   * geometry that no longer describes the frame: the meta is dropped. */
  GST_DEBUG ("transform %s of the feature meta of producer %u not supported (only copy and "
      "video scale): meta dropped", g_quark_to_string (type), smeta->unique_id);
  return FALSE;
}

/**
 * gst_feature_meta_get_info:
 *
 * Returns: (transfer none): the #GstMetaInfo of the "GstFeatureMeta" implementation,
 * registered once.
 */
const GstMetaInfo *
gst_feature_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter ((GstMetaInfo **) & info)) {
    const GstMetaInfo *meta;

    ensure_debug_category ();
    meta = gst_meta_register (GST_FEATURE_META_API_TYPE, "GstFeatureMeta",
        sizeof (GstFeatureMeta), gst_feature_meta_init, gst_feature_meta_free,
        gst_feature_meta_transform);
    g_once_init_leave ((GstMetaInfo **) & info, (GstMetaInfo *) meta);
  }
  return info;
}

/**
 * gst_buffer_add_feature_meta:
 * @buffer: a writable #GstBuffer
 *
 * Adds an empty feature meta: version #GST_FEATURE_META_VERSION, unique_id 0, scales 1, no
 * levels. The producer fills the fields and adds the levels with gst_feature_meta_add_level().
 *
 * Returns: (transfer none): the new meta.
 */
GstFeatureMeta *
gst_buffer_add_feature_meta (GstBuffer * buffer)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);

  return (GstFeatureMeta *) gst_buffer_add_meta (buffer, GST_FEATURE_META_INFO, NULL);
}

/**
 * gst_buffer_get_feature_meta:
 * @buffer: a #GstBuffer
 *
 * Returns: (transfer none) (nullable): the first feature meta of @buffer.
 */
GstFeatureMeta *
gst_buffer_get_feature_meta (GstBuffer * buffer)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);

  return (GstFeatureMeta *) gst_buffer_get_meta (buffer, GST_FEATURE_META_API_TYPE);
}

/**
 * gst_buffer_get_feature_meta_by_id:
 * @buffer: a #GstBuffer
 * @unique_id: the producer's unique-id
 *
 * Returns: (transfer none) (nullable): the feature meta added by the producer with @unique_id.
 */
GstFeatureMeta *
gst_buffer_get_feature_meta_by_id (GstBuffer * buffer, guint unique_id)
{
  gpointer state = NULL;
  GstMeta *meta;

  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);

  while ((meta = gst_buffer_iterate_meta_filtered (buffer, &state, GST_FEATURE_META_API_TYPE))) {
    if (((GstFeatureMeta *) meta)->unique_id == unique_id)
      return (GstFeatureMeta *) meta;
  }
  return NULL;
}

/**
 * gst_feature_meta_set_model_name:
 * @meta: a #GstFeatureMeta
 * @model_name: (nullable): the model's name, copied
 */
void
gst_feature_meta_set_model_name (GstFeatureMeta * meta, const gchar * model_name)
{
  g_return_if_fail (meta != NULL);

  g_free (meta->model_name);
  meta->model_name = g_strdup (model_name);
}

/* Bytes spanned from element (0,0,0,0) to one past the last element; FALSE on overflow. */
static gboolean
level_extent (gsize elem_size, const gsize dims[4], const gsize strides[4], gsize * extent)
{
  gsize last = 0, term, i;

  for (i = 0; i < 4; i++) {
    if (!g_size_checked_mul (&term, dims[i] - 1, strides[i]) ||
        !g_size_checked_add (&last, last, term))
      return FALSE;
  }
  return g_size_checked_add (&last, last, 1) && g_size_checked_mul (extent, last, elem_size);
}

static void
contiguous_strides (const gsize dims[4], gsize strides[4])
{
  strides[3] = 1;
  strides[2] = dims[3];
  strides[1] = dims[2] * dims[3];
  strides[0] = dims[1] * dims[2] * dims[3];
}

/**
 * gst_feature_meta_add_level:
 * @meta: a #GstFeatureMeta
 * @name: the level's name ("stem", "res2" .. "res5", "p2" .. "p7"), unique within @meta
 * @dtype: element type
 * @dims: (array fixed-size=4): N, C, H, W, each at least 1
 * @strides: (array fixed-size=4) (nullable): strides in elements for each of @dims; NULL for
 *   contiguous NCHW
 * @stride: the level's stride in network-input pixels, at least 1
 * @device: where the data lives
 * @device_id: the N of cuda:N, 0 on the CPU
 * @data: (transfer full): the storage; consumed in every case, also when the call fails
 * @offset: byte offset of element (0, 0, 0, 0) inside @data
 *
 * Appends a level. The level array may move: a #GstFeatureLevel pointer returned earlier is
 * invalid after the next call.
 *
 * Returns: (transfer none) (nullable): the new level, or NULL with a critical warning when an
 * argument is invalid: a dim of 0, an unknown dtype or device, a name already present, or
 * @data smaller than @offset plus the extent that @dims and @strides describe.
 */
GstFeatureLevel *
gst_feature_meta_add_level (GstFeatureMeta * meta, const gchar * name, GstFeatureDType dtype,
    const gsize dims[4], const gsize strides[4], guint stride, GstFeatureDevice device,
    gint device_id, GstBuffer * data, gsize offset)
{
  GstFeatureLevel *level;
  gsize elem_size, extent, end, size, i;
  gsize st[4];

  g_return_val_if_fail (GST_IS_BUFFER (data), NULL);
  if (meta == NULL || name == NULL || name[0] == '\0' || dims == NULL) {
    g_critical ("%s: meta, name and dims must be given (meta %p, name %s, dims %p)",
        G_STRFUNC, meta, name ? name : "(null)", dims);
    goto fail;
  }
  elem_size = gst_feature_dtype_size (dtype);
  if (elem_size == 0) {
    g_critical ("%s: level %s: unknown dtype %d (expected float16 %d, float32 %d or "
        "bfloat16 %d)", G_STRFUNC, name, dtype, GST_FEATURE_DTYPE_FLOAT16,
        GST_FEATURE_DTYPE_FLOAT32, GST_FEATURE_DTYPE_BFLOAT16);
    goto fail;
  }
  if (device != GST_FEATURE_DEVICE_CPU && device != GST_FEATURE_DEVICE_CUDA) {
    g_critical ("%s: level %s: unknown device %d", G_STRFUNC, name, device);
    goto fail;
  }
  if (device_id < 0 || (device == GST_FEATURE_DEVICE_CPU && device_id != 0)) {
    g_critical ("%s: level %s: device_id %d invalid for %s (expected %s)", G_STRFUNC, name,
        device_id, device == GST_FEATURE_DEVICE_CPU ? "the CPU" : "CUDA",
        device == GST_FEATURE_DEVICE_CPU ? "0" : ">= 0");
    goto fail;
  }
  for (i = 0; i < 4; i++) {
    if (dims[i] == 0) {
      g_critical ("%s: level %s: dims must be at least 1, found dims [%" G_GSIZE_FORMAT ", %"
          G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT "]", G_STRFUNC, name,
          dims[0], dims[1], dims[2], dims[3]);
      goto fail;
    }
  }
  if (stride == 0) {
    g_critical ("%s: level %s: stride must be at least 1 input pixel, found 0", G_STRFUNC, name);
    goto fail;
  }
  if (gst_feature_meta_get_level (meta, name) != NULL) {
    g_critical ("%s: level %s already present (producer %u); level names must be unique",
        G_STRFUNC, name, meta->unique_id);
    goto fail;
  }
  if (strides)
    memcpy (st, strides, sizeof (st));
  else
    contiguous_strides (dims, st);

  size = gst_buffer_get_size (data);
  if (!level_extent (elem_size, dims, st, &extent) || !g_size_checked_add (&end, offset, extent)
      || end > size) {
    g_critical ("%s: level %s: dims [%" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT
        ", %" G_GSIZE_FORMAT "] with strides [%" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ", %"
        G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT "] of %s at offset %" G_GSIZE_FORMAT " need %"
        G_GSIZE_FORMAT " bytes of data, the buffer has %" G_GSIZE_FORMAT, G_STRFUNC, name,
        dims[0], dims[1], dims[2], dims[3], st[0], st[1], st[2], st[3],
        gst_feature_dtype_to_string (dtype), offset,
        level_extent (elem_size, dims, st, &extent) ? offset + extent : G_MAXSIZE, size);
    goto fail;
  }

  meta->levels = g_renew (GstFeatureLevel, meta->levels, meta->num_levels + 1);
  level = &meta->levels[meta->num_levels++];
  memset (level, 0, sizeof (*level));
  level->name = g_quark_from_string (name);
  level->dtype = dtype;
  level->num_dims = 4;
  memcpy (level->dims, dims, sizeof (level->dims));
  memcpy (level->strides, st, sizeof (level->strides));
  level->stride = stride;
  level->device = device;
  level->device_id = device_id;
  level->data = data;
  level->offset = offset;
  return level;

fail:
  gst_buffer_unref (data);
  return NULL;
}

/**
 * gst_feature_meta_get_level:
 * @meta: a #GstFeatureMeta
 * @name: a level name ("res4")
 *
 * Returns: (transfer none) (nullable): the level called @name.
 */
const GstFeatureLevel *
gst_feature_meta_get_level (const GstFeatureMeta * meta, const gchar * name)
{
  GQuark q;
  guint i;

  g_return_val_if_fail (meta != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);

  q = g_quark_try_string (name);
  if (q == 0)
    return NULL;
  for (i = 0; i < meta->num_levels; i++) {
    if (meta->levels[i].name == q)
      return &meta->levels[i];
  }
  return NULL;
}

/**
 * gst_feature_meta_get_typed_level:
 * @meta: a #GstFeatureMeta
 * @name: a level name
 * @dtype: the expected element type
 *
 * Returns: (transfer none) (nullable): the level called @name when it has @dtype and 4 dims.
 */
const GstFeatureLevel *
gst_feature_meta_get_typed_level (const GstFeatureMeta * meta, const gchar * name,
    GstFeatureDType dtype)
{
  const GstFeatureLevel *level = gst_feature_meta_get_level (meta, name);

  if (level == NULL || level->dtype != dtype || level->num_dims != 4)
    return NULL;
  return level;
}

/**
 * gst_feature_level_n_elements:
 * @level: a #GstFeatureLevel
 *
 * Returns: the number of elements, the product of the dims.
 */
gsize
gst_feature_level_n_elements (const GstFeatureLevel * level)
{
  g_return_val_if_fail (level != NULL, 0);

  return level->dims[0] * level->dims[1] * level->dims[2] * level->dims[3];
}

/* What gst_feature_level_map() keeps in GstMapInfo.user_data[0] for the unmap. */
typedef struct
{
  guint32 magic;
  GstBuffer *buffer;            /* a reference, so the unmap works after the meta is gone */
  GstMapInfo map;               /* the buffer's own map info */
} LevelMapping;

#define LEVEL_MAPPING_MAGIC 0x46654d61u /* "FeMa" */

/**
 * gst_feature_level_map: (skip)
 * @level: a #GstFeatureLevel
 * @info: (out caller-allocates): the mapping
 * @flags: #GST_MAP_READ, possibly with extra (e.g. memory-specific) flags; never #GST_MAP_WRITE
 *
 * Maps a level's data for reading: @info->data points at element (0, 0, 0, 0) (the level's
 * offset applied) and @info->size is the level's extent in bytes (from the first to one past
 * the last element its dims and strides reach). Element (n, c, h, w) is at
 * `n * strides[0] + c * strides[1] + h * strides[2] + w * strides[3]` elements from @info->data.
 *
 * The data buffer is mapped with gst_buffer_map(): a buffer of one system memory (what the
 * element produces on the CPU) is mapped in place, without a copy; a buffer of several
 * memories is merged first (a copy). A CUDA level's data is mapped the same way: its memory's
 * allocator decides how a read mapping reaches the host (GStreamer's CUDA memory downloads to a
 * staging copy).
 *
 * Several consumers may map the same level at the same time. The level's data is shared by every
 * copy of the buffer, so it is never mapped for writing.
 *
 * Language bindings, whose buffer map hides #GstMapInfo (gst-python's Gst.Buffer.map()), map
 * gst_feature_level_get_data() for reading instead and start at byte
 * gst_feature_level_get_offset(): the same data, mapped (or downloaded) the same way.
 *
 * Returns: TRUE on success; FALSE when @flags asks for writing or lacks #GST_MAP_READ, or when
 * the data cannot be mapped. Unmap with gst_feature_level_unmap().
 */
gboolean
gst_feature_level_map (const GstFeatureLevel * level, GstMapInfo * info, GstMapFlags flags)
{
  LevelMapping *m;
  gsize extent;

  g_return_val_if_fail (level != NULL, FALSE);
  g_return_val_if_fail (info != NULL, FALSE);
  g_return_val_if_fail (GST_IS_BUFFER (level->data), FALSE);

  ensure_debug_category ();
  memset (info, 0, sizeof (*info));
  if ((flags & GST_MAP_WRITE) || !(flags & GST_MAP_READ)) {
    GST_WARNING ("level %s: feature data is shared and read-only; map flags 0x%x refused "
        "(expected GST_MAP_READ without GST_MAP_WRITE)", g_quark_to_string (level->name), flags);
    return FALSE;
  }
  if (!level_extent (gst_feature_dtype_size (level->dtype), level->dims, level->strides,
          &extent) || gst_feature_dtype_size (level->dtype) == 0) {
    GST_WARNING ("level %s: invalid dtype or shape", g_quark_to_string (level->name));
    return FALSE;
  }

  m = g_new0 (LevelMapping, 1);
  m->magic = LEVEL_MAPPING_MAGIC;
  if (!gst_buffer_map (level->data, &m->map, flags)) {
    GST_WARNING ("level %s: cannot map its data buffer %p", g_quark_to_string (level->name),
        level->data);
    g_free (m);
    return FALSE;
  }
  if (level->offset > m->map.size || extent > m->map.size - level->offset) {
    GST_WARNING ("level %s: data holds %" G_GSIZE_FORMAT " bytes, the level needs %"
        G_GSIZE_FORMAT " at offset %" G_GSIZE_FORMAT, g_quark_to_string (level->name),
        m->map.size, extent, level->offset);
    gst_buffer_unmap (level->data, &m->map);
    g_free (m);
    return FALSE;
  }
  m->buffer = gst_buffer_ref (level->data);

  info->memory = m->map.memory;
  info->flags = m->map.flags;
  info->data = m->map.data + level->offset;
  info->size = extent;
  info->maxsize = m->map.maxsize - level->offset;
  info->user_data[0] = m;
  return TRUE;
}

/**
 * gst_feature_level_unmap: (skip)
 * @level: the #GstFeatureLevel that was mapped
 * @info: the mapping from gst_feature_level_map()
 *
 * Releases a mapping. @info is cleared.
 */
void
gst_feature_level_unmap (const GstFeatureLevel * level, GstMapInfo * info)
{
  LevelMapping *m;

  g_return_if_fail (info != NULL);
  m = info->user_data[0];
  g_return_if_fail (m != NULL && m->magic == LEVEL_MAPPING_MAGIC);

  gst_buffer_unmap (m->buffer, &m->map);
  gst_buffer_unref (m->buffer);
  m->magic = 0;
  g_free (m);
  memset (info, 0, sizeof (*info));
}

/**
 * gst_feature_meta_frame_to_feature:
 * @meta: a #GstFeatureMeta
 * @level: a level of @meta
 * @x: frame x in pixels
 * @y: frame y in pixels
 * @fx: (out): continuous cell x of @level: x * scale_x / stride
 * @fy: (out): continuous cell y of @level: y * scale_y / stride
 *
 * Frame pixel coordinates (continuous: pixel i spans [i, i + 1)) to cell coordinates of @level
 * (cell j spans [j, j + 1)), through the network input: (x * scale_x, y * scale_y). Padding is at
 * the bottom and right only, so it moves nothing. Coordinates are those of the frame the meta
 * describes (frame_width x frame_height): the frame of the buffer it is on, also after videoscale
 * (whose scale transform updates the geometry).
 */
void
gst_feature_meta_frame_to_feature (const GstFeatureMeta * meta, const GstFeatureLevel * level,
    gdouble x, gdouble y, gdouble * fx, gdouble * fy)
{
  g_return_if_fail (meta != NULL && level != NULL && level->stride > 0);

  if (fx)
    *fx = x * meta->scale_x / level->stride;
  if (fy)
    *fy = y * meta->scale_y / level->stride;
}

/**
 * gst_feature_meta_feature_to_frame:
 * @meta: a #GstFeatureMeta
 * @level: a level of @meta
 * @fx: continuous cell x of @level
 * @fy: continuous cell y of @level
 * @x: (out): frame x: fx * stride / scale_x
 * @y: (out): frame y: fy * stride / scale_y
 *
 * The inverse of gst_feature_meta_frame_to_feature().
 */
void
gst_feature_meta_feature_to_frame (const GstFeatureMeta * meta, const GstFeatureLevel * level,
    gdouble fx, gdouble fy, gdouble * x, gdouble * y)
{
  g_return_if_fail (meta != NULL && level != NULL && level->stride > 0);
  g_return_if_fail (meta->scale_x > 0 && meta->scale_y > 0);

  if (x)
    *x = fx * level->stride / meta->scale_x;
  if (y)
    *y = fy * level->stride / meta->scale_y;
}

/**
 * gst_feature_meta_frame_box_to_feature:
 * @meta: a #GstFeatureMeta
 * @level: a level of @meta
 * @frame_box: (array fixed-size=4): x0, y0, x1, y1 in frame pixels
 * @feature_box: (out caller-allocates) (array fixed-size=4): the same box in cells of @level
 *
 * Both corners converted with gst_feature_meta_frame_to_feature() (what ROIAlign does with
 * spatial_scale = scale / stride).
 */
void
gst_feature_meta_frame_box_to_feature (const GstFeatureMeta * meta, const GstFeatureLevel * level,
    const gdouble frame_box[4], gdouble feature_box[4])
{
  gdouble b[4];

  g_return_if_fail (frame_box != NULL && feature_box != NULL);

  gst_feature_meta_frame_to_feature (meta, level, frame_box[0], frame_box[1], &b[0], &b[1]);
  gst_feature_meta_frame_to_feature (meta, level, frame_box[2], frame_box[3], &b[2], &b[3]);
  memcpy (feature_box, b, sizeof (b));
}

/**
 * gst_feature_meta_feature_box_to_frame:
 * @meta: a #GstFeatureMeta
 * @level: a level of @meta
 * @feature_box: (array fixed-size=4): x0, y0, x1, y1 in cells of @level
 * @frame_box: (out caller-allocates) (array fixed-size=4): the same box in frame pixels
 *
 * The inverse of gst_feature_meta_frame_box_to_feature().
 */
void
gst_feature_meta_feature_box_to_frame (const GstFeatureMeta * meta, const GstFeatureLevel * level,
    const gdouble feature_box[4], gdouble frame_box[4])
{
  gdouble b[4];

  g_return_if_fail (feature_box != NULL && frame_box != NULL);

  gst_feature_meta_feature_to_frame (meta, level, feature_box[0], feature_box[1], &b[0], &b[1]);
  gst_feature_meta_feature_to_frame (meta, level, feature_box[2], feature_box[3], &b[2], &b[3]);
  memcpy (frame_box, b, sizeof (b));
}
