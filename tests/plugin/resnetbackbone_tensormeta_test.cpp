// SPDX-License-Identifier: Apache-2.0
// GstTensorMeta (GStreamer's analytics library, 1.26 or newer) next to the GstFeatureMeta: read
// right after resnetbackbone (narrow R-50, tests/data/plugin), one GstTensor per level that is the
// level itself (same id, dims, data type and memory); and the conversion of made-up metas (levels
// at an offset, float16, strided levels GstTensor cannot describe). Built only against GStreamer
// with the analytics library 1.26 or newer.
#ifndef GST_USE_UNSTABLE_API
#define GST_USE_UNSTABLE_API 1
#endif
#include <gst/analytics/analytics.h>
#include <gst/check/gstharness.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backbone/error.h"
#include "resnetbackbone_tensormeta.h"

namespace {

std::string data_path(const std::string& name) { return std::string(BACKBONE_TEST_DATA_DIR) + "/plugin/" + name; }

// The element alone in a harness on 32x24 RGB frames; props as gst-launch-1.0 writes them.
struct Harness {
  GstHarness* h = nullptr;
  explicit Harness(const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    GstElement* e = gst_element_factory_make("resnetbackbone", nullptr);
    if (!e) return;
    gst_util_set_object_arg(G_OBJECT(e), "config-file", data_path("narrow.yaml").c_str());
    gst_util_set_object_arg(G_OBJECT(e), "weights", data_path("narrow.pth").c_str());
    gst_util_set_object_arg(G_OBJECT(e), "device", "cpu");
    for (const auto& [k, v] : extra) gst_util_set_object_arg(G_OBJECT(e), k.c_str(), v.c_str());
    h = gst_harness_new_with_element(e, "sink", "src");
    gst_object_unref(e);
    gst_harness_set_src_caps_str(h, "video/x-raw,format=RGB,width=32,height=24,framerate=30/1");
  }
  ~Harness() {
    if (h) gst_harness_teardown(h);
  }
  // One frame of pseudo-random pixels through the element.
  GstBuffer* push_frame(guint32 seed) {
    GstBuffer* buf = gst_buffer_new_allocate(nullptr, 32 * 3 * 24, nullptr);  // RGB rows of 96 bytes: no padding
    GstMapInfo map;
    gst_buffer_map(buf, &map, GST_MAP_WRITE);
    guint32 x = seed * 2654435761u + 12345u;
    for (gsize i = 0; i < map.size; ++i) {
      x = x * 1664525u + 1013904223u;
      map.data[i] = static_cast<guint8>(x >> 24);
    }
    gst_buffer_unmap(buf, &map);
    return gst_harness_push_and_pull(h, buf);
  }
};

// The bytes of a buffer (all of it).
std::vector<guint8> bytes_of(GstBuffer* buf) {
  std::vector<guint8> out(gst_buffer_get_size(buf));
  gst_buffer_extract(buf, 0, out.data(), out.size());
  return out;
}

// The address a read map of the buffer gives (the buffer's single memory, unmapped again).
const guint8* mapped_address(GstBuffer* buf) {
  GstMapInfo map;
  if (!gst_buffer_map(buf, &map, GST_MAP_READ)) return nullptr;
  const guint8* p = map.data;
  gst_buffer_unmap(buf, &map);
  return p;
}

bool running_gstreamer_before_1_27() {
  guint major = 0, minor = 0, micro = 0, nano = 0;
  gst_version(&major, &minor, &micro, &nano);
  return major == 1 && minor < 27;
}

TEST(ResnetBackboneTensorMeta, BuiltIn) { EXPECT_TRUE(gst_resnet_backbone_tensor_meta_built()); }

// One GstTensor per level, in the meta's order, that is the level: same id (the level name's
// quark), N,C,H,W dims row-major, float32, and the level's own memory (no copy).
TEST(ResnetBackboneTensorMeta, EveryLevelIsATensorOnTheSameMemory) {
  Harness hh;
  ASSERT_NE(hh.h, nullptr);
  GstBuffer* out = hh.push_frame(3);
  ASSERT_NE(out, nullptr);
  GstFeatureMeta* fmeta = gst_buffer_get_feature_meta(out);
  GstTensorMeta* tmeta = gst_buffer_get_tensor_meta(out);
  ASSERT_NE(fmeta, nullptr);
  ASSERT_NE(tmeta, nullptr) << "no GstTensorMeta right after the element";
  ASSERT_EQ(fmeta->num_levels, 4u);
  ASSERT_EQ(tmeta->num_tensors, static_cast<gsize>(fmeta->num_levels));
  for (guint i = 0; i < fmeta->num_levels; ++i) {
    const GstFeatureLevel* level = &fmeta->levels[i];
    const gchar* name = g_quark_to_string(level->name);
    SCOPED_TRACE(name);
    const GstTensor* t = gst_tensor_meta_get(tmeta, i);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->id, level->name);
    EXPECT_EQ(gst_tensor_meta_get_index_from_id(tmeta, g_quark_from_string(name)), static_cast<gint>(i));
    EXPECT_EQ(t->data_type, GST_TENSOR_DATA_TYPE_FLOAT32);
    EXPECT_EQ(t->dims_order, GST_TENSOR_DIM_ORDER_ROW_MAJOR);
    EXPECT_EQ(t->layout, GST_TENSOR_LAYOUT_CONTIGUOUS);
    ASSERT_EQ(t->num_dims, 4u);
    gsize elements = 1;
    for (guint d = 0; d < 4; ++d) {
      EXPECT_EQ(t->dims[d], level->dims[d]) << "dimension " << d;
      elements *= t->dims[d];
    }
    ASSERT_NE(t->data, nullptr);
    ASSERT_EQ(gst_buffer_get_size(t->data), elements * sizeof(float));
    // The same memory object and bytes as the level: shared, not copied.
    ASSERT_EQ(gst_buffer_n_memory(t->data), 1u);
    EXPECT_EQ(gst_buffer_peek_memory(t->data, 0), gst_buffer_peek_memory(level->data, 0));
    EXPECT_EQ(mapped_address(t->data), mapped_address(level->data) + level->offset);
    GstMapInfo lmap;
    ASSERT_TRUE(gst_feature_level_map(level, &lmap, GST_MAP_READ));
    const std::vector<guint8> tbytes = bytes_of(t->data);
    EXPECT_EQ(std::memcmp(tbytes.data(), lmap.data, tbytes.size()), 0);
    gst_feature_level_unmap(level, &lmap);
  }
  gst_buffer_unref(out);
}

// tensor-meta (TRUE by default) turns it off, also while playing; the GstFeatureMeta stays.
TEST(ResnetBackboneTensorMeta, PropertyTurnsItOff) {
  Harness hh;
  ASSERT_NE(hh.h, nullptr);
  gboolean on = FALSE;
  g_object_get(hh.h->element, "tensor-meta", &on, nullptr);
  EXPECT_TRUE(on);
  GstBuffer* out = hh.push_frame(1);
  ASSERT_NE(out, nullptr);
  EXPECT_NE(gst_buffer_get_tensor_meta(out), nullptr);
  gst_buffer_unref(out);
  g_object_set(hh.h->element, "tensor-meta", FALSE, nullptr);
  out = hh.push_frame(2);
  ASSERT_NE(out, nullptr);
  EXPECT_NE(gst_buffer_get_feature_meta(out), nullptr);
  EXPECT_EQ(gst_buffer_get_tensor_meta(out), nullptr);
  gst_buffer_unref(out);
}

// What the README says: GStreamer 1.26's GstTensorMeta has no transform function, so a copy of
// the buffer has the GstFeatureMeta (with the same level memory) and no GstTensorMeta. (1.28 adds
// a copy transform.)
TEST(ResnetBackboneTensorMeta, BufferCopyKeepsOnlyTheFeatureMetaIn126) {
  Harness hh;
  ASSERT_NE(hh.h, nullptr);
  GstBuffer* out = hh.push_frame(4);
  ASSERT_NE(out, nullptr);
  ASSERT_NE(gst_buffer_get_tensor_meta(out), nullptr);
  GstBuffer* copy = gst_buffer_copy(out);
  GstFeatureMeta* fmeta = gst_buffer_get_feature_meta(copy);
  ASSERT_NE(fmeta, nullptr);
  EXPECT_EQ(fmeta->levels[0].data, gst_buffer_get_feature_meta(out)->levels[0].data);
  if (running_gstreamer_before_1_27()) {
    EXPECT_EQ(gst_buffer_get_tensor_meta(copy), nullptr);
  }
  gst_buffer_unref(copy);
  gst_buffer_unref(out);
}

// Made-up metas through the conversion itself.
struct MadeUp {
  GstBuffer* buf = gst_buffer_new();
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  ~MadeUp() { gst_buffer_unref(buf); }
  // A level of dims in a buffer of `total` bytes at `offset` (bytes i hold i % 251).
  void add(const char* name, GstFeatureDType dtype, std::vector<gsize> dims, std::vector<gsize> strides, gsize offset,
           gsize total) {
    GstBuffer* data = gst_buffer_new_allocate(nullptr, total, nullptr);
    GstMapInfo map;
    gst_buffer_map(data, &map, GST_MAP_WRITE);
    for (gsize i = 0; i < total; ++i) map.data[i] = static_cast<guint8>(i % 251);
    gst_buffer_unmap(data, &map);
    ASSERT_NE(gst_feature_meta_add_level(meta, name, dtype, dims.data(), strides.data(), 8, GST_FEATURE_DEVICE_CPU, 0,
                                         data, offset),
              nullptr);
  }
};

// A level at an offset inside a larger buffer: the tensor's buffer is exactly its region, on the
// same memory (a shared sub-memory), and its bytes are the level's.
TEST(ResnetBackboneTensorMeta, LevelAtAnOffsetSharesItsRegion) {
  MadeUp m;
  m.add("p3", GST_FEATURE_DTYPE_FLOAT16, {1, 2, 3, 4}, {24, 12, 4, 1}, 100, 100 + 48 + 20);
  m.add("p4", GST_FEATURE_DTYPE_BFLOAT16, {1, 1, 2, 2}, {4, 4, 2, 1}, 0, 8);
  gst_resnet_backbone_add_tensor_meta(m.buf, m.meta);
  GstTensorMeta* tmeta = gst_buffer_get_tensor_meta(m.buf);
  ASSERT_NE(tmeta, nullptr);
  ASSERT_EQ(tmeta->num_tensors, 2u);
  const GstTensor* t = gst_tensor_meta_get(tmeta, 0);
  const GstFeatureLevel* level = &m.meta->levels[0];
  EXPECT_EQ(t->id, g_quark_from_string("p3"));
  EXPECT_EQ(t->data_type, GST_TENSOR_DATA_TYPE_FLOAT16);
  ASSERT_EQ(gst_buffer_get_size(t->data), 48u);
  EXPECT_EQ(mapped_address(t->data), mapped_address(level->data) + 100) << "the region was copied";
  const std::vector<guint8> b = bytes_of(t->data);
  for (gsize i = 0; i < b.size(); ++i) ASSERT_EQ(b[i], (100 + i) % 251) << "byte " << i;
  const GstTensor* t2 = gst_tensor_meta_get(tmeta, 1);
  EXPECT_EQ(t2->data_type, GST_TENSOR_DATA_TYPE_BFLOAT16);
  EXPECT_EQ(t2->data, m.meta->levels[1].data) << "a whole-buffer level is its own buffer";
}

// GstTensor has no strides: a strided level is refused with what was expected, and the buffer
// gets no GstTensorMeta at all (not one with some of the levels).
TEST(ResnetBackboneTensorMeta, StridedLevelIsRefused) {
  MadeUp m;
  m.add("res2", GST_FEATURE_DTYPE_FLOAT32, {1, 2, 2, 2}, {8, 4, 2, 1}, 0, 32);
  m.add("res3", GST_FEATURE_DTYPE_FLOAT32, {1, 2, 2, 2}, {16, 8, 4, 1}, 0, 64);  // rows padded to 4
  try {
    gst_resnet_backbone_add_tensor_meta(m.buf, m.meta);
    FAIL() << "a strided level was accepted";
  } catch (const backbone::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("\"res3\" is not contiguous"), std::string::npos) << what;
    EXPECT_NE(what.find("expected 2"), std::string::npos) << what;
  }
  EXPECT_EQ(gst_buffer_get_tensor_meta(m.buf), nullptr);
}

}  // namespace
