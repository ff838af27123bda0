/* SPDX-License-Identifier: Apache-2.0
 *
 * Accessor functions of GstFeatureMeta and GstFeatureLevel, for language bindings (GObject
 * introspection: Python, JavaScript, ...), which cannot read a C array field or index the level
 * array. C code may read the fields directly; both ways read the same values.
 */

#include "featuremeta.h"

/**
 * gst_feature_meta_get_n_levels:
 * @meta: a #GstFeatureMeta
 *
 * Returns: the number of levels of @meta (#GstFeatureMeta.num_levels).
 */
guint
gst_feature_meta_get_n_levels (const GstFeatureMeta * meta)
{
  g_return_val_if_fail (meta != NULL, 0);

  return meta->num_levels;
}

/**
 * gst_feature_meta_get_level_by_index:
 * @meta: a #GstFeatureMeta
 * @index: a level index, below gst_feature_meta_get_n_levels()
 *
 * The levels are in the producer's out-features order ("res2", "res3", ...).
 *
 * Returns: (transfer none) (nullable): level @index of @meta, valid as long as @meta (the
 * buffer it is on); NULL when @index is out of range.
 */
const GstFeatureLevel *
gst_feature_meta_get_level_by_index (const GstFeatureMeta * meta, guint index)
{
  g_return_val_if_fail (meta != NULL, NULL);

  if (index >= meta->num_levels)
    return NULL;
  return &meta->levels[index];
}

/**
 * gst_feature_meta_get_model_name:
 * @meta: a #GstFeatureMeta
 *
 * Returns: (transfer none) (nullable): the model's name (e.g. "R-50"), or NULL when the producer
 * set none.
 */
const gchar *
gst_feature_meta_get_model_name (const GstFeatureMeta * meta)
{
  g_return_val_if_fail (meta != NULL, NULL);

  return meta->model_name;
}

/**
 * gst_feature_level_get_name:
 * @level: a #GstFeatureLevel
 *
 * Returns: (transfer none): the level's name ("stem", "res2" .. "res5"), a string that lives as
 * long as the process.
 */
const gchar *
gst_feature_level_get_name (const GstFeatureLevel * level)
{
  g_return_val_if_fail (level != NULL, NULL);

  return g_quark_to_string (level->name);
}

/**
 * gst_feature_level_get_dtype:
 * @level: a #GstFeatureLevel
 *
 * Returns: the element type of @level.
 */
GstFeatureDType
gst_feature_level_get_dtype (const GstFeatureLevel * level)
{
  g_return_val_if_fail (level != NULL, GST_FEATURE_DTYPE_FLOAT32);

  return level->dtype;
}

/**
 * gst_feature_level_get_dims:
 * @level: a #GstFeatureLevel
 * @n_dims: (out): the number of dims, 4
 *
 * Returns: (transfer none) (array length=n_dims): N, C, H, W of @level.
 */
const gsize *
gst_feature_level_get_dims (const GstFeatureLevel * level, guint * n_dims)
{
  g_return_val_if_fail (level != NULL && n_dims != NULL, NULL);

  *n_dims = level->num_dims;
  return level->dims;
}

/**
 * gst_feature_level_get_strides:
 * @level: a #GstFeatureLevel
 * @n_strides: (out): the number of strides, 4
 *
 * Element (n, c, h, w) is at `n * strides[0] + c * strides[1] + h * strides[2] + w * strides[3]`
 * elements from element (0, 0, 0, 0), which is at byte gst_feature_level_get_offset() of the
 * level's data.
 *
 * Returns: (transfer none) (array length=n_strides): the strides of @level in elements, one per
 * dim.
 */
const gsize *
gst_feature_level_get_strides (const GstFeatureLevel * level, guint * n_strides)
{
  g_return_val_if_fail (level != NULL && n_strides != NULL, NULL);

  *n_strides = level->num_dims;
  return level->strides;
}

/**
 * gst_feature_level_get_stride:
 * @level: a #GstFeatureLevel
 *
 * Returns: the level's stride in network-input pixels (4 for res2, 8, 16, 32 for res5).
 */
guint
gst_feature_level_get_stride (const GstFeatureLevel * level)
{
  g_return_val_if_fail (level != NULL, 0);

  return level->stride;
}

/**
 * gst_feature_level_get_device:
 * @level: a #GstFeatureLevel
 *
 * Returns: where the level's data lives.
 */
GstFeatureDevice
gst_feature_level_get_device (const GstFeatureLevel * level)
{
  g_return_val_if_fail (level != NULL, GST_FEATURE_DEVICE_CPU);

  return level->device;
}

/**
 * gst_feature_level_get_device_id:
 * @level: a #GstFeatureLevel
 *
 * Returns: the N of cuda:N, 0 on the CPU.
 */
gint
gst_feature_level_get_device_id (const GstFeatureLevel * level)
{
  g_return_val_if_fail (level != NULL, -1);

  return level->device_id;
}

/**
 * gst_feature_level_get_data:
 * @level: a #GstFeatureLevel
 *
 * The storage of @level, shared by every copy of the buffer: read it, never write it.
 * gst_buffer_map() for reading maps it in place for a level on the CPU and downloads a level on
 * a device once (as gst_feature_level_map() does); element (0, 0, 0, 0) is at byte
 * gst_feature_level_get_offset() of the mapping.
 *
 * Returns: (transfer none): the data buffer of @level, owned by the meta (take a reference to
 * keep it after the meta).
 */
GstBuffer *
gst_feature_level_get_data (const GstFeatureLevel * level)
{
  g_return_val_if_fail (level != NULL, NULL);

  return level->data;
}

/**
 * gst_feature_level_get_offset:
 * @level: a #GstFeatureLevel
 *
 * Returns: the byte offset of element (0, 0, 0, 0) inside the level's data buffer.
 */
gsize
gst_feature_level_get_offset (const GstFeatureLevel * level)
{
  g_return_val_if_fail (level != NULL, 0);

  return level->offset;
}
