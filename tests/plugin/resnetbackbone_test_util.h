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
#include <cmath>
#include <cstdint>
#include <string>
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

}  // namespace gstbackbone_test

#endif  // GST_BACKBONE_TESTS_RESNETBACKBONE_TEST_UTIL_H
