// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the GstHarness tests of the resnetbackbone element: the narrow test model's
// properties, the element alone in a harness with a bus, caps and frames, the values of a level.
#ifndef GST_BACKBONE_TESTS_RESNETBACKBONE_TEST_UTIL_H
#define GST_BACKBONE_TESTS_RESNETBACKBONE_TEST_UTIL_H

#include <gst/check/gstharness.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace gstbackbone_test {

using Props = std::vector<std::pair<std::string, std::string>>;

inline std::string data_path(const std::string& name) { return std::string(BACKBONE_TEST_DATA_DIR) + "/plugin/" + name; }

// device=cpu: the CPU engines, also on machines with a GPU (where device=auto would take the cuda
// engine); the cuda engine has tests of its own (CudaEngine*, ResnetBackboneGpu).
inline Props narrow_props(Props extra = {}) {
  Props p = {{"config-file", data_path("narrow.yaml")}, {"weights", data_path("narrow.pth")}, {"device", "cpu"}};
  p.insert(p.end(), extra.begin(), extra.end());
  return p;
}

// The element alone in a harness, with a bus to read its messages.
// The first message of @types on @bus, the others before it dropped; NULL when there is none. Not
// gst_bus_pop_filtered: GStreamer 1.26 drops the other messages under the bus lock, and a dropped
// message holding the last reference to a torn-down harness pad unlinks that pad, which posts to
// the same bus: a deadlock.
inline GstMessage* pop_first(GstBus* bus, GstMessageType types) {
  while (GstMessage* m = gst_bus_pop(bus)) {
    if (GST_MESSAGE_TYPE(m) & types) return m;
    gst_message_unref(m);
  }
  return nullptr;
}

struct Harness {
  GstElement* element = nullptr;
  GstHarness* h = nullptr;
  GstBus* bus = nullptr;
  std::vector<GstMessage*> pending;  // popped from the bus by take(), not taken yet

  explicit Harness(const Props& props) {
    element = gst_element_factory_make("resnetbackbone", nullptr);
    if (!element) return;
    for (const auto& [k, v] : props) gst_util_set_object_arg(G_OBJECT(element), k.c_str(), v.c_str());
    bus = gst_bus_new();
    gst_element_set_bus(element, bus);
    h = gst_harness_new_with_element(element, "sink", "src");
  }
  ~Harness() {
    if (h) gst_harness_teardown(h);
    if (element) {
      gst_element_set_bus(element, nullptr);
      gst_object_unref(element);
    }
    if (bus) gst_object_unref(bus);
    for (GstMessage* m : pending) gst_message_unref(m);
  }
  // Takes the messages of @type posted so far, in order (the others stay, for later calls:
  // gst_bus_pop_filtered would drop those posted before the first match). (transfer full)
  std::vector<GstMessage*> take(GstMessageType type) {
    while (GstMessage* m = gst_bus_pop(bus)) pending.push_back(m);
    std::vector<GstMessage*> taken;
    std::vector<GstMessage*> rest;
    for (GstMessage* m : pending) (GST_MESSAGE_TYPE(m) & type ? taken : rest).push_back(m);
    pending = rest;
    return taken;
  }
  // Text of the first ERROR message on the bus ("" when none).
  std::string error_text() {
    const std::vector<std::string> texts = pop_texts(GST_MESSAGE_ERROR);
    return texts.empty() ? "" : texts.front();
  }
  // Takes every WARNING (or ERROR) message posted so far: their texts, in order.
  std::vector<std::string> pop_texts(GstMessageType type) {
    std::vector<std::string> texts;
    for (GstMessage* m : take(type)) {
      GError* err = nullptr;
      gchar* dbg = nullptr;
      if (type == GST_MESSAGE_WARNING)
        gst_message_parse_warning(m, &err, &dbg);
      else
        gst_message_parse_error(m, &err, &dbg);
      texts.push_back(err->message);
      g_error_free(err);
      g_free(dbg);
      gst_message_unref(m);
    }
    return texts;
  }
  // A field of the stats property (G_MAXUINT64 and a failure when it is missing).
  guint64 stat(const char* field) {
    GstStructure* s = nullptr;
    g_object_get(element, "stats", &s, nullptr);
    guint64 v = G_MAXUINT64;
    if (!s || !gst_structure_get_uint64(s, field, &v)) ADD_FAILURE() << "stats has no field " << field;
    if (s) gst_structure_free(s);
    return v;
  }
};

inline std::string caps_string(const char* format, int w, int h, const char* extra = "") {
  return "video/x-raw,format=" + std::string(format) + ",width=" + std::to_string(w) + ",height=" + std::to_string(h) +
         ",framerate=30/1" + extra;
}

inline GstVideoInfo info_of(const std::string& caps_str) {
  GstCaps* caps = gst_caps_from_string(caps_str.c_str());
  GstVideoInfo info;
  EXPECT_TRUE(gst_video_info_from_caps(&info, caps)) << caps_str;
  gst_caps_unref(caps);
  return info;
}

// A frame of deterministic pseudo-random bytes (every byte, padding included).
inline GstBuffer* make_frame(const GstVideoInfo& info, uint32_t seed, GstClockTime pts = 0) {
  GstBuffer* buf = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info), nullptr);
  GstMapInfo map;
  gst_buffer_map(buf, &map, GST_MAP_WRITE);
  uint32_t x = seed * 2654435761u + 12345u;
  for (gsize i = 0; i < map.size; ++i) {
    x = x * 1664525u + 1013904223u;
    map.data[i] = static_cast<guint8>(x >> 24);
  }
  gst_buffer_unmap(buf, &map);
  GST_BUFFER_PTS(buf) = pts;
  GST_BUFFER_DTS(buf) = pts;
  GST_BUFFER_DURATION(buf) = GST_SECOND / 30;
  return buf;
}


inline std::vector<float> level_values(const GstFeatureLevel* level) {
  GstMapInfo map;
  EXPECT_TRUE(gst_feature_level_map(level, &map, GST_MAP_READ));
  const float* p = reinterpret_cast<const float*>(map.data);
  std::vector<float> v(p, p + gst_feature_level_n_elements(level));
  gst_feature_level_unmap(level, &map);
  return v;
}

inline const void* level_pointer(const GstFeatureLevel* level) {
  GstMapInfo map;
  EXPECT_TRUE(gst_feature_level_map(level, &map, GST_MAP_READ));
  const void* p = map.data;
  gst_feature_level_unmap(level, &map);
  return p;
}

// Largest |a - b| relative to the largest |b| (at least 1).
inline double rel_error(const std::vector<float>& a, const float* b, size_t n) {
  double diff = 0.0, scale = 1.0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / scale;
}

// Aborts the test program when not disarmed within @seconds: a push that never returns is a hang,
// reported at once rather than at ctest's timeout.
class Watchdog {
 public:
  Watchdog(int seconds, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, seconds] {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fprintf(stderr, "hang: %s did not return within %d s\n", what_.c_str(), seconds);
        std::abort();
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string what_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

inline constexpr int kHangSeconds = 60;

// Releases @buf on a thread of its own (a consumer progressing on its own), and waits for it.
inline void release_on_another_thread(GstBuffer* buf) {
  std::thread([buf] { gst_buffer_unref(buf); }).join();
}

// Polls @cond until it holds or @seconds pass.
inline bool eventually(const std::function<bool()>& cond, int seconds = 30) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

struct QosCounts {
  guint64 processed, dropped;
  bool operator==(const QosCounts& o) const { return processed == o.processed && dropped == o.dropped; }
};
inline std::ostream& operator<<(std::ostream& os, const QosCounts& q) {
  return os << "(processed " << q.processed << ", dropped " << q.dropped << ")";
}

// Pops every QoS message now on the bus: processed/dropped, checked to count buffers.
inline std::vector<QosCounts> pop_qos(Harness& hh) {
  std::vector<QosCounts> out;
  for (GstMessage* m : hh.take(GST_MESSAGE_QOS)) {
    GstFormat format = GST_FORMAT_UNDEFINED;
    guint64 processed = 0, dropped = 0;
    gst_message_parse_qos_stats(m, &format, &processed, &dropped);
    EXPECT_EQ(format, GST_FORMAT_BUFFERS);
    out.push_back({processed, dropped});
    gst_message_unref(m);
  }
  return out;
}

inline bool has_meta(GstBuffer* buf) { return gst_buffer_get_feature_meta(buf) != nullptr; }

// Pushes a frame and pulls what comes out, under the watchdog.
inline GstBuffer* push_pull(Harness& hh, const GstVideoInfo& info, uint32_t seed, GstClockTime pts) {
  Watchdog wd(kHangSeconds, "push of frame " + std::to_string(seed));
  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info, seed, pts));
  EXPECT_NE(out, nullptr) << "frame " << seed << " did not come out";
  return out;
}

inline size_t count_containing(const std::vector<std::string>& texts, const std::string& what) {
  size_t n = 0;
  for (const auto& t : texts) n += t.find(what) != std::string::npos;
  return n;
}

// The start of the warning resnetbackbone posts when its feature memory is full.
inline constexpr char kPoolWarning[] = "Downstream holds the features";

inline void push_segment(GstHarness* h) {
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_segment(&segment)));
}

inline void flush(GstHarness* h) {
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_flush_start()));
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_flush_stop(TRUE)));
  push_segment(h);
}

}  // namespace gstbackbone_test

#endif  // GST_BACKBONE_TESTS_RESNETBACKBONE_TEST_UTIL_H
