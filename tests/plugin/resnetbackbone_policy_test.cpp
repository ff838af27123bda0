// SPDX-License-Identifier: Apache-2.0
// GstHarness tests of the resnetbackbone element's streaming policy, on the narrow test model and
// frames of 64x48 or smaller: feature memory held downstream (feature-memory-limit, pool-size,
// pool-timeout, the stalled state), QoS, inference-interval, properties changed while PLAYING,
// max-errors, the stats property, GstVideoCropMeta and the allocation query. No timing assertions:
// a watchdog fails a test whose pushes do not return at all within a generous bound.
#include <gst/app/gstappsink.h>
#include <gst/check/gstharness.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "resnetbackbone_test_util.h"

namespace {

using namespace gstbackbone_test;

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

constexpr int kHangSeconds = 60;

// Releases @buf on a thread of its own (a consumer progressing on its own), and waits for it.
void release_on_another_thread(GstBuffer* buf) {
  std::thread([buf] { gst_buffer_unref(buf); }).join();
}

// Polls @cond until it holds or @seconds pass.
bool eventually(const std::function<bool()>& cond, int seconds = 30) {
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
std::ostream& operator<<(std::ostream& os, const QosCounts& q) {
  return os << "(processed " << q.processed << ", dropped " << q.dropped << ")";
}

// Pops every QoS message now on the bus: processed/dropped, checked to count buffers.
std::vector<QosCounts> pop_qos(Harness& hh) {
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

bool has_meta(GstBuffer* buf) { return gst_buffer_get_feature_meta(buf) != nullptr; }

// Pushes a frame and pulls what comes out, under the watchdog.
GstBuffer* push_pull(Harness& hh, const GstVideoInfo& info, uint32_t seed, GstClockTime pts) {
  Watchdog wd(kHangSeconds, "push of frame " + std::to_string(seed));
  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info, seed, pts));
  EXPECT_NE(out, nullptr) << "frame " << seed << " did not come out";
  return out;
}

size_t count_containing(const std::vector<std::string>& texts, const std::string& what) {
  size_t n = 0;
  for (const auto& t : texts) n += t.find(what) != std::string::npos;
  return n;
}

const char kPoolWarning[] = "Downstream holds the features";

void push_segment(GstHarness* h) {
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_segment(&segment)));
}

void flush(GstHarness* h) {
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_flush_start()));
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_flush_stop(TRUE)));
  push_segment(h);
}

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

// Downstream 100 ms late at 1 s: with qos (the default) the late frames skip inference, each
// counted in a QoS message; with qos=FALSE they are inferred. No frame is dropped either way.
TEST(ResnetBackbonePolicy, QosSkipsInferenceOnlyWhenEnabled) {
  for (const bool qos : {true, false}) {
    SCOPED_TRACE(qos ? "qos=TRUE" : "qos=FALSE");
    Harness hh(narrow_props({{"qos", qos ? "true" : "false"}}));
    const std::string caps = caps_string("RGB", 32, 24);
    const GstVideoInfo info = info_of(caps);
    gst_harness_set_src_caps_str(hh.h, caps.c_str());
    GstBuffer* out = push_pull(hh, info, 0, 0);
    EXPECT_TRUE(has_meta(out));
    gst_buffer_unref(out);
    EXPECT_TRUE(gst_harness_push_upstream_event(
        hh.h, gst_event_new_qos(GST_QOS_TYPE_UNDERFLOW, 0.8, 100 * GST_MSECOND, GST_SECOND)));
    const GstClockTime pts[] = {1100 * GST_MSECOND, 1200 * GST_MSECOND, 1300 * GST_MSECOND};
    std::vector<bool> metas;
    for (int i = 0; i < 3; ++i) {
      Watchdog wd(kHangSeconds, "push");
      ASSERT_EQ(gst_harness_push(hh.h, make_frame(info, i + 1, pts[i])), GST_FLOW_OK);
    }
    EXPECT_EQ(gst_harness_buffers_received(hh.h), 4u) << "a frame was dropped";
    while (GstBuffer* b = gst_harness_try_pull(hh.h)) {
      metas.push_back(has_meta(b));
      gst_buffer_unref(b);
    }
    if (qos) {
      EXPECT_EQ(metas, (std::vector<bool>{false, false, true}));
      const std::vector<GstMessage*> qos_messages = hh.take(GST_MESSAGE_QOS);
      ASSERT_EQ(qos_messages.size(), 2u) << "QoS messages";
      GstMessage* m = qos_messages[0];
      GstClockTime running_time = 0, stream_time = 0, timestamp = 0, duration = 0;
      gboolean live = TRUE;
      gst_message_parse_qos(m, &live, &running_time, &stream_time, &timestamp, &duration);
      EXPECT_EQ(timestamp, pts[0]);
      EXPECT_EQ(running_time, pts[0]);
      std::vector<QosCounts> counts;
      for (GstMessage* q : qos_messages) {
        GstFormat format = GST_FORMAT_UNDEFINED;
        guint64 processed = 0, dropped = 0;
        gst_message_parse_qos_stats(q, &format, &processed, &dropped);
        EXPECT_EQ(format, GST_FORMAT_BUFFERS);
        counts.push_back({processed, dropped});
        gst_message_unref(q);
      }
      EXPECT_EQ(counts, (std::vector<QosCounts>{{1, 1}, {1, 2}}));
      EXPECT_EQ(hh.stat("skipped-qos"), 2u);
      EXPECT_EQ(hh.stat("inferred"), 2u);
    } else {
      EXPECT_EQ(metas, (std::vector<bool>{true, true, true}));
      EXPECT_EQ(pop_qos(hh), std::vector<QosCounts>{});
      EXPECT_EQ(hh.stat("skipped-qos"), 0u);
      EXPECT_EQ(hh.stat("inferred"), 4u);
    }
    EXPECT_EQ(hh.stat("frames"), 4u);
  }
}

// The counts of a QoS message run from the last flush, as GStreamer defines them
// (gst_message_set_qos_stats: "since the last state change to READY or a flushing operation") and
// as GstBaseTransform counts its own; the stats property counts from the start.
TEST(ResnetBackbonePolicy, QosMessageCountsRestartAtAFlush) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("GRAY8", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  auto late_run = [&](uint32_t seed) {
    GstBuffer* out = push_pull(hh, info, seed, 0);  // on time: inferred
    EXPECT_TRUE(has_meta(out));
    gst_buffer_unref(out);
    EXPECT_TRUE(gst_harness_push_upstream_event(
        hh.h, gst_event_new_qos(GST_QOS_TYPE_UNDERFLOW, 1.0, 0, 500 * GST_MSECOND)));
    out = push_pull(hh, info, seed + 1, 400 * GST_MSECOND);  // late: skipped
    EXPECT_FALSE(has_meta(out));
    gst_buffer_unref(out);
  };
  late_run(0);
  EXPECT_EQ(pop_qos(hh), (std::vector<QosCounts>{{1, 1}}));
  flush(hh.h);
  late_run(2);
  EXPECT_EQ(pop_qos(hh), (std::vector<QosCounts>{{1, 1}})) << "counted from before the flush";
  EXPECT_EQ(hh.stat("inferred"), 2u);
  EXPECT_EQ(hh.stat("skipped-qos"), 2u);
}

// inference-interval=3: a due frame skipped for QoS keeps the phase; a flush restarts it.
TEST(ResnetBackbonePolicy, InferenceIntervalPhaseKeptAcrossQosAndResetOnFlush) {
  Harness hh(narrow_props({{"inference-interval", "3"}}));
  const std::string caps = caps_string("GRAY8", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  std::vector<int> with_meta;
  auto run = [&](int first, int last) {
    for (int i = first; i <= last; ++i) {
      GstBuffer* out = push_pull(hh, info, i, i * 100 * GST_MSECOND);
      if (has_meta(out)) with_meta.push_back(i);
      gst_buffer_unref(out);
    }
  };
  run(0, 2);
  // Frames up to 300 ms (frame 3, due) are late.
  EXPECT_TRUE(gst_harness_push_upstream_event(hh.h, gst_event_new_qos(GST_QOS_TYPE_UNDERFLOW, 1.0, 0, 300 * GST_MSECOND)));
  run(3, 9);
  EXPECT_EQ(with_meta, (std::vector<int>{0, 6, 9}));
  EXPECT_EQ(hh.stat("skipped-qos"), 1u);
  EXPECT_EQ(hh.stat("skipped-interval"), 6u);
  with_meta.clear();
  flush(hh.h);
  run(10, 14);  // by the old phase 12 was due
  EXPECT_EQ(with_meta, (std::vector<int>{10, 13}));
}

// unique-id and inference-interval may change while PLAYING; they take effect at once.
TEST(ResnetBackbonePolicy, IntervalAndUniqueIdChangeWhilePlaying) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("GRAY8", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  ASSERT_EQ(GST_STATE(hh.element), GST_STATE_PLAYING);
  GstBuffer* out = push_pull(hh, info, 0, 0);
  ASSERT_NE(gst_buffer_get_feature_meta_by_id(out, 0), nullptr);
  gst_buffer_unref(out);
  g_object_set(hh.element, "unique-id", 7u, "inference-interval", 2u, nullptr);
  std::vector<int> with_meta;
  for (int i = 1; i <= 5; ++i) {
    out = push_pull(hh, info, i, i * GST_SECOND / 30);
    if (has_meta(out)) {
      with_meta.push_back(i);
      EXPECT_EQ(gst_buffer_get_feature_meta(out)->unique_id, 7u);
    }
    gst_buffer_unref(out);
  }
  EXPECT_EQ(with_meta, (std::vector<int>{1, 3, 5}));  // the new interval counts from the next due frame
  guint id = 0, interval = 0;
  g_object_get(hh.element, "unique-id", &id, "inference-interval", &interval, nullptr);
  EXPECT_EQ(id, 7u);
  EXPECT_EQ(interval, 2u);
  EXPECT_EQ(hh.pop_texts(GST_MESSAGE_WARNING), std::vector<std::string>{});
}

// A model property set while PLAYING is refused with a warning; the element keeps its value and
// its model.
TEST(ResnetBackbonePolicy, ModelPropertiesRefusedWhilePlaying) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("GRAY8", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* out = push_pull(hh, info, 0, 0);
  gst_buffer_unref(out);
  const std::pair<const char*, const char*> changes[] = {
      {"config-file", "/nonexistent/other.yaml"}, {"weights", "/nonexistent/other.pth"},
      {"out-features", "res5"}, {"engine", "libtorch"}};
  for (const auto& [name, value] : changes) {
    SCOPED_TRACE(name);
    gchar* before = nullptr;
    g_object_get(hh.element, name, &before, nullptr);
    g_object_set(hh.element, name, value, nullptr);
    const auto warnings = hh.pop_texts(GST_MESSAGE_WARNING);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find(std::string("property \"") + name + "\" cannot change in state PLAYING"),
              std::string::npos)
        << warnings[0];
    gchar* after = nullptr;
    g_object_get(hh.element, name, &after, nullptr);
    EXPECT_STREQ(after, before);
    g_free(before);
    g_free(after);
  }
  out = push_pull(hh, info, 1, GST_SECOND / 30);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr);
  EXPECT_EQ(meta->num_levels, 4u);
  gst_buffer_unref(out);
  EXPECT_EQ(hh.error_text(), "");
}

// Frames the library refuses (16777216 pixels wide: "too large").
const std::string kBigCaps = caps_string("GRAY8", 1 << 24, 1);
const std::string kSmallCaps = caps_string("GRAY8", 32, 24);

// Pushes one frame of @caps; its flow return, and whether what came out has features.
std::pair<GstFlowReturn, bool> push_one(Harness& hh, const std::string& caps, uint32_t seed) {
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  Watchdog wd(kHangSeconds, "push");
  const GstFlowReturn ret = gst_harness_push(hh.h, make_frame(info_of(caps), seed, seed * GST_SECOND / 30));
  bool meta = false;
  if (GstBuffer* out = gst_harness_try_pull(hh.h)) {
    meta = has_meta(out);
    gst_buffer_unref(out);
  }
  return {ret, meta};
}

// max-errors=2: two failures in a row pass without features, each with a warning; the third fails
// the stream (GST_FLOW_ERROR and an ERROR message).
TEST(ResnetBackbonePolicy, MaxErrorsToleratesThatManyFailuresInARow) {
  Harness hh(narrow_props({{"max-errors", "2"}}));
  for (uint32_t i = 0; i < 2; ++i) {
    EXPECT_EQ(push_one(hh, kBigCaps, i), std::make_pair(GST_FLOW_OK, false)) << "failure " << i;
  }
  const auto warnings = hh.pop_texts(GST_MESSAGE_WARNING);
  EXPECT_EQ(count_containing(warnings, "Inference failed"), 2u);
  EXPECT_EQ(count_containing(warnings, "too large"), 2u);
  EXPECT_EQ(hh.error_text(), "");
  EXPECT_EQ(push_one(hh, kBigCaps, 2).first, GST_FLOW_ERROR);
  const std::string error = hh.error_text();
  EXPECT_NE(error.find("Inference failed"), std::string::npos) << error;
  EXPECT_NE(error.find("too large"), std::string::npos) << error;
  EXPECT_EQ(hh.stat("errors"), 2u);
  EXPECT_EQ(hh.stat("frames"), 3u);
  EXPECT_EQ(hh.stat("inferred"), 0u);
}

// A success in between resets the count.
TEST(ResnetBackbonePolicy, MaxErrorsCountsFailuresInARowOnly) {
  Harness hh(narrow_props({{"max-errors", "1"}}));
  EXPECT_EQ(push_one(hh, kBigCaps, 0), std::make_pair(GST_FLOW_OK, false));
  EXPECT_EQ(push_one(hh, kSmallCaps, 1), std::make_pair(GST_FLOW_OK, true));
  EXPECT_EQ(push_one(hh, kBigCaps, 2), std::make_pair(GST_FLOW_OK, false));
  EXPECT_EQ(hh.error_text(), "");
  EXPECT_EQ(push_one(hh, kBigCaps, 3).first, GST_FLOW_ERROR);
  EXPECT_NE(hh.error_text(), "");
  EXPECT_EQ(count_containing(hh.pop_texts(GST_MESSAGE_WARNING), "Inference failed"), 2u);
  EXPECT_EQ(hh.stat("errors"), 2u);
  EXPECT_EQ(hh.stat("inferred"), 1u);
}

// max-errors=-1 never fails the stream.
TEST(ResnetBackbonePolicy, MaxErrorsMinusOneNeverFails) {
  Harness hh(narrow_props({{"max-errors", "-1"}}));
  for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(push_one(hh, kBigCaps, i), std::make_pair(GST_FLOW_OK, false));
  EXPECT_EQ(hh.error_text(), "");
  EXPECT_EQ(count_containing(hh.pop_texts(GST_MESSAGE_WARNING), "Inference failed"), 4u);
  EXPECT_EQ(hh.stat("errors"), 4u);
  EXPECT_EQ(hh.stat("frames"), 4u);
  EXPECT_EQ(push_one(hh, kSmallCaps, 4), std::make_pair(GST_FLOW_OK, true));
}

// A frame with a GstVideoCropMeta is inferred on its crop: the features of the cropped frame pushed
// on its own, and the meta's frame size is the crop's.
TEST(ResnetBackbonePolicy, CropMetaIsInferredOnTheCrop) {
  const std::string full_caps = caps_string("RGB", 64, 48), crop_caps = caps_string("RGB", 32, 24);
  const GstVideoInfo full_info = info_of(full_caps), crop_info = info_of(crop_caps);
  const guint cx = 16, cy = 8;
  GstBuffer* full = make_frame(full_info, 5);
  GstBuffer* cropped = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&crop_info), nullptr);
  {
    GstMapInfo src, dst;
    ASSERT_TRUE(gst_buffer_map(full, &src, GST_MAP_READ));
    ASSERT_TRUE(gst_buffer_map(cropped, &dst, GST_MAP_WRITE));
    for (guint y = 0; y < 24; ++y)
      std::memcpy(dst.data + y * GST_VIDEO_INFO_PLANE_STRIDE(&crop_info, 0),
                  src.data + (cy + y) * GST_VIDEO_INFO_PLANE_STRIDE(&full_info, 0) + cx * 3, 32 * 3);
    gst_buffer_unmap(cropped, &dst);
    gst_buffer_unmap(full, &src);
  }
  GstVideoCropMeta* crop = gst_buffer_add_video_crop_meta(full);
  crop->x = cx;
  crop->y = cy;
  crop->width = 32;
  crop->height = 24;

  Harness a(narrow_props()), b(narrow_props());
  gst_harness_set_src_caps_str(a.h, full_caps.c_str());
  gst_harness_set_src_caps_str(b.h, crop_caps.c_str());
  GstBuffer* out_a = gst_harness_push_and_pull(a.h, full);
  GstBuffer* out_b = gst_harness_push_and_pull(b.h, cropped);
  ASSERT_NE(out_a, nullptr);
  ASSERT_NE(out_b, nullptr);
  const GstFeatureMeta* ma = gst_buffer_get_feature_meta(out_a);
  const GstFeatureMeta* mb = gst_buffer_get_feature_meta(out_b);
  ASSERT_NE(ma, nullptr);
  ASSERT_NE(mb, nullptr);
  EXPECT_EQ(ma->frame_width, 32u);
  EXPECT_EQ(ma->frame_height, 24u);
  EXPECT_EQ(ma->padded_width, mb->padded_width);
  EXPECT_EQ(ma->padded_height, mb->padded_height);
  ASSERT_EQ(ma->num_levels, mb->num_levels);
  for (guint l = 0; l < ma->num_levels; ++l) {
    SCOPED_TRACE(g_quark_to_string(ma->levels[l].name));
    for (int d = 0; d < 4; ++d) EXPECT_EQ(ma->levels[l].dims[d], mb->levels[l].dims[d]);
    const std::vector<float> va = level_values(&ma->levels[l]), vb = level_values(&mb->levels[l]);
    ASSERT_EQ(va.size(), vb.size());
    EXPECT_LE(rel_error(va, vb.data(), vb.size()), 1e-6);
  }
  EXPECT_NE(gst_buffer_get_video_crop_meta(out_a), nullptr) << "the crop meta is the consumers' to apply";
  gst_buffer_unref(out_a);
  gst_buffer_unref(out_b);
}

// The allocation query the element forwards upstream does not offer GstVideoCropMeta, even when
// downstream does (other metas downstream offers pass).
TEST(ResnetBackbonePolicy, AllocationQueryDoesNotOfferCropMeta) {
  Harness hh(narrow_props());
  gst_harness_add_propose_allocation_meta(hh.h, GST_VIDEO_CROP_META_API_TYPE, nullptr);
  gst_harness_add_propose_allocation_meta(hh.h, GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE, nullptr);
  const std::string caps_str = caps_string("RGB", 32, 24);
  gst_harness_set_src_caps_str(hh.h, caps_str.c_str());
  GstBuffer* out = push_pull(hh, info_of(caps_str), 1, 0);
  gst_buffer_unref(out);
  GstCaps* caps = gst_caps_from_string(caps_str.c_str());
  GstQuery* q = gst_query_new_allocation(caps, TRUE);
  gst_caps_unref(caps);
  ASSERT_TRUE(gst_pad_peer_query(hh.h->srcpad, q));
  EXPECT_TRUE(gst_query_find_allocation_meta(q, GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE, nullptr))
      << "downstream's proposal did not reach upstream at all";
  EXPECT_FALSE(gst_query_find_allocation_meta(q, GST_VIDEO_CROP_META_API_TYPE, nullptr));
  gst_query_unref(q);
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
