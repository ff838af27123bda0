// SPDX-License-Identifier: Apache-2.0
// GstFeatureMeta (libgstfeaturemeta-1.0): registration, add/get, level validation, mapping,
// sharing on copies and through real pipelines of GStreamer's own elements, refcounts,
// coordinate conversions and dtype helpers.
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

extern "C" GstFeatureLevel* featuremeta_test_add_level_raw(GstFeatureMeta* meta, const gchar* name, int dtype,
                                                           const gsize dims[4], const gsize strides[4], guint stride,
                                                           int device, gint device_id, GstBuffer* data, gsize offset);

namespace {

// Records criticals and warnings of the meta library, GStreamer and GLib instead of printing
// them, so tests can assert that an invalid call was reported (and that valid calls were not).
class LogCatcher {
 public:
  LogCatcher() {
    for (const char* domain : kDomains)
      ids_.push_back(g_log_set_handler(domain,
                                       static_cast<GLogLevelFlags>(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING |
                                                                   G_LOG_FLAG_FATAL | G_LOG_FLAG_RECURSION),
                                       &LogCatcher::handler, this));
  }
  ~LogCatcher() {
    for (size_t i = 0; i < ids_.size(); ++i) g_log_remove_handler(kDomains[i], ids_[i]);
  }
  LogCatcher(const LogCatcher&) = delete;
  LogCatcher& operator=(const LogCatcher&) = delete;

  std::vector<std::string> take() {
    std::vector<std::string> out;
    out.swap(messages_);
    return out;
  }

 private:
  static constexpr const char* kDomains[] = {"GstFeatureMeta", "GStreamer", "GLib", "GLib-GObject"};
  static void handler(const gchar* domain, GLogLevelFlags level, const gchar* message, gpointer self) {
    std::string text =
        std::string(domain ? domain : "") + ((level & G_LOG_LEVEL_CRITICAL) ? " CRITICAL: " : " WARNING: ") + message;
    static_cast<LogCatcher*>(self)->messages_.push_back(text);
  }
  std::vector<guint> ids_;
  std::vector<std::string> messages_;
};

// A data buffer over g_malloc'd storage whose release is counted (the storage a producer wraps).
struct Storage {
  guint8* base = nullptr;
  gsize size = 0;
  int* freed = nullptr;
};

void storage_release(gpointer p) {
  auto* s = static_cast<Storage*>(p);
  g_atomic_int_inc(s->freed);  // buffers are released on streaming threads too
  g_free(s->base);
  delete s;
}

// Float storage filled with 0, 1, 2, ... (as far as it goes; the tail bytes of a size that is not
// a multiple of 4 are 0xAB).
GstBuffer* make_data(gsize bytes, int* freed, guint8** base_out = nullptr) {
  auto* s = new Storage;
  s->base = static_cast<guint8*>(g_malloc(bytes));
  s->size = bytes;
  s->freed = freed;
  std::memset(s->base, 0xAB, bytes);
  for (gsize i = 0; i < bytes / sizeof(float); ++i) {
    float v = static_cast<float>(i);
    std::memcpy(s->base + i * sizeof(float), &v, sizeof(v));
  }
  if (base_out) *base_out = s->base;
  return gst_buffer_new_wrapped_full(static_cast<GstMemoryFlags>(0), s->base, bytes, 0, bytes, s, storage_release);
}

// The one memory of a fresh make_data() buffer (the buffer itself released).
GstMemory* make_memory(gsize bytes, int* freed) {
  GstBuffer* b = make_data(bytes, freed);
  GstMemory* mem = gst_buffer_get_memory(b, 0);
  gst_buffer_unref(b);
  return mem;
}

float read_float(const guint8* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

const gsize kDims[4] = {1, 2, 3, 4};

class FeatureMetaTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto unexpected = log_.take();
    for (const auto& m : unexpected) ADD_FAILURE() << "unexpected log message: " << m;
  }
  // Expects exactly one critical of the meta library containing every one of `parts`.
  void expect_one_critical(const std::vector<const char*>& parts) {
    auto msgs = log_.take();
    ASSERT_EQ(msgs.size(), 1u) << (msgs.empty() ? std::string("no message") : msgs[0]);
    EXPECT_EQ(msgs[0].rfind("GstFeatureMeta CRITICAL: ", 0), 0u) << msgs[0];
    for (const char* p : parts) EXPECT_NE(msgs[0].find(p), std::string::npos) << "'" << p << "' not in: " << msgs[0];
  }
  LogCatcher log_;
};

TEST_F(FeatureMetaTest, RegisteredOnceWithVideoTags) {
  std::vector<GType> types(8, 0);
  std::vector<const GstMetaInfo*> infos(8, nullptr);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      types[i] = gst_feature_meta_api_get_type();
      infos[i] = gst_feature_meta_get_info();
    });
  for (auto& t : threads) t.join();

  GType api = GST_FEATURE_META_API_TYPE;
  ASSERT_NE(api, G_TYPE_INVALID);
  EXPECT_STREQ(g_type_name(api), "GstFeatureMetaAPI");
  const GstMetaInfo* info = GST_FEATURE_META_INFO;
  ASSERT_NE(info, nullptr);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(types[i], api);
    EXPECT_EQ(infos[i], info);
  }
  EXPECT_EQ(info->api, api);
  EXPECT_EQ(info->size, sizeof(GstFeatureMeta));
  EXPECT_EQ(gst_meta_get_info("GstFeatureMeta"), info);
  EXPECT_NE(info->transform_func, nullptr);
  EXPECT_NE(info->free_func, nullptr);

  // the tags of GstVideoRegionOfInterestMeta, and only those
  const gchar* const* tags = gst_meta_api_type_get_tags(api);
  ASSERT_NE(tags, nullptr);
  EXPECT_EQ(g_strv_length(const_cast<gchar**>(tags)), 3u);
  const gchar* const* roi_tags = gst_meta_api_type_get_tags(GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE);
  for (const char* tag : {GST_META_TAG_VIDEO_STR, GST_META_TAG_VIDEO_SIZE_STR, GST_META_TAG_VIDEO_ORIENTATION_STR}) {
    EXPECT_TRUE(gst_meta_api_type_has_tag(api, g_quark_from_string(tag))) << tag;
    EXPECT_TRUE(g_strv_contains(roi_tags, tag)) << tag;
  }
  for (const char* tag : {GST_META_TAG_VIDEO_COLORSPACE_STR, GST_META_TAG_MEMORY_STR})
    EXPECT_FALSE(gst_meta_api_type_has_tag(api, g_quark_from_string(tag))) << tag;
}

TEST_F(FeatureMetaTest, AddAndGetByUniqueId) {
  GstBuffer* buf = gst_buffer_new();
  EXPECT_EQ(gst_buffer_get_feature_meta(buf), nullptr);
  EXPECT_EQ(gst_buffer_get_feature_meta_by_id(buf, 0), nullptr);

  GstFeatureMeta* a = gst_buffer_add_feature_meta(buf);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->version, guint32{GST_FEATURE_META_VERSION});
  EXPECT_EQ(a->unique_id, 0u);
  EXPECT_EQ(a->model_name, nullptr);
  EXPECT_EQ(a->num_levels, 0u);
  EXPECT_EQ(a->levels, nullptr);
  EXPECT_DOUBLE_EQ(a->scale_x, 1.0);
  EXPECT_DOUBLE_EQ(a->scale_y, 1.0);
  a->unique_id = 3;
  std::string name = "R-50";
  gst_feature_meta_set_model_name(a, name.c_str());
  name[0] = 'X';  // the meta holds its own copy
  EXPECT_STREQ(a->model_name, "R-50");

  GstFeatureMeta* b = gst_buffer_add_feature_meta(buf);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(a, b);
  b->unique_id = 7;
  gst_feature_meta_set_model_name(b, "R-101");
  gst_feature_meta_set_model_name(b, nullptr);
  EXPECT_EQ(b->model_name, nullptr);

  EXPECT_EQ(gst_buffer_get_feature_meta(buf), a);
  EXPECT_EQ(gst_buffer_get_feature_meta_by_id(buf, 3), a);
  EXPECT_EQ(gst_buffer_get_feature_meta_by_id(buf, 7), b);
  EXPECT_EQ(gst_buffer_get_feature_meta_by_id(buf, 5), nullptr);
  EXPECT_EQ(gst_buffer_get_n_meta(buf, GST_FEATURE_META_API_TYPE), 2u);
  gst_buffer_unref(buf);
}

TEST_F(FeatureMetaTest, AddLevelStoresFields) {
  int freed = 0;
  GstBuffer* buf = gst_buffer_new();
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  GstBuffer* data = make_data(96, &freed);
  GstFeatureLevel* level = gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 4,
                                                      GST_FEATURE_DEVICE_CPU, 0, data, 0);
  ASSERT_NE(level, nullptr);
  EXPECT_EQ(meta->num_levels, 1u);
  EXPECT_EQ(level, &meta->levels[0]);
  EXPECT_STREQ(g_quark_to_string(level->name), "res2");
  EXPECT_EQ(level->dtype, GST_FEATURE_DTYPE_FLOAT32);
  EXPECT_EQ(level->num_dims, 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(level->dims[i], kDims[i]);
  // Contiguous NCHW strides when none are given.
  EXPECT_EQ(level->strides[0], 24u);
  EXPECT_EQ(level->strides[1], 12u);
  EXPECT_EQ(level->strides[2], 4u);
  EXPECT_EQ(level->strides[3], 1u);
  EXPECT_EQ(level->stride, 4u);
  EXPECT_EQ(level->device, GST_FEATURE_DEVICE_CPU);
  EXPECT_EQ(level->device_id, 0);
  EXPECT_EQ(level->data, data);  // transfer full: the meta holds the caller's reference
  EXPECT_EQ(GST_MINI_OBJECT_REFCOUNT_VALUE(data), 1);
  EXPECT_EQ(level->offset, 0u);
  EXPECT_EQ(gst_feature_level_n_elements(level), 24u);

  // A CUDA level (a later engine's storage) with explicit strides and an offset; a device id > 0.
  const gsize strides[4] = {100, 30, 6, 1};
  GstFeatureLevel* res3 = gst_feature_meta_add_level(meta, "res3", GST_FEATURE_DTYPE_FLOAT16, kDims, strides, 8,
                                                     GST_FEATURE_DEVICE_CUDA, 1, make_data(200, &freed), 10);
  ASSERT_NE(res3, nullptr);
  EXPECT_EQ(meta->num_levels, 2u);
  EXPECT_EQ(res3->device, GST_FEATURE_DEVICE_CUDA);
  EXPECT_EQ(res3->device_id, 1);
  EXPECT_EQ(res3->strides[1], 30u);
  EXPECT_EQ(res3->offset, 10u);

  EXPECT_EQ(gst_feature_meta_get_level(meta, "res2"), &meta->levels[0]);
  EXPECT_EQ(gst_feature_meta_get_level(meta, "res3"), &meta->levels[1]);
  EXPECT_EQ(gst_feature_meta_get_level(meta, "res4"), nullptr);
  EXPECT_EQ(gst_feature_meta_get_level(meta, "a-level-name-nobody-ever-interned"), nullptr);
  EXPECT_EQ(gst_feature_meta_get_typed_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32), &meta->levels[0]);
  EXPECT_EQ(gst_feature_meta_get_typed_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT16), nullptr);
  EXPECT_EQ(gst_feature_meta_get_typed_level(meta, "res3", GST_FEATURE_DTYPE_FLOAT16), &meta->levels[1]);
  EXPECT_EQ(gst_feature_meta_get_typed_level(meta, "res3", GST_FEATURE_DTYPE_BFLOAT16), nullptr);
  EXPECT_EQ(gst_feature_meta_get_typed_level(meta, "res5", GST_FEATURE_DTYPE_FLOAT32), nullptr);

  EXPECT_EQ(freed, 0);
  gst_buffer_unref(buf);
  EXPECT_EQ(freed, 2);
}

TEST_F(FeatureMetaTest, AddLevelRefusesInvalidArguments) {
  int freed = 0;
  GstBuffer* buf = gst_buffer_new();
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  meta->unique_id = 9;
  const gsize strides[4] = {100, 30, 6, 1};

  // Contiguous float32 [1, 2, 3, 4] at offset 8 needs exactly 104 bytes.
  ASSERT_NE(gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 4,
                                       GST_FEATURE_DEVICE_CPU, 0, make_data(104, &freed), 8),
            nullptr);
  // With strides [100, 30, 6, 1] the last element is 30 + 2 * 6 + 3 = 45: 46 floats, 184 bytes + offset 40.
  ASSERT_NE(gst_feature_meta_add_level(meta, "res3", GST_FEATURE_DTYPE_FLOAT32, kDims, strides, 8,
                                       GST_FEATURE_DEVICE_CPU, 0, make_data(224, &freed), 40),
            nullptr);
  EXPECT_TRUE(log_.take().empty());

  struct Case {
    const char* what;
    const char* name;
    int dtype;  // ints: a C caller may pass any value (see featuremeta_c_helpers.c)
    std::vector<gsize> dims;
    const gsize* strides;
    guint stride;
    int device;
    gint device_id;
    gsize bytes;
    gsize offset;
    std::vector<const char*> message;
  };
  const std::vector<Case> cases = {
      {"one byte short",
       "res4",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 3, 4},
       nullptr,
       16,
       GST_FEATURE_DEVICE_CPU,
       0,
       103,
       8,
       {"res4", "need 104 bytes", "has 103"}},
      {"short with strides",
       "res4",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 3, 4},
       strides,
       16,
       GST_FEATURE_DEVICE_CPU,
       0,
       223,
       40,
       {"res4", "strides [100, 30, 6, 1]", "need 224 bytes", "has 223"}},
      {"float16 short",
       "res4",
       GST_FEATURE_DTYPE_FLOAT16,
       {1, 2, 3, 4},
       nullptr,
       16,
       GST_FEATURE_DEVICE_CPU,
       0,
       47,
       0,
       {"float16", "need 48 bytes"}},
      {"duplicate name",
       "res2",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 3, 4},
       nullptr,
       4,
       GST_FEATURE_DEVICE_CPU,
       0,
       96,
       0,
       {"res2 already present", "producer 9"}},
      {"unknown dtype", "res4", 12, {1, 2, 3, 4}, nullptr, 16, GST_FEATURE_DEVICE_CPU, 0, 96, 0, {"unknown dtype 12"}},
      {"zero dim",
       "res4",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 0, 4},
       nullptr,
       16,
       GST_FEATURE_DEVICE_CPU,
       0,
       96,
       0,
       {"dims must be at least 1", "[1, 2, 0, 4]"}},
      {"zero stride",
       "res4",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 3, 4},
       nullptr,
       0,
       GST_FEATURE_DEVICE_CPU,
       0,
       96,
       0,
       {"stride must be at least 1"}},
      {"unknown device",
       "res4",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 3, 4},
       nullptr,
       16,
       5,
       0,
       96,
       0,
       {"unknown device 5"}},
      {"cpu device id",
       "res4",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 3, 4},
       nullptr,
       16,
       GST_FEATURE_DEVICE_CPU,
       1,
       96,
       0,
       {"device_id 1"}},
      {"negative cuda id",
       "res4",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 3, 4},
       nullptr,
       16,
       GST_FEATURE_DEVICE_CUDA,
       -1,
       96,
       0,
       {"device_id -1"}},
      {"empty name",
       "",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, 3, 4},
       nullptr,
       16,
       GST_FEATURE_DEVICE_CPU,
       0,
       96,
       0,
       {"name"}},
      {"overflowing extent",
       "res4",
       GST_FEATURE_DTYPE_FLOAT32,
       {1, 2, G_MAXSIZE / 2, 4},
       nullptr,
       16,
       GST_FEATURE_DEVICE_CPU,
       0,
       96,
       0,
       {"res4", "has 96"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    int before = freed;
    GstFeatureLevel* level =
        featuremeta_test_add_level_raw(meta, c.name, c.dtype, c.dims.data(), c.strides, c.stride, c.device, c.device_id,
                                       make_data(c.bytes, &freed), c.offset);
    EXPECT_EQ(level, nullptr);
    expect_one_critical(c.message);
    EXPECT_EQ(freed, before + 1) << "the refused data buffer was not released";
    EXPECT_EQ(meta->num_levels, 2u);
  }

  // Invalid pointers.
  EXPECT_EQ(gst_feature_meta_add_level(meta, "res4", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 16,
                                       GST_FEATURE_DEVICE_CPU, 0, nullptr, 0),
            nullptr);
  expect_one_critical({"GST_IS_BUFFER"});
  EXPECT_EQ(gst_feature_meta_add_level(meta, nullptr, GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 16,
                                       GST_FEATURE_DEVICE_CPU, 0, make_data(96, &freed), 0),
            nullptr);
  expect_one_critical({"name"});
  EXPECT_EQ(gst_feature_meta_add_level(nullptr, "res4", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 16,
                                       GST_FEATURE_DEVICE_CPU, 0, make_data(96, &freed), 0),
            nullptr);
  expect_one_critical({"meta"});
  EXPECT_EQ(meta->num_levels, 2u);

  int levels_freed = freed;
  gst_buffer_unref(buf);
  EXPECT_EQ(freed, levels_freed + 2);
}

// Builds a buffer with one meta (unique_id 4, geometry 64x48 -> 80x60) and a float32 res2 level.
GstBuffer* buffer_with_level(int* freed, GstBuffer** data_out, guint8** base_out = nullptr) {
  GstBuffer* buf = gst_buffer_new_allocate(nullptr, 16, nullptr);
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  meta->unique_id = 4;
  gst_feature_meta_set_model_name(meta, "R-50");
  meta->frame_width = 64;
  meta->frame_height = 48;
  meta->input_width = 80;
  meta->input_height = 60;
  meta->padded_width = 96;
  meta->padded_height = 64;
  meta->scale_x = 80.0 / 64.0;
  meta->scale_y = 60.0 / 48.0;
  GstBuffer* data = make_data(96, freed, base_out);
  EXPECT_NE(gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 4,
                                       GST_FEATURE_DEVICE_CPU, 0, data, 0),
            nullptr);
  if (data_out) *data_out = data;
  return buf;
}

void expect_same_meta(const GstFeatureMeta* a, const GstFeatureMeta* b) {
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(a, b);
  EXPECT_EQ(a->version, b->version);
  EXPECT_EQ(a->unique_id, b->unique_id);
  ASSERT_NE(b->model_name, nullptr);
  EXPECT_STREQ(a->model_name, b->model_name);
  EXPECT_NE(a->model_name, b->model_name);  // each meta owns its string
  EXPECT_EQ(a->frame_width, b->frame_width);
  EXPECT_EQ(a->frame_height, b->frame_height);
  EXPECT_EQ(a->input_width, b->input_width);
  EXPECT_EQ(a->input_height, b->input_height);
  EXPECT_EQ(a->padded_width, b->padded_width);
  EXPECT_EQ(a->padded_height, b->padded_height);
  EXPECT_EQ(a->scale_x, b->scale_x);
  EXPECT_EQ(a->scale_y, b->scale_y);
  ASSERT_EQ(a->num_levels, b->num_levels);
  EXPECT_NE(a->levels, b->levels);  // each meta owns its level array...
  for (guint i = 0; i < a->num_levels; ++i) {
    EXPECT_EQ(a->levels[i].name, b->levels[i].name);
    EXPECT_EQ(a->levels[i].dtype, b->levels[i].dtype);
    EXPECT_EQ(a->levels[i].data, b->levels[i].data);  // ...but shares the data
    EXPECT_EQ(a->levels[i].offset, b->levels[i].offset);
    EXPECT_EQ(a->levels[i].stride, b->levels[i].stride);
    for (int d = 0; d < 4; ++d) {
      EXPECT_EQ(a->levels[i].dims[d], b->levels[i].dims[d]);
      EXPECT_EQ(a->levels[i].strides[d], b->levels[i].strides[d]);
    }
  }
}

TEST_F(FeatureMetaTest, CopySharesDataAndLastMetaFreesIt) {
  int freed = 0;
  GstBuffer* data = nullptr;
  guint8* base = nullptr;
  GstBuffer* buf = buffer_with_level(&freed, &data, &base);
  gboolean data_finalized = FALSE;
  gst_mini_object_weak_ref(
      GST_MINI_OBJECT(data), [](gpointer flag, GstMiniObject*) { *static_cast<gboolean*>(flag) = TRUE; },
      &data_finalized);

  GstBuffer* copy = gst_buffer_copy(buf);
  GstBuffer* deep = gst_buffer_copy_deep(buf);  // a deep copy copies the frame, the features stay shared
  GstBuffer* region = gst_buffer_copy_region(buf, GST_BUFFER_COPY_ALL, 4, 8);
  for (GstBuffer* b : {copy, deep, region}) {
    SCOPED_TRACE(b == copy ? "copy" : b == deep ? "deep copy" : "region copy");
    GstFeatureMeta* m = gst_buffer_get_feature_meta(b);
    expect_same_meta(gst_buffer_get_feature_meta(buf), m);
    GstMapInfo map;
    ASSERT_TRUE(gst_feature_level_map(&m->levels[0], &map, GST_MAP_READ));
    EXPECT_EQ(map.data, base);  // the producer's storage itself
    gst_feature_level_unmap(&m->levels[0], &map);
  }
  EXPECT_EQ(GST_MINI_OBJECT_REFCOUNT_VALUE(data), 4);

  gst_buffer_unref(buf);
  gst_buffer_unref(deep);
  gst_buffer_unref(region);
  EXPECT_EQ(freed, 0);
  EXPECT_FALSE(data_finalized);
  EXPECT_EQ(GST_MINI_OBJECT_REFCOUNT_VALUE(data), 1);
  gst_buffer_unref(copy);  // the last meta goes: the storage is released
  EXPECT_EQ(freed, 1);
  EXPECT_TRUE(data_finalized);
}

TEST_F(FeatureMetaTest, MapAppliesOffsetAndStrides) {
  int freed = 0;
  guint8* base = nullptr;
  GstBuffer* buf = gst_buffer_new();
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  // Element (0, c, h, w) at float 10 + c * 30 + h * 6 + w: a view into padded storage.
  const gsize strides[4] = {100, 30, 6, 1};
  const GstFeatureLevel* level =
      gst_feature_meta_add_level(meta, "res3", GST_FEATURE_DTYPE_FLOAT32, kDims, strides, 8, GST_FEATURE_DEVICE_CPU, 0,
                                 make_data(400, &freed, &base), 40);
  ASSERT_NE(level, nullptr);

  GstMapInfo map;
  ASSERT_TRUE(gst_feature_level_map(level, &map, GST_MAP_READ));
  EXPECT_EQ(map.data, base + 40);  // zero copy, offset applied
  EXPECT_EQ(map.size, gsize{46 * 4});
  EXPECT_EQ(map.maxsize, gsize{400 - 40});
  EXPECT_TRUE(map.flags & GST_MAP_READ);
  for (gsize c = 0; c < 2; ++c)
    for (gsize h = 0; h < 3; ++h)
      for (gsize w = 0; w < 4; ++w) {
        gsize i = c * level->strides[1] + h * level->strides[2] + w * level->strides[3];
        EXPECT_EQ(read_float(map.data + i * 4), static_cast<float>(10 + c * 30 + h * 6 + w));
      }
  // A second, concurrent mapping of the same level.
  GstMapInfo map2;
  ASSERT_TRUE(gst_feature_level_map(level, &map2, GST_MAP_READ));
  EXPECT_EQ(map2.data, map.data);
  gst_feature_level_unmap(level, &map2);
  EXPECT_EQ(map2.data, nullptr);  // cleared
  gst_feature_level_unmap(level, &map);

  // Writing is refused (the data is shared by every copy of the buffer), and so is mapping without READ.
  GstMapInfo refused;
  EXPECT_FALSE(gst_feature_level_map(level, &refused, GST_MAP_WRITE));
  EXPECT_EQ(refused.data, nullptr);
  EXPECT_FALSE(gst_feature_level_map(level, &refused, GST_MAP_READWRITE));
  EXPECT_FALSE(gst_feature_level_map(level, &refused, static_cast<GstMapFlags>(0)));

  // While a level is mapped its memory is locked for reading (no writer can get in); the unmap
  // releases that lock.
  GstMemory* mem = gst_buffer_peek_memory(level->data, 0);
  ASSERT_TRUE(gst_feature_level_map(level, &map, GST_MAP_READ));
  GstMapInfo w;
  EXPECT_FALSE(gst_memory_map(mem, &w, GST_MAP_WRITE));
  gst_feature_level_unmap(level, &map);
  ASSERT_TRUE(gst_memory_map(mem, &w, GST_MAP_WRITE));
  gst_memory_unmap(mem, &w);

  // The mapping keeps the data alive after the buffer and its meta are gone.
  ASSERT_TRUE(gst_feature_level_map(level, &map, GST_MAP_READ));
  const GstFeatureLevel saved = *level;
  gst_buffer_unref(buf);
  EXPECT_EQ(freed, 0);
  EXPECT_EQ(read_float(map.data + 45 * 4), 55.0f);
  gst_feature_level_unmap(&saved, &map);
  EXPECT_EQ(freed, 1);

  // An info that did not come from gst_feature_level_map() is refused with a critical.
  GstMapInfo bogus;
  std::memset(&bogus, 0, sizeof(bogus));
  gst_feature_level_unmap(&saved, &bogus);
  expect_one_critical({"LEVEL_MAPPING_MAGIC"});
}

TEST_F(FeatureMetaTest, MapMergesSeveralMemories) {
  int freed = 0;
  GstBuffer* data = make_data(48, &freed);
  gst_buffer_append_memory(data, make_memory(48, &freed));  // floats 0..11, then 0..11
  EXPECT_EQ(freed, 0);
  GstBuffer* buf = gst_buffer_new();
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  const GstFeatureLevel* level = gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 4,
                                                            GST_FEATURE_DEVICE_CPU, 0, data, 4);
  ASSERT_EQ(level, nullptr);  // 24 floats at offset 4 need 100 bytes, there are 96
  expect_one_critical({"need 100 bytes", "has 96"});

  data = make_data(48, &freed);
  gst_buffer_append_memory(data, make_memory(52, &freed));  // floats 0..11, then 0..12
  level = gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 4, GST_FEATURE_DEVICE_CPU,
                                     0, data, 4);
  ASSERT_NE(level, nullptr);
  GstMapInfo map;
  ASSERT_TRUE(gst_feature_level_map(level, &map, GST_MAP_READ));
  EXPECT_EQ(map.size, 96u);
  for (int i = 0; i < 24; ++i)
    EXPECT_EQ(read_float(map.data + 4 * i), static_cast<float>(i < 11 ? i + 1 : i - 11)) << i;
  gst_feature_level_unmap(level, &map);
  gst_buffer_unref(buf);
  EXPECT_EQ(freed, 4);
}

TEST_F(FeatureMetaTest, ConcurrentMapsFromManyThreads) {
  int freed = 0;
  GstBuffer* data = nullptr;
  GstBuffer* buf = buffer_with_level(&freed, &data);
  const GstFeatureLevel* level = gst_feature_meta_get_level(gst_buffer_get_feature_meta(buf), "res2");
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        GstMapInfo map;
        if (!gst_feature_level_map(level, &map, GST_MAP_READ) || read_float(map.data + 4 * 23) != 23.0f) ++bad;
        gst_feature_level_unmap(level, &map);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(GST_MINI_OBJECT_REFCOUNT_VALUE(data), 1);
  gst_buffer_unref(buf);
  EXPECT_EQ(freed, 1);
}

TEST_F(FeatureMetaTest, CoordinateConversions) {
  GstBuffer* buf = gst_buffer_new();
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  // A 640x480 frame resized to 1000x600 (different scale per axis), padded to 1024x608.
  meta->frame_width = 640;
  meta->frame_height = 480;
  meta->input_width = 1000;
  meta->input_height = 600;
  meta->padded_width = 1024;
  meta->padded_height = 608;
  meta->scale_x = 1000.0 / 640.0;  // 1.5625
  meta->scale_y = 600.0 / 480.0;   // 1.25
  int freed = 0;
  const gsize dims[4] = {1, 1, 38, 64};  // res4 of a 608x1024 input
  const GstFeatureLevel* res4 =
      gst_feature_meta_add_level(meta, "res4", GST_FEATURE_DTYPE_FLOAT32, dims, nullptr, 16, GST_FEATURE_DEVICE_CPU, 0,
                                 make_data(38 * 64 * 4, &freed), 0);
  ASSERT_NE(res4, nullptr);

  gdouble fx = -1, fy = -1;
  gst_feature_meta_frame_to_feature(meta, res4, 100.0, 200.0, &fx, &fy);
  EXPECT_DOUBLE_EQ(fx, 100.0 * 1.5625 / 16.0);  // 9.765625
  EXPECT_DOUBLE_EQ(fy, 200.0 * 1.25 / 16.0);    // 15.625
  gdouble x = -1, y = -1;
  gst_feature_meta_feature_to_frame(meta, res4, fx, fy, &x, &y);
  EXPECT_DOUBLE_EQ(x, 100.0);
  EXPECT_DOUBLE_EQ(y, 200.0);
  // The frame's far corner lands at the input size over the stride (before padding).
  gst_feature_meta_frame_to_feature(meta, res4, 640.0, 480.0, &fx, &fy);
  EXPECT_DOUBLE_EQ(fx, 1000.0 / 16.0);
  EXPECT_DOUBLE_EQ(fy, 600.0 / 16.0);
  // Cell (3, 2)'s top-left corner in frame pixels, and one output only.
  gst_feature_meta_feature_to_frame(meta, res4, 3.0, 2.0, &x, nullptr);
  EXPECT_DOUBLE_EQ(x, 3.0 * 16.0 / 1.5625);  // 30.72
  gst_feature_meta_feature_to_frame(meta, res4, 3.0, 2.0, nullptr, &y);
  EXPECT_DOUBLE_EQ(y, 2.0 * 16.0 / 1.25);  // 25.6

  const gdouble frame_box[4] = {32.0, 64.0, 320.0, 240.0};
  gdouble feature_box[4];
  gst_feature_meta_frame_box_to_feature(meta, res4, frame_box, feature_box);
  EXPECT_DOUBLE_EQ(feature_box[0], 32.0 * 1.5625 / 16.0);   // 3.125
  EXPECT_DOUBLE_EQ(feature_box[1], 64.0 * 1.25 / 16.0);     // 5
  EXPECT_DOUBLE_EQ(feature_box[2], 320.0 * 1.5625 / 16.0);  // 31.25
  EXPECT_DOUBLE_EQ(feature_box[3], 240.0 * 1.25 / 16.0);    // 18.75
  gdouble back[4];
  gst_feature_meta_feature_box_to_frame(meta, res4, feature_box, back);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(back[i], frame_box[i]) << i;
  // In place.
  gdouble box[4] = {32.0, 64.0, 320.0, 240.0};
  gst_feature_meta_frame_box_to_feature(meta, res4, box, box);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(box[i], feature_box[i]) << i;

  // A meta without geometry (scale 0) cannot be inverted: refused, outputs untouched.
  meta->scale_x = 0.0;
  x = -7;
  gst_feature_meta_feature_to_frame(meta, res4, 1.0, 1.0, &x, &y);
  EXPECT_EQ(x, -7);
  expect_one_critical({"scale_x > 0"});
  gst_buffer_unref(buf);
  EXPECT_EQ(freed, 1);
}

TEST_F(FeatureMetaTest, DTypeHelpers) {
  EXPECT_EQ(gst_feature_dtype_size(GST_FEATURE_DTYPE_FLOAT16), 2u);
  EXPECT_EQ(gst_feature_dtype_size(GST_FEATURE_DTYPE_FLOAT32), 4u);
  EXPECT_EQ(gst_feature_dtype_size(GST_FEATURE_DTYPE_BFLOAT16), 2u);
  EXPECT_EQ(gst_feature_dtype_size(static_cast<GstFeatureDType>(0)), 0u);
  EXPECT_EQ(gst_feature_dtype_size(static_cast<GstFeatureDType>(12)), 0u);
  EXPECT_STREQ(gst_feature_dtype_to_string(GST_FEATURE_DTYPE_FLOAT16), "float16");
  EXPECT_STREQ(gst_feature_dtype_to_string(GST_FEATURE_DTYPE_FLOAT32), "float32");
  EXPECT_STREQ(gst_feature_dtype_to_string(GST_FEATURE_DTYPE_BFLOAT16), "bfloat16");
  EXPECT_EQ(gst_feature_dtype_to_string(static_cast<GstFeatureDType>(12)), nullptr);
  // The numbering of GstTensorDataType (GStreamer 1.26): float16 10, float32 11, bfloat16 13.
  EXPECT_EQ(static_cast<int>(GST_FEATURE_DTYPE_FLOAT16), 10);
  EXPECT_EQ(static_cast<int>(GST_FEATURE_DTYPE_FLOAT32), 11);
  EXPECT_EQ(static_cast<int>(GST_FEATURE_DTYPE_BFLOAT16), 13);

  int freed = 0;
  GstBuffer* buf = gst_buffer_new();
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  const gsize dims[4] = {1, 256, 60, 80};
  const GstFeatureLevel* level =
      gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_BFLOAT16, dims, nullptr, 4, GST_FEATURE_DEVICE_CPU, 0,
                                 make_data(256 * 60 * 80 * 2, &freed), 0);
  ASSERT_NE(level, nullptr);
  EXPECT_EQ(gst_feature_level_n_elements(level), gsize{256 * 60 * 80});
  GstMapInfo map;
  ASSERT_TRUE(gst_feature_level_map(level, &map, GST_MAP_READ));
  EXPECT_EQ(map.size, gsize{256 * 60 * 80 * 2});
  gst_feature_level_unmap(level, &map);
  gst_buffer_unref(buf);
  EXPECT_EQ(freed, 1);
}

// Pipelines of GStreamer's own elements keep the meta, with the same data (no copy).
class FeatureMetaPipelineTest : public FeatureMetaTest {};

TEST_F(FeatureMetaPipelineTest, SurvivesQueueTeeVideoconvertVideoscale) {
  for (const char* factory : {"appsrc", "appsink", "queue", "tee", "videoconvert", "videoscale"}) {
    GstElementFactory* f = gst_element_factory_find(factory);
    ASSERT_NE(f, nullptr) << factory << " missing (GStreamer base/core plugins)";
    gst_object_unref(f);
  }
  GError* error = nullptr;
  GstElement* pipeline = gst_parse_launch(
      "appsrc name=src format=time caps=video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! queue ! "
      "tee name=t "
      "t. ! queue ! videoconvert ! videoscale ! video/x-raw,format=BGRx,width=32,height=24 ! "
      "appsink name=scaled sync=false "
      "t. ! queue ! appsink name=direct sync=false",
      &error);
  ASSERT_NE(pipeline, nullptr) << (error ? error->message : "");
  ASSERT_EQ(error, nullptr) << error->message;
  GstElement* src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstElement* scaled = gst_bin_get_by_name(GST_BIN(pipeline), "scaled");
  GstElement* direct = gst_bin_get_by_name(GST_BIN(pipeline), "direct");
  ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);

  const int kFrames = 3;
  int freed = 0;
  std::vector<GstBuffer*> data1, data2;  // borrowed: each owned by its meta
  std::vector<guint8*> bases1;
  for (int f = 0; f < kFrames; ++f) {
    GstBuffer* frame = gst_buffer_new_allocate(nullptr, 64 * 48 * 3, nullptr);
    gst_buffer_memset(frame, 0, static_cast<guint8>(40 * f), 64 * 48 * 3);
    GST_BUFFER_PTS(frame) = f * GST_SECOND / 30;
    GST_BUFFER_DURATION(frame) = GST_SECOND / 30;
    for (guint id : {1u, 2u}) {  // two producers
      GstFeatureMeta* meta = gst_buffer_add_feature_meta(frame);
      meta->unique_id = id;
      gst_feature_meta_set_model_name(meta, id == 1 ? "R-50" : "R-101");
      meta->frame_width = 64;
      meta->frame_height = 48;
      meta->input_width = meta->padded_width = 64;
      meta->input_height = meta->padded_height = 48;
      guint8* base = nullptr;
      GstBuffer* data = make_data(96, &freed, &base);
      ASSERT_NE(gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 4,
                                           GST_FEATURE_DEVICE_CPU, 0, data, 0),
                nullptr);
      (id == 1 ? data1 : data2).push_back(data);
      if (id == 1) bases1.push_back(base);
    }
    ASSERT_EQ(gst_app_src_push_buffer(GST_APP_SRC(src), frame), GST_FLOW_OK);
  }
  ASSERT_EQ(gst_app_src_end_of_stream(GST_APP_SRC(src)), GST_FLOW_OK);

  for (GstElement* sink : {scaled, direct}) {
    SCOPED_TRACE(GST_ELEMENT_NAME(sink));
    for (int f = 0; f < kFrames; ++f) {
      GstSample* sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 10 * GST_SECOND);
      ASSERT_NE(sample, nullptr) << "frame " << f;
      GstBuffer* out = gst_sample_get_buffer(sample);
      GstVideoInfo vinfo;
      ASSERT_TRUE(gst_video_info_from_caps(&vinfo, gst_sample_get_caps(sample)));
      if (sink == scaled) {  // really converted and scaled: a new buffer, onto which the meta was transformed
        EXPECT_EQ(GST_VIDEO_INFO_FORMAT(&vinfo), GST_VIDEO_FORMAT_BGRx);
        EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&vinfo), 32);
        EXPECT_EQ(GST_VIDEO_INFO_HEIGHT(&vinfo), 24);
        EXPECT_EQ(gst_buffer_get_size(out), gsize{32 * 24 * 4});
      } else {
        EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&vinfo), 64);
      }
      EXPECT_EQ(GST_BUFFER_PTS(out), static_cast<GstClockTime>(f * GST_SECOND / 30));
      EXPECT_EQ(gst_buffer_get_n_meta(out, GST_FEATURE_META_API_TYPE), 2u);
      GstFeatureMeta* m1 = gst_buffer_get_feature_meta_by_id(out, 1);
      GstFeatureMeta* m2 = gst_buffer_get_feature_meta_by_id(out, 2);
      ASSERT_NE(m1, nullptr);
      ASSERT_NE(m2, nullptr);
      EXPECT_STREQ(m1->model_name, "R-50");
      EXPECT_STREQ(m2->model_name, "R-101");
      // the geometry of the frame the buffer holds: videoscale's scale transform updated it
      EXPECT_EQ(m1->frame_width, static_cast<guint>(GST_VIDEO_INFO_WIDTH(&vinfo)));
      EXPECT_EQ(m1->frame_height, static_cast<guint>(GST_VIDEO_INFO_HEIGHT(&vinfo)));
      EXPECT_EQ(m2->frame_width, static_cast<guint>(GST_VIDEO_INFO_WIDTH(&vinfo)));
      EXPECT_DOUBLE_EQ(m1->scale_x, 64.0 / GST_VIDEO_INFO_WIDTH(&vinfo));
      EXPECT_EQ(m1->input_width, 64u);
      const GstFeatureLevel* l1 = gst_feature_meta_get_typed_level(m1, "res2", GST_FEATURE_DTYPE_FLOAT32);
      const GstFeatureLevel* l2 = gst_feature_meta_get_typed_level(m2, "res2", GST_FEATURE_DTYPE_FLOAT32);
      ASSERT_NE(l1, nullptr);
      ASSERT_NE(l2, nullptr);
      EXPECT_EQ(l1->data, data1[f]);  // the same GstBuffer...
      EXPECT_EQ(l2->data, data2[f]);
      GstMapInfo map;
      ASSERT_TRUE(gst_feature_level_map(l1, &map, GST_MAP_READ));
      EXPECT_EQ(map.data, bases1[f]);  // ...over the producer's storage itself
      EXPECT_EQ(read_float(map.data + 4 * 23), 23.0f);
      gst_feature_level_unmap(l1, &map);
      gst_sample_unref(sample);
    }
  }
  EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  gst_object_unref(src);
  gst_object_unref(scaled);
  gst_object_unref(direct);
  gst_object_unref(pipeline);
  EXPECT_EQ(freed, 2 * kFrames) << "every level's storage is released once the last buffer is gone";
}

}  // namespace
