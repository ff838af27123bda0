// SPDX-License-Identifier: Apache-2.0
// resnetbackbone with model-instance-id: four elements share one model and batch their frames
// (features equal to a private model's, every stream reaching its end when another ends early,
// flushes or errors), mismatched settings fail the start naming the property, batch statistics and
// the latency with batch-timeout. The leaks run of this suite checks the instance is freed.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "resnetbackbone_test_util.h"

namespace gstbackbone_test {
namespace {

constexpr int kW = 64, kH = 48;

Props shared_props(const std::string& id, Props extra = {}) {
  Props p = narrow_props({{"model-instance-id", id}});
  p.insert(p.end(), extra.begin(), extra.end());
  return p;
}

// The levels of a pulled buffer, by name.
std::vector<std::pair<std::string, std::vector<float>>> levels_of(GstBuffer* buf) {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  GstFeatureMeta* meta = gst_buffer_get_feature_meta(buf);
  EXPECT_NE(meta, nullptr);
  if (!meta) return out;
  for (guint i = 0; i < gst_feature_meta_get_n_levels(meta); ++i) {
    const GstFeatureLevel* level = gst_feature_meta_get_level_by_index(meta, i);
    out.emplace_back(gst_feature_level_get_name(level), level_values(level));
  }
  return out;
}

using Levels = std::vector<std::pair<std::string, std::vector<float>>>;

// What a private model gives for each frame of `seeds`.
std::vector<Levels> private_levels(const std::vector<uint32_t>& seeds) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("RGB", kW, kH);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  std::vector<Levels> out;
  for (size_t i = 0; i < seeds.size(); ++i) {
    GstBuffer* buf = push_pull(hh, info_of(caps), seeds[i], i * GST_SECOND / 30);
    out.push_back(levels_of(buf));
    gst_buffer_unref(buf);
  }
  return out;
}

TEST(ResnetBackboneShared, FourStreamsShareOneModelAndGetTheirOwnFeatures) {
  constexpr int kStreams = 4, kFrames = 4;
  std::vector<std::unique_ptr<Harness>> hs;
  for (int s = 0; s < kStreams; ++s)
    hs.push_back(std::make_unique<Harness>(shared_props("four", {{"batch-size", "4"}, {"batch-timeout", "2000000000"}})));
  const std::string caps = caps_string("RGB", kW, kH);
  for (auto& hh : hs) gst_harness_set_src_caps_str(hh->h, caps.c_str());
  const GstVideoInfo info = info_of(caps);
  std::vector<std::vector<GstBuffer*>> outs(kStreams);
  {
    Watchdog wd(kHangSeconds, "four streams");
    std::vector<std::thread> threads;
    for (int s = 0; s < kStreams; ++s)
      threads.emplace_back([&, s] {
        for (int f = 0; f < kFrames; ++f)
          outs[static_cast<size_t>(s)].push_back(
              gst_harness_push_and_pull(hs[static_cast<size_t>(s)]->h, make_frame(info, 100u * s + f, f * GST_SECOND / 30)));
      });
    for (auto& t : threads) t.join();
  }
  double batched = 0;
  for (int s = 0; s < kStreams; ++s) {
    GstStructure* st = nullptr;
    g_object_get(hs[static_cast<size_t>(s)]->element, "stats", &st, nullptr);
    ASSERT_NE(st, nullptr);
    guint64 frames = 0;
    double mean = 0;
    EXPECT_TRUE(gst_structure_get_uint64(st, "batched-frames", &frames));
    EXPECT_TRUE(gst_structure_get_double(st, "mean-batch-size", &mean));
    EXPECT_EQ(frames, static_cast<guint64>(kFrames));
    batched += mean;
    gst_structure_free(st);
  }
  EXPECT_GT(batched / kStreams, 1.0) << "frames of four streams submitted together run in batches";
  std::vector<uint32_t> seeds;
  for (int s = 0; s < kStreams; ++s)
    for (int f = 0; f < kFrames; ++f) seeds.push_back(100u * s + f);
  const std::vector<Levels> reference = private_levels(seeds);
  for (int s = 0; s < kStreams; ++s)
    for (int f = 0; f < kFrames; ++f) {
      GstBuffer* out = outs[static_cast<size_t>(s)][static_cast<size_t>(f)];
      ASSERT_NE(out, nullptr);
      const auto got = levels_of(out);
      const Levels& want = reference[static_cast<size_t>(s * kFrames + f)];
      ASSERT_EQ(got.size(), want.size());
      for (size_t l = 0; l < want.size(); ++l) {
        EXPECT_EQ(got[l].first, want[l].first);
        ASSERT_EQ(got[l].second.size(), want[l].second.size());
        EXPECT_LT(rel_error(got[l].second, want[l].second.data(), want[l].second.size()), 1e-5)
            << "stream " << s << " frame " << f << " level " << want[l].first;
      }
      gst_buffer_unref(out);
    }
}

TEST(ResnetBackboneShared, MismatchedSettingsFailTheStartNamingThePropertyAndBothValues) {
  Harness a(shared_props("mismatch", {{"num-threads", "1"}}));
  gst_harness_set_src_caps_str(a.h, caps_string("RGB", kW, kH).c_str());
  ASSERT_EQ(a.error_text(), "");
  // (A harness would start the element at once: the second one is a plain element.)
  GstElement* b = gst_element_factory_make("resnetbackbone", nullptr);
  ASSERT_NE(b, nullptr);
  for (const auto& [k, v] : shared_props("mismatch", {{"num-threads", "2"}}))
    gst_util_set_object_arg(G_OBJECT(b), k.c_str(), v.c_str());
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(b, bus);
  EXPECT_EQ(gst_element_set_state(b, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  GstMessage* m = pop_first(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(m, nullptr) << "no ERROR message";
  GError* err = nullptr;
  gst_message_parse_error(m, &err, nullptr);
  const std::string text = err->message;
  EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS)) << text;
  EXPECT_NE(text.find("num-threads"), std::string::npos) << text;
  EXPECT_NE(text.find("\"1\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"2\""), std::string::npos) << text;
  g_error_free(err);
  gst_message_unref(m);
  gst_element_set_state(b, GST_STATE_NULL);
  gst_element_set_bus(b, nullptr);
  gst_object_unref(bus);
  gst_object_unref(b);
}

TEST(ResnetBackboneShared, OneStreamEndingOrFlushingNeverStallsTheOthers) {
  // A long batch-timeout: a frame alone waits for it, so an ended stream must not hold the others.
  Harness a(shared_props("ends", {{"batch-size", "2"}, {"batch-timeout", "100000000"}}));
  Harness b(shared_props("ends", {{"batch-size", "2"}, {"batch-timeout", "100000000"}}));
  const std::string caps = caps_string("RGB", kW, kH);
  gst_harness_set_src_caps_str(a.h, caps.c_str());
  gst_harness_set_src_caps_str(b.h, caps.c_str());
  const GstVideoInfo info = info_of(caps);
  GstBuffer* out = push_pull(a, info, 1, 0);
  gst_buffer_unref(out);
  // A ends (EOS) and stops; B goes on alone, each frame running after the timeout.
  EXPECT_TRUE(gst_harness_push_event(a.h, gst_event_new_eos()));
  gst_element_set_state(a.element, GST_STATE_NULL);
  for (int f = 0; f < 3; ++f) {
    out = push_pull(b, info, 10 + f, f * GST_SECOND / 30);
    EXPECT_TRUE(has_meta(out));
    gst_buffer_unref(out);
  }
  // A flush on B while its frame waits for a partner: the push returns (FLUSHING), nothing hangs.
  {
    Watchdog wd(kHangSeconds, "flush while waiting");
    std::atomic<GstFlowReturn> ret{GST_FLOW_OK};
    std::thread pusher([&] { ret = gst_harness_push(b.h, make_frame(info, 20, GST_SECOND)); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    gst_harness_push_event(b.h, gst_event_new_flush_start());
    pusher.join();
    EXPECT_TRUE(ret == GST_FLOW_FLUSHING || ret == GST_FLOW_OK) << gst_flow_get_name(ret);
    gst_harness_push_event(b.h, gst_event_new_flush_stop(TRUE));
  }
  // Drain what came out before the flush, then B works on.
  while (GstBuffer* left = gst_harness_try_pull(b.h)) gst_buffer_unref(left);
  gst_harness_set_src_caps_str(b.h, caps.c_str());
  gst_harness_push_event(b.h, gst_event_new_segment([] {
    static GstSegment seg;
    gst_segment_init(&seg, GST_FORMAT_TIME);
    return &seg;
  }()));
  out = push_pull(b, info, 30, 2 * GST_SECOND);
  EXPECT_TRUE(has_meta(out));
  gst_buffer_unref(out);
}

// The instance goes with the last element that used it: the id then loads afresh, with any settings.
TEST(ResnetBackboneShared, TheInstanceIsFreedWithItsLastElement) {
  const std::string caps = caps_string("RGB", kW, kH);
  {
    Harness a(shared_props("freed", {{"num-threads", "1"}}));
    Harness b(shared_props("freed", {{"num-threads", "1"}}));
    gst_harness_set_src_caps_str(a.h, caps.c_str());
    gst_harness_set_src_caps_str(b.h, caps.c_str());
    GstBuffer* out = push_pull(b, info_of(caps), 1, 0);
    gst_buffer_unref(out);
    EXPECT_EQ(gst_element_set_state(a.element, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  }  // b goes too
  Harness c(shared_props("freed", {{"num-threads", "2"}}));
  gst_harness_set_src_caps_str(c.h, caps.c_str());
  EXPECT_EQ(c.error_text(), "");
  GstBuffer* out = push_pull(c, info_of(caps), 2, 0);
  EXPECT_TRUE(has_meta(out));
  gst_buffer_unref(out);
}

TEST(ResnetBackboneShared, TheLatencyIncludesTheBatchTimeout) {
  Harness a(shared_props("latency", {{"batch-size", "4"}, {"batch-timeout", "40000000"}}));
  gst_harness_set_src_caps_str(a.h, caps_string("RGB", kW, kH).c_str());
  EXPECT_GE(gst_harness_query_latency(a.h), 40 * GST_MSECOND);
}

}  // namespace
}  // namespace gstbackbone_test
