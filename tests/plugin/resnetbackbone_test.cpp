// SPDX-License-Identifier: Apache-2.0
// GstHarness tests of the resnetbackbone element on a narrow R-50 (tests/data/plugin/narrow.yaml,
// weights narrow.pth, made by tests/data/make_plugin.py) and frames of 64x48 or smaller.
// Reference values come from the backbone library run directly on the same frame (preprocess_frame
// + the same engine with the same weights) and, for one RGB frame, from detectron2 itself.
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/check/gstharness.h>
#include <gst/featuremeta/featuredevicememory.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "backbone/checkpoint.h"
#include "backbone/config.h"
#include "backbone/engine.h"
#include "backbone/frame.h"
#include "backbone/npy.h"
#include "backbone/preprocess.h"
#include "backbone/resnet.h"
#include "resnetbackbone_test_util.h"

namespace {

using namespace gstbackbone_test;

const char* const kFeatures[] = {"res2", "res3", "res4", "res5"};
const gsize kChannels[] = {16, 32, 64, 128};
const guint kStrides[] = {4, 8, 16, 32};

// The library's view of a frame, built here from GstVideoInfo independently of the plugin's code.
backbone::FrameView view_of(const GstVideoInfo& info, const guint8* data) {
  backbone::FrameView v;
  v.format = backbone::pixel_format_from_name(gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)));
  v.width = GST_VIDEO_INFO_WIDTH(&info);
  v.height = GST_VIDEO_INFO_HEIGHT(&info);
  for (guint p = 0; p < GST_VIDEO_INFO_N_PLANES(&info); ++p) {
    v.planes[p] = data + GST_VIDEO_INFO_PLANE_OFFSET(&info, p);
    v.strides[p] = GST_VIDEO_INFO_PLANE_STRIDE(&info, p);
  }
  switch (info.colorimetry.matrix) {
    case GST_VIDEO_COLOR_MATRIX_BT709: v.matrix = backbone::ColorMatrix::BT709; break;
    case GST_VIDEO_COLOR_MATRIX_BT2020: v.matrix = backbone::ColorMatrix::BT2020; break;
    case GST_VIDEO_COLOR_MATRIX_FCC: v.matrix = backbone::ColorMatrix::FCC; break;
    case GST_VIDEO_COLOR_MATRIX_SMPTE240M: v.matrix = backbone::ColorMatrix::SMPTE240M; break;
    default: v.matrix = backbone::ColorMatrix::BT601; break;
  }
  v.range = info.colorimetry.range == GST_VIDEO_COLOR_RANGE_0_255 ? backbone::ColorRange::Full
                                                                  : backbone::ColorRange::Limited;
  const gchar* site = gst_video_chroma_site_to_string(GST_VIDEO_INFO_CHROMA_SITE(&info));
  v.chroma_site = site ? backbone::chroma_site_from_name(site) : backbone::ChromaSite::Center;
  return v;
}

// The backbone library run directly: narrow.yaml + narrow.pth on the default engine ("auto", as
// the element's default), fp32 on the CPU.
struct Reference {
  backbone::FramePreprocessOptions options;
  std::unique_ptr<backbone::Engine> engine;

  explicit Reference(const backbone::EngineOptions& engine_options = {}) {
    backbone::Config cfg = backbone::load_config(data_path("narrow.yaml"));
    backbone::ResNet net = backbone::build_resnet_backbone(cfg);
    backbone::load_checkpoint(net, data_path("narrow.pth"));
    engine = backbone::create_engine(net, engine_options);
    const auto base = backbone::PreprocessOptions::from_config(cfg);
    options.input_format = base.input_format;
    options.pixel_mean = base.pixel_mean;
    options.pixel_std = base.pixel_std;
    options.min_size = base.min_size_test;
    options.max_size = base.max_size_test;
  }

  struct Result {
    backbone::PreprocessResult pre;
    backbone::FeatureMaps maps;
  };
  Result run(const GstVideoInfo& info, GstBuffer* buf) const {
    GstMapInfo map;
    EXPECT_TRUE(gst_buffer_map(buf, &map, GST_MAP_READ));
    Result r;
    r.pre = backbone::preprocess_frame(view_of(info, map.data), options);
    r.maps = engine->forward(r.pre.tensor);
    gst_buffer_unmap(buf, &map);
    return r;
  }
};


// Checks the meta's layout and values against the library's result for the same frame.
void expect_meta_matches(const GstFeatureMeta* meta, const Reference::Result& ref, int frame_w, int frame_h,
                         guint unique_id = 0) {
  ASSERT_NE(meta, nullptr);
  EXPECT_EQ(meta->version, guint32(GST_FEATURE_META_VERSION));
  EXPECT_EQ(meta->unique_id, unique_id);
  EXPECT_STREQ(meta->model_name, "R-50");
  EXPECT_EQ(meta->frame_width, guint(frame_w));
  EXPECT_EQ(meta->frame_height, guint(frame_h));
  EXPECT_EQ(meta->input_width, guint(ref.pre.resized_width));
  EXPECT_EQ(meta->input_height, guint(ref.pre.resized_height));
  EXPECT_EQ(meta->padded_width, guint(ref.pre.tensor.size(3)));
  EXPECT_EQ(meta->padded_height, guint(ref.pre.tensor.size(2)));
  EXPECT_DOUBLE_EQ(meta->scale_x, ref.pre.scale_x);
  EXPECT_DOUBLE_EQ(meta->scale_y, ref.pre.scale_y);
  ASSERT_EQ(meta->num_levels, ref.maps.size());
  for (guint i = 0; i < meta->num_levels; ++i) {
    const GstFeatureLevel* level = &meta->levels[i];
    const auto& [name, tensor] = ref.maps[i];
    SCOPED_TRACE(name);
    EXPECT_STREQ(g_quark_to_string(level->name), name.c_str());
    EXPECT_EQ(level->dtype, GST_FEATURE_DTYPE_FLOAT32);
    EXPECT_EQ(level->device, GST_FEATURE_DEVICE_CPU);
    EXPECT_EQ(level->num_dims, 4u);
    const auto strides = backbone::contiguous_strides(tensor.shape());
    for (int d = 0; d < 4; ++d) {
      EXPECT_EQ(level->dims[d], gsize(tensor.size(d))) << "dim " << d;
      EXPECT_EQ(level->strides[d], gsize(strides[d])) << "dim " << d;
    }
    for (int k = 0; k < 4; ++k)
      if (name == kFeatures[k]) {
        EXPECT_EQ(level->stride, kStrides[k]);
        EXPECT_EQ(level->dims[1], kChannels[k]);
      }
    const std::vector<float> got = level_values(level);
    const backbone::Tensor want = tensor.contiguous();
    ASSERT_EQ(got.size(), size_t(want.numel()));
    EXPECT_LE(rel_error(got, want.data_ptr<float>(), got.size()), 1e-6);
  }
}

// (format, width, height): 64x48, and 33x25 where rows are padded to 4 bytes and chroma planes
// have odd sizes.
class Formats : public ::testing::TestWithParam<std::tuple<const char*, std::pair<int, int>>> {};

// Each caps format: meta layout and values against the library on the same frame; the video buffer
// (memory, pixels, timestamps, flags, other metas) comes out untouched.
TEST_P(Formats, MetaMatchesLibraryAndBufferUntouched) {
  static Reference ref;
  const std::string fmt = std::get<0>(GetParam());
  const int width = std::get<1>(GetParam()).first, height = std::get<1>(GetParam()).second;
  std::string extra;
  if (fmt == "NV12") extra = ",colorimetry=bt709,chroma-site=mpeg2";
  if (fmt == "I420") extra = ",colorimetry=(string)1:4:0:0";  // full range BT.601
  const std::string caps = caps_string(fmt.c_str(), width, height, extra.c_str());
  const GstVideoInfo info = info_of(caps);

  Harness hh(narrow_props());
  ASSERT_NE(hh.h, nullptr);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* in = make_frame(info, 7, 3 * GST_SECOND);
  GST_BUFFER_OFFSET(in) = 90;
  GST_BUFFER_OFFSET_END(in) = 91;
  GST_BUFFER_FLAG_SET(in, GST_BUFFER_FLAG_DISCONT | GST_BUFFER_FLAG_DELTA_UNIT | GST_BUFFER_FLAG_MARKER);
  const guint in_flags = GST_BUFFER_FLAGS(in);
  GstCaps* ref_caps = gst_caps_from_string("timestamp/x-test");
  gst_buffer_add_reference_timestamp_meta(in, ref_caps, 4242, 17);
  gst_caps_unref(ref_caps);
  GstMemory* in_mem = gst_buffer_peek_memory(in, 0);
  gsize size = 0;
  guint8* before = nullptr;
  gst_buffer_extract_dup(in, 0, gst_buffer_get_size(in), reinterpret_cast<gpointer*>(&before), &size);
  const Reference::Result want = ref.run(info, in);

  GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
  ASSERT_NE(out, nullptr);
  expect_meta_matches(gst_buffer_get_feature_meta(out), want, width, height);

  EXPECT_EQ(gst_buffer_peek_memory(out, 0), in_mem) << "the video memory was replaced";
  GstMapInfo map;
  ASSERT_TRUE(gst_buffer_map(out, &map, GST_MAP_READ));
  ASSERT_EQ(map.size, size);
  EXPECT_EQ(std::memcmp(map.data, before, size), 0) << "pixels changed";
  gst_buffer_unmap(out, &map);
  g_free(before);
  EXPECT_EQ(GST_BUFFER_PTS(out), 3 * GST_SECOND);
  EXPECT_EQ(GST_BUFFER_DTS(out), 3 * GST_SECOND);
  EXPECT_EQ(GST_BUFFER_DURATION(out), GST_SECOND / 30);
  EXPECT_EQ(GST_BUFFER_OFFSET(out), 90u);
  EXPECT_EQ(GST_BUFFER_OFFSET_END(out), 91u);
  EXPECT_EQ(GST_BUFFER_FLAGS(out), in_flags);
  GstReferenceTimestampMeta* rts = gst_buffer_get_reference_timestamp_meta(out, nullptr);
  ASSERT_NE(rts, nullptr);
  EXPECT_EQ(rts->timestamp, 4242u);
  EXPECT_EQ(rts->duration, 17u);
  // Exactly one feature meta.
  gpointer state = nullptr;
  int n = 0;
  while (GstMeta* m = gst_buffer_iterate_meta_filtered(out, &state, GST_FEATURE_META_API_TYPE)) n += m != nullptr;
  EXPECT_EQ(n, 1);
  gst_buffer_unref(out);
  EXPECT_EQ(hh.error_text(), "");
}

INSTANTIATE_TEST_SUITE_P(ResnetBackbone, Formats,
                         ::testing::Combine(::testing::Values("RGB", "BGR", "RGBx", "BGRx", "xRGB", "xBGR", "RGBA",
                                                              "BGRA", "ARGB", "ABGR", "NV12", "I420", "GRAY8"),
                                            ::testing::Values(std::make_pair(64, 48), std::make_pair(33, 25))),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param)) + "_" +
                                  std::to_string(std::get<1>(info.param).first) + "x" +
                                  std::to_string(std::get<1>(info.param).second);
                         });

// The element's features of one RGB frame against detectron2's own backbone (make_plugin.py).
TEST(ResnetBackbone, MatchesDetectron2) {
  const backbone::Tensor frame = backbone::load_npy(data_path("frame_rgb.npy"));
  ASSERT_EQ(frame.shape(), (backbone::Shape{48, 64, 3}));
  const std::string caps = caps_string("RGB", 64, 48);
  const GstVideoInfo info = info_of(caps);
  GstBuffer* in = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info), nullptr);
  GstMapInfo map;
  gst_buffer_map(in, &map, GST_MAP_WRITE);
  for (int y = 0; y < 48; ++y)
    std::memcpy(map.data + y * GST_VIDEO_INFO_PLANE_STRIDE(&info, 0), frame.data_ptr<uint8_t>() + y * 64 * 3, 64 * 3);
  gst_buffer_unmap(in, &map);

  Harness hh(narrow_props());
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
  ASSERT_NE(out, nullptr);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr);
  ASSERT_EQ(meta->num_levels, 4u);
  for (int k = 0; k < 4; ++k) {
    SCOPED_TRACE(kFeatures[k]);
    const backbone::Tensor want = backbone::load_npy(data_path(std::string("d2_") + kFeatures[k] + ".npy"));
    const GstFeatureLevel* level = gst_feature_meta_get_level(meta, kFeatures[k]);
    ASSERT_NE(level, nullptr);
    for (int d = 0; d < 4; ++d) EXPECT_EQ(level->dims[d], gsize(want.size(d)));
    const std::vector<float> got = level_values(level);
    ASSERT_EQ(got.size(), size_t(want.numel()));
    EXPECT_LE(rel_error(got, want.data_ptr<float>(), got.size()), 1e-4);
  }
  gst_buffer_unref(out);
}

// Properties that override the config reach preprocessing: input-format, pixel-mean/std, resize
// shortest-edge with min/max size, size-divisibility (geometry fields and values vs the library).
TEST(ResnetBackbone, PreprocessingProperties) {
  Reference ref;
  ref.options.input_format = "RGB";
  ref.options.pixel_mean = {120.0, 110.0, 100.0};
  ref.options.pixel_std = {60.0, 50.0, 40.0};
  ref.options.resize = backbone::ResizeMode::ShortestEdge;
  ref.options.min_size = 32;
  ref.options.max_size = 100;
  ref.options.size_divisibility = 32;
  Harness hh(narrow_props({{"input-format", "RGB"},
                           {"pixel-mean", "<120.0, 110.0, 100.0>"},
                           {"pixel-std", "<60.0, 50.0, 40.0>"},
                           {"resize", "shortest-edge"},
                           {"min-size", "32"},
                           {"max-size", "100"},
                           {"size-divisibility", "32"},
                           {"unique-id", "5"}}));
  const std::string caps = caps_string("BGRx", 64, 48);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* in = make_frame(info, 3);
  const auto want = ref.run(info, in);
  EXPECT_EQ(want.pre.resized_height, 32);
  EXPECT_EQ(want.pre.resized_width, 43);
  EXPECT_EQ(want.pre.tensor.size(3), 64);
  GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
  ASSERT_NE(out, nullptr);
  expect_meta_matches(gst_buffer_get_feature_meta(out), want, 64, 48, 5);
  gst_buffer_unref(out);

  // resize=fixed
  Reference fixed;
  fixed.options.resize = backbone::ResizeMode::Fixed;
  fixed.options.width = 40;
  fixed.options.height = 24;
  Harness hf(narrow_props({{"resize", "fixed"}, {"width", "40"}, {"height", "24"}}));
  gst_harness_set_src_caps_str(hf.h, caps.c_str());
  in = make_frame(info, 4);
  const auto want_fixed = fixed.run(info, in);
  out = gst_harness_push_and_pull(hf.h, in);
  ASSERT_NE(out, nullptr);
  expect_meta_matches(gst_buffer_get_feature_meta(out), want_fixed, 64, 48);
  gst_buffer_unref(out);
}

// Without config-file: detectron2's default R-50 with res2..res5; without weights: a warning.
TEST(ResnetBackbone, BuiltInDefaultModelWarnsWithoutWeights) {
  Harness hh({});
  gst_harness_set_src_caps_str(hh.h, caps_string("RGB", 32, 32).c_str());
  GstMessage* warning = pop_first(hh.bus, GST_MESSAGE_WARNING);
  ASSERT_NE(warning, nullptr);
  GError* err = nullptr;
  gst_message_parse_warning(warning, &err, nullptr);
  EXPECT_NE(std::string(err->message).find("not those of a trained model"), std::string::npos) << err->message;
  g_error_free(err);
  gst_message_unref(warning);
  gchar* name = nullptr;
  g_object_get(hh.element, "model-name", &name, nullptr);
  EXPECT_STREQ(name, "R-50");
  g_free(name);

  const GstVideoInfo info = info_of(caps_string("RGB", 32, 32));
  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info, 1));
  ASSERT_NE(out, nullptr);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr);
  ASSERT_EQ(meta->num_levels, 4u);
  const gsize channels[] = {256, 512, 1024, 2048};
  for (int k = 0; k < 4; ++k) {
    EXPECT_STREQ(g_quark_to_string(meta->levels[k].name), kFeatures[k]);
    EXPECT_EQ(meta->levels[k].dims[1], channels[k]);
    EXPECT_EQ(meta->levels[k].stride, kStrides[k]);
  }
  gst_buffer_unref(out);
}

// out-features overrides the config: only the requested levels, in that order.
TEST(ResnetBackbone, OutFeaturesProperty) {
  Harness hh(narrow_props({{"out-features", "stem, res3"}}));
  const std::string caps = caps_string("RGB", 64, 48);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info_of(caps), 2));
  ASSERT_NE(out, nullptr);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr);
  ASSERT_EQ(meta->num_levels, 2u);
  EXPECT_STREQ(g_quark_to_string(meta->levels[0].name), "stem");
  EXPECT_EQ(meta->levels[0].dims[1], 8u);
  EXPECT_EQ(meta->levels[0].stride, 4u);
  EXPECT_STREQ(g_quark_to_string(meta->levels[1].name), "res3");
  EXPECT_EQ(meta->levels[1].stride, 8u);
  gst_buffer_unref(out);
}

// Level data pointers of a meta (by level name order).
std::vector<const void*> pointers_of(const GstFeatureMeta* meta) {
  std::vector<const void*> p;
  for (guint i = 0; meta && i < meta->num_levels; ++i) p.push_back(level_pointer(&meta->levels[i]));
  return p;
}

GstPadProbeReturn record_pointers(GstPad*, GstPadProbeInfo* info, gpointer user_data) {
  auto* seen = static_cast<std::vector<std::vector<const void*>>*>(user_data);
  if (GstBuffer* buf = GST_PAD_PROBE_INFO_BUFFER(info)) seen->push_back(pointers_of(gst_buffer_get_feature_meta(buf)));
  return GST_PAD_PROBE_OK;
}

// The meta survives queue, tee, videoconvert and videoscale, and buffer copies, sharing the data.
TEST(ResnetBackbone, MetaSurvivesDownstreamElementsAndCopies) {
  const std::string launch = "resnetbackbone name=bb config-file=" + data_path("narrow.yaml") +
                             " weights=" + data_path("narrow.pth") +
                             " ! queue ! tee ! queue ! videoconvert ! capsfilter caps=video/x-raw,format=BGRx ! "
                             "videoscale ! capsfilter caps=video/x-raw,width=32,height=24";
  GstHarness* h = gst_harness_new_parse(launch.c_str());
  ASSERT_NE(h, nullptr);
  GstElement* bb = gst_bin_get_by_name(GST_BIN(h->element), "bb");
  ASSERT_NE(bb, nullptr);
  std::vector<std::vector<const void*>> seen;
  GstPad* src = gst_element_get_static_pad(bb, "src");
  gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_BUFFER, record_pointers, &seen, nullptr);
  gst_object_unref(src);
  const std::string caps = caps_string("RGB", 64, 48);
  gst_harness_set_src_caps_str(h, caps.c_str());
  GstBuffer* out = gst_harness_push_and_pull(h, make_frame(info_of(caps), 9));
  ASSERT_NE(out, nullptr);
  GstCaps* out_caps = gst_pad_get_current_caps(h->sinkpad);
  GstVideoInfo out_info;
  ASSERT_TRUE(gst_video_info_from_caps(&out_info, out_caps));
  gst_caps_unref(out_caps);
  EXPECT_EQ(GST_VIDEO_INFO_WIDTH(&out_info), 32);
  EXPECT_EQ(GST_VIDEO_INFO_FORMAT(&out_info), GST_VIDEO_FORMAT_BGRx);
  ASSERT_EQ(seen.size(), 1u);
  ASSERT_EQ(seen[0].size(), 4u);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr) << "the meta did not survive queue ! tee ! queue ! videoconvert ! videoscale";
  EXPECT_EQ(pointers_of(meta), seen[0]);

  GstBuffer* copy = gst_buffer_copy(out);
  EXPECT_EQ(pointers_of(gst_buffer_get_feature_meta(copy)), seen[0]);
  GstBuffer* deep = gst_buffer_copy_deep(out);
  EXPECT_EQ(pointers_of(gst_buffer_get_feature_meta(deep)), seen[0]);
  gst_buffer_unref(out);
  // The copies keep the data alive after the original is gone.
  EXPECT_EQ(pointers_of(gst_buffer_get_feature_meta(copy)), seen[0]);
  gst_buffer_unref(copy);
  gst_buffer_unref(deep);
  gst_object_unref(bb);
  gst_harness_teardown(h);
}

// With pool-size=2 (and a long pool-timeout), two held outputs hold the third push until one is
// released from another thread; the held data is never overwritten and the new output lives in
// other storage.
TEST(ResnetBackbone, HeldBuffersAreNeverOverwritten) {
  Harness hh(narrow_props({{"pool-size", "2"}, {"pool-timeout", "30000000000"}}));
  const std::string caps = caps_string("RGB", 64, 48);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* out1 = gst_harness_push_and_pull(hh.h, make_frame(info, 1, 0));
  GstBuffer* out2 = gst_harness_push_and_pull(hh.h, make_frame(info, 2, GST_SECOND));
  ASSERT_NE(out1, nullptr);
  ASSERT_NE(out2, nullptr);
  const GstFeatureMeta* m1 = gst_buffer_get_feature_meta(out1);
  const GstFeatureMeta* m2 = gst_buffer_get_feature_meta(out2);
  ASSERT_NE(m1, nullptr);
  ASSERT_NE(m2, nullptr);
  const std::vector<float> v2 = level_values(&m2->levels[0]);
  const std::vector<float> v2_last = level_values(&m2->levels[3]);
  const auto p2 = pointers_of(m2);

  std::atomic<bool> done{false};
  GstFlowReturn ret = GST_FLOW_ERROR;
  std::thread pusher([&] {
    ret = gst_harness_push(hh.h, make_frame(info, 3, 2 * GST_SECOND));
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(done) << "a third output was produced while pool-size=2 outputs were held";
  EXPECT_EQ(gst_harness_buffers_in_queue(hh.h), 0u);
  gst_buffer_unref(out1);  // frees one slot
  pusher.join();
  EXPECT_EQ(ret, GST_FLOW_OK);
  GstBuffer* out3 = gst_harness_pull(hh.h);
  ASSERT_NE(out3, nullptr);
  const GstFeatureMeta* m3 = gst_buffer_get_feature_meta(out3);
  ASSERT_NE(m3, nullptr);
  for (const void* p : pointers_of(m3))
    for (const void* q : p2) EXPECT_NE(p, q) << "new features written into held storage";
  EXPECT_EQ(level_values(&m2->levels[0]), v2);
  EXPECT_EQ(level_values(&m2->levels[3]), v2_last);
  gst_buffer_unref(out2);
  gst_buffer_unref(out3);
}

// A push waiting for a free slot returns FLUSHING on flush-start and on a state change to NULL.
TEST(ResnetBackbone, WaitingPushUnblocksOnFlushAndStop) {
  for (int mode = 0; mode < 2; ++mode) {
    SCOPED_TRACE(mode == 0 ? "flush-start" : "state NULL");
    Harness hh(narrow_props({{"pool-size", "1"}, {"pool-timeout", "30000000000"}}));
    const std::string caps = caps_string("GRAY8", 32, 24);
    const GstVideoInfo info = info_of(caps);
    gst_harness_set_src_caps_str(hh.h, caps.c_str());
    GstBuffer* held = gst_harness_push_and_pull(hh.h, make_frame(info, 1));
    ASSERT_NE(held, nullptr);
    std::atomic<bool> done{false};
    GstFlowReturn ret = GST_FLOW_OK;
    std::thread pusher([&] {
      ret = gst_harness_push(hh.h, make_frame(info, 2, GST_SECOND));
      done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_FALSE(done);
    if (mode == 0) {
      EXPECT_TRUE(gst_harness_push_event(hh.h, gst_event_new_flush_start()));
    } else {
      EXPECT_EQ(gst_element_set_state(hh.element, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
    }
    pusher.join();
    EXPECT_EQ(ret, GST_FLOW_FLUSHING);
    if (mode == 0) {
      EXPECT_TRUE(gst_harness_push_event(hh.h, gst_event_new_flush_stop(TRUE)));
    }
    gst_buffer_unref(held);
  }
}

// Caps change mid-stream: 64x48 RGB -> 48x32 NV12; the meta follows the new frames.
TEST(ResnetBackbone, Renegotiation) {
  static Reference ref;
  Harness hh(narrow_props());
  const std::string caps1 = caps_string("RGB", 64, 48), caps2 = caps_string("NV12", 48, 32);
  const GstVideoInfo info1 = info_of(caps1), info2 = info_of(caps2);
  gst_harness_set_src_caps_str(hh.h, caps1.c_str());
  GstBuffer* in = make_frame(info1, 1);
  auto want = ref.run(info1, in);
  GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
  expect_meta_matches(gst_buffer_get_feature_meta(out), want, 64, 48);
  EXPECT_EQ(gst_buffer_get_feature_meta(out)->levels[0].dims[3], 16u);
  gst_buffer_unref(out);

  gst_harness_set_src_caps_str(hh.h, caps2.c_str());
  in = make_frame(info2, 2, GST_SECOND);
  want = ref.run(info2, in);
  out = gst_harness_push_and_pull(hh.h, in);
  expect_meta_matches(gst_buffer_get_feature_meta(out), want, 48, 32);
  EXPECT_EQ(gst_buffer_get_feature_meta(out)->levels[0].dims[2], 8u);
  EXPECT_EQ(gst_buffer_get_feature_meta(out)->levels[0].dims[3], 12u);
  gst_buffer_unref(out);
}

// inference-interval=3: features on frames 0, 3, 6; every frame flows.
TEST(ResnetBackbone, InferenceInterval) {
  Harness hh(narrow_props({{"inference-interval", "3"}}));
  const std::string caps = caps_string("RGB", 32, 24);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  std::vector<int> with_meta;
  for (int i = 0; i < 8; ++i) {
    GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info_of(caps), i, i * GST_SECOND / 30));
    ASSERT_NE(out, nullptr);
    EXPECT_EQ(GST_BUFFER_PTS(out), GstClockTime(i * GST_SECOND / 30));
    if (gst_buffer_get_feature_meta(out)) with_meta.push_back(i);
    gst_buffer_unref(out);
  }
  EXPECT_EQ(with_meta, (std::vector<int>{0, 3, 6}));
}

// Two backbones in a row with different unique-ids: two metas, neither overwritten.
TEST(ResnetBackbone, TwoElementsWithDifferentUniqueIds) {
  const std::string launch = "resnetbackbone unique-id=1 config-file=" + data_path("narrow.yaml") + " weights=" +
                             data_path("narrow.pth") + " ! resnetbackbone unique-id=2 out-features=res3 config-file=" +
                             data_path("narrow.yaml") + " weights=" + data_path("narrow.pth");
  GstHarness* h = gst_harness_new_parse(launch.c_str());
  ASSERT_NE(h, nullptr);
  const std::string caps = caps_string("RGB", 32, 24);
  gst_harness_set_src_caps_str(h, caps.c_str());
  GstBuffer* out = gst_harness_push_and_pull(h, make_frame(info_of(caps), 5));
  ASSERT_NE(out, nullptr);
  const GstFeatureMeta* a = gst_buffer_get_feature_meta_by_id(out, 1);
  const GstFeatureMeta* b = gst_buffer_get_feature_meta_by_id(out, 2);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  EXPECT_EQ(a->num_levels, 4u);
  ASSERT_EQ(b->num_levels, 1u);
  EXPECT_STREQ(g_quark_to_string(b->levels[0].name), "res3");
  // Same weights and frame: the two res3 maps are equal, in different storage.
  const GstFeatureLevel* a3 = gst_feature_meta_get_level(a, "res3");
  ASSERT_NE(a3, nullptr);
  EXPECT_EQ(level_values(a3), level_values(&b->levels[0]));
  EXPECT_NE(level_pointer(a3), level_pointer(&b->levels[0]));
  gst_buffer_unref(out);
  gst_harness_teardown(h);
}

GstPadProbeReturn count_meta(GstPad*, GstPadProbeInfo* info, gpointer user_data) {
  if (GstBuffer* buf = GST_PAD_PROBE_INFO_BUFFER(info))
    if (gst_buffer_get_feature_meta(buf)) ++*static_cast<int*>(user_data);
  return GST_PAD_PROBE_OK;
}

// NULL -> PLAYING -> NULL five times in a real pipeline; each run delivers features and ends in EOS.
TEST(ResnetBackbone, StateCycles) {
  const std::string launch = "videotestsrc num-buffers=3 ! video/x-raw,width=32,height=24,format=I420 ! "
                             "resnetbackbone config-file=" + data_path("narrow.yaml") + " weights=" +
                             data_path("narrow.pth") + " ! fakesink name=sink";
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(launch.c_str(), &err);
  ASSERT_NE(pipeline, nullptr) << (err ? err->message : "");
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  int metas = 0;
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, count_meta, &metas, nullptr);
  GstBus* bus = gst_element_get_bus(pipeline);
  for (int cycle = 0; cycle < 5; ++cycle) {
    SCOPED_TRACE(cycle);
    metas = 0;
    ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
    GstMessage* msg = gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND,
                                                 GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    ASSERT_NE(msg, nullptr);
    EXPECT_EQ(GST_MESSAGE_TYPE(msg), GST_MESSAGE_EOS);
    gst_message_unref(msg);
    EXPECT_EQ(metas, 3);
    ASSERT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  }
  gst_object_unref(bus);
  gst_object_unref(pad);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

struct ErrorCase {
  const char* name;
  Props props;
  const char* expected;  // in the ERROR message text
  GstResourceError code;
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

class StartErrors : public ::testing::TestWithParam<ErrorCase> {};

// Every failure to load the model fails READY -> PAUSED with an ERROR naming the cause.
TEST_P(StartErrors, FailStateChangeWithError) {
  const ErrorCase& c = GetParam();
  if (std::string(c.name) == "DeviceCudaUnavailable" && backbone::cuda_is_available())
    GTEST_SKIP() << "this machine has a CUDA device: cuda:0 is available";
  GstElement* e = gst_element_factory_make("resnetbackbone", nullptr);
  ASSERT_NE(e, nullptr);
  for (const auto& [k, v] : c.props) gst_util_set_object_arg(G_OBJECT(e), k.c_str(), v.c_str());
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  EXPECT_EQ(gst_element_set_state(e, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
  EXPECT_EQ(gst_element_set_state(e, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  GstMessage* m = pop_first(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(m, nullptr) << "no ERROR message";
  GError* err = nullptr;
  gst_message_parse_error(m, &err, nullptr);
  EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, c.code)) << err->message;
  EXPECT_NE(std::string(err->message).find(c.expected), std::string::npos) << err->message;
  g_error_free(err);
  gst_message_unref(m);
  EXPECT_EQ(gst_element_set_state(e, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  gst_element_set_bus(e, nullptr);
  gst_object_unref(bus);
  gst_object_unref(e);
}

const ErrorCase kErrorCases[] = {
    {"MissingConfig", {{"config-file", "/nonexistent/narrow.yaml"}}, "does not exist", GST_RESOURCE_ERROR_NOT_FOUND},
    {"BadYaml", {{"config-file", data_path("bad_syntax.yaml")}}, "not valid YAML", GST_RESOURCE_ERROR_SETTINGS},
    {"UnknownKey",
     {{"config-file", data_path("unknown_key.yaml")}},
     "Non-existent config key: MODEL.RESNETS.DEPTHH",
     GST_RESOURCE_ERROR_SETTINGS},
    {"MissingWeights",
     {{"config-file", data_path("narrow.yaml")}, {"weights", "/nonexistent/w.pth"}},
     "\"/nonexistent/w.pth\" does not exist",
     GST_RESOURCE_ERROR_NOT_FOUND},
    {"CorruptWeights",
     {{"config-file", data_path("narrow.yaml")}, {"weights", data_path("corrupt.pth")}},
     "truncated",
     GST_RESOURCE_ERROR_READ},
    {"WeightsOfAnotherModel",
     {{"weights", data_path("narrow.pth")}},
     "shape mismatch for stem.conv1.weight",
     GST_RESOURCE_ERROR_READ},
    {"UnknownOutFeature", narrow_props({{"out-features", "res2,res7"}}), "unknown out feature \"res7\"",
     GST_RESOURCE_ERROR_SETTINGS},
    {"DeviceCudaUnavailable", narrow_props({{"device", "cuda:0"}}), "cuda:0", GST_RESOURCE_ERROR_FAILED},
    // No CPU engine runs fp16: engine=auto finds none and says why for each one it tried.
    {"UnsupportedPrecision", narrow_props({{"precision", "fp16"}}), "engine \"auto\", precision fp16, on cpu",
     GST_RESOURCE_ERROR_FAILED},
    {"FixedResizeWithoutSize", narrow_props({{"resize", "fixed"}}), "resize=fixed needs width and height",
     GST_RESOURCE_ERROR_SETTINGS},
    {"PixelMeanOfTwoValues", narrow_props({{"pixel-mean", "<1.0, 2.0>"}}), "need 3 values each",
     GST_RESOURCE_ERROR_SETTINGS},
    {"ZeroPixelStd", narrow_props({{"pixel-std", "<1.0, 0.0, 1.0>"}}), "non-zero", GST_RESOURCE_ERROR_SETTINGS},
};

INSTANTIATE_TEST_SUITE_P(ResnetBackbone, StartErrors, ::testing::ValuesIn(kErrorCases),
                         [](const auto& info) { return std::string(info.param.name); });

// A frame the library refuses (16777216 pixels wide) during streaming, with max-errors=0: an ERROR
// message and GST_FLOW_ERROR, no crash; the element keeps working after a caps change.
TEST(ResnetBackbone, InferenceFailurePostsErrorAndReturnsFlowError) {
  Harness hh(narrow_props({{"max-errors", "0"}}));
  const std::string caps = caps_string("GRAY8", 1 << 24, 1);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  EXPECT_EQ(gst_harness_push(hh.h, make_frame(info_of(caps), 1)), GST_FLOW_ERROR);
  const std::string text = hh.error_text();
  EXPECT_NE(text.find("Inference failed"), std::string::npos) << text;
  EXPECT_NE(text.find("too large"), std::string::npos) << text;
  const std::string small = caps_string("GRAY8", 32, 24);
  gst_harness_set_src_caps_str(hh.h, small.c_str());
  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info_of(small), 2, GST_SECOND));
  ASSERT_NE(out, nullptr);
  EXPECT_NE(gst_buffer_get_feature_meta(out), nullptr);
  gst_buffer_unref(out);
}

// QoS from downstream: frames already late skip inference and still flow.
TEST(ResnetBackbone, QosSkipsLateFrames) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("RGB", 32, 24);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info, 0, 0));
  EXPECT_NE(gst_buffer_get_feature_meta(out), nullptr);
  gst_buffer_unref(out);
  // Downstream is 100 ms late at 1 s: earliest time 1 s + 2 * 100 ms.
  EXPECT_TRUE(gst_harness_push_upstream_event(
      hh.h, gst_event_new_qos(GST_QOS_TYPE_UNDERFLOW, 0.8, 100 * GST_MSECOND, GST_SECOND)));
  const GstClockTime pts[] = {GST_SECOND + 100 * GST_MSECOND, GST_SECOND + 200 * GST_MSECOND,
                              GST_SECOND + 300 * GST_MSECOND};
  const bool expect_meta[] = {false, false, true};
  for (int i = 0; i < 3; ++i) {
    out = gst_harness_push_and_pull(hh.h, make_frame(info, i + 1, pts[i]));
    ASSERT_NE(out, nullptr);
    EXPECT_EQ(GST_BUFFER_PTS(out), pts[i]);
    EXPECT_EQ(gst_buffer_get_feature_meta(out) != nullptr, expect_meta[i]) << "frame at " << pts[i];
    gst_buffer_unref(out);
  }
  // A flush forgets the QoS state.
  EXPECT_TRUE(gst_harness_push_event(hh.h, gst_event_new_flush_start()));
  EXPECT_TRUE(gst_harness_push_event(hh.h, gst_event_new_flush_stop(FALSE)));
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  EXPECT_TRUE(gst_harness_push_event(hh.h, gst_event_new_segment(&segment)));
  out = gst_harness_push_and_pull(hh.h, make_frame(info, 9, GST_SECOND));
  ASSERT_NE(out, nullptr);
  EXPECT_NE(gst_buffer_get_feature_meta(out), nullptr);
  gst_buffer_unref(out);
}

// The LATENCY query adds the inference time to upstream's latency from the first query: the
// warm-up at caps measures it before any frame, and the answer is stable across frames (it only
// grows, with a LATENCY message, when inferences take much longer).
TEST(ResnetBackbone, LatencyQueryAddsInferenceTime) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("RGB", 64, 48);
  gst_harness_set_upstream_latency(hh.h, 10 * GST_MSECOND);
  const gint64 t0 = g_get_monotonic_time();
  gst_harness_set_src_caps_str(hh.h, caps.c_str());  // the warm-up runs here
  const GstClockTime wall = GstClockTime(g_get_monotonic_time() - t0) * GST_USECOND;
  const GstClockTime before = gst_harness_query_latency(hh.h);
  EXPECT_GT(before, 10 * GST_MSECOND);  // measured before the first frame
  EXPECT_LE(before, 10 * GST_MSECOND + wall);
  bool grew = false;
  for (int i = 0; i < 5; ++i) {
    GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info_of(caps), i, i * GST_SECOND / 30));
    ASSERT_NE(out, nullptr);
    EXPECT_NE(gst_buffer_get_feature_meta(out), nullptr);
    gst_buffer_unref(out);
  }
  while (GstMessage* m = pop_first(hh.bus, GST_MESSAGE_LATENCY)) {
    grew = true;
    gst_message_unref(m);
  }
  const GstClockTime after = gst_harness_query_latency(hh.h);
  // Unchanged unless the element said it grew.
  if (!grew) {
    EXPECT_EQ(after, before);
  }
  EXPECT_GE(after, before);

  // The latency property fixes it.
  g_object_set(hh.element, "latency", guint64(25 * GST_MSECOND), nullptr);
  EXPECT_EQ(gst_harness_query_latency(hh.h), 35 * GST_MSECOND);
}

// A LATENCY query before any caps event measures on the caps upstream will send when they are
// fixed (a live source that has not pushed yet).
TEST(ResnetBackbone, LatencyQueryBeforeCapsUsesUpstreamCaps) {
  Harness hh(narrow_props());
  // Upstream answers CAPS with fixed caps and LATENCY with 10 ms, and has pushed no caps event.
  gst_pad_set_query_function(hh.h->srcpad, [](GstPad*, GstObject*, GstQuery* q) -> gboolean {
    if (GST_QUERY_TYPE(q) == GST_QUERY_CAPS) {
      GstCaps* c = gst_caps_from_string(caps_string("RGB", 64, 48).c_str());
      gst_query_set_caps_result(q, c);
      gst_caps_unref(c);
      return TRUE;
    }
    if (GST_QUERY_TYPE(q) == GST_QUERY_LATENCY) {
      gst_query_set_latency(q, TRUE, 10 * GST_MSECOND, GST_CLOCK_TIME_NONE);
      return TRUE;
    }
    return FALSE;
  });
  GstQuery* q = gst_query_new_latency();
  GstPad* src = gst_element_get_static_pad(hh.element, "src");
  ASSERT_TRUE(gst_pad_query(src, q));
  gboolean live = FALSE;
  GstClockTime min = 0, max = 0;
  gst_query_parse_latency(q, &live, &min, &max);
  EXPECT_TRUE(live);
  EXPECT_GT(min, 10 * GST_MSECOND);
  gst_query_unref(q);
  gst_object_unref(src);
}

// gst-inspect-1.0 shows every property with its documentation.
TEST(ResnetBackbone, GstInspectShowsEveryProperty) {
  gchar* out = nullptr;
  gchar* errout = nullptr;
  gint status = 0;
  GError* err = nullptr;
  const gchar* argv[] = {"gst-inspect-1.0", "resnetbackbone", nullptr};
  ASSERT_TRUE(g_spawn_sync(nullptr, const_cast<gchar**>(argv), nullptr, G_SPAWN_SEARCH_PATH, nullptr, nullptr, &out,
                           &errout, &status, &err))
      << (err ? err->message : "");
  EXPECT_TRUE(g_spawn_check_wait_status(status, nullptr)) << errout;
  const std::string text = out;
  g_free(out);
  g_free(errout);
  for (const char* p : {"config-file", "weights", "out-features", "engine", "device", "precision", "num-threads",
                        "conv-algorithm", "winograd", "allow-tf32", "input-format", "pixel-mean", "pixel-std", "resize", "min-size", "max-size", "width",
                        "height", "size-divisibility", "inference-interval", "pool-size", "unique-id", "model-name",
                        "engine-description", "feature-memory-limit", "pool-timeout", "qos", "max-errors",
                        "latency", "stats", "tensor-meta", "model-instance-id", "batch-size", "batch-timeout"})
    EXPECT_TRUE(text.find(std::string("  ") + p + " ") != std::string::npos ||
                text.find(std::string("  ") + p + ":") != std::string::npos)
        << p << " missing in:\n" << text;
  for (const char* s : {"\"GstResnetBackbonePrecision\"", "\"GstResnetBackboneConvAlgorithm\"", "(3): auto",
                        "(2): winograd", "(1): shortest-edge", "Range: 0 - 1048576 Default: 0",
                        "Range: 1 - 2147483647 Default: 1", "String. Default: \"auto\"",
                        "auto (the first of this build's engines", "; onednn (", "; libtorch (", "; opencv (",
                        "; cuda (", "Default: 536870912", "Range: -1 - 2147483647 Default: 10",
                        "Skip inference on frames already late"})
    EXPECT_NE(text.find(s), std::string::npos) << s << " missing in:\n" << text;
}

}  // namespace

namespace {

// A buffer that is not writable (someone else holds it) is not modified: the element adds its meta
// to a shallow copy that shares the video memory.
TEST(ResnetBackbone, NonWritableInputGetsMetaOnCopy) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("RGB", 32, 24);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* in = make_frame(info_of(caps), 4);
  gst_buffer_ref(in);  // ours: the buffer is shared, so not writable
  GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
  ASSERT_NE(out, nullptr);
  EXPECT_NE(out, in);
  EXPECT_EQ(gst_buffer_get_feature_meta(in), nullptr) << "the shared input buffer was modified";
  EXPECT_NE(gst_buffer_get_feature_meta(out), nullptr);
  EXPECT_EQ(gst_buffer_peek_memory(out, 0), gst_buffer_peek_memory(in, 0)) << "pixels were copied";
  gst_buffer_unref(out);
  gst_buffer_unref(in);
}

// A GAP buffer flows without inference; the next frame gets features.
TEST(ResnetBackbone, GapBufferFlowsWithoutFeatures) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("RGB", 32, 24);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* gap = make_frame(info_of(caps), 1, 0);
  GST_BUFFER_FLAG_SET(gap, GST_BUFFER_FLAG_GAP);
  GstBuffer* out = gst_harness_push_and_pull(hh.h, gap);
  ASSERT_NE(out, nullptr);
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(out, GST_BUFFER_FLAG_GAP));
  EXPECT_EQ(gst_buffer_get_feature_meta(out), nullptr);
  gst_buffer_unref(out);
  out = gst_harness_push_and_pull(hh.h, make_frame(info_of(caps), 2, GST_SECOND / 30));
  ASSERT_NE(out, nullptr);
  EXPECT_NE(gst_buffer_get_feature_meta(out), nullptr);
  gst_buffer_unref(out);
}

// Defaults as documented, and values read back as set (pixel-mean as a GstValueArray of doubles).
TEST(ResnetBackbone, PropertyDefaultsAndRoundTrip) {
  GstElement* e = gst_element_factory_make("resnetbackbone", nullptr);
  ASSERT_NE(e, nullptr);
  gchar *engine = nullptr, *device = nullptr, *out_features = nullptr, *config = nullptr, *model = nullptr;
  guint pool = 0, interval = 0, uid = 7, min_size = 9, div = 9, threads = 9;
  gint resize = -1, precision = -1, input_format = -1;
  g_object_get(e, "engine", &engine, "device", &device, "out-features", &out_features, "config-file", &config,
               "model-name", &model, "pool-size", &pool, "inference-interval", &interval, "unique-id", &uid,
               "min-size", &min_size, "size-divisibility", &div, "num-threads", &threads, "resize", &resize,
               "precision", &precision, "input-format", &input_format, nullptr);
  EXPECT_STREQ(engine, "auto");
  EXPECT_STREQ(device, "auto");
  EXPECT_STREQ(out_features, "");
  EXPECT_EQ(config, nullptr);
  EXPECT_STREQ(model, "");
  EXPECT_EQ(pool, 0u);
  EXPECT_EQ(interval, 1u);
  EXPECT_EQ(uid, 0u);
  EXPECT_EQ(min_size, 0u);
  EXPECT_EQ(div, 0u);
  EXPECT_EQ(threads, 0u);
  EXPECT_EQ(resize, 0);
  EXPECT_EQ(precision, 0);
  EXPECT_EQ(input_format, 0);
  g_free(engine);
  g_free(device);
  g_free(out_features);
  g_free(config);
  g_free(model);
  gchar* description = nullptr;
  g_object_get(e, "engine-description", &description, nullptr);
  EXPECT_STREQ(description, "");  // nothing loaded yet
  g_free(description);

  gst_util_set_object_arg(G_OBJECT(e), "pixel-mean", "<1.5, 2, 3.25>");
  gst_util_set_object_arg(G_OBJECT(e), "resize", "shortest-edge");
  GValue v = G_VALUE_INIT;
  g_value_init(&v, GST_TYPE_ARRAY);
  g_object_get_property(G_OBJECT(e), "pixel-mean", &v);
  ASSERT_EQ(gst_value_array_get_size(&v), 3u);
  const double want[] = {1.5, 2.0, 3.25};
  for (guint i = 0; i < 3; ++i) {
    const GValue* x = gst_value_array_get_value(&v, i);
    ASSERT_TRUE(G_VALUE_HOLDS_DOUBLE(x));
    EXPECT_DOUBLE_EQ(g_value_get_double(x), want[i]);
  }
  g_value_unset(&v);
  g_object_get(e, "resize", &resize, nullptr);
  EXPECT_EQ(resize, 1);
  gst_object_unref(e);
}

// conv-algorithm defaults to auto; the deprecated winograd property is its alias (TRUE: winograd,
// FALSE: direct; reads TRUE only for winograd). precision takes auto.
TEST(ResnetBackbone, ConvAlgorithmAndItsWinogradAlias) {
  GstElement* e = gst_element_factory_make("resnetbackbone", nullptr);
  ASSERT_NE(e, nullptr);
  GParamSpec* w = g_object_class_find_property(G_OBJECT_GET_CLASS(e), "winograd");
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->flags & G_PARAM_DEPRECATED);
  auto conv_algorithm = [e]() {
    gint v = -1;
    g_object_get(e, "conv-algorithm", &v, nullptr);
    return v;
  };
  auto winograd = [e]() {
    gboolean v = 2;
    g_object_get(e, "winograd", &v, nullptr);
    return v;
  };
  EXPECT_EQ(conv_algorithm(), 0);  // auto
  EXPECT_FALSE(winograd());
  g_object_set(e, "winograd", TRUE, nullptr);
  EXPECT_EQ(conv_algorithm(), 2);  // winograd
  EXPECT_TRUE(winograd());
  g_object_set(e, "winograd", FALSE, nullptr);
  EXPECT_EQ(conv_algorithm(), 1);  // direct
  EXPECT_FALSE(winograd());
  gst_util_set_object_arg(G_OBJECT(e), "conv-algorithm", "winograd");
  EXPECT_TRUE(winograd());
  gst_util_set_object_arg(G_OBJECT(e), "conv-algorithm", "auto");
  EXPECT_EQ(conv_algorithm(), 0);
  EXPECT_FALSE(winograd());
  gst_util_set_object_arg(G_OBJECT(e), "precision", "auto");
  gint precision = -1;
  g_object_get(e, "precision", &precision, nullptr);
  EXPECT_EQ(precision, 3);
  gst_object_unref(e);
}

}  // namespace

namespace {

std::string string_property(GstElement* e, const char* name) {
  gchar* v = nullptr;
  g_object_get(e, name, &v, nullptr);
  std::string s = v ? v : "";
  g_free(v);
  return s;
}

bool has_engine(const std::string& name) {
  const auto engines = backbone::available_engines();
  return std::find(engines.begin(), engines.end(), name) != engines.end();
}

// The resnetbackbone category's INFO lines while alive, as GST_DEBUG=resnetbackbone:4 shows them.
class InfoLog {
 public:
  InfoLog() {
    gst_debug_set_threshold_for_name("resnetbackbone", GST_LEVEL_INFO);
    gst_debug_add_log_function(&InfoLog::log, this, nullptr);
  }
  ~InfoLog() {
    gst_debug_remove_log_function_by_data(this);
    gst_debug_unset_threshold_for_name("resnetbackbone");
  }
  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> guard(mutex_);
    return lines_;
  }

 private:
  static void log(GstDebugCategory* category, GstDebugLevel level, const gchar*, const gchar*, gint, GObject*,
                  GstDebugMessage* message, gpointer data) {
    if (level != GST_LEVEL_INFO || std::string(gst_debug_category_get_name(category)) != "resnetbackbone") return;
    auto* self = static_cast<InfoLog*>(data);
    std::lock_guard<std::mutex> guard(self->mutex_);
    self->lines_.emplace_back(gst_debug_message_get(message));
  }
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

// engine=auto (the default) picks one of this build's engines and says which, with its precision
// and thread count: in the engine-description property (kept after the element stops), in one
// INFO message on the bus and in the debug log.
TEST(ResnetBackbone, AutoEngineDescribesItself) {
  InfoLog log;
  Harness hh(narrow_props({{"num-threads", "1"}}));
  // Started: the engine as it describes itself before any frame.
  const std::string description = string_property(hh.element, "engine-description");
  const std::string caps = caps_string("RGB", 32, 24);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  EXPECT_EQ(string_property(hh.element, "engine"), "auto");
  ASSERT_FALSE(description.empty());
  // It names the engine auto took (the first word), the precision and the thread count.
  const std::string engine = description.substr(0, description.find(' '));
  EXPECT_TRUE(has_engine(engine)) << description;
  EXPECT_NE(description.find("fp32"), std::string::npos) << description;
  EXPECT_NE(description.find("1 thread"), std::string::npos) << description;

  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info_of(caps), 1));
  ASSERT_NE(out, nullptr);
  EXPECT_NE(gst_buffer_get_feature_meta(out), nullptr);
  gst_buffer_unref(out);
  // After the first frame (the warm-up at caps is the first of its size): the same engine,
  // precision and threads (plus, for engines that choose kernels per shape, the kernels).
  const std::string after = string_property(hh.element, "engine-description");
  EXPECT_EQ(after.rfind(engine + " fp32", 0), 0u) << after;
  EXPECT_NE(after.find("1 thread"), std::string::npos) << after;

  // One INFO message, whose debug text names the choice.
  int infos = 0;
  while (GstMessage* m = pop_first(hh.bus, GST_MESSAGE_INFO)) {
    GError* err = nullptr;
    gchar* debug = nullptr;
    gst_message_parse_info(m, &err, &debug);
    EXPECT_EQ(std::string(err->message), description);
    EXPECT_NE(std::string(debug).find("R-50 runs on engine " + engine + " (engine=auto): " + description),
              std::string::npos)
        << debug;
    g_error_free(err);
    g_free(debug);
    gst_message_unref(m);
    ++infos;
  }
  EXPECT_EQ(infos, 1);

  // The debug log's lines: at start, and after the first frame when the description changed.
  const auto lines = log.lines();
  const std::string want = "engine (engine=auto precision=fp32 num-threads=1 conv-algorithm=auto): " + description;
  EXPECT_EQ(std::count(lines.begin(), lines.end(), want), 1) << "no INFO line \"" << want << "\"";
  const std::string want_after = "engine after the first frame of 32x24: " + after;
  EXPECT_EQ(std::count(lines.begin(), lines.end(), want_after), after == description ? 0 : 1)
      << "INFO line \"" << want_after << "\"";

  // Still readable after the element stops: it describes the last run.
  gst_harness_teardown(hh.h);
  hh.h = nullptr;
  EXPECT_EQ(string_property(hh.element, "engine-description"), after);
}

// conv-algorithm reaches the engine: forced Winograd (also by the deprecated winograd=true) is in
// the oneDNN engine's description, direct (also winograd=false) is not.
TEST(ResnetBackbone, ConvAlgorithmReachesTheEngine) {
  const auto engines = backbone::available_engines();
  if (std::find(engines.begin(), engines.end(), "onednn") == engines.end()) GTEST_SKIP() << "oneDNN engine not built";
  const std::vector<std::pair<Props, bool>> cases = {{{{"conv-algorithm", "direct"}}, false},
                                                     {{{"conv-algorithm", "winograd"}}, true},
                                                     {{{"winograd", "false"}}, false},
                                                     {{{"winograd", "true"}}, true}};
  for (const auto& [extra, winograd] : cases) {
    Props props = narrow_props({{"engine", "onednn"}});
    props.insert(props.end(), extra.begin(), extra.end());
    Harness hh(props);
    const std::string caps = caps_string("RGB", 32, 24);
    gst_harness_set_src_caps_str(hh.h, caps.c_str());
    const std::string d = string_property(hh.element, "engine-description");
    EXPECT_EQ(d.find("Winograd 3x3") != std::string::npos, winograd) << extra[0].first << "=" << extra[0].second << ": " << d;
    EXPECT_EQ(hh.error_text(), "");
  }
}

// A named engine is the one that runs, and its description follows num-threads. After the first
// frame it is what the library's engine says after the same frame (engines that choose kernels per
// input shape name them then), and the buffer leaves the element with it already updated.
TEST(ResnetBackbone, NamedEngineRunsAndDescribesItself) {
  for (const std::string& engine : backbone::available_engines()) {
    if (engine == "cuda") continue;  // ResnetBackboneGpu.*
    SCOPED_TRACE(engine);
    backbone::EngineOptions options;
    options.engine = engine;
    options.num_threads = 2;
    Reference ref(options);
    Harness hh(narrow_props({{"engine", engine}, {"num-threads", "2"}}));
    const std::string caps = caps_string("RGB", 32, 24);
    gst_harness_set_src_caps_str(hh.h, caps.c_str());
    // The warm-up at caps ran the first frame of this size: the kernels are named already.
    const std::string at_caps = string_property(hh.element, "engine-description");
    std::string when_pushed;
    GstPad* src = gst_element_get_static_pad(hh.element, "src");
    const gulong probe = gst_pad_add_probe(
        src, GST_PAD_PROBE_TYPE_BUFFER,
        [](GstPad* pad, GstPadProbeInfo*, gpointer data) {
          GstElement* e = GST_ELEMENT(gst_pad_get_parent(pad));
          *static_cast<std::string*>(data) = string_property(e, "engine-description");
          gst_object_unref(e);
          return GST_PAD_PROBE_OK;
        },
        &when_pushed, nullptr);
    GstBuffer* in = make_frame(info_of(caps), 1);
    const auto want = ref.run(info_of(caps), in);
    GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
    gst_pad_remove_probe(src, probe);
    gst_object_unref(src);
    ASSERT_NE(out, nullptr);
    expect_meta_matches(gst_buffer_get_feature_meta(out), want, 32, 24);
    gst_buffer_unref(out);
    const std::string description = string_property(hh.element, "engine-description");
    EXPECT_EQ(description, ref.engine->describe());
    EXPECT_EQ(when_pushed, description);
    EXPECT_EQ(at_caps, description);
    EXPECT_EQ(description.rfind(engine + " ", 0), 0u) << description;
    EXPECT_NE(description.find("2 threads"), std::string::npos) << description;
    EXPECT_EQ(hh.error_text(), "");
  }
}

// A start that fails leaves no description of an engine that is not running.
TEST(ResnetBackbone, FailedStartClearsTheDescription) {
  Harness hh(narrow_props());
  const std::string caps = caps_string("RGB", 32, 24);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  ASSERT_FALSE(string_property(hh.element, "engine-description").empty());
  gst_harness_teardown(hh.h);
  hh.h = nullptr;
  gst_util_set_object_arg(G_OBJECT(hh.element), "precision", "fp16");
  EXPECT_EQ(gst_element_set_state(hh.element, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  EXPECT_EQ(string_property(hh.element, "engine-description"), "");
  EXPECT_NE(hh.error_text().find("precision fp16"), std::string::npos);
  EXPECT_EQ(gst_element_set_state(hh.element, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
}

// The error of a start that fails, and its GError code ("" when it started).
std::pair<std::string, GError*> start_error(const Props& props) {
  GstElement* e = gst_element_factory_make("resnetbackbone", nullptr);
  for (const auto& [k, v] : props) gst_util_set_object_arg(G_OBJECT(e), k.c_str(), v.c_str());
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  std::pair<std::string, GError*> result{"", nullptr};
  if (gst_element_set_state(e, GST_STATE_PAUSED) == GST_STATE_CHANGE_FAILURE) {
    if (GstMessage* m = pop_first(bus, GST_MESSAGE_ERROR)) {
      gst_message_parse_error(m, &result.second, nullptr);
      result.first = result.second->message;
      gst_message_unref(m);
    } else {
      result.first = "(failed without an ERROR message)";
    }
  }
  gst_element_set_state(e, GST_STATE_NULL);
  gst_bus_set_flushing(bus, TRUE);
  gst_element_set_bus(e, nullptr);
  gst_object_unref(bus);
  gst_object_unref(e);
  return result;
}

// precision=bf16 on the LibTorch engine (fp32 only) fails the start with a SETTINGS error naming
// both, whatever other engines the build has.
TEST(ResnetBackbone, PrecisionTheEngineDoesNotRunFailsTheStart) {
  if (!has_engine("libtorch")) GTEST_SKIP() << "this build has no LibTorch engine";
  auto [text, err] = start_error(narrow_props({{"engine", "libtorch"}, {"precision", "bf16"}}));
  ASSERT_NE(err, nullptr) << "the element started";
  EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS)) << text;
  EXPECT_NE(text.find("engine \"libtorch\", precision bf16, on cpu: "), std::string::npos) << text;
  g_error_free(err);
}

// An engine the project has but this build lacks: the error lists what the build has.
TEST(ResnetBackbone, EngineNotInThisBuildListsTheBuiltOnes) {
  std::string missing;
  for (const char* name : {"onednn", "libtorch", "opencv"})
    if (!has_engine(name)) missing = name;
  if (missing.empty()) GTEST_SKIP() << "this build has every engine (onednn, libtorch, opencv)";
  auto [text, err] = start_error(narrow_props({{"engine", missing}}));
  ASSERT_NE(err, nullptr) << "the element started";
  EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS)) << text;
  std::string list;
  for (const auto& e : backbone::available_engines()) list += (list.empty() ? "" : ", ") + e;
  EXPECT_NE(text.find("engine \"" + missing + "\" is not built into this copy of the backbone library: expected "
                      "auto or one of this build's engines (" + list + ")"),
            std::string::npos)
      << text;
  g_error_free(err);
}

// Features of one frame at a precision, on an engine.
std::vector<std::vector<float>> element_levels(const Props& props, const std::string& caps, uint32_t seed,
                                               std::string* description) {
  Harness hh(props);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info_of(caps), seed));
  std::vector<std::vector<float>> levels;
  const GstFeatureMeta* meta = out ? gst_buffer_get_feature_meta(out) : nullptr;
  EXPECT_NE(meta, nullptr) << hh.error_text();
  for (guint i = 0; meta && i < meta->num_levels; ++i) {
    EXPECT_EQ(meta->levels[i].dtype, GST_FEATURE_DTYPE_FLOAT32);
    levels.push_back(level_values(&meta->levels[i]));
  }
  if (out) gst_buffer_unref(out);
  *description = string_property(hh.element, "engine-description");
  return levels;
}

// bf16 on the oneDNN engine: float32 features within 2e-2 * max |fp32| of its fp32 ones per level,
// and not the fp32 ones (the precision reached the engine).
TEST(ResnetBackbone, Bf16OnOneDnnIsCloseToFp32) {
  if (!has_engine("onednn"))
    GTEST_SKIP() << "the oneDNN engine is not built (BACKBONE_WITH_ONEDNN=OFF or no libdnnl-dev); bf16 runs only "
                    "there";
  const std::string caps = caps_string("RGB", 64, 48);
  std::string d32, d16;
  const auto fp32 = element_levels(narrow_props({{"engine", "onednn"}, {"precision", "fp32"}}), caps, 11, &d32);
  const auto bf16 = element_levels(narrow_props({{"engine", "onednn"}, {"precision", "bf16"}}), caps, 11, &d16);
  EXPECT_NE(d32.find("fp32"), std::string::npos) << d32;
  EXPECT_NE(d16.find("bf16"), std::string::npos) << d16;
  ASSERT_EQ(fp32.size(), 4u);
  ASSERT_EQ(bf16.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    SCOPED_TRACE(kFeatures[k]);
    ASSERT_EQ(bf16[k].size(), fp32[k].size());
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < fp32[k].size(); ++i) {
      diff = std::max(diff, std::fabs(double(bf16[k][i]) - double(fp32[k][i])));
      scale = std::max(scale, std::fabs(double(fp32[k][i])));
    }
    EXPECT_GT(scale, 0.0);
    EXPECT_LE(diff, 2e-2 * scale);
    EXPECT_GT(diff, 0.0) << "bf16 gave exactly the fp32 features";
    std::printf("[ INFO     ] %s: max |bf16 - fp32| = %.3g = %.3g * max |fp32|\n", kFeatures[k], diff,
                scale > 0 ? diff / scale : 0.0);
  }
}

// precision=auto reaches the engine and stays within bf16's bound of fp32 (2e-2 * max |fp32| per
// level), whichever precision the oneDNN engine measures faster on this machine.
TEST(ResnetBackbone, PrecisionAutoOnOneDnnIsWithinTheBf16Bound) {
  if (!has_engine("onednn")) GTEST_SKIP() << "the oneDNN engine is not built (BACKBONE_WITH_ONEDNN=OFF or no libdnnl-dev)";
  const std::string caps = caps_string("RGB", 64, 48);
  std::string d32, dauto;
  const auto fp32 = element_levels(narrow_props({{"engine", "onednn"}, {"precision", "fp32"}}), caps, 11, &d32);
  const auto autop = element_levels(narrow_props({{"engine", "onednn"}, {"precision", "auto"}}), caps, 11, &dauto);
  ASSERT_EQ(fp32.size(), 4u);
  ASSERT_EQ(autop.size(), 4u) << dauto;
  for (size_t k = 0; k < 4; ++k) {
    SCOPED_TRACE(kFeatures[k]);
    ASSERT_EQ(autop[k].size(), fp32[k].size());
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < fp32[k].size(); ++i) {
      diff = std::max(diff, std::fabs(double(autop[k][i]) - double(fp32[k][i])));
      scale = std::max(scale, std::fabs(double(fp32[k][i])));
    }
    EXPECT_GT(scale, 0.0);
    EXPECT_LE(diff, 2e-2 * scale) << dauto;
  }
}

// ---- Frames in CUDA memory and levels left on the GPU (engine=cuda) ----

#ifndef BACKBONE_HAVE_GST_CUDA
#error "BACKBONE_HAVE_GST_CUDA (0 or 1) comes from plugin/CMakeLists.txt: how the plugin was built"
#endif

const char* const kCudaFormats[] = {"NV12", "I420", "RGBA", "BGRA", "RGBx", "BGRx"};

// Structures of @caps in CUDA memory.
int cuda_structures(const GstCaps* caps) {
  int n = 0;
  for (guint i = 0; i < gst_caps_get_size(caps); ++i) {
    GstCapsFeatures* f = gst_caps_get_features(caps, i);
    n += f && !gst_caps_features_is_any(f) && gst_caps_features_contains(f, "memory:CUDAMemory");
  }
  return n;
}

std::string cuda_caps_string(const char* format, int w, int h) {
  return "video/x-raw(memory:CUDAMemory),format=" + std::string(format) + ",width=" + std::to_string(w) +
         ",height=" + std::to_string(h) + ",framerate=30/1";
}

// Both pad templates list video/x-raw(memory:CUDAMemory) in exactly the cuda engine's formats
// (first, so that CUDA upstreams prefer it) when the plugin is built with GStreamer's CUDA library,
// and the system-memory formats in every build.
TEST(ResnetBackbone, PadTemplatesListCudaMemoryWhenBuiltWithGstCuda) {
  GstElementFactory* factory = gst_element_factory_find("resnetbackbone");
  ASSERT_NE(factory, nullptr);
  for (const char* name : {"sink", "src"}) {
    SCOPED_TRACE(name);
    GstCaps* caps = nullptr;
    for (const GList* l = gst_element_factory_get_static_pad_templates(factory); l; l = l->next) {
      auto* t = static_cast<GstStaticPadTemplate*>(l->data);
      if (std::string(t->name_template) == name) caps = gst_static_pad_template_get_caps(t);
    }
    ASSERT_NE(caps, nullptr);
    EXPECT_EQ(cuda_structures(caps), BACKBONE_HAVE_GST_CUDA ? 1 : 0) << gst_caps_to_string(caps);
    for (const char* fmt : kCudaFormats) {
      GstCaps* c = gst_caps_from_string(cuda_caps_string(fmt, 64, 48).c_str());
      EXPECT_EQ(gst_caps_can_intersect(caps, c), bool(BACKBONE_HAVE_GST_CUDA)) << fmt;
      gst_caps_unref(c);
    }
    for (const char* fmt : {"RGB", "GRAY8", "xBGR"}) {  // system memory only
      GstCaps* c = gst_caps_from_string(cuda_caps_string(fmt, 64, 48).c_str());
      EXPECT_FALSE(gst_caps_can_intersect(caps, c)) << fmt << " in CUDA memory";
      gst_caps_unref(c);
      c = gst_caps_from_string(caps_string(fmt, 64, 48).c_str());
      EXPECT_TRUE(gst_caps_can_intersect(caps, c)) << fmt;
      gst_caps_unref(c);
    }
    if (BACKBONE_HAVE_GST_CUDA) {
      GstCapsFeatures* first = gst_caps_get_features(caps, 0);
      EXPECT_TRUE(first && gst_caps_features_contains(first, "memory:CUDAMemory")) << "CUDA memory first";
    }
    gst_caps_unref(caps);
  }
  gst_object_unref(factory);
}

// What the sink pad of an element with @props answers to a CAPS query (no peer) and to an
// ACCEPT_CAPS query of one CUDA-memory and one system-memory caps.
struct CapsAnswers {
  int cuda_in_caps = 0;
  bool accepts_cuda = false, accepts_system = false;
};
CapsAnswers sink_caps_answers(GstElement* e) {
  CapsAnswers a;
  GstPad* sink = gst_element_get_static_pad(e, "sink");
  GstCaps* caps = gst_pad_query_caps(sink, nullptr);
  a.cuda_in_caps = cuda_structures(caps);
  gst_caps_unref(caps);
  GstCaps* cuda = gst_caps_from_string(cuda_caps_string("NV12", 64, 48).c_str());
  GstCaps* sys = gst_caps_from_string(caps_string("NV12", 64, 48).c_str());
  a.accepts_cuda = gst_pad_query_accept_caps(sink, cuda);
  a.accepts_system = gst_pad_query_accept_caps(sink, sys);
  gst_caps_unref(cuda);
  gst_caps_unref(sys);
  gst_object_unref(sink);
  return a;
}

// CUDA memory is offered and accepted only for the cuda engine: engine=cuda, or engine=auto with
// device=cuda:N (before the start, from the properties). A CPU engine refuses it (before and after
// its start) and keeps taking system memory, with which it runs as before.
TEST(ResnetBackbone, CudaMemoryCapsOnlyForTheCudaEngine) {
  struct Case {
    Props props;
    bool cuda;
  };
  const Case cases[] = {
      {narrow_props(), false},
      {narrow_props({{"device", "auto"}}), false},
      {narrow_props({{"engine", "onednn"}, {"device", "cuda:0"}}), false},
      {narrow_props({{"engine", "cuda"}, {"device", "cuda:0"}}), bool(BACKBONE_HAVE_GST_CUDA)},
      {narrow_props({{"engine", "auto"}, {"device", "cuda:1"}}), bool(BACKBONE_HAVE_GST_CUDA)},
  };
  for (const Case& c : cases) {
    std::string label;
    for (const auto& [k, v] : c.props)
      if (k == "engine" || k == "device") label += k + "=" + v + " ";
    SCOPED_TRACE(label);
    GstElement* e = gst_element_factory_make("resnetbackbone", nullptr);
    for (const auto& [k, v] : c.props) gst_util_set_object_arg(G_OBJECT(e), k.c_str(), v.c_str());
    const CapsAnswers a = sink_caps_answers(e);
    EXPECT_EQ(a.cuda_in_caps, c.cuda ? 1 : 0);
    EXPECT_EQ(a.accepts_cuda, c.cuda);
    EXPECT_TRUE(a.accepts_system);
    gst_object_unref(e);
  }

  // Started on a CPU engine: CUDA memory refused, system memory negotiated and processed.
  Harness hh(narrow_props());
  ASSERT_NE(hh.h, nullptr);
  const std::string caps = caps_string("NV12", 64, 48);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  const CapsAnswers a = sink_caps_answers(hh.element);
  EXPECT_EQ(a.cuda_in_caps, 0);
  EXPECT_FALSE(a.accepts_cuda);
  EXPECT_TRUE(a.accepts_system);
  GstBuffer* out = gst_harness_push_and_pull(hh.h, make_frame(info_of(caps), 3));
  ASSERT_NE(out, nullptr);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr);
  ASSERT_EQ(meta->num_levels, 4u);
  for (guint i = 0; i < meta->num_levels; ++i) {
    EXPECT_EQ(meta->levels[i].device, GST_FEATURE_DEVICE_CPU);
    gpointer ptr = nullptr;
    EXPECT_FALSE(gst_feature_level_get_device_pointer(&meta->levels[i], &ptr, nullptr));
  }
  gst_buffer_unref(out);
  // Upstream offering only CUDA memory: not negotiated with a CPU engine.
  GstCaps* cuda = gst_caps_from_string(cuda_caps_string("NV12", 64, 48).c_str());
  GstPad* sink = gst_element_get_static_pad(hh.element, "sink");
  EXPECT_FALSE(gst_pad_query_accept_caps(sink, cuda));
  gst_object_unref(sink);
  gst_caps_unref(cuda);
  EXPECT_EQ(hh.error_text(), "");
}

// engine=cuda device=cuda:0 on a machine without a usable GPU: the state change fails with an
// ERROR that names the engine, the device and why, and nothing crashes (also not when the element
// is started again).
TEST(ResnetBackbone, CudaEngineWithoutGpuFailsTheStartClearly) {
  if (backbone::cuda_is_available()) GTEST_SKIP() << "this machine has a CUDA device";
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto [text, err] = start_error(narrow_props({{"engine", "cuda"}, {"device", "cuda:0"}}));
    ASSERT_NE(err, nullptr) << "the element started";
    EXPECT_EQ(err->domain, GST_RESOURCE_ERROR) << text;
    EXPECT_NE(text.find("engine \"cuda\" on cuda:0"), std::string::npos) << text;
    // Why: the driver library (GStreamer's CUDA library cannot load it) or the CUDA module.
    EXPECT_TRUE(text.find("libcuda") != std::string::npos || text.find("cannot run: ") != std::string::npos)
        << text;
    g_error_free(err);
  }
}

// ---- GPU: run where backbone::cuda_is_available(), skip cleanly elsewhere ----

std::string gpu_skip_reason() {
  if (!backbone::cuda_is_available()) return "no CUDA device (backbone::cuda_is_available() is false)";
  return "";
}

// Each level of @meta: in one feature device memory on cuda:0 with a ready event, contiguous, and
// (mapped on the host) within 1e-3 relative of the CPU engine's features of the same frame.
void expect_gpu_levels_match(const GstFeatureMeta* meta, const Reference::Result& want) {
  ASSERT_NE(meta, nullptr);
  ASSERT_EQ(meta->num_levels, want.maps.size());
  EXPECT_EQ(meta->input_width, guint(want.pre.resized_width));
  EXPECT_EQ(meta->input_height, guint(want.pre.resized_height));
  EXPECT_EQ(meta->padded_width, guint(want.pre.tensor.size(3)));
  EXPECT_EQ(meta->padded_height, guint(want.pre.tensor.size(2)));
  for (guint i = 0; i < meta->num_levels; ++i) {
    const GstFeatureLevel* level = &meta->levels[i];
    const auto& [name, tensor] = want.maps[i];
    SCOPED_TRACE(name);
    EXPECT_STREQ(g_quark_to_string(level->name), name.c_str());
    EXPECT_EQ(level->device, GST_FEATURE_DEVICE_CUDA);
    EXPECT_EQ(level->device_id, 0);
    ASSERT_EQ(gst_buffer_n_memory(level->data), 1u);
    GstMemory* mem = gst_buffer_peek_memory(level->data, 0);
    EXPECT_TRUE(gst_is_feature_device_memory(mem));
    EXPECT_EQ(gst_feature_device_memory_get_device_id(mem), 0);
    gpointer ptr = nullptr, event = nullptr;
    EXPECT_TRUE(gst_feature_level_get_device_pointer(level, &ptr, &event));
    EXPECT_NE(ptr, nullptr);
    EXPECT_NE(event, nullptr) << "no ready event";
    const auto strides = backbone::contiguous_strides(tensor.shape());
    for (int d = 0; d < 4; ++d) {
      EXPECT_EQ(level->dims[d], gsize(tensor.size(d))) << "dim " << d;
      EXPECT_EQ(level->strides[d], gsize(strides[d])) << "dim " << d;
    }
    const std::vector<float> got = level_values(level);
    const backbone::Tensor ref = tensor.contiguous();
    ASSERT_EQ(got.size(), size_t(ref.numel()));
    const double err = rel_error(got, ref.data_ptr<float>(), got.size());
    EXPECT_LE(err, 1e-3);
    std::printf("[ INFO     ] %s: max |cuda - cpu| / max |cpu| = %.3g\n", name.c_str(), err);
  }
}

// The GstCudaContext an element answers a "gst.cuda.context" context query with (a new reference),
// or null.
GObject* cuda_context_of(GstElement* element) {
  GstQuery* q = gst_query_new_context("gst.cuda.context");
  GObject* result = nullptr;
  if (gst_element_query(element, q)) {
    GstContext* context = nullptr;
    gst_query_parse_context(q, &context);
    const GstStructure* st = context ? gst_context_get_structure(context) : nullptr;
    const GValue* v = st ? gst_structure_get_value(st, "gst.cuda.context") : nullptr;
    if (v && G_VALUE_HOLDS_OBJECT(v)) result = G_OBJECT(g_value_dup_object(v));
  }
  gst_query_unref(q);
  return result;
}

class CudaUpload : public ::testing::TestWithParam<const char*> {};

// cudaupload ! video/x-raw(memory:CUDAMemory) ! resnetbackbone engine=cuda device=cuda:0 ! appsink:
// the frames reach the element in CUDA memory, the levels stay on the GPU with a ready event, and
// their values (mapped on the host) are the CPU engine's on the same frames. The first output is
// held, unmapped, while five more frames run, and keeps its values (pooled storage is not reused
// while held).
TEST_P(CudaUpload, LevelsStayOnTheGpuAndMatchTheCpuEngine) {
  const std::string why = gpu_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  GstElementFactory* upload = gst_element_factory_find("cudaupload");
  if (!upload) {
    GTEST_SKIP() << "no cudaupload element (GStreamer's nvcodec plugin, gstreamer1.0-plugins-bad)";
  }
  gst_object_unref(upload);
  if (!BACKBONE_HAVE_GST_CUDA) GTEST_SKIP() << "the plugin is built without GStreamer's CUDA library";

  const std::string fmt = GetParam();
  const std::string caps = caps_string(fmt.c_str(), 64, 48);
  const GstVideoInfo info = info_of(caps);
  static Reference ref;  // the CPU engine (engine auto on the CPU), same config and weights
  const std::string launch = "appsrc name=src format=time caps=\"" + caps +
                             "\" ! cudaupload name=upload ! video/x-raw(memory:CUDAMemory) ! resnetbackbone name=bb "
                             "engine=cuda device=cuda:0 config-file=\"" + data_path("narrow.yaml") +
                             "\" weights=\"" + data_path("narrow.pth") + "\" ! appsink name=sink sync=false";
  GError* error = nullptr;
  GstElement* pipeline = gst_parse_launch(launch.c_str(), &error);
  ASSERT_NE(pipeline, nullptr) << (error ? error->message : "");
  g_clear_error(&error);
  GstElement* src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  GstElement* bb = gst_bin_get_by_name(GST_BIN(pipeline), "bb");
  GstBus* bus = gst_element_get_bus(pipeline);
  auto bus_error = [bus]() {
    std::string text;
    if (GstMessage* m = pop_first(bus, GST_MESSAGE_ERROR)) {
      GError* err = nullptr;
      gst_message_parse_error(m, &err, nullptr);
      text = err->message;
      g_error_free(err);
      gst_message_unref(m);
    }
    return text;
  };
  ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE) << bus_error();

  constexpr int kFrames = 6;
  std::vector<Reference::Result> want;
  GstBuffer* held = nullptr;
  for (int i = 0; i < kFrames; ++i) {
    GstBuffer* in = make_frame(info, 100 + i, i * GST_SECOND / 30);
    want.push_back(ref.run(info, in));
    ASSERT_EQ(gst_app_src_push_buffer(GST_APP_SRC(src), in), GST_FLOW_OK);
    GstSample* sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 60 * GST_SECOND);
    ASSERT_NE(sample, nullptr) << "no output for frame " << i << ": " << bus_error();
    if (i == 0) {
      // The frames came in CUDA memory.
      GstPad* bb_sink = gst_element_get_static_pad(bb, "sink");
      GstCaps* negotiated = gst_pad_get_current_caps(bb_sink);
      ASSERT_NE(negotiated, nullptr);
      EXPECT_EQ(cuda_structures(negotiated), 1) << gst_caps_to_string(negotiated);
      gst_caps_unref(negotiated);
      gst_object_unref(bb_sink);
      // One CUDA context, shared: what the element answers to a context query is cudaupload's.
      GObject* ours = cuda_context_of(bb);
      GstElement* upload = gst_bin_get_by_name(GST_BIN(pipeline), "upload");
      GObject* theirs = cuda_context_of(upload);
      EXPECT_NE(ours, nullptr);
      EXPECT_EQ(ours, theirs) << "resnetbackbone and cudaupload run in different CUDA contexts";
      if (ours) g_object_unref(ours);
      if (theirs) g_object_unref(theirs);
      gst_object_unref(upload);
      held = gst_buffer_ref(gst_sample_get_buffer(sample));  // not mapped until the end
    } else {
      SCOPED_TRACE("frame " + std::to_string(i));
      expect_gpu_levels_match(gst_buffer_get_feature_meta(gst_sample_get_buffer(sample)), want[i]);
    }
    gst_sample_unref(sample);
  }
  {
    SCOPED_TRACE("frame 0, held while 5 more frames ran");
    expect_gpu_levels_match(gst_buffer_get_feature_meta(held), want[0]);
  }
  // A level mapped twice downloads once: the same host copy.
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(held);
  ASSERT_TRUE(meta && meta->num_levels > 0);
  EXPECT_EQ(level_pointer(&meta->levels[0]), level_pointer(&meta->levels[0]));
  gst_buffer_unref(held);
  EXPECT_EQ(bus_error(), "");

  gst_app_src_end_of_stream(GST_APP_SRC(src));
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_object_unref(bb);
  gst_object_unref(sink);
  gst_object_unref(src);
  gst_object_unref(pipeline);
}

INSTANTIATE_TEST_SUITE_P(ResnetBackboneGpu, CudaUpload, ::testing::Values("RGBA", "BGRx", "NV12", "I420"),
                         [](const auto& info) { return std::string(info.param); });

// System-memory frames into engine=cuda: uploaded by the engine, levels on the GPU, the CPU
// engine's values.
TEST(ResnetBackboneGpu, SystemMemoryFramesIntoTheCudaEngine) {
  const std::string why = gpu_skip_reason();
  if (!why.empty()) GTEST_SKIP() << why;
  static Reference ref;
  Harness hh(narrow_props({{"engine", "cuda"}, {"device", "cuda:0"}}));
  ASSERT_NE(hh.h, nullptr);
  for (const char* fmt : {"RGB", "NV12"}) {
    SCOPED_TRACE(fmt);
    const std::string caps = caps_string(fmt, 64, 48);
    gst_harness_set_src_caps_str(hh.h, caps.c_str());
    GstBuffer* in = make_frame(info_of(caps), 5);
    const auto want = ref.run(info_of(caps), in);
    GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
    ASSERT_NE(out, nullptr) << hh.error_text();
    expect_gpu_levels_match(gst_buffer_get_feature_meta(out), want);
    gst_buffer_unref(out);
  }
  EXPECT_EQ(hh.error_text(), "");
  EXPECT_EQ(string_property(hh.element, "engine-description").rfind("cuda ", 0), 0u)
      << string_property(hh.element, "engine-description");
}

}  // namespace

namespace {

// An engine outside the library's engine table or a device name that is not auto, cpu or cuda:N is
// refused when set: the property keeps its value and a WARNING message names the cause.
TEST(ResnetBackbone, UnknownEngineOrDeviceRefusedWhenSet) {
  struct Case {
    const char *prop, *value, *expected, *kept;
  };
  for (const Case& c : {Case{"engine", "tensorrt", "engine \"tensorrt\" is unknown: expected auto, cuda, onednn", "auto"},
                        Case{"device", "tpu", "invalid device 'tpu'", "auto"}}) {
    SCOPED_TRACE(c.prop);
    GstElement* e = gst_element_factory_make("resnetbackbone", nullptr);
    GstBus* bus = gst_bus_new();
    gst_element_set_bus(e, bus);
    g_object_set(e, c.prop, c.value, nullptr);
    EXPECT_EQ(string_property(e, c.prop), c.kept);
    GstMessage* m = pop_first(bus, GST_MESSAGE_WARNING);
    ASSERT_NE(m, nullptr);
    GError* err = nullptr;
    gst_message_parse_warning(m, &err, nullptr);
    EXPECT_NE(std::string(err->message).find(c.expected), std::string::npos) << err->message;
    g_error_free(err);
    gst_message_unref(m);
    // Every name of the table, and auto, is taken.
    g_object_set(e, "engine", "opencv", nullptr);
    EXPECT_EQ(string_property(e, "engine"), "opencv");
    g_object_set(e, "device", "cuda:3", nullptr);
    EXPECT_EQ(string_property(e, "device"), "cuda:3");
    gst_element_set_bus(e, nullptr);
    gst_object_unref(bus);
    gst_object_unref(e);
  }
}

}  // namespace
