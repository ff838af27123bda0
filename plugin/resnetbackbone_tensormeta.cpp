/* SPDX-License-Identifier: Apache-2.0
 *
 * resnetbackbone: the GstFeatureMeta's levels as GStreamer's GstTensorMeta (analytics library,
 * 1.26 or newer; its tensor API is still marked unstable there, hence GST_USE_UNSTABLE_API).
 *
 * GstTensor has neither offset nor strides: a level must be contiguous (the element's always are)
 * and one at an offset inside its buffer gets a buffer sharing just its memory region. In 1.26
 * GstTensorMeta has no transform function, so copies of the buffer (gst_buffer_copy, videoconvert,
 * encoders) do not carry it: read it right after the element, or read the GstFeatureMeta.
 */
#ifndef GST_USE_UNSTABLE_API
#define GST_USE_UNSTABLE_API 1
#endif
#include "resnetbackbone_tensormeta.h"

#include <string>

#include "backbone/error.h"

#if BACKBONE_HAVE_GST_TENSOR_META
#include <gst/analytics/analytics.h>

namespace {

GstTensorDataType
tensor_data_type (GstFeatureDType dtype)
{
  switch (dtype) {
    case GST_FEATURE_DTYPE_FLOAT16:
      return GST_TENSOR_DATA_TYPE_FLOAT16;
    case GST_FEATURE_DTYPE_BFLOAT16:
      return GST_TENSOR_DATA_TYPE_BFLOAT16;
    case GST_FEATURE_DTYPE_FLOAT32:
    default:
      return GST_TENSOR_DATA_TYPE_FLOAT32;
  }
}

/* One level as a GstTensor (transfer full). */
GstTensor *
level_tensor (const GstFeatureLevel * level)
{
  const gchar *name = g_quark_to_string (level->name);
  gsize expected = 1;
  for (int d = level->num_dims - 1; d >= 0; --d) {
    if (level->dims[d] > 1 && level->strides[d] != expected)
      throw backbone::Error (std::string ("GstTensorMeta: level \"") + name + "\" is not contiguous "
          "(stride " + std::to_string (level->strides[d]) + " in dimension " + std::to_string (d) +
          ", expected " + std::to_string (expected) + "): GstTensor has no strides");
    expected *= level->dims[d];
  }
  const gsize nbytes = expected * gst_feature_dtype_size (level->dtype);
  if (level->offset + nbytes > gst_buffer_get_size (level->data))
    throw backbone::Error (std::string ("GstTensorMeta: level \"") + name + "\" needs bytes " +
        std::to_string (level->offset) + ".." + std::to_string (level->offset + nbytes) +
        " of a buffer of " + std::to_string (gst_buffer_get_size (level->data)) + " bytes");
  /* The level's own memory, never a copy: the whole buffer, or its region (shared memory). */
  GstBuffer *data = level->offset == 0 && nbytes == gst_buffer_get_size (level->data) ?
      gst_buffer_ref (level->data) :
      gst_buffer_copy_region (level->data, GST_BUFFER_COPY_MEMORY, level->offset, nbytes);
  if (!data)
    throw backbone::Error (std::string ("GstTensorMeta: cannot share the memory of level \"") + name +
        "\"");
  gsize dims[4];
  for (guint d = 0; d < level->num_dims; ++d)
    dims[d] = level->dims[d];
  return gst_tensor_new_simple (level->name, tensor_data_type (level->dtype), data,
      GST_TENSOR_DIM_ORDER_ROW_MAJOR, level->num_dims, dims);
}

}  // namespace

bool
gst_resnet_backbone_tensor_meta_built ()
{
  return true;
}

void
gst_resnet_backbone_add_tensor_meta (GstBuffer * buf, const GstFeatureMeta * meta)
{
  GstTensor **tensors = g_new0 (GstTensor *, MAX (meta->num_levels, 1));
  guint n = 0;
  try {
    for (; n < meta->num_levels; ++n)
      tensors[n] = level_tensor (&meta->levels[n]);
  } catch (...) {
    for (guint i = 0; i < n; ++i)
      gst_tensor_free (tensors[i]);
    g_free (tensors);
    throw;
  }
  GstTensorMeta *tmeta = gst_buffer_add_tensor_meta (buf);
  if (!tmeta) {
    for (guint i = 0; i < n; ++i)
      gst_tensor_free (tensors[i]);
    g_free (tensors);
    throw backbone::Error ("gst_buffer_add_tensor_meta failed (is the buffer writable?)");
  }
  gst_tensor_meta_set (tmeta, n, tensors);  /* takes the array and the tensors */
}

#else

bool
gst_resnet_backbone_tensor_meta_built ()
{
  return false;
}

void
gst_resnet_backbone_add_tensor_meta (GstBuffer *, const GstFeatureMeta *)
{
}

#endif
