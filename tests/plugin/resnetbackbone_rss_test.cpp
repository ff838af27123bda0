// SPDX-License-Identifier: Apache-2.0
// A long run of the most common pipeline shape after resnetbackbone, an encoder with lookahead
// into a muxer, on the narrow test model: the resident memory must stay flat (features riding the
// frames the encoder keeps, and its encoded buffers, are all released).
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <glib/gstdio.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "resnetbackbone_test_util.h"

namespace {

using namespace gstbackbone_test;

// VmRSS of this process in bytes, from /proc/self/statm (0 where it cannot be read).
guint64 rss_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? guint64(resident) * guint64(sysconf(_SC_PAGESIZE)) : 0;
}

struct Probe {
  guint64 buffers = 0, metas = 0;
  guint64 rss_at_1000 = 0, rss_at_10000 = 0;
};

GstPadProbeReturn sample_rss(GstPad*, GstPadProbeInfo* info, gpointer user_data) {
  auto* p = static_cast<Probe*>(user_data);
  if (GstBuffer* buf = GST_PAD_PROBE_INFO_BUFFER(info)) {
    ++p->buffers;
    p->metas += gst_buffer_get_feature_meta(buf) != nullptr;
    if (p->buffers == 1000) p->rss_at_1000 = rss_bytes();
    if (p->buffers == 10000) p->rss_at_10000 = rss_bytes();
  }
  return GST_PAD_PROBE_OK;
}

// 10,000 frames into x264enc (its default lookahead) and mp4mux: RSS at frame 10,000 within 5% of
// RSS at frame 1,000, every frame with its features (the default feature-memory-limit is far
// above what the encoder keeps), an mp4 file at the end. num-threads=1: one thread for the engine
// next to x264enc's own.
TEST(ResnetBackboneLongRun, RssFlatOverTenThousandFramesIntoAnEncoder) {
  gchar* dir = g_dir_make_tmp("resnetbackbone-rss-XXXXXX", nullptr);
  ASSERT_NE(dir, nullptr);
  const std::string file = std::string(dir) + "/long.mp4";
  const std::string launch = "videotestsrc num-buffers=10000 ! video/x-raw,width=32,height=24,format=I420 ! "
                             "resnetbackbone name=bb num-threads=1 device=cpu config-file=" + data_path("narrow.yaml") +
                             " weights=" + data_path("narrow.pth") +
                             " ! videoconvert ! x264enc ! mp4mux ! filesink location=" + file;
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(launch.c_str(), &err);
  ASSERT_NE(pipeline, nullptr) << (err ? err->message : "");
  GstElement* bb = gst_bin_get_by_name(GST_BIN(pipeline), "bb");
  GstPad* pad = gst_element_get_static_pad(bb, "src");
  Probe probe;
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, sample_rss, &probe, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  GstBus* bus = gst_element_get_bus(pipeline);
  GstMessage* msg =
      gst_bus_timed_pop_filtered(bus, 600 * GST_SECOND, GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_NE(msg, nullptr) << "no EOS after 600 s";
  EXPECT_EQ(GST_MESSAGE_TYPE(msg), GST_MESSAGE_EOS);
  gst_message_unref(msg);

  std::printf("10000 frames in %.1f s; RSS at frame 1000: %.1f MiB, at frame 10000: %.1f MiB\n", seconds,
              probe.rss_at_1000 / 1048576.0, probe.rss_at_10000 / 1048576.0);
  EXPECT_EQ(probe.buffers, 10000u);
  EXPECT_EQ(probe.metas, 10000u);
  ASSERT_GT(probe.rss_at_1000, 0u);
  EXPECT_LE(double(probe.rss_at_10000), 1.05 * double(probe.rss_at_1000))
      << "RSS grew from " << probe.rss_at_1000 << " bytes at frame 1000 to " << probe.rss_at_10000
      << " bytes at frame 10000";
  GstStructure* stats = nullptr;
  g_object_get(bb, "stats", &stats, nullptr);
  ASSERT_NE(stats, nullptr);
  guint64 inferred = 0, skipped_pool = 0;
  EXPECT_TRUE(gst_structure_get_uint64(stats, "inferred", &inferred));
  EXPECT_TRUE(gst_structure_get_uint64(stats, "skipped-pool", &skipped_pool));
  EXPECT_EQ(inferred, 10000u);
  EXPECT_EQ(skipped_pool, 0u);
  gst_structure_free(stats);

  EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  GStatBuf st;
  EXPECT_EQ(g_stat(file.c_str(), &st), 0);
  EXPECT_GT(st.st_size, 0);
  g_unlink(file.c_str());
  g_rmdir(dir);
  g_free(dir);
  gst_object_unref(bus);
  gst_object_unref(pad);
  gst_object_unref(bb);
  gst_object_unref(pipeline);
}

}  // namespace
