// SPDX-License-Identifier: Apache-2.0
// GstFeatureMeta through GStreamer's own elements: the transform function (copy, video scale, the
// rest refused) called directly, and real pipelines (appsrc with metas added by hand, then
// videoscale, videoconvert, videocrop, videoflip, videobox, jpegenc, x264enc, appsink). After
// videoscale the feature cell under a marker must map onto the marker's pixels in the scaled frame.
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace {

// The frame and the producer's geometry of every test: a 64x48 frame resized to a 32x24 network
// input (scale 0.5), padded to 32x32; one level "res2" of stride 4 (8x6 cells cover the input).
constexpr int kW = 64, kH = 48;
constexpr gsize kDims[4] = {1, 2, 8, 8};

GstFeatureMeta* add_meta(GstBuffer* buf, guint unique_id = 0) {
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  meta->unique_id = unique_id;
  gst_feature_meta_set_model_name(meta, "R-18");
  meta->frame_width = kW;
  meta->frame_height = kH;
  meta->input_width = 32;
  meta->input_height = 24;
  meta->padded_width = 32;
  meta->padded_height = 32;
  meta->scale_x = meta->scale_y = 0.5;
  GstBuffer* data = gst_buffer_new_allocate(nullptr, 2 * 8 * 8 * sizeof(float), nullptr);
  gst_buffer_memset(data, 0, 0, gst_buffer_get_size(data));
  EXPECT_NE(gst_feature_meta_add_level(meta, "res2", GST_FEATURE_DTYPE_FLOAT32, kDims, nullptr, 4,
                                       GST_FEATURE_DEVICE_CPU, 0, data, 0),
            nullptr);
  return meta;
}

// The frame box, in pixels of the frame the meta describes, of the cell (col, row) of res2.
std::array<double, 4> cell_box(const GstFeatureMeta* meta, int col, int row) {
  const GstFeatureLevel* level = gst_feature_meta_get_level(meta, "res2");
  EXPECT_NE(level, nullptr);
  const gdouble cell[4] = {static_cast<double>(col), static_cast<double>(row), col + 1.0, row + 1.0};
  std::array<double, 4> box{};
  if (level) gst_feature_meta_feature_box_to_frame(meta, level, cell, box.data());
  return box;
}

GstBuffer* dest_of_transform(GstFeatureMeta* smeta, GstBuffer* src, GQuark type, gpointer data, gboolean* ok) {
  GstBuffer* dest = gst_buffer_new();
  *ok = smeta->meta.info->transform_func(dest, &smeta->meta, src, type, data);
  return dest;
}

TEST(FeatureMetaTransform, ScaleUpdatesTheFrameGeometry) {
  GstBuffer* src = gst_buffer_new();
  GstFeatureMeta* smeta = add_meta(src, 3);
  const GstBuffer* data = smeta->levels[0].data;
  // cell (2, 1) of stride 4 at scale 0.5: network input 8..12 x 4..8, frame 16..24 x 8..16
  EXPECT_EQ(cell_box(smeta, 2, 1), (std::array<double, 4>{16, 8, 24, 16}));

  struct Case {
    int out_w, out_h;
    std::array<double, 4> box;
  };
  // up 2x, down 2x, 1.5x, and an anamorphic 2x / 0.5x
  for (const Case& c : {Case{128, 96, {32, 16, 48, 32}}, Case{32, 24, {8, 4, 12, 8}}, Case{96, 72, {24, 12, 36, 24}},
                        Case{128, 24, {32, 4, 48, 8}}}) {
    SCOPED_TRACE(std::to_string(c.out_w) + "x" + std::to_string(c.out_h));
    GstVideoInfo in_info, out_info;
    gst_video_info_set_format(&in_info, GST_VIDEO_FORMAT_RGB, kW, kH);
    gst_video_info_set_format(&out_info, GST_VIDEO_FORMAT_BGRx, c.out_w, c.out_h);
    GstVideoMetaTransform trans = {&in_info, &out_info};
    gboolean ok = FALSE;
    GstBuffer* dest = dest_of_transform(smeta, src, gst_video_meta_transform_scale_get_quark(), &trans, &ok);
    ASSERT_TRUE(ok);
    GstFeatureMeta* d = gst_buffer_get_feature_meta(dest);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->frame_width, guint(c.out_w));
    EXPECT_EQ(d->frame_height, guint(c.out_h));
    EXPECT_DOUBLE_EQ(d->scale_x, 32.0 / c.out_w) << "still input_width / frame_width";
    EXPECT_DOUBLE_EQ(d->scale_y, 24.0 / c.out_h);
    // the network input and the levels are those the producer made: unchanged, data shared
    EXPECT_EQ(d->input_width, 32u);
    EXPECT_EQ(d->input_height, 24u);
    EXPECT_EQ(d->padded_width, 32u);
    EXPECT_EQ(d->padded_height, 32u);
    EXPECT_EQ(d->unique_id, 3u);
    EXPECT_STREQ(d->model_name, "R-18");
    ASSERT_EQ(d->num_levels, 1u);
    EXPECT_EQ(d->levels[0].data, data);
    EXPECT_EQ(d->levels[0].stride, 4u);
    EXPECT_EQ(cell_box(d, 2, 1), c.box) << "the cell maps onto the scaled frame";
    // and a point of the scaled frame maps back to the same cell
    gdouble fx = 0, fy = 0;
    gst_feature_meta_frame_to_feature(d, &d->levels[0], (c.box[0] + c.box[2]) / 2, (c.box[1] + c.box[3]) / 2, &fx, &fy);
    EXPECT_DOUBLE_EQ(fx, 2.5);
    EXPECT_DOUBLE_EQ(fy, 1.5);
    gst_buffer_unref(dest);
  }
  EXPECT_EQ(GST_MINI_OBJECT_REFCOUNT_VALUE(data), 1);
  gst_buffer_unref(src);
}

TEST(FeatureMetaTransform, ScaleOfAnotherFrameSizeIsRefused) {
  GstBuffer* src = gst_buffer_new();
  GstFeatureMeta* smeta = add_meta(src);
  GstVideoInfo in_info, out_info;
  gst_video_info_set_format(&in_info, GST_VIDEO_FORMAT_RGB, 100, 48);  // not the meta's 64x48
  gst_video_info_set_format(&out_info, GST_VIDEO_FORMAT_RGB, 50, 24);
  GstVideoMetaTransform trans = {&in_info, &out_info};
  gboolean ok = TRUE;
  GstBuffer* dest = dest_of_transform(smeta, src, gst_video_meta_transform_scale_get_quark(), &trans, &ok);
  EXPECT_FALSE(ok);
  EXPECT_EQ(gst_buffer_get_feature_meta(dest), nullptr);
  gst_buffer_unref(dest);
  gst_buffer_unref(src);
}

TEST(FeatureMetaTransform, OtherTransformTypesAreRefused) {
  GstBuffer* src = gst_buffer_new();
  GstFeatureMeta* smeta = add_meta(src);
  // "gst-video-matrix": what videoflip sends from GStreamer 1.24 on; and anything else
  for (const char* type : {"gst-video-matrix", "some-other-transform"}) {
    SCOPED_TRACE(type);
    gboolean ok = TRUE;
    GstBuffer* dest = dest_of_transform(smeta, src, g_quark_from_string(type), nullptr, &ok);
    EXPECT_FALSE(ok);
    EXPECT_EQ(gst_buffer_get_feature_meta(dest), nullptr);
    gst_buffer_unref(dest);
  }
  EXPECT_EQ(GST_MINI_OBJECT_REFCOUNT_VALUE(smeta->levels[0].data), 1);
  gst_buffer_unref(src);
}

// ---- pipelines: appsrc (64x48 RGB, metas added here) ! <middle> ! appsink ----

bool have(const char* factory) {
  GstElementFactory* f = gst_element_factory_find(factory);
  if (f) gst_object_unref(f);
  return f != nullptr;
}

// A grey frame with a white marker exactly over cell (2, 1) of res2: pixels 16..23 x 8..15.
GstBuffer* marker_frame(int index) {
  GstBuffer* buf = gst_buffer_new_allocate(nullptr, kW * kH * 3, nullptr);
  GstMapInfo map;
  gst_buffer_map(buf, &map, GST_MAP_WRITE);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x)
      for (int c = 0; c < 3; ++c) map.data[(y * kW + x) * 3 + c] = (x >= 16 && x < 24 && y >= 8 && y < 16) ? 255 : 64;
  gst_buffer_unmap(buf, &map);
  GST_BUFFER_PTS(buf) = static_cast<GstClockTime>(index) * GST_SECOND / 30;
  GST_BUFFER_DURATION(buf) = GST_SECOND / 30;
  return buf;
}

struct Output {
  std::vector<GstSample*> samples;
  std::vector<const GstBuffer*> data;  // the level data buffer of each frame pushed (owned by the metas)
  ~Output() {
    for (GstSample* s : samples) gst_sample_unref(s);
  }
  GstBuffer* buffer(std::size_t i) const { return gst_sample_get_buffer(samples.at(i)); }
};

// Pushes `frames` marker frames with a meta through "appsrc ! <middle> ! appsink" and collects every
// sample. `sink_setup` may install probes on the appsink before it starts.
void run(const std::string& middle, Output* out, int frames = 2,
         const std::function<void(GstElement*)>& sink_setup = nullptr) {
  GError* error = nullptr;
  const std::string launch =
      "appsrc name=src format=time caps=video/x-raw,format=RGB,width=64,height=48,framerate=30/1 ! " + middle +
      " ! appsink name=sink sync=false";
  GstElement* pipeline = gst_parse_launch(launch.c_str(), &error);
  ASSERT_NE(pipeline, nullptr) << (error ? error->message : "");
  ASSERT_EQ(error, nullptr) << error->message;
  GstElement* src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  if (sink_setup) sink_setup(sink);
  ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  for (int i = 0; i < frames; ++i) {
    GstBuffer* buf = marker_frame(i);
    out->data.push_back(add_meta(buf, 10 + i)->levels[0].data);
    ASSERT_EQ(gst_app_src_push_buffer(GST_APP_SRC(src), buf), GST_FLOW_OK);
  }
  ASSERT_EQ(gst_app_src_end_of_stream(GST_APP_SRC(src)), GST_FLOW_OK);
  while (GstSample* s = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 10 * GST_SECOND)) out->samples.push_back(s);
  EXPECT_TRUE(gst_app_sink_is_eos(GST_APP_SINK(sink)));
  GstBus* bus = gst_element_get_bus(pipeline);
  GstMessage* err = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  EXPECT_EQ(err, nullptr) << "error from " << GST_OBJECT_NAME(GST_MESSAGE_SRC(err));
  if (err) gst_message_unref(err);
  gst_object_unref(bus);
  EXPECT_EQ(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  gst_object_unref(src);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

// The bounding box [x0, y0, x1, y1) of the white pixels of an RGB/BGRx sample.
std::array<double, 4> marker_box(GstSample* sample) {
  GstVideoInfo info;
  EXPECT_TRUE(gst_video_info_from_caps(&info, gst_sample_get_caps(sample)));
  GstVideoFrame frame;
  EXPECT_TRUE(gst_video_frame_map(&frame, &info, gst_sample_get_buffer(sample), GST_MAP_READ));
  int x0 = 1 << 30, y0 = 1 << 30, x1 = -1, y1 = -1;
  const guint8* base = static_cast<const guint8*>(GST_VIDEO_FRAME_PLANE_DATA(&frame, 0));
  const int stride = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0), pstride = GST_VIDEO_FRAME_COMP_PSTRIDE(&frame, 0);
  for (int y = 0; y < GST_VIDEO_FRAME_HEIGHT(&frame); ++y)
    for (int x = 0; x < GST_VIDEO_FRAME_WIDTH(&frame); ++x)
      if (base[y * stride + x * pstride] > 160) {
        x0 = std::min(x0, x);
        y0 = std::min(y0, y);
        x1 = std::max(x1, x + 1);
        y1 = std::max(y1, y + 1);
      }
  gst_video_frame_unmap(&frame);
  return {double(x0), double(y0), double(x1), double(y1)};
}

// The elements come from GStreamer's Debian packages that setup.sh installs: plugins-base
// (videoscale, videoconvert), plugins-good (videocrop, videoflip, videobox, jpegenc), plugins-ugly
// (x264enc).
#define REQUIRE_ELEMENTS(...)                                                          \
  for (const char* factory_ : {__VA_ARGS__})                                           \
  ASSERT_TRUE(have(factory_)) << factory_ << " is not installed (GStreamer plugins)"

TEST(FeatureMetaThroughElements, VideoscaleUpdatesTheGeometry) {
  REQUIRE_ELEMENTS("videoscale");
  struct Case {
    int w, h;
  };
  // up 2x, down 2x, 1.5x: nearest-neighbour scaling moves the marker to exact pixel boxes
  for (const Case& c : {Case{128, 96}, Case{32, 24}, Case{96, 72}}) {
    SCOPED_TRACE(std::to_string(c.w) + "x" + std::to_string(c.h));
    Output out;
    run("videoscale method=nearest-neighbour ! video/x-raw,width=" + std::to_string(c.w) +
            ",height=" + std::to_string(c.h),
        &out);
    ASSERT_EQ(out.samples.size(), 2u);
    for (std::size_t i = 0; i < out.samples.size(); ++i) {
      GstFeatureMeta* m = gst_buffer_get_feature_meta(out.buffer(i));
      ASSERT_NE(m, nullptr) << "videoscale keeps the meta";
      EXPECT_EQ(m->unique_id, 10 + i);
      EXPECT_EQ(m->frame_width, guint(c.w));
      EXPECT_EQ(m->frame_height, guint(c.h));
      EXPECT_EQ(m->input_width, 32u);
      EXPECT_EQ(m->levels[0].data, out.data[i]) << "data shared, not copied";
      const std::array<double, 4> marker = marker_box(out.samples[i]);
      EXPECT_EQ(cell_box(m, 2, 1), marker) << "cell (2, 1) maps onto the marker drawn over it";
    }
  }
}

TEST(FeatureMetaThroughElements, VideoconvertKeepsIt) {
  REQUIRE_ELEMENTS("videoconvert");
  Output out;
  run("videoconvert ! video/x-raw,format=BGRx", &out);
  ASSERT_EQ(out.samples.size(), 2u);
  GstVideoInfo info;
  ASSERT_TRUE(gst_video_info_from_caps(&info, gst_sample_get_caps(out.samples[0])));
  EXPECT_EQ(GST_VIDEO_INFO_FORMAT(&info), GST_VIDEO_FORMAT_BGRx) << "really converted";
  for (std::size_t i = 0; i < out.samples.size(); ++i) {
    GstFeatureMeta* m = gst_buffer_get_feature_meta(out.buffer(i));
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->frame_width, guint(kW));
    EXPECT_EQ(m->frame_height, guint(kH));
    EXPECT_DOUBLE_EQ(m->scale_x, 0.5);
    EXPECT_EQ(m->levels[0].data, out.data[i]);
    EXPECT_EQ(cell_box(m, 2, 1), marker_box(out.samples[i]));
  }
}

// videocrop copying the cropped region, videoflip, videobox: GstVideoFilter drops the tagged meta.
TEST(FeatureMetaThroughElements, CroppingFlippingAndBoxingElementsDropIt) {
  REQUIRE_ELEMENTS("videocrop", "videoflip", "videobox");
  for (const char* middle : {"videocrop left=8 top=4", "videoflip video-direction=90r", "videoflip video-direction=horiz",
                             "videoflip video-direction=identity", "videobox left=8 right=-8", "videobox top=-4"}) {
    SCOPED_TRACE(middle);
    Output out;
    run(middle, &out);
    ASSERT_EQ(out.samples.size(), 2u);
    for (std::size_t i = 0; i < out.samples.size(); ++i)
      EXPECT_EQ(gst_buffer_get_feature_meta(out.buffer(i)), nullptr) << "a meta with a false geometry stayed";
  }
}

// With nothing to crop they are in passthrough: the buffer, meta included, passes unchanged.
// (videoflip at identity is not: it copies the frame, and the meta is dropped.)
TEST(FeatureMetaThroughElements, ElementsInPassthroughKeepIt) {
  REQUIRE_ELEMENTS("videocrop", "videobox");
  for (const char* middle : {"videocrop", "videobox"}) {
    SCOPED_TRACE(middle);
    Output out;
    run(middle, &out);
    ASSERT_EQ(out.samples.size(), 2u);
    GstFeatureMeta* m = gst_buffer_get_feature_meta(out.buffer(0));
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->frame_width, guint(kW));
    EXPECT_EQ(m->levels[0].data, out.data[0]);
  }
}

// Downstream accepts GstVideoCropMeta: videocrop crops in place with a crop meta; the feature meta
// stays, describing the uncropped frame, and a consumer applies the crop.
TEST(FeatureMetaThroughElements, VideocropWithCropMetaKeepsItForTheWholeFrame) {
  REQUIRE_ELEMENTS("videocrop");
  auto accept_crop_meta = [](GstElement* sink) {
    GstPad* pad = gst_element_get_static_pad(sink, "sink");
    // answer the allocation query for appsink (which does not): downstream handles video and
    // crop metas, as a display sink does
    gst_pad_add_probe(
        pad, GST_PAD_PROBE_TYPE_QUERY_DOWNSTREAM,
        [](GstPad*, GstPadProbeInfo* info, gpointer) -> GstPadProbeReturn {
          GstQuery* q = GST_PAD_PROBE_INFO_QUERY(info);
          if (GST_QUERY_TYPE(q) != GST_QUERY_ALLOCATION) return GST_PAD_PROBE_OK;
          gst_query_add_allocation_meta(q, GST_VIDEO_META_API_TYPE, nullptr);
          gst_query_add_allocation_meta(q, GST_VIDEO_CROP_META_API_TYPE, nullptr);
          return GST_PAD_PROBE_HANDLED;
        },
        nullptr, nullptr);
    gst_object_unref(pad);
  };
  Output out;
  run("videocrop left=8 top=4 right=16 bottom=12", &out, 2, accept_crop_meta);
  ASSERT_EQ(out.samples.size(), 2u);
  for (std::size_t i = 0; i < out.samples.size(); ++i) {
    GstBuffer* b = out.buffer(i);
    GstVideoCropMeta* crop = gst_buffer_get_video_crop_meta(b);
    ASSERT_NE(crop, nullptr) << "videocrop cropped with a crop meta";
    EXPECT_EQ(crop->x, 8u);
    EXPECT_EQ(crop->y, 4u);
    EXPECT_EQ(crop->width, 40u);
    EXPECT_EQ(crop->height, 32u);
    EXPECT_EQ(gst_buffer_get_size(b), gsize{kW * kH * 3}) << "the whole frame is still there";
    GstFeatureMeta* m = gst_buffer_get_feature_meta(b);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->frame_width, guint(kW)) << "the meta describes the uncropped frame";
    EXPECT_EQ(m->frame_height, guint(kH));
    EXPECT_EQ(m->levels[0].data, out.data[i]);
    // a consumer applies the crop: the cell over the marker, in the cropped view
    std::array<double, 4> box = cell_box(m, 2, 1);
    EXPECT_EQ((std::array<double, 4>{box[0] - crop->x, box[1] - crop->y, box[2] - crop->x, box[3] - crop->y}),
              (std::array<double, 4>{8, 4, 16, 12}));
  }
}

// GstVideoEncoder's default transform_meta copies metas tagged only video/size/orientation onto
// the encoded buffers: every encoded frame carries the meta of its input frame, data shared.
void expect_meta_on_encoded_frames(const std::string& encoder, const char* caps_prefix, int frames) {
  Output out;
  run("videoconvert ! " + encoder, &out, frames);
  ASSERT_EQ(out.samples.size(), std::size_t(frames));
  GstStructure* s = gst_caps_get_structure(gst_sample_get_caps(out.samples[0]), 0);
  EXPECT_TRUE(g_str_has_prefix(gst_structure_get_name(s), caps_prefix)) << gst_structure_get_name(s);
  for (std::size_t i = 0; i < out.samples.size(); ++i) {
    GstBuffer* b = out.buffer(i);
    // x264enc shifts its timestamps (and segment) to make room for B-frames: stream time it is
    const guint64 t = gst_segment_to_stream_time(gst_sample_get_segment(out.samples[i]), GST_FORMAT_TIME,
                                                 GST_BUFFER_PTS(b));
    const int frame = static_cast<int>(gst_util_uint64_scale_round(t, 30, GST_SECOND));
    ASSERT_GE(frame, 0);
    ASSERT_LT(frame, frames);
    GstFeatureMeta* m = gst_buffer_get_feature_meta(b);
    ASSERT_NE(m, nullptr) << "encoded frame " << i;
    EXPECT_EQ(m->unique_id, guint(10 + frame)) << "the meta of the frame it encodes";
    EXPECT_EQ(m->levels[0].data, out.data[frame]) << "data shared, not copied";
    EXPECT_EQ(m->frame_width, guint(kW));
  }
}

TEST(FeatureMetaThroughElements, JpegencCopiesItOntoEncodedFrames) {
  REQUIRE_ELEMENTS("videoconvert", "jpegenc");
  expect_meta_on_encoded_frames("jpegenc", "image/jpeg", 3);
}

TEST(FeatureMetaThroughElements, X264encCopiesItOntoEncodedFrames) {
  REQUIRE_ELEMENTS("videoconvert", "x264enc");
  expect_meta_on_encoded_frames("x264enc speed-preset=ultrafast", "video/x-h264", 4);
}

}  // namespace
