// SPDX-License-Identifier: Apache-2.0
// The accessor functions for language bindings (featureaccess.c): each returns what the fields hold.
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

namespace {

TEST(FeatureAccess, AccessorsReturnTheFields) {
  GstBuffer* buf = gst_buffer_new();
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  ASSERT_NE(meta, nullptr);
  EXPECT_EQ(gst_feature_meta_get_n_levels(meta), 0u);
  EXPECT_EQ(gst_feature_meta_get_level_by_index(meta, 0), nullptr);
  EXPECT_EQ(gst_feature_meta_get_model_name(meta), nullptr);
  gst_feature_meta_set_model_name(meta, "R-50");
  EXPECT_STREQ(gst_feature_meta_get_model_name(meta), "R-50");

  const gsize dims[4] = {1, 2, 3, 4};
  const gsize strides[4] = {24, 12, 1, 3};  // W-major
  GstBuffer* data = gst_buffer_new_allocate(nullptr, 16 + 24 * 2, nullptr);
  ASSERT_NE(gst_feature_meta_add_level(meta, "res3", GST_FEATURE_DTYPE_BFLOAT16, dims, strides, 8,
                                       GST_FEATURE_DEVICE_CPU, 0, data, 16),
            nullptr);
  ASSERT_NE(gst_feature_meta_add_level(meta, "res4", GST_FEATURE_DTYPE_FLOAT32, dims, nullptr, 16,
                                       GST_FEATURE_DEVICE_CPU, 0, gst_buffer_new_allocate(nullptr, 96, nullptr), 0),
            nullptr);
  ASSERT_EQ(gst_feature_meta_get_n_levels(meta), 2u);
  EXPECT_EQ(gst_feature_meta_get_level_by_index(meta, 2), nullptr);

  const GstFeatureLevel* lv = gst_feature_meta_get_level_by_index(meta, 0);
  ASSERT_EQ(lv, &meta->levels[0]);
  EXPECT_STREQ(gst_feature_level_get_name(lv), "res3");
  EXPECT_EQ(gst_feature_level_get_dtype(lv), GST_FEATURE_DTYPE_BFLOAT16);
  guint n = 0;
  const gsize* d = gst_feature_level_get_dims(lv, &n);
  ASSERT_EQ(n, 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(d[i], dims[i]) << i;
  const gsize* s = gst_feature_level_get_strides(lv, &n);
  ASSERT_EQ(n, 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(s[i], strides[i]) << i;
  EXPECT_EQ(gst_feature_level_get_stride(lv), 8u);
  EXPECT_EQ(gst_feature_level_get_device(lv), GST_FEATURE_DEVICE_CPU);
  EXPECT_EQ(gst_feature_level_get_device_id(lv), 0);
  EXPECT_EQ(gst_feature_level_get_data(lv), data);
  EXPECT_EQ(gst_feature_level_get_offset(lv), 16u);

  const GstFeatureLevel* res4 = gst_feature_meta_get_level_by_index(meta, 1);
  EXPECT_STREQ(gst_feature_level_get_name(res4), "res4");
  s = gst_feature_level_get_strides(res4, &n);
  EXPECT_EQ(s[0], 24u);  // contiguous NCHW filled in
  EXPECT_EQ(s[3], 1u);
  gst_buffer_unref(buf);
}

}  // namespace
