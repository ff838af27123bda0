// SPDX-License-Identifier: Apache-2.0
// featureoverlay: GstHarness tests with feature metas built directly through the meta API on
// small frames: a known energy pattern (one hot cell) must heat exactly the frame region the
// meta's geometry maps it to, in every packed RGB format.
#include <gst/check/gstharness.h>
#include <gst/controller/gstdirectcontrolbinding.h>
#include <gst/controller/gstinterpolationcontrolsource.h>
#include <gst/controller/gsttriggercontrolsource.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

// Byte layout of each format: offsets of R, G, B in a pixel, the offset of the alpha/padding byte
// (-1: none) and the pixel size. Written out here, independent of GstVideoFormatInfo.
struct Format {
  const char* name;
  int r, g, b, a, size;
};
const Format kFormats[] = {
    {"RGB", 0, 1, 2, -1, 3},  {"BGR", 2, 1, 0, -1, 3},  {"RGBx", 0, 1, 2, 3, 4}, {"BGRx", 2, 1, 0, 3, 4},
    {"xRGB", 1, 2, 3, 0, 4},  {"xBGR", 3, 2, 1, 0, 4},  {"RGBA", 0, 1, 2, 3, 4}, {"BGRA", 2, 1, 0, 3, 4},
    {"ARGB", 1, 2, 3, 0, 4},  {"ABGR", 3, 2, 1, 0, 4},
};
const Format& format(const std::string& name) {
  for (const auto& f : kFormats)
    if (name == f.name) return f;
  throw std::runtime_error("no format " + name);
}

using RGB = std::array<int, 3>;

// A frame of `fmt`, `w` x `h`, rows padded to 4 bytes as GStreamer's default video layout.
struct Frame {
  const Format* fmt;
  int w, h, stride;
  std::vector<uint8_t> bytes;

  Frame(const Format& f, int width, int height) : fmt(&f), w(width), h(height) {
    stride = (w * f.size + 3) & ~3;
    bytes.assign(static_cast<std::size_t>(stride) * h, 0);
  }
  uint8_t* px(int x, int y) { return bytes.data() + static_cast<std::size_t>(y) * stride + static_cast<std::size_t>(x) * fmt->size; }
  void set(int x, int y, RGB c, int a = 77) {
    uint8_t* p = px(x, y);
    p[fmt->r] = static_cast<uint8_t>(c[0]);
    p[fmt->g] = static_cast<uint8_t>(c[1]);
    p[fmt->b] = static_cast<uint8_t>(c[2]);
    if (fmt->a >= 0) p[fmt->a] = static_cast<uint8_t>(a);
  }
  RGB get(int x, int y) {
    uint8_t* p = px(x, y);
    return {p[fmt->r], p[fmt->g], p[fmt->b]};
  }
  int alpha(int x, int y) { return px(x, y)[fmt->a]; }
  void fill(RGB c) {
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) set(x, y, c);
  }
  std::string caps() const {
    return std::string("video/x-raw, format=(string)") + fmt->name + ", width=(int)" + std::to_string(w) +
           ", height=(int)" + std::to_string(h) + ", framerate=(fraction)30/1";
  }
  GstBuffer* buffer() const {
    GstBuffer* b = gst_buffer_new_allocate(nullptr, bytes.size(), nullptr);
    gst_buffer_fill(b, 0, bytes.data(), bytes.size());
    GST_BUFFER_PTS(b) = 0;
    return b;
  }
  void read(GstBuffer* b) {
    ASSERT_EQ(gst_buffer_get_size(b), bytes.size());
    gst_buffer_extract(b, 0, bytes.data(), bytes.size());
  }
};

// A level whose cells are all 0 except some, given as (row, col) -> channel values.
struct Cell {
  std::size_t row, col;
  std::vector<float> values;
};
struct LevelDesc {
  std::string name;
  std::size_t C, H, W;
  guint stride;
  std::vector<Cell> cells;
  GstFeatureDType dtype = GST_FEATURE_DTYPE_FLOAT32;
};
struct Geometry {
  guint frame_w = 64, frame_h = 48, input_w = 64, input_h = 48, padded_w = 64, padded_h = 48;
  double scale_x = 1.0, scale_y = 1.0;
};

void add_meta(GstBuffer* buf, const Geometry& g, const std::vector<LevelDesc>& levels, guint unique_id = 0) {
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  ASSERT_NE(meta, nullptr);
  meta->unique_id = unique_id;
  meta->frame_width = g.frame_w;
  meta->frame_height = g.frame_h;
  meta->input_width = g.input_w;
  meta->input_height = g.input_h;
  meta->padded_width = g.padded_w;
  meta->padded_height = g.padded_h;
  meta->scale_x = g.scale_x;
  meta->scale_y = g.scale_y;
  for (const auto& d : levels) {
    std::vector<float> v(d.C * d.H * d.W, 0.f);
    for (const auto& c : d.cells)
      for (std::size_t ch = 0; ch < c.values.size(); ++ch) v[(ch * d.H + c.row) * d.W + c.col] = c.values[ch];
    const std::size_t esize = d.dtype == GST_FEATURE_DTYPE_FLOAT32 ? 4 : 2;
    GstBuffer* data = gst_buffer_new_allocate(nullptr, v.size() * esize, nullptr);
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(data, &map, GST_MAP_WRITE));
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (esize == 4) {
        std::memcpy(map.data + 4 * i, &v[i], 4);
      } else {
        uint16_t hbits = gst_feature_dtype_float32_to_float16(v[i]);
        std::memcpy(map.data + 2 * i, &hbits, 2);
      }
    }
    gst_buffer_unmap(data, &map);
    const gsize dims[4] = {1, d.C, d.H, d.W};
    ASSERT_NE(gst_feature_meta_add_level(meta, d.name.c_str(), d.dtype, dims, nullptr, d.stride, GST_FEATURE_DEVICE_CPU,
                                         0, data, 0),
              nullptr);
  }
}

GstStaticPadTemplate kSrc = GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);
GstStaticPadTemplate kSink = GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

// Releases a bus given to an element: the messages still queued on it hold refs to the element,
// which holds the bus, so they are dropped (flushing) before the bus is unreffed.
struct BusRelease {
  void operator()(GstBus* bus) const {
    gst_bus_set_flushing(bus, TRUE);
    gst_object_unref(bus);
  }
};
using BusPtr = std::unique_ptr<GstBus, BusRelease>;

// Runs `in` (with the metas `decorate` adds) through a featureoverlay configured by `setup`; with
// `bus_out`, the element posts on a new bus returned there (release it with BusRelease).
Frame run(const Frame& in, const std::function<void(GstBuffer*)>& decorate,
          const std::function<void(GstElement*)>& setup = nullptr, GstBus** bus_out = nullptr) {
  GstElement* e = gst_element_factory_make("featureoverlay", nullptr);
  EXPECT_NE(e, nullptr) << "featureoverlay is not in the registry";
  if (!e) return in;
  if (setup) setup(e);
  if (bus_out) {
    *bus_out = gst_bus_new();
    gst_element_set_bus(e, *bus_out);
  }
  GstHarness* h = gst_harness_new_empty();
  gst_harness_add_element_full(h, e, &kSrc, "sink", &kSink, "src");
  gst_object_unref(e);
  gst_harness_set_src_caps_str(h, in.caps().c_str());
  GstBuffer* b = in.buffer();
  if (decorate) decorate(b);
  GstBuffer* outb = gst_harness_push_and_pull(h, b);
  Frame out = in;
  EXPECT_NE(outb, nullptr);
  if (outb) {
    out.read(outb);
    gst_buffer_unref(outb);
  }
  gst_harness_teardown(h);
  return out;
}

// The reference pattern: res4 of a 64x48 frame (stride 16, 3 x 4 cells), one hot cell at row 1,
// column 2 (frame pixels x 32..47, y 16..31) with energy |(3, 4)| = 5.
const LevelDesc kHotRes4 = {"res4", 2, 3, 4, 16, {{1, 2, {3.f, 4.f}}}};

void set_alpha(GstElement* e, double a) { g_object_set(e, "alpha", a, nullptr); }

// Jet at 0 is (0, 0, 0.5) -> (0, 0, 128); inferno at 0 is matplotlib's (0.001462, 0.000466, 0.013866) -> (0, 0, 4).
const RGB kJetCold = {0, 0, 128};
const RGB kInfernoCold = {0, 0, 4};

// Pixels outside x 24..55, y 8..39 only see cells of energy 0 (cell centres are at 8 + 16 k; a
// pixel centre x + 0.5 interpolates the two nearest centres); the centre row and column see the
// hot cell.
void expect_hot_region(Frame& out, RGB cold, int x0, int x1, int y0, int y1, int cx, int cy) {
  for (int y = 0; y < out.h; ++y)
    for (int x = 0; x < out.w; ++x)
      if (x < x0 || x > x1 || y < y0 || y > y1) {
        ASSERT_EQ(out.get(x, y), cold) << "pixel " << x << "," << y;
      }
  for (int x = x0; x <= x1; ++x) EXPECT_NE(out.get(x, cy), cold) << "pixel " << x << "," << cy;
  for (int y = y0; y <= y1; ++y) EXPECT_NE(out.get(cx, y), cold) << "pixel " << cx << "," << y;
}

TEST(FeatureOverlay, OneHotCellHeatsItsFrameRegion) {
  Frame in(format("RGB"), 64, 48);
  in.fill({128, 128, 128});
  Frame out = run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); }, [](GstElement* e) { set_alpha(e, 1.0); });
  expect_hot_region(out, kJetCold, 24, 55, 8, 39, 39, 23);
  // the four pixels around the cell centre (40, 24) are the hottest and equal: jet near its top
  // is red only (t = 0.9385 -> red 0.77)
  const RGB hot = out.get(39, 23);
  EXPECT_EQ(out.get(40, 23), hot);
  EXPECT_EQ(out.get(39, 24), hot);
  EXPECT_EQ(out.get(40, 24), hot);
  EXPECT_GE(hot[0], 150);
  EXPECT_EQ(hot[1], 0);
  EXPECT_EQ(hot[2], 0);
  // symmetric about the centre
  EXPECT_EQ(out.get(30, 23), out.get(49, 24));
  EXPECT_EQ(out.get(39, 12), out.get(40, 35));
}

TEST(FeatureOverlay, InfernoColormap) {
  Frame in(format("RGB"), 64, 48);
  in.fill({128, 128, 128});
  Frame out = run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); }, [](GstElement* e) {
    set_alpha(e, 1.0);
    gst_util_set_object_arg(G_OBJECT(e), "colormap", "inferno");
  });
  expect_hot_region(out, kInfernoCold, 24, 55, 8, 39, 39, 23);
  const RGB hot = out.get(39, 23);  // inferno near its top: light yellow, R > G > B
  EXPECT_GT(hot[0], hot[1]);
  EXPECT_GT(hot[1], hot[2]);
  EXPECT_GE(hot[0], 240);
}

TEST(FeatureOverlay, AlphaZeroLeavesPixelsUnchanged) {
  Frame in(format("BGRx"), 64, 48);
  std::mt19937 rng(1);
  for (auto& byte : in.bytes) byte = static_cast<uint8_t>(rng());
  Frame out = run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); }, [](GstElement* e) { set_alpha(e, 0.0); });
  EXPECT_EQ(out.bytes, in.bytes);
}

TEST(FeatureOverlay, AlphaOneReplacesPixels) {
  std::mt19937 rng(2);
  Frame a(format("RGB"), 64, 48), b(format("RGB"), 64, 48);
  for (auto& byte : a.bytes) byte = static_cast<uint8_t>(rng());
  b.fill({255, 255, 255});
  auto meta = [](GstBuffer* buf) { add_meta(buf, Geometry{}, {kHotRes4}); };
  auto one = [](GstElement* e) { set_alpha(e, 1.0); };
  Frame oa = run(a, meta, one), ob = run(b, meta, one);
  EXPECT_EQ(oa.bytes, ob.bytes) << "with alpha 1 the input does not show";
  EXPECT_EQ(oa.get(0, 0), kJetCold);
}

TEST(FeatureOverlay, DefaultAlphaBlendsHalfway) {
  Frame in(format("RGB"), 64, 48);
  in.fill({100, 101, 50});
  Frame out = run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); });
  // round(0.5 * pixel + 0.5 * jet(0)) = (50, 50.5 -> 51, 89)
  EXPECT_EQ(out.get(0, 0), (RGB{50, 51, 89}));
  double alpha = 0;
  GstElement* e = gst_element_factory_make("featureoverlay", nullptr);
  g_object_get(e, "alpha", &alpha, nullptr);
  EXPECT_EQ(alpha, 0.5);
  gst_object_unref(e);
}

TEST(FeatureOverlay, EveryFormat) {
  Frame ref_in(format("RGB"), 64, 48);
  ref_in.fill({200, 100, 50});
  auto meta = [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); };
  Frame ref = run(ref_in, meta);
  for (const Format& f : kFormats) {
    SCOPED_TRACE(f.name);
    Frame in(f, 64, 48);
    in.fill({200, 100, 50});
    Frame out = run(in, meta);
    EXPECT_EQ(out.get(0, 0), (RGB{100, 50, 89}));  // round((200, 100, 50) / 2 + (0, 0, 128) / 2)
    for (int y = 0; y < 48; ++y)
      for (int x = 0; x < 64; ++x) {
        ASSERT_EQ(out.get(x, y), ref.get(x, y)) << "pixel " << x << "," << y;
        if (f.a >= 0) {
          ASSERT_EQ(out.alpha(x, y), 77) << "the alpha/padding byte is kept";
        }
      }
  }
}

// The first message of @types on @bus, the others before it dropped; NULL when there is none. Not
// gst_bus_pop_filtered: GStreamer 1.26 drops the other messages under the bus lock, and a dropped
// message holding the last reference to a torn-down pad unlinks that pad, which posts to the same
// bus: a deadlock.
GstMessage* pop_first(GstBus* bus, GstMessageType types) {
  while (GstMessage* m = gst_bus_pop(bus)) {
    if (GST_MESSAGE_TYPE(m) & types) return m;
    gst_message_unref(m);
  }
  return nullptr;
}

TEST(FeatureOverlay, FramesWithoutMatchingMetaPassUnchanged) {
  Frame in(format("RGBA"), 64, 48);
  std::mt19937 rng(3);
  for (auto& byte : in.bytes) byte = static_cast<uint8_t>(rng());
  auto one = [](GstElement* e) { set_alpha(e, 1.0); };
  EXPECT_EQ(run(in, nullptr, one).bytes, in.bytes) << "no meta";
  EXPECT_EQ(run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}, 3); },
                [](GstElement* e) { g_object_set(e, "alpha", 1.0, "unique-id", 4, nullptr); })
                .bytes,
            in.bytes)
      << "meta of another producer";
  EXPECT_NE(run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}, 3); },
                [](GstElement* e) { g_object_set(e, "alpha", 1.0, "unique-id", 3, nullptr); })
                .bytes,
            in.bytes)
      << "meta of that producer";
  GstBus* raw_bus = nullptr;
  EXPECT_EQ(run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); },
                [](GstElement* e) { g_object_set(e, "alpha", 1.0, "level", "res5", nullptr); }, &raw_bus)
                .bytes,
            in.bytes)
      << "meta without the level";
  BusPtr bus(raw_bus);
  ASSERT_NE(bus, nullptr);
  GstMessage* m = pop_first(bus.get(), GST_MESSAGE_WARNING);
  ASSERT_NE(m, nullptr) << "a missing level is reported once as a warning";
  GError* err = nullptr;
  gst_message_parse_warning(m, &err, nullptr);
  EXPECT_NE(std::string(err->message).find("res5"), std::string::npos) << err->message;
  g_error_free(err);
  gst_message_unref(m);
}

TEST(FeatureOverlay, GeometryWithScaleAndPadding) {
  // The same picture as the reference through scale 0.5 and stride 8: input 32 x 24 padded to
  // 40 x 32 (5 x 4 cells). The padding cells (column 4, row 3) hold large energies: they are
  // outside the frame, so they must neither be drawn nor change the normalisation.
  Frame in(format("RGB"), 64, 48);
  in.fill({128, 128, 128});
  auto one = [](GstElement* e) { set_alpha(e, 1.0); };
  Frame ref = run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); }, one);
  Geometry g;
  g.input_w = 32;
  g.input_h = 24;
  g.padded_w = 40;
  g.padded_h = 32;
  g.scale_x = g.scale_y = 0.5;
  const LevelDesc padded = {"res3", 2, 4, 5, 8, {{1, 2, {3.f, 4.f}}, {0, 4, {100.f, 0.f}}, {3, 1, {0.f, 100.f}}, {3, 4, {50.f, 50.f}}}};
  Frame out = run(in, [&](GstBuffer* b) { add_meta(b, g, {padded}); }, one);
  EXPECT_EQ(out.bytes, ref.bytes);
  expect_hot_region(out, kJetCold, 24, 55, 8, 39, 39, 23);
}

TEST(FeatureOverlay, FrameScaledAfterTheBackbone) {
  // The meta describes a 64 x 48 frame; the video is 128 x 96 (videoscale in between): the hot
  // region doubles.
  Frame in(format("RGB"), 128, 96);
  in.fill({128, 128, 128});
  Frame out = run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); }, [](GstElement* e) { set_alpha(e, 1.0); });
  expect_hot_region(out, kJetCold, 48, 111, 16, 79, 79, 47);
}

TEST(FeatureOverlay, LevelChoice) {
  Frame in(format("RGB"), 64, 48);
  in.fill({128, 128, 128});
  const LevelDesc res2 = {"res2", 2, 12, 16, 4, {{10, 1, {1.f, 0.f}}}};
  const LevelDesc res3 = {"res3", 2, 6, 8, 8, {{0, 7, {1.f, 0.f}}}};
  const LevelDesc res5 = {"res5", 2, 2, 2, 32, {{0, 0, {0.f, 2.f}}}};
  auto with = [](std::vector<LevelDesc> l) { return [l](GstBuffer* b) { add_meta(b, Geometry{}, l); }; };
  auto level = [](const char* name) { return [name](GstElement* e) { g_object_set(e, "alpha", 1.0, "level", name, nullptr); }; };
  auto dflt = [](GstElement* e) { set_alpha(e, 1.0); };
  // res4 when present
  Frame d = run(in, with({res2, kHotRes4, res5}), dflt);
  EXPECT_EQ(d.bytes, run(in, with({res2, kHotRes4, res5}), level("res4")).bytes);
  EXPECT_NE(d.bytes, run(in, with({res2, kHotRes4, res5}), level("res2")).bytes);
  // else the coarsest level
  Frame c = run(in, with({res2, res5, res3}), dflt);
  EXPECT_EQ(c.bytes, run(in, with({res2, res5, res3}), level("res5")).bytes);
  EXPECT_NE(c.bytes, run(in, with({res2, res5, res3}), level("res3")).bytes);
  // an FPN's pyramid: p4 (stride 16, as res4), not the coarsest p6
  LevelDesc p3 = res3, p4 = kHotRes4, p5 = res5;
  p3.name = "p3";
  p4.name = "p4";
  p5.name = "p5";
  const LevelDesc p6 = {"p6", 2, 1, 1, 64, {{0, 0, {3.f, 0.f}}}};
  Frame f = run(in, with({p3, p4, p5, p6}), dflt);
  EXPECT_EQ(f.bytes, run(in, with({p3, p4, p5, p6}), level("p4")).bytes);
  EXPECT_EQ(f.bytes, d.bytes) << "p4 draws as res4 did";
  EXPECT_NE(f.bytes, run(in, with({p3, p4, p5, p6}), level("p6")).bytes);
  EXPECT_NE(f.bytes, run(in, with({p3, p4, p5, p6}), level("p3")).bytes);
}

TEST(FeatureOverlay, FixedRange) {
  Frame in(format("RGB"), 64, 48);
  in.fill({128, 128, 128});
  auto meta = [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); };
  // per frame the hottest pixel is near the top of jet (red); with the range 0..10 the energy 5
  // of the cell is near the middle, where jet is green (1 on 0.375..0.64)
  Frame per_frame = run(in, meta, [](GstElement* e) { set_alpha(e, 1.0); });
  Frame fixed = run(in, meta, [](GstElement* e) { g_object_set(e, "alpha", 1.0, "range-min", 0.0, "range-max", 10.0, nullptr); });
  EXPECT_EQ(per_frame.get(39, 23)[1], 0);
  EXPECT_EQ(fixed.get(39, 23)[1], 255);
  EXPECT_EQ(fixed.get(0, 0), kJetCold);
  // energies above the range are clamped to its top
  Frame clamped = run(in, meta, [](GstElement* e) { g_object_set(e, "alpha", 1.0, "range-min", 0.0, "range-max", 1.0, nullptr); });
  EXPECT_EQ(clamped.get(39, 23), clamped.get(40, 24));
  EXPECT_EQ(clamped.get(39, 23), (RGB{128, 0, 0})) << "jet at 1 is (0.5, 0, 0)";
}

TEST(FeatureOverlay, HalfPrecisionLevelDrawsTheSame) {
  Frame in(format("RGB"), 64, 48);
  in.fill({128, 128, 128});
  LevelDesc half = kHotRes4;
  half.dtype = GST_FEATURE_DTYPE_FLOAT16;
  auto one = [](GstElement* e) { set_alpha(e, 1.0); };
  EXPECT_EQ(run(in, [&](GstBuffer* b) { add_meta(b, Geometry{}, {half}); }, one).bytes,
            run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); }, one).bytes);
}

// ---- controlled properties: values at each buffer's stream time ----

// Runs one featureoverlay (configured by `setup`) over copies of `in` at `pts`, after the segment
// `seg`; the output frames in order.
std::vector<Frame> run_in_segment(const Frame& in, const GstSegment& seg, const std::vector<GstClockTime>& pts,
                                  const std::function<void(GstElement*)>& setup) {
  std::vector<Frame> outs;
  GstElement* e = gst_element_factory_make("featureoverlay", nullptr);
  EXPECT_NE(e, nullptr);
  if (!e) return outs;
  setup(e);
  GstHarness* h = gst_harness_new_empty();
  gst_harness_add_element_full(h, e, &kSrc, "sink", &kSink, "src");
  gst_object_unref(e);
  gst_harness_set_src_caps_str(h, in.caps().c_str());
  EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_segment(&seg)));
  for (GstClockTime t : pts) {
    GstBuffer* b = in.buffer();
    GST_BUFFER_PTS(b) = t;
    add_meta(b, Geometry{}, {kHotRes4});
    GstBuffer* o = gst_harness_push_and_pull(h, b);
    EXPECT_NE(o, nullptr);
    if (!o) break;
    Frame out = in;
    out.read(o);
    gst_buffer_unref(o);
    outs.push_back(out);
  }
  gst_harness_teardown(h);
  return outs;
}

// A segment whose stream time differs from both the pts and the running time: stream time =
// pts - 1 s, running time = pts + 4 s.
GstSegment shifted_segment() {
  GstSegment seg;
  gst_segment_init(&seg, GST_FORMAT_TIME);
  seg.start = GST_SECOND;
  seg.time = 0;
  seg.base = 5 * GST_SECOND;
  return seg;
}

TEST(FeatureOverlay, AlphaFollowsAnInterpolationControlSource) {
  Frame in(format("RGB"), 64, 48);
  in.fill({100, 150, 200});
  // alpha from 0 at stream time 0 linearly to 1 at 1 s
  auto bind = [](GstElement* e) {
    GstControlSource* cs = gst_interpolation_control_source_new();
    g_object_set(cs, "mode", GST_INTERPOLATION_MODE_LINEAR, nullptr);
    gst_timed_value_control_source_set(GST_TIMED_VALUE_CONTROL_SOURCE(cs), 0, 0.0);
    gst_timed_value_control_source_set(GST_TIMED_VALUE_CONTROL_SOURCE(cs), GST_SECOND, 1.0);
    ASSERT_TRUE(gst_object_add_control_binding(GST_OBJECT(e), gst_direct_control_binding_new(GST_OBJECT(e), "alpha", cs)));
    gst_object_unref(cs);
  };
  const std::vector<GstClockTime> pts = {GST_SECOND, GST_SECOND * 5 / 4, GST_SECOND * 3 / 2, 2 * GST_SECOND};
  const double alphas[] = {0.0, 0.25, 0.5, 1.0};  // at stream times 0, 0.25, 0.5, 1 s
  std::vector<Frame> outs = run_in_segment(in, shifted_segment(), pts, bind);
  ASSERT_EQ(outs.size(), pts.size());
  EXPECT_EQ(outs[0].bytes, in.bytes) << "alpha 0 at stream time 0";
  for (std::size_t i = 0; i < pts.size(); ++i) {
    Frame ref = run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); },
                    [&](GstElement* e) { set_alpha(e, alphas[i]); });
    EXPECT_EQ(outs[i].bytes, ref.bytes) << "frame " << i << ": drawn as with alpha " << alphas[i];
  }
  EXPECT_NE(outs[1].bytes, outs[2].bytes);
}

TEST(FeatureOverlay, RangeMaxFollowsATriggerControlSource) {
  Frame in(format("RGB"), 64, 48);
  in.fill({128, 128, 128});
  // range-max 10 from stream time 0, 1 from 0.5 s (absolute values; range-min stays 0)
  auto bind = [](GstElement* e) {
    g_object_set(e, "alpha", 1.0, "range-min", 0.0, nullptr);
    GstControlSource* cs = gst_trigger_control_source_new();
    gst_timed_value_control_source_set(GST_TIMED_VALUE_CONTROL_SOURCE(cs), 0, 10.0);
    gst_timed_value_control_source_set(GST_TIMED_VALUE_CONTROL_SOURCE(cs), GST_SECOND / 2, 1.0);
    ASSERT_TRUE(gst_object_add_control_binding(
        GST_OBJECT(e), gst_direct_control_binding_new_absolute(GST_OBJECT(e), "range-max", cs)));
    gst_object_unref(cs);
  };
  const std::vector<GstClockTime> pts = {GST_SECOND, GST_SECOND * 5 / 4, GST_SECOND * 3 / 2};
  std::vector<Frame> outs = run_in_segment(in, shifted_segment(), pts, bind);
  ASSERT_EQ(outs.size(), pts.size());
  auto fixed = [&](double max) {
    return run(in, [](GstBuffer* b) { add_meta(b, Geometry{}, {kHotRes4}); },
               [max](GstElement* e) { g_object_set(e, "alpha", 1.0, "range-min", 0.0, "range-max", max, nullptr); });
  };
  const Frame ten = fixed(10.0), one = fixed(1.0);
  EXPECT_NE(ten.bytes, one.bytes);
  EXPECT_EQ(outs[0].bytes, ten.bytes) << "triggered at stream time 0";
  EXPECT_EQ(outs[1].bytes, ten.bytes) << "no trigger at 0.25 s: the value stays";
  EXPECT_EQ(outs[2].bytes, one.bytes) << "triggered at 0.5 s";
}

// End to end: the metas of resnetbackbone (narrow R-50 of tests/data/plugin, inference-interval
// 2) drive the overlay: frames with features change, the skipped frame passes unchanged, and the
// default level is the backbone's res4.
TEST(FeatureOverlay, EndToEndWithResnetBackbone) {
  GstElementFactory* f = gst_element_factory_find("resnetbackbone");
  if (!f) GTEST_SKIP() << "resnetbackbone is not in the registry";
  gst_object_unref(f);
  const std::string data = std::string(BACKBONE_TEST_DATA_DIR) + "/plugin/";
  const std::string launch = "resnetbackbone inference-interval=2 config-file=" + data + "narrow.yaml weights=" + data +
                             "narrow.pth ! featureoverlay alpha=1.0 name=ov";
  GstHarness* h = gst_harness_new_parse(launch.c_str());
  ASSERT_NE(h, nullptr);
  Frame in(format("RGBx"), 64, 48);
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x) in.set(x, y, {x * 4, y * 5, (x * y) % 256}, 9);
  gst_harness_set_src_caps_str(h, in.caps().c_str());
  std::vector<Frame> outs;
  for (int i = 0; i < 2; ++i) {
    GstBuffer* o = gst_harness_push_and_pull(h, in.buffer());
    ASSERT_NE(o, nullptr);
    Frame out = in;
    out.read(o);
    outs.push_back(out);
    gst_buffer_unref(o);
  }
  EXPECT_NE(outs[0].bytes, in.bytes) << "frame 0 has features";
  EXPECT_EQ(outs[1].bytes, in.bytes) << "frame 1 was skipped by inference-interval";
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x) ASSERT_EQ(outs[0].alpha(x, y), 9);
  GstElement* ov = gst_bin_get_by_name(GST_BIN(h->element), "ov");
  ASSERT_NE(ov, nullptr);
  g_object_set(ov, "level", "res2", nullptr);
  GstBuffer* o = gst_harness_push_and_pull(h, in.buffer());
  ASSERT_NE(o, nullptr);
  Frame res2 = in;
  res2.read(o);
  gst_buffer_unref(o);
  EXPECT_NE(res2.bytes, outs[0].bytes) << "res2 draws another picture than the default res4";
  g_object_set(ov, "level", "res4", nullptr);
  o = gst_harness_push_and_pull(h, in.buffer());  // frame 3: skipped
  ASSERT_NE(o, nullptr);
  gst_buffer_unref(o);
  o = gst_harness_push_and_pull(h, in.buffer());  // frame 4: res4
  ASSERT_NE(o, nullptr);
  Frame res4 = in;
  res4.read(o);
  gst_buffer_unref(o);
  EXPECT_EQ(res4.bytes, outs[0].bytes) << "the default level is res4";
  gst_object_unref(ov);
  gst_harness_teardown(h);
}

}  // namespace
