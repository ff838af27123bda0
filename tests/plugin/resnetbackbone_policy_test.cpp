// SPDX-License-Identifier: Apache-2.0
// GstHarness tests of the resnetbackbone element's feature memory policy, on the narrow test model
// and frames of 64x48 or smaller: features held downstream (feature-memory-limit, pool-size,
// pool-timeout, the stalled state), a sink keeping its last sample, an appsink pulled slowly, and
// the stats that count it. No timing assertions: a watchdog fails a test whose pushes do not
// return at all within a generous bound. QoS, inference-interval, properties while PLAYING,
// max-errors and crop metas: resnetbackbone_stream_test.cpp.
#include <gst/app/gstappsink.h>
#include <gst/check/gstharness.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "resnetbackbone_test_util.h"

namespace {

using namespace gstbackbone_test;

// A held output with a full feature memory: the next frame waits at most pool-timeout, then passes
// without features with a QoS message counting it and one warning; the wait that timed out makes
// the pool stalled, so the frame after passes at once.
TEST(ResnetBackbonePolicy, FullMemoryPassesTheFrameWithoutFeatures) {
  Harness hh(narrow_props({{"feature-memory-limit", "1"}, {"pool-timeout", "200000000"}}));
  const std::string caps = caps_string("RGB", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* held = push_pull(hh, info, 1, 0);
  ASSERT_TRUE(has_meta(held)) << "one output is always allowed";

  GstBuffer* out = push_pull(hh, info, 2, GST_SECOND / 30);
  EXPECT_FALSE(has_meta(out));
  EXPECT_EQ(GST_BUFFER_PTS(out), GST_SECOND / 30);
  gst_buffer_unref(out);
  EXPECT_EQ(pop_qos(hh), (std::vector<QosCounts>{{1, 1}}));
  const std::vector<GstMessage*> warnings = hh.take(GST_MESSAGE_WARNING);
  ASSERT_EQ(warnings.size(), 1u) << "WARNING messages";
  GstMessage* w = warnings[0];
  GError* err = nullptr;
  gst_message_parse_warning(w, &err, nullptr);
  EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NO_SPACE_LEFT)) << err->message;
  EXPECT_NE(std::string(err->message).find(kPoolWarning), std::string::npos) << err->message;
  g_error_free(err);
  gst_message_unref(w);
  EXPECT_EQ(hh.stat("pool-waits"), 1u);
  EXPECT_EQ(hh.stat("pool-timeouts"), 1u);

  // Stalled: passes at once (no second wait) and without a second warning.
  out = push_pull(hh, info, 3, 2 * GST_SECOND / 30);
  EXPECT_FALSE(has_meta(out));
  gst_buffer_unref(out);
  EXPECT_EQ(hh.stat("pool-waits"), 1u);
  EXPECT_EQ(pop_qos(hh), (std::vector<QosCounts>{{1, 2}}));
  EXPECT_EQ(hh.pop_texts(GST_MESSAGE_WARNING), std::vector<std::string>{});

  // Released: room again.
  gst_buffer_unref(held);
  out = push_pull(hh, info, 4, 3 * GST_SECOND / 30);
  EXPECT_TRUE(has_meta(out));
  gst_buffer_unref(out);
  EXPECT_EQ(hh.stat("frames"), 4u);
  EXPECT_EQ(hh.stat("inferred"), 2u);
  EXPECT_EQ(hh.stat("skipped-pool"), 2u);
  EXPECT_EQ(hh.stat("skipped-qos"), 0u);
  EXPECT_EQ(hh.stat("feature-bytes-held"), 0u);
  EXPECT_GT(hh.stat("peak-feature-bytes"), 0u);
  EXPECT_EQ(hh.error_text(), "");
}

// A consumer on another thread releasing features during the wait gives the frame its features.
TEST(ResnetBackbonePolicy, ReleaseDuringTheWaitGivesTheFrameItsFeatures) {
  Harness hh(narrow_props({{"feature-memory-limit", "1"}, {"pool-timeout", "30000000000"}}));
  const std::string caps = caps_string("RGB", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* held = push_pull(hh, info, 1, 0);
  ASSERT_TRUE(has_meta(held));

  std::atomic<bool> done{false};
  GstFlowReturn ret = GST_FLOW_ERROR;
  std::thread pusher([&] {
    ret = gst_harness_push(hh.h, make_frame(info, 2, GST_SECOND / 30));
    done = true;
  });
  EXPECT_TRUE(eventually([&] { return hh.stat("pool-waits") == 1u; })) << "the push did not wait for room";
  EXPECT_FALSE(done) << "the push returned while the feature memory was full";
  gst_buffer_unref(held);  // this thread is not the streaming thread
  EXPECT_TRUE(eventually([&] { return done.load(); }, kHangSeconds)) << "the release did not wake the push";
  pusher.join();
  EXPECT_EQ(ret, GST_FLOW_OK);
  GstBuffer* out = gst_harness_pull(hh.h);
  ASSERT_NE(out, nullptr);
  EXPECT_TRUE(has_meta(out));
  gst_buffer_unref(out);
  EXPECT_EQ(hh.stat("pool-timeouts"), 0u);
  EXPECT_EQ(hh.stat("skipped-pool"), 0u);
  EXPECT_EQ(hh.stat("inferred"), 2u);
  EXPECT_EQ(pop_qos(hh), std::vector<QosCounts>{});
  EXPECT_EQ(hh.pop_texts(GST_MESSAGE_WARNING), std::vector<std::string>{});
}

// Bytes of one output's features.
guint64 feature_bytes(GstBuffer* buf) {
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(buf);
  guint64 bytes = 0;
  for (guint l = 0; meta && l < meta->num_levels; ++l)
    bytes += gst_feature_level_n_elements(&meta->levels[l]) * sizeof(float);
  return bytes;
}

// Room for four frames' features: by count (pool-size) or by bytes (feature-memory-limit).
class Stall : public ::testing::TestWithParam<bool> {};

// Stalled (a wait timed out): full frames pass at once, while frames that find room still get
// features, until releases on another thread bring what is held down to half the limits; the next
// time the pool is full it waits again.
TEST_P(Stall, UntilReleasesBringTheHeldMemoryToHalf) {
  const bool by_bytes = GetParam();
  Harness hh(narrow_props({{"pool-size", by_bytes ? "0" : "4"}, {"feature-memory-limit", "0"},
                           {"pool-timeout", "100000000"}}));
  const std::string caps = caps_string("GRAY8", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  std::deque<GstBuffer*> held;
  uint32_t n = 0;
  auto next = [&] { ++n; return push_pull(hh, info, n, n * GST_SECOND / 30); };
  for (int i = 0; i < 4; ++i) {
    held.push_back(next());
    EXPECT_TRUE(has_meta(held.back())) << "frame " << n;
    if (by_bytes && i == 0) {  // the limit may change while PLAYING
      const guint64 bytes = feature_bytes(held.back());
      ASSERT_GT(bytes, 0u);
      g_object_set(hh.element, "feature-memory-limit", 4 * bytes, nullptr);
    }
  }
  GstBuffer* out = next();  // 5: waits, times out
  EXPECT_FALSE(has_meta(out));
  gst_buffer_unref(out);
  EXPECT_EQ(hh.stat("pool-waits"), 1u);
  EXPECT_EQ(hh.stat("pool-timeouts"), 1u);
  out = next();  // 6: stalled, at once
  EXPECT_FALSE(has_meta(out));
  gst_buffer_unref(out);
  EXPECT_EQ(hh.stat("pool-waits"), 1u);

  release_on_another_thread(held.front());  // 3 held: above half
  held.pop_front();
  out = next();  // 7: room
  EXPECT_TRUE(has_meta(out));
  held.push_back(out);
  out = next();  // 8: full and still stalled
  EXPECT_FALSE(has_meta(out));
  gst_buffer_unref(out);
  EXPECT_EQ(hh.stat("pool-waits"), 1u);

  for (int i = 0; i < 2; ++i) {  // 2 held: half
    release_on_another_thread(held.front());
    held.pop_front();
  }
  for (int i = 0; i < 2; ++i) {  // 9, 10
    held.push_back(next());
    EXPECT_TRUE(has_meta(held.back())) << "frame " << n;
  }
  out = next();  // 11: full, not stalled: waits again
  EXPECT_FALSE(has_meta(out));
  gst_buffer_unref(out);
  EXPECT_EQ(hh.stat("pool-waits"), 2u);
  EXPECT_EQ(hh.stat("pool-timeouts"), 2u);

  EXPECT_EQ(hh.stat("frames"), 11u);
  EXPECT_EQ(hh.stat("inferred"), 7u);
  EXPECT_EQ(hh.stat("skipped-pool"), 4u);
  EXPECT_EQ(pop_qos(hh), (std::vector<QosCounts>{{4, 1}, {4, 2}, {5, 3}, {7, 4}}));
  // One warning per stall.
  EXPECT_EQ(count_containing(hh.pop_texts(GST_MESSAGE_WARNING), kPoolWarning), 2u);
  for (GstBuffer* b : held) gst_buffer_unref(b);
}

INSTANTIATE_TEST_SUITE_P(ResnetBackbonePolicy, Stall, ::testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "ByBytes" : "ByCount"); });

// A flush clears the stalled state: the next full frame waits again (and gets its features when
// a release comes during the wait).
TEST(ResnetBackbonePolicy, FlushClearsTheStall) {
  Harness hh(narrow_props({{"feature-memory-limit", "1"}, {"pool-timeout", "100000000"}}));
  const std::string caps = caps_string("RGB", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* held = push_pull(hh, info, 1, 0);
  ASSERT_TRUE(has_meta(held));
  for (uint32_t i = 2; i <= 3; ++i) {
    GstBuffer* out = push_pull(hh, info, i, i * GST_SECOND / 30);
    EXPECT_FALSE(has_meta(out));
    gst_buffer_unref(out);
  }
  EXPECT_EQ(hh.stat("pool-waits"), 1u);  // the second passed at once: stalled

  flush(hh.h);
  g_object_set(hh.element, "pool-timeout", guint64(30 * GST_SECOND), nullptr);
  std::atomic<bool> done{false};
  std::thread pusher([&] {
    EXPECT_EQ(gst_harness_push(hh.h, make_frame(info, 4, 0)), GST_FLOW_OK);
    done = true;
  });
  EXPECT_TRUE(eventually([&] { return hh.stat("pool-waits") == 2u || done; }));
  EXPECT_FALSE(done) << "after the flush, a full frame passed without waiting (still stalled)";
  EXPECT_EQ(hh.stat("pool-waits"), 2u);
  gst_buffer_unref(held);
  EXPECT_TRUE(eventually([&] { return done.load(); }, kHangSeconds));
  pusher.join();
  GstBuffer* out = gst_harness_pull(hh.h);
  ASSERT_NE(out, nullptr);
  EXPECT_TRUE(has_meta(out));
  gst_buffer_unref(out);
}

// pool-size=1 into a sink keeping its last sample (it releases the previous frame, on the streaming
// thread, when the next one arrives): one wait in all, then every other frame passes at once.
TEST(ResnetBackbonePolicy, PoolSizeOneWithASinkKeepingItsLastSample) {
  Harness hh(narrow_props({{"pool-size", "1"}, {"pool-timeout", "100000000"}}));
  const std::string caps = caps_string("GRAY8", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* last = nullptr;
  std::vector<int> with_meta;
  for (uint32_t i = 0; i < 20; ++i) {
    GstBuffer* out = push_pull(hh, info, i, i * GST_SECOND / 30);
    if (has_meta(out)) with_meta.push_back(int(i));
    if (last) gst_buffer_unref(last);
    last = out;
  }
  gst_buffer_unref(last);
  EXPECT_EQ(with_meta, (std::vector<int>{0, 2, 4, 6, 8, 10, 12, 14, 16, 18}));
  EXPECT_EQ(hh.stat("pool-waits"), 1u);
  EXPECT_EQ(hh.stat("pool-timeouts"), 1u);
  EXPECT_EQ(hh.stat("skipped-pool"), 10u);
  EXPECT_EQ(count_containing(hh.pop_texts(GST_MESSAGE_WARNING), kPoolWarning), 1u);
}

// Features held downstream keep their values while many more frames are inferred.
TEST(ResnetBackbonePolicy, HeldFeaturesAreNeverOverwritten) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("RGB", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  struct Held {
    GstBuffer* buf;
    std::vector<std::vector<float>> values;
  };
  std::vector<Held> held;
  for (uint32_t i = 0; i < 60; ++i) {
    GstBuffer* out = push_pull(hh, info, i, i * GST_SECOND / 30);
    const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
    ASSERT_NE(meta, nullptr) << "frame " << i;
    if (i % 10 == 0) {
      Held h{out, {}};
      for (guint l = 0; l < meta->num_levels; ++l) h.values.push_back(level_values(&meta->levels[l]));
      held.push_back(std::move(h));
    } else {
      gst_buffer_unref(out);
    }
  }
  for (size_t k = 0; k < held.size(); ++k) {
    const GstFeatureMeta* meta = gst_buffer_get_feature_meta(held[k].buf);
    for (guint l = 0; l < meta->num_levels; ++l)
      EXPECT_EQ(level_values(&meta->levels[l]), held[k].values[l]) << "frame " << k * 10 << " level " << l;
    if (k > 0) {
      EXPECT_NE(held[k].values[0], held[0].values[0]) << "different frames, same features";
    }
    gst_buffer_unref(held[k].buf);
  }
}

// The limits may change while PLAYING: raising them during a wait lets the waiting frame through
// with its features; lowering pool-size applies to the next frame.
TEST(ResnetBackbonePolicy, LimitsChangedWhilePlaying) {
  Harness hh(narrow_props({{"pool-size", "1"}, {"pool-timeout", "30000000000"}}));
  const std::string caps = caps_string("GRAY8", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* held1 = push_pull(hh, info, 1, 0);
  ASSERT_TRUE(has_meta(held1));
  std::atomic<bool> done{false};
  std::thread pusher([&] {
    EXPECT_EQ(gst_harness_push(hh.h, make_frame(info, 2, GST_SECOND / 30)), GST_FLOW_OK);
    done = true;
  });
  EXPECT_TRUE(eventually([&] { return hh.stat("pool-waits") == 1u; })) << "the push did not wait for room";
  g_object_set(hh.element, "pool-size", 2u, nullptr);
  EXPECT_TRUE(eventually([&] { return done.load(); }, kHangSeconds)) << "a larger pool-size did not wake the push";
  pusher.join();
  GstBuffer* held2 = gst_harness_pull(hh.h);
  ASSERT_NE(held2, nullptr);
  EXPECT_TRUE(has_meta(held2));
  EXPECT_EQ(hh.stat("pool-timeouts"), 0u);

  // Two held, pool-size back to 1 and no waiting: the next frame passes at once.
  g_object_set(hh.element, "pool-size", 1u, "pool-timeout", guint64(0), nullptr);
  GstBuffer* out = push_pull(hh, info, 3, 2 * GST_SECOND / 30);
  EXPECT_FALSE(has_meta(out));
  gst_buffer_unref(out);
  EXPECT_EQ(hh.stat("pool-waits"), 1u);
  EXPECT_EQ(hh.stat("skipped-pool"), 1u);
  gst_buffer_unref(held1);
  gst_buffer_unref(held2);
  out = push_pull(hh, info, 4, 3 * GST_SECOND / 30);
  EXPECT_TRUE(has_meta(out));
  gst_buffer_unref(out);
}

// An application pulling from appsink (drop=false, max-buffers=2), slowly, keeping the last few
// samples: the pipeline reaches EOS with every frame, and with a tiny feature memory limit too.
TEST(ResnetBackbonePolicy, AppsinkPulledSlowlyReachesEos) {
  for (const char* limit : {"", " feature-memory-limit=1 pool-timeout=50000000"}) {
    SCOPED_TRACE(*limit ? limit : "defaults");
    const std::string launch = "videotestsrc num-buffers=40 ! video/x-raw,width=32,height=24,format=I420 ! "
                               "resnetbackbone config-file=" + data_path("narrow.yaml") + " weights=" +
                               data_path("narrow.pth") + " device=cpu" + limit +
                               " ! appsink name=sink max-buffers=2 drop=false emit-signals=false sync=false";
    GError* err = nullptr;
    GstElement* pipeline = gst_parse_launch(launch.c_str(), &err);
    ASSERT_NE(pipeline, nullptr) << (err ? err->message : "");
    GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
    ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
    std::deque<GstSample*> kept;
    int frames = 0, metas = 0;
    {
      Watchdog wd(kHangSeconds * 2, "the appsink pipeline");
      while (GstSample* s = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 30 * GST_SECOND)) {
        ++frames;
        metas += has_meta(gst_sample_get_buffer(s));
        kept.push_back(s);
        if (kept.size() > 3) {
          gst_sample_unref(kept.front());
          kept.pop_front();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    EXPECT_TRUE(gst_app_sink_is_eos(GST_APP_SINK(sink)));
    EXPECT_EQ(frames, 40);
    EXPECT_GT(metas, 0);
    if (!*limit) {
      EXPECT_EQ(metas, 40);
    }
    GstBus* bus = gst_element_get_bus(pipeline);
    GstMessage* msg = gst_bus_timed_pop_filtered(bus, 30 * GST_SECOND, GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    ASSERT_NE(msg, nullptr) << "no EOS message";
    EXPECT_EQ(GST_MESSAGE_TYPE(msg), GST_MESSAGE_EOS);
    gst_message_unref(msg);
    for (GstSample* s : kept) gst_sample_unref(s);
    EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
    gst_object_unref(bus);
    gst_object_unref(sink);
    gst_object_unref(pipeline);
  }
}

}  // namespace
