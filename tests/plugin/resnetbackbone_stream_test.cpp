// SPDX-License-Identifier: Apache-2.0
// GstHarness tests of the resnetbackbone element's streaming behaviour, on the narrow test model
// and frames of 64x48 or smaller: QoS (qos on and off, the QoS messages' counts), the
// inference-interval phase, properties changed while PLAYING, max-errors, the stats property,
// GstVideoCropMeta and the allocation query. Built into resnetbackbone_policy_test.
#include <gst/check/gstharness.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "resnetbackbone_test_util.h"

namespace {

using namespace gstbackbone_test;

// Downstream 100 ms late at 1 s: with qos (the default) the late frames skip inference, each
// counted in a QoS message; with qos=FALSE they are inferred. No frame is dropped either way.
TEST(ResnetBackboneStream, QosSkipsInferenceOnlyWhenEnabled) {
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
TEST(ResnetBackboneStream, QosMessageCountsRestartAtAFlush) {
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
TEST(ResnetBackboneStream, InferenceIntervalPhaseKeptAcrossQosAndResetOnFlush) {
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
TEST(ResnetBackboneStream, IntervalAndUniqueIdChangeWhilePlaying) {
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
TEST(ResnetBackboneStream, ModelPropertiesRefusedWhilePlaying) {
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
TEST(ResnetBackboneStream, MaxErrorsToleratesThatManyFailuresInARow) {
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
TEST(ResnetBackboneStream, MaxErrorsCountsFailuresInARowOnly) {
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
TEST(ResnetBackboneStream, MaxErrorsMinusOneNeverFails) {
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
TEST(ResnetBackboneStream, CropMetaIsInferredOnTheCrop) {
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
TEST(ResnetBackboneStream, AllocationQueryDoesNotOfferCropMeta) {
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


}  // namespace
