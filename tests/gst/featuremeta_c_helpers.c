/* SPDX-License-Identifier: Apache-2.0
 *
 * C side of featuremeta_test: compiles the public header as C (what a downstream element does) and
 * passes dtype and device values that C++ cannot form in the enum types (C allows any int).
 */
#include <gst/featuremeta/featuremeta.h>

GstFeatureLevel *featuremeta_test_add_level_raw (GstFeatureMeta * meta, const gchar * name,
    int dtype, const gsize dims[4], const gsize strides[4], guint stride, int device,
    gint device_id, GstBuffer * data, gsize offset);

GstFeatureLevel *
featuremeta_test_add_level_raw (GstFeatureMeta * meta, const gchar * name, int dtype,
    const gsize dims[4], const gsize strides[4], guint stride, int device, gint device_id,
    GstBuffer * data, gsize offset)
{
  return gst_feature_meta_add_level (meta, name, (GstFeatureDType) dtype, dims, strides, stride,
      (GstFeatureDevice) device, device_id, data, offset);
}
