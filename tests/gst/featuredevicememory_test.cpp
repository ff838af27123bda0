// SPDX-License-Identifier: Apache-2.0
// GstFeatureDeviceMemory (featuredevicememory.h) with fake device callbacks: host memory plays the
// device, the download callback counts its calls and copies from it. Checks one download for many
// maps (also from concurrent threads and through shared memories), refused write maps, sharing,
// copies, a feature meta whose levels use it (gst_feature_level_map, the zero-copy device pointer,
// the copy transform) and that the device allocation is released exactly once, with the last
// buffer.
#include <gst/featuremeta/featuredevicememory.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Counters {
  std::atomic<int> downloads{0};
  std::atomic<int> frees{0};
  std::atomic<int> fail_next{0};  // the next download fails (then succeed again)
  int delay_ms = 0;               // widens the window of concurrent first maps
};

// One fake device allocation: g_malloc'd memory filled with floats 0.5, 1.5, 2.5, ...
struct FakeAllocation {
  guint8* device = nullptr;
  gsize size = 0;
  Counters* counters = nullptr;
};

gboolean fake_download(gpointer user_data, gpointer dest, gsize size, GError** error) {
  auto* a = static_cast<FakeAllocation*>(user_data);
  if (a->counters->delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(a->counters->delay_ms));
  if (a->counters->fail_next.exchange(0) != 0) {
    g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ, "fake device copy failed");
    return FALSE;
  }
  a->counters->downloads++;
  if (size != a->size) {
    g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_READ, "size %zu, expected %zu", size, a->size);
    return FALSE;
  }
  std::memcpy(dest, a->device, size);
  return TRUE;
}

void fake_free(gpointer user_data) {
  auto* a = static_cast<FakeAllocation*>(user_data);
  a->counters->frees++;
  g_free(a->device);
  delete a;
}

const GstFeatureDeviceMemoryFuncs* fake_funcs() {
  static GstFeatureDeviceMemoryFuncs funcs = [] {
    GstFeatureDeviceMemoryFuncs f;
    std::memset(&f, 0, sizeof(f));
    f.download = fake_download;
    f.free = fake_free;
    return f;
  }();
  return &funcs;
}

float value_at(gsize i) { return static_cast<float>(i) + 0.5f; }

gpointer fake_event() { return reinterpret_cast<gpointer>(static_cast<guintptr>(0xE7E47)); }

// A feature device memory over `n_floats` floats; *device_out receives the fake device pointer.
GstMemory* make_memory(Counters* c, gsize n_floats, guint8** device_out = nullptr, gint device_id = 0) {
  auto* a = new FakeAllocation;
  a->size = n_floats * sizeof(float);
  a->device = static_cast<guint8*>(g_malloc(a->size));
  a->counters = c;
  for (gsize i = 0; i < n_floats; ++i) reinterpret_cast<float*>(a->device)[i] = value_at(i);
  if (device_out) *device_out = a->device;
  return gst_feature_device_memory_new(GST_FEATURE_DEVICE_CUDA, device_id, a->device, a->size, fake_event(),
                                       fake_funcs(), a);
}

// Records criticals of the meta library (its log domain) instead of printing them.
struct CriticalCatcher {
  std::vector<std::string> messages;
  guint id;
  CriticalCatcher() {
    id = g_log_set_handler("GstFeatureMeta",
                           static_cast<GLogLevelFlags>(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING | G_LOG_FLAG_FATAL),
                           [](const gchar*, GLogLevelFlags, const gchar* msg, gpointer self) {
                             static_cast<CriticalCatcher*>(self)->messages.emplace_back(msg);
                           },
                           this);
  }
  ~CriticalCatcher() { g_log_remove_handler("GstFeatureMeta", id); }
};

TEST(FeatureDeviceMemory, AccessorsDescribeTheDeviceAllocation) {
  Counters c;
  guint8* dev = nullptr;
  GstMemory* mem = make_memory(&c, 64, &dev, 3);
  ASSERT_NE(mem, nullptr);
  EXPECT_TRUE(gst_is_feature_device_memory(mem));
  EXPECT_STREQ(mem->allocator->mem_type, GST_FEATURE_DEVICE_MEMORY_TYPE_NAME);
  EXPECT_EQ(gst_feature_device_memory_get_device(mem), GST_FEATURE_DEVICE_CUDA);
  EXPECT_EQ(gst_feature_device_memory_get_device_id(mem), 3);
  EXPECT_EQ(gst_feature_device_memory_get_device_pointer(mem), dev);
  EXPECT_EQ(gst_feature_device_memory_get_ready_event(mem), fake_event());
  EXPECT_EQ(gst_memory_get_sizes(mem, nullptr, nullptr), 64 * sizeof(float));
  EXPECT_TRUE(GST_MEMORY_IS_READONLY(mem));
  EXPECT_EQ(c.downloads, 0) << "nothing is downloaded before a map";

  GstMemory* sys = gst_allocator_alloc(nullptr, 16, nullptr);
  EXPECT_FALSE(gst_is_feature_device_memory(sys));
  EXPECT_FALSE(gst_is_feature_device_memory(nullptr));
  gst_memory_unref(sys);

  gst_memory_unref(mem);
  EXPECT_EQ(c.downloads, 0);
  EXPECT_EQ(c.frees, 1);
}

TEST(FeatureDeviceMemory, ManyMapsDownloadOnce) {
  Counters c;
  GstMemory* mem = make_memory(&c, 1000);
  const guint8* first = nullptr;
  for (int i = 0; i < 5; ++i) {
    GstMapInfo map;
    ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READ));
    ASSERT_EQ(map.size, 1000 * sizeof(float));
    if (i == 0) first = map.data;
    EXPECT_EQ(map.data, first) << "every map returns the one host copy";
    const float* f = reinterpret_cast<const float*>(map.data);
    for (gsize k = 0; k < 1000; ++k) ASSERT_EQ(f[k], value_at(k)) << k;
    gst_memory_unmap(mem, &map);
  }
  EXPECT_EQ(c.downloads, 1);
  EXPECT_EQ(c.frees, 0);
  gst_memory_unref(mem);
  EXPECT_EQ(c.frees, 1);
}

TEST(FeatureDeviceMemory, ConcurrentMapsFromThreadsDownloadOnce) {
  Counters c;
  c.delay_ms = 30;  // all threads arrive while the first download runs
  GstMemory* mem = make_memory(&c, 4096);
  GstBuffer* buf = gst_buffer_new();
  gst_buffer_append_memory(buf, mem);

  constexpr int kThreads = 8;
  std::atomic<int> bad{0};
  std::atomic<int> go{0};
  std::vector<const guint8*> seen(kThreads, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (go.load() == 0) std::this_thread::yield();
      for (int i = 0; i < 20; ++i) {
        GstMapInfo map;
        if (!gst_buffer_map(buf, &map, GST_MAP_READ)) {
          bad++;
          return;
        }
        seen[t] = map.data;
        const float* f = reinterpret_cast<const float*>(map.data);
        for (gsize k = 0; k < 4096; k += 97)
          if (f[k] != value_at(k)) bad++;
        gst_buffer_unmap(buf, &map);
      }
    });
  }
  go = 1;
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(c.downloads, 1);
  for (int t = 1; t < kThreads; ++t) EXPECT_EQ(seen[t], seen[0]) << "thread " << t;
  gst_buffer_unref(buf);
  EXPECT_EQ(c.frees, 1);
}

TEST(FeatureDeviceMemory, WriteMapsAreRefused) {
  Counters c;
  GstMemory* mem = make_memory(&c, 16);
  GstMapInfo map;
  EXPECT_FALSE(gst_memory_map(mem, &map, GST_MAP_WRITE));
  EXPECT_FALSE(gst_memory_map(mem, &map, GST_MAP_READWRITE));
  EXPECT_EQ(c.downloads, 0) << "a refused map downloads nothing";
  // Also once the host copy exists.
  ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READ));
  gst_memory_unmap(mem, &map);
  EXPECT_FALSE(gst_memory_map(mem, &map, GST_MAP_WRITE));

  // gst_buffer_map() for writing on a buffer that is writable does what it does for every
  // read-only memory: it replaces the memory by a writable copy. The device memory itself is left
  // untouched (and still released once).
  GstBuffer* buf = gst_buffer_new();
  gst_buffer_append_memory(buf, gst_memory_ref(mem));
  ASSERT_TRUE(gst_buffer_map(buf, &map, GST_MAP_WRITE));
  EXPECT_FALSE(gst_is_feature_device_memory(map.memory));
  reinterpret_cast<float*>(map.data)[0] = -1.0f;
  gst_buffer_unmap(buf, &map);
  EXPECT_FALSE(gst_is_feature_device_memory(gst_buffer_peek_memory(buf, 0)));
  ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READ));
  EXPECT_EQ(reinterpret_cast<const float*>(map.data)[0], value_at(0));
  EXPECT_EQ(reinterpret_cast<const float*>(map.data)[15], value_at(15));
  gst_memory_unmap(mem, &map);
  EXPECT_EQ(c.downloads, 1);
  gst_buffer_unref(buf);
  EXPECT_EQ(c.frees, 0);
  gst_memory_unref(mem);
  EXPECT_EQ(c.frees, 1);
}

TEST(FeatureDeviceMemory, FailedDownloadFailsTheMapAndIsRetried) {
  Counters c;
  GstMemory* mem = make_memory(&c, 8);
  c.fail_next = 1;
  GstMapInfo map;
  EXPECT_FALSE(gst_memory_map(mem, &map, GST_MAP_READ));
  EXPECT_EQ(c.downloads, 0);
  ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READ));
  EXPECT_EQ(reinterpret_cast<const float*>(map.data)[7], value_at(7));
  gst_memory_unmap(mem, &map);
  EXPECT_EQ(c.downloads, 1);
  gst_memory_unref(mem);
  EXPECT_EQ(c.frees, 1);
}

TEST(FeatureDeviceMemory, ShareKeepsTheDeviceAllocationAndTheHostCopy) {
  Counters c;
  guint8* dev = nullptr;
  GstMemory* mem = make_memory(&c, 64, &dev);
  GstMemory* sub = gst_memory_share(mem, 8 * sizeof(float), 16 * sizeof(float));
  ASSERT_NE(sub, nullptr);
  EXPECT_TRUE(gst_is_feature_device_memory(sub));
  EXPECT_EQ(gst_feature_device_memory_get_device_pointer(sub), dev + 8 * sizeof(float));
  EXPECT_EQ(gst_feature_device_memory_get_ready_event(sub), fake_event());
  EXPECT_EQ(gst_feature_device_memory_get_device_id(sub), 0);
  EXPECT_TRUE(GST_MEMORY_IS_READONLY(sub));
  // A share of the share still points into the one allocation.
  GstMemory* subsub = gst_memory_share(sub, 4 * sizeof(float), -1);
  EXPECT_EQ(gst_feature_device_memory_get_device_pointer(subsub), dev + 12 * sizeof(float));
  EXPECT_EQ(gst_memory_get_sizes(subsub, nullptr, nullptr), 12 * sizeof(float));

  GstMapInfo map;
  ASSERT_TRUE(gst_memory_map(sub, &map, GST_MAP_READ));
  ASSERT_EQ(map.size, 16 * sizeof(float));
  EXPECT_EQ(reinterpret_cast<const float*>(map.data)[0], value_at(8));
  EXPECT_EQ(reinterpret_cast<const float*>(map.data)[15], value_at(23));
  gst_memory_unmap(sub, &map);
  EXPECT_FALSE(gst_memory_map(sub, &map, GST_MAP_WRITE));
  ASSERT_TRUE(gst_memory_map(subsub, &map, GST_MAP_READ));
  EXPECT_EQ(reinterpret_cast<const float*>(map.data)[0], value_at(12));
  gst_memory_unmap(subsub, &map);
  ASSERT_TRUE(gst_memory_map(mem, &map, GST_MAP_READ));
  EXPECT_EQ(reinterpret_cast<const float*>(map.data)[63], value_at(63));
  gst_memory_unmap(mem, &map);
  EXPECT_EQ(c.downloads, 1) << "the shares and their parent download once between them";

  // Contiguous shares of one parent are a span (what gst_buffer_map merges without a copy).
  GstMemory* a = gst_memory_share(mem, 0, 32);
  GstMemory* b = gst_memory_share(mem, 32, 32);
  gsize off = 99;
  EXPECT_TRUE(gst_memory_is_span(a, b, &off));
  EXPECT_EQ(off, 0u);
  EXPECT_FALSE(gst_memory_is_span(b, a, &off));
  gst_memory_unref(a);
  gst_memory_unref(b);

  gst_memory_unref(mem);
  EXPECT_EQ(c.frees, 0) << "the shares hold the parent";
  gst_memory_unref(sub);
  EXPECT_EQ(c.frees, 0);
  gst_memory_unref(subsub);
  EXPECT_EQ(c.frees, 1);
}

TEST(FeatureDeviceMemory, CopyIsSystemMemoryWithTheValues) {
  Counters c;
  GstMemory* mem = make_memory(&c, 32);
  GstMemory* copy = gst_memory_copy(mem, 4 * sizeof(float), 8 * sizeof(float));
  ASSERT_NE(copy, nullptr);
  EXPECT_FALSE(gst_is_feature_device_memory(copy));
  GstMapInfo map;
  ASSERT_TRUE(gst_memory_map(copy, &map, GST_MAP_READ));
  ASSERT_EQ(map.size, 8 * sizeof(float));
  for (gsize k = 0; k < 8; ++k) EXPECT_EQ(reinterpret_cast<const float*>(map.data)[k], value_at(4 + k));
  gst_memory_unmap(copy, &map);
  gst_memory_unref(copy);
  gst_memory_unref(mem);
  EXPECT_EQ(c.downloads, 1);
  EXPECT_EQ(c.frees, 1);
}

TEST(FeatureDeviceMemory, InvalidArgumentsAreRefusedAndReleaseTheUserData) {
  Counters c;
  CriticalCatcher catcher;
  auto* a = new FakeAllocation;
  a->size = 16;
  a->device = static_cast<guint8*>(g_malloc(16));
  a->counters = &c;
  EXPECT_EQ(gst_feature_device_memory_new(GST_FEATURE_DEVICE_CPU, 0, a->device, 16, nullptr, fake_funcs(), a),
            nullptr);
  EXPECT_EQ(c.frees, 1) << "user_data is released also when the call fails";
  ASSERT_EQ(catcher.messages.size(), 1u);
  EXPECT_NE(catcher.messages[0].find("expected device CUDA"), std::string::npos) << catcher.messages[0];

  GstFeatureDeviceMemoryFuncs no_download;
  std::memset(&no_download, 0, sizeof(no_download));
  guint8 dummy[4];
  EXPECT_EQ(gst_feature_device_memory_new(GST_FEATURE_DEVICE_CUDA, 0, dummy, 4, nullptr, &no_download, nullptr),
            nullptr);
  EXPECT_EQ(c.frees, 1);
  auto* b = new FakeAllocation;
  b->size = 16;
  b->device = static_cast<guint8*>(g_malloc(16));
  b->counters = &c;
  EXPECT_EQ(gst_feature_device_memory_new(GST_FEATURE_DEVICE_CUDA, 0, b->device, 0, nullptr, fake_funcs(), b), nullptr)
      << "size 0";
  EXPECT_EQ(c.frees, 2);
  EXPECT_EQ(catcher.messages.size(), 3u);
}

// A buffer with a feature meta whose level "res4" [1, 4, 3, 5] lives in a feature device memory
// at byte offset 16 of the allocation, plus a CPU level "res2".
GstBuffer* make_buffer_with_device_level(Counters* c, guint8** dev) {
  GstBuffer* buf = gst_buffer_new_allocate(nullptr, 64, nullptr);
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  meta->unique_id = 7;
  const gsize dims[4] = {1, 4, 3, 5};
  GstBuffer* data = gst_buffer_new();
  gst_buffer_append_memory(data, make_memory(c, 4 + 60, dev, 1));
  EXPECT_NE(gst_feature_meta_add_level(meta, "res4", GST_FEATURE_DTYPE_FLOAT32, dims, nullptr, 16,
                                       GST_FEATURE_DEVICE_CUDA, 1, data, 4 * sizeof(float)),
            nullptr);
  GstBuffer* host = gst_buffer_new_allocate(nullptr, 60 * sizeof(float), nullptr);
  gst_buffer_memset(host, 0, 0, 60 * sizeof(float));
  EXPECT_NE(gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32, dims, nullptr, 4,
                                       GST_FEATURE_DEVICE_CPU, 0, host, 0),
            nullptr);
  return buf;
}

TEST(FeatureDeviceMemory, MetaLevelReadThroughLevelMapAndDevicePointer) {
  Counters c;
  guint8* dev = nullptr;
  GstBuffer* buf = make_buffer_with_device_level(&c, &dev);
  GstFeatureMeta* meta = gst_buffer_get_feature_meta(buf);
  const GstFeatureLevel* res4 = gst_feature_meta_get_level(meta, "res4");
  ASSERT_NE(res4, nullptr);

  gpointer ptr = nullptr, event = nullptr;
  ASSERT_TRUE(gst_feature_level_get_device_pointer(res4, &ptr, &event));
  EXPECT_EQ(ptr, dev + 4 * sizeof(float)) << "the level's offset is applied";
  EXPECT_EQ(event, fake_event());
  EXPECT_TRUE(gst_feature_level_get_device_pointer(res4, nullptr, nullptr));
  EXPECT_EQ(c.downloads, 0) << "the device pointer needs no download";

  const GstFeatureLevel* res2 = gst_feature_meta_get_level(meta, "res2");
  ptr = event = reinterpret_cast<gpointer>(1);
  EXPECT_FALSE(gst_feature_level_get_device_pointer(res2, &ptr, &event)) << "a CPU level";
  EXPECT_EQ(ptr, reinterpret_cast<gpointer>(1)) << "outputs untouched";

  for (int i = 0; i < 3; ++i) {
    GstMapInfo map;
    ASSERT_TRUE(gst_feature_level_map(res4, &map, GST_MAP_READ));
    ASSERT_EQ(map.size, 60 * sizeof(float));
    const float* f = reinterpret_cast<const float*>(map.data);
    // Element (0, c, h, w) at c * 15 + h * 5 + w, i.e. allocation float 4 + that.
    EXPECT_EQ(f[0], value_at(4));
    EXPECT_EQ(f[2 * 15 + 1 * 5 + 3], value_at(4 + 2 * 15 + 1 * 5 + 3));
    EXPECT_EQ(f[59], value_at(63));
    gst_feature_level_unmap(res4, &map);
    GstMapInfo wmap;
    EXPECT_FALSE(gst_feature_level_map(res4, &wmap, GST_MAP_WRITE));
  }
  EXPECT_EQ(c.downloads, 1);
  gst_buffer_unref(buf);
  EXPECT_EQ(c.frees, 1);
}

TEST(FeatureDeviceMemory, CopyTransformSharesAndFreesOnceWithTheLastBuffer) {
  Counters c;
  guint8* dev = nullptr;
  GstBuffer* buf = make_buffer_with_device_level(&c, &dev);
  GstBuffer* copy1 = gst_buffer_copy(buf);
  GstBuffer* copy2 = gst_buffer_copy_deep(buf);  // deep copies the video data; the meta still shares
  const GstFeatureLevel* l0 = gst_feature_meta_get_level(gst_buffer_get_feature_meta(buf), "res4");
  for (GstBuffer* b : {copy1, copy2}) {
    const GstFeatureLevel* l = gst_feature_meta_get_level(gst_buffer_get_feature_meta(b), "res4");
    ASSERT_NE(l, nullptr);
    EXPECT_EQ(l->data, l0->data) << "the level's data buffer is shared, not copied";
    gpointer ptr = nullptr;
    ASSERT_TRUE(gst_feature_level_get_device_pointer(l, &ptr, nullptr));
    EXPECT_EQ(ptr, dev + 4 * sizeof(float));
    EXPECT_EQ(l->device, GST_FEATURE_DEVICE_CUDA);
    EXPECT_EQ(l->device_id, 1);
  }
  // A map through one copy downloads; maps through the others reuse it.
  for (GstBuffer* b : {copy1, buf, copy2}) {
    const GstFeatureLevel* l = gst_feature_meta_get_level(gst_buffer_get_feature_meta(b), "res4");
    GstMapInfo map;
    ASSERT_TRUE(gst_feature_level_map(l, &map, GST_MAP_READ));
    EXPECT_EQ(reinterpret_cast<const float*>(map.data)[10], value_at(14));
    gst_feature_level_unmap(l, &map);
  }
  EXPECT_EQ(c.downloads, 1);

  gst_buffer_unref(buf);
  EXPECT_EQ(c.frees, 0);
  gst_buffer_unref(copy2);
  EXPECT_EQ(c.frees, 0);
  // A mapping outlives nothing: map, drop the last buffer while mapped, then unmap.
  const GstFeatureLevel* l = gst_feature_meta_get_level(gst_buffer_get_feature_meta(copy1), "res4");
  GstMapInfo map;
  ASSERT_TRUE(gst_feature_level_map(l, &map, GST_MAP_READ));
  gst_buffer_unref(copy1);
  EXPECT_EQ(c.frees, 0) << "the mapping holds the data buffer";
  EXPECT_EQ(reinterpret_cast<const float*>(map.data)[0], value_at(4));
  gst_feature_level_unmap(nullptr, &map);  // the level (in copy1's meta) is gone; the unmap needs only map
  EXPECT_EQ(c.frees, 1);
  EXPECT_EQ(c.downloads, 1);
}

TEST(FeatureDeviceMemory, ReleasedFromAnotherThread) {
  Counters c;
  GstBuffer* buf = gst_buffer_new();
  gst_buffer_append_memory(buf, make_memory(&c, 8));
  GstBuffer* other = gst_buffer_new();
  gst_buffer_append_memory(other, gst_memory_ref(gst_buffer_peek_memory(buf, 0)));
  gst_buffer_unref(buf);
  std::thread([other] { gst_buffer_unref(other); }).join();
  EXPECT_EQ(c.frees, 1);
  EXPECT_EQ(c.downloads, 0);
}

}  // namespace
