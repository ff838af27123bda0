// SPDX-License-Identifier: Apache-2.0
// GstHarness tests of the resnetbackbone element on FPN configs: detectron2's FPN
// (tests/data/plugin/narrow_fpn.yaml, p2..p6) and RetinaNet's (narrow_retinanet.yaml, p3..p7) on the
// narrow R-50, with the ResNet-only weights narrow.pth, so the FPN's layers are seeded (and a warning
// says so). Reference values come from the backbone library's load_model with the same settings.
#include <gst/check/gstharness.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "backbone/frame.h"
#include "backbone/model.h"
#include "resnetbackbone_test_util.h"

namespace {

using namespace gstbackbone_test;

Props fpn_props(const char* config, Props extra = {}) {
  Props p = {{"config-file", data_path(config)}, {"weights", data_path("narrow.pth")}, {"device", "cpu"}};
  p.insert(p.end(), extra.begin(), extra.end());
  return p;
}

// The library's result for an RGB frame through load_model with the element's settings.
backbone::FeatureMaps library_features(const char* config, const std::vector<std::string>& out_features,
                                       const GstVideoInfo& info, GstBuffer* buf) {
  backbone::ModelSpec spec;
  spec.config_file = data_path(config);
  spec.weights = data_path("narrow.pth");
  spec.device = "cpu";
  spec.out_features = out_features;
  spec.feature_maps_only = true;
  backbone::Model m = backbone::load_model(spec);
  GstMapInfo map;
  EXPECT_TRUE(gst_buffer_map(buf, &map, GST_MAP_READ));
  backbone::FrameView v;
  v.format = backbone::PixelFormat::RGB;
  v.width = GST_VIDEO_INFO_WIDTH(&info);
  v.height = GST_VIDEO_INFO_HEIGHT(&info);
  v.planes[0] = map.data;
  v.strides[0] = GST_VIDEO_INFO_PLANE_STRIDE(&info, 0);
  backbone::FeatureMaps maps = m.engine->forward_frame(v, m.preprocess);
  gst_buffer_unmap(buf, &map);
  return maps;
}

struct LevelWant {
  const char* name;
  guint stride;
  gsize channels;
};

// The meta's levels: names, strides, channels, N,C,H,W of a padded_h x padded_w input, and values
// equal to the library's.
void expect_levels(const GstFeatureMeta* meta, const std::vector<LevelWant>& want, const backbone::FeatureMaps& ref) {
  ASSERT_NE(meta, nullptr);
  ASSERT_EQ(meta->num_levels, want.size());
  ASSERT_EQ(ref.size(), want.size());
  for (guint i = 0; i < meta->num_levels; ++i) {
    const GstFeatureLevel* level = &meta->levels[i];
    SCOPED_TRACE(want[i].name);
    EXPECT_STREQ(g_quark_to_string(level->name), want[i].name);
    EXPECT_EQ(level->stride, want[i].stride);
    EXPECT_EQ(level->dims[0], 1u);
    EXPECT_EQ(level->dims[1], want[i].channels);
    // LastLevelMaxPool and the stride-2 convolutions of p6/p7 give ceil(padded / stride) cells
    EXPECT_EQ(level->dims[2], (meta->padded_height + want[i].stride - 1) / want[i].stride);
    EXPECT_EQ(level->dims[3], (meta->padded_width + want[i].stride - 1) / want[i].stride);
    ASSERT_EQ(ref[i].first, want[i].name);
    const backbone::Tensor r = ref[i].second.contiguous();
    const std::vector<float> got = level_values(level);
    ASSERT_EQ(got.size(), size_t(r.numel()));
    EXPECT_LE(rel_error(got, r.data_ptr<float>(), got.size()), 1e-6);
  }
}

// Every p-level of the config by default, with its stride, on an odd frame size padded to 32 as
// detectron2's model pads it; the ResNet-only weights seed the FPN with a warning.
TEST(ResnetBackboneFpn, PyramidLevelsPaddedTo32WithSeededFpnWarning) {
  Harness hh(fpn_props("narrow_fpn.yaml"));
  const std::string caps = caps_string("RGB", 67, 45);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  const std::vector<std::string> warnings = hh.pop_texts(GST_MESSAGE_WARNING);
  EXPECT_EQ(count_containing(warnings, "no FPN layers"), 1u) << "the seeded FPN is reported once";
  EXPECT_EQ(count_containing(warnings, "No weights given"), 0u) << "the bottom-up has its weights";
  gchar* name = nullptr;
  g_object_get(hh.element, "model-name", &name, nullptr);
  EXPECT_STREQ(name, "R-50-FPN");
  g_free(name);

  GstBuffer* in = make_frame(info, 7);
  const backbone::FeatureMaps ref = library_features("narrow_fpn.yaml", {}, info, in);
  GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
  ASSERT_NE(out, nullptr);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr);
  EXPECT_STREQ(meta->model_name, "R-50-FPN");
  EXPECT_EQ(meta->frame_width, 67u);
  EXPECT_EQ(meta->frame_height, 45u);
  EXPECT_EQ(meta->input_width, 67u);
  EXPECT_EQ(meta->input_height, 45u);
  EXPECT_EQ(meta->padded_width, 96u);
  EXPECT_EQ(meta->padded_height, 64u);
  expect_levels(meta, {{"p2", 4, 16}, {"p3", 8, 16}, {"p4", 16, 16}, {"p5", 32, 16}, {"p6", 64, 16}}, ref);
  EXPECT_EQ(meta->levels[4].dims[2], 1u);  // p6 = p5[::2, ::2] of 2x3
  EXPECT_EQ(meta->levels[4].dims[3], 2u);
  gst_buffer_unref(out);
}

// out-features picks p-levels (and bottom-up outputs), in the order given.
TEST(ResnetBackboneFpn, OutFeaturesSelectsPyramidLevels) {
  Harness hh(fpn_props("narrow_fpn.yaml", {{"out-features", "p5, p3,res4"}}));
  const std::string caps = caps_string("RGB", 64, 48);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* in = make_frame(info, 8);
  const backbone::FeatureMaps ref = library_features("narrow_fpn.yaml", {"p5", "p3", "res4"}, info, in);
  GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
  ASSERT_NE(out, nullptr);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr);
  EXPECT_EQ(meta->padded_height, 64u);
  expect_levels(meta, {{"p5", 32, 16}, {"p3", 8, 16}, {"res4", 16, 64}}, ref);
  gst_buffer_unref(out);
}

// RetinaNet's pyramid: p3..p7, p6 and p7 from res5.
TEST(ResnetBackboneFpn, RetinaNetLevelsP3ToP7) {
  Harness hh(fpn_props("narrow_retinanet.yaml"));
  const std::string caps = caps_string("RGB", 64, 48);
  const GstVideoInfo info = info_of(caps);
  gst_harness_set_src_caps_str(hh.h, caps.c_str());
  GstBuffer* in = make_frame(info, 9);
  const backbone::FeatureMaps ref = library_features("narrow_retinanet.yaml", {}, info, in);
  GstBuffer* out = gst_harness_push_and_pull(hh.h, in);
  ASSERT_NE(out, nullptr);
  const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
  ASSERT_NE(meta, nullptr);
  EXPECT_STREQ(meta->model_name, "RetinaNet-R-50-FPN");
  expect_levels(meta, {{"p3", 8, 16}, {"p4", 16, 16}, {"p5", 32, 16}, {"p6", 64, 16}, {"p7", 128, 16}}, ref);
  gst_buffer_unref(out);
}

// Names the config does not have fail the start with the names it has; a size-divisibility that
// is not a multiple of 32 is refused for an FPN.
TEST(ResnetBackboneFpn, UnknownLevelsAndBadPaddingFailTheStart) {
  const struct {
    Props props;
    std::vector<const char*> texts;
  } cases[] = {
      {fpn_props("narrow_fpn.yaml", {{"out-features", "p3,p7"}}), {"\"p7\"", "p2", "p6", "res5"}},
      {fpn_props("narrow_retinanet.yaml", {{"out-features", "p2"}}), {"\"p2\"", "p3", "p7"}},
      {narrow_props({{"out-features", "res4,p4"}}), {"\"p4\"", "build_resnet_fpn_backbone"}},
      {fpn_props("narrow_fpn.yaml", {{"size-divisibility", "48"}}), {"48", "32"}},
  };
  for (const auto& c : cases) {
    GstElement* e = gst_element_factory_make("resnetbackbone", nullptr);
    ASSERT_NE(e, nullptr);
    for (const auto& [k, v] : c.props) gst_util_set_object_arg(G_OBJECT(e), k.c_str(), v.c_str());
    GstBus* bus = gst_bus_new();
    gst_element_set_bus(e, bus);
    EXPECT_EQ(gst_element_set_state(e, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
    EXPECT_EQ(gst_element_set_state(e, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
    GstMessage* m = pop_first(bus, GST_MESSAGE_ERROR);
    EXPECT_NE(m, nullptr) << "no ERROR message";
    if (m) {
      GError* err = nullptr;
      gst_message_parse_error(m, &err, nullptr);
      EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS)) << err->message;
      for (const char* t : c.texts) EXPECT_NE(std::string(err->message).find(t), std::string::npos) << err->message;
      g_error_free(err);
      gst_message_unref(m);
    }
    EXPECT_EQ(gst_element_set_state(e, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
    gst_element_set_bus(e, nullptr);
    gst_object_unref(bus);
    gst_object_unref(e);
  }
}

}  // namespace
