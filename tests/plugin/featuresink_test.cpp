// SPDX-License-Identifier: Apache-2.0
// featuresink: GstHarness tests with feature metas built directly through the meta API; the files
// are read back with the backbone library's own safetensors reader (backbone::read_checkpoint_file).
#include <gst/check/gstharness.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backbone/checkpoint.h"
#include "backbone/tensor.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kCaps = "video/x-raw, format=(string)RGB, width=(int)64, height=(int)48, framerate=(fraction)30/1";

struct LevelDesc {
  std::string name;
  std::size_t C, H, W;
  guint stride;
  GstFeatureDType dtype = GST_FEATURE_DTYPE_FLOAT32;
  std::size_t row_pad = 0;  // extra elements per row: a strided (non-contiguous) level
};

// The value written at (frame, level, c, y, x): distinct everywhere, exact in float32.
float value_of(int frame, int level, std::size_t c, std::size_t y, std::size_t x) {
  return static_cast<float>(frame * 1000 + level * 100 + c * 10) + static_cast<float>(y) + 0.25f * static_cast<float>(x);
}

void add_meta(GstBuffer* buf, int frame, const std::vector<LevelDesc>& levels, guint unique_id = 0,
              const char* model = "R-50-narrow", float (*fn)(int, int, std::size_t, std::size_t, std::size_t) = value_of) {
  GstFeatureMeta* meta = gst_buffer_add_feature_meta(buf);
  ASSERT_NE(meta, nullptr);
  meta->unique_id = unique_id;
  gst_feature_meta_set_model_name(meta, model);
  meta->frame_width = 64;
  meta->frame_height = 48;
  meta->input_width = 64;
  meta->input_height = 48;
  meta->padded_width = 64;
  meta->padded_height = 64;
  meta->scale_x = meta->scale_y = 1.0;
  for (std::size_t li = 0; li < levels.size(); ++li) {
    const LevelDesc& d = levels[li];
    const std::size_t rw = d.W + d.row_pad;
    const std::size_t esize = d.dtype == GST_FEATURE_DTYPE_FLOAT32 ? 4 : 2;
    const std::size_t n = d.C * d.H * rw;
    GstBuffer* data = gst_buffer_new_allocate(nullptr, n * esize, nullptr);
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(data, &map, GST_MAP_WRITE));
    std::memset(map.data, 0xff, map.size);  // padding holds NaNs: a reader of it would show
    for (std::size_t c = 0; c < d.C; ++c)
      for (std::size_t y = 0; y < d.H; ++y)
        for (std::size_t x = 0; x < d.W; ++x) {
          const std::size_t i = (c * d.H + y) * rw + x;
          const float v = fn(frame, static_cast<int>(li), c, y, x);
          if (esize == 4) {
            std::memcpy(map.data + i * 4, &v, 4);
          } else {
            const uint16_t h = d.dtype == GST_FEATURE_DTYPE_FLOAT16 ? backbone::float_to_half(v) : backbone::float_to_bfloat16(v);
            std::memcpy(map.data + i * 2, &h, 2);
          }
        }
    gst_buffer_unmap(data, &map);
    const gsize dims[4] = {1, d.C, d.H, d.W};
    const gsize strides[4] = {d.C * d.H * rw, d.H * rw, rw, 1};
    ASSERT_NE(gst_feature_meta_add_level(meta, d.name.c_str(), d.dtype, dims, d.row_pad ? strides : nullptr, d.stride,
                                         GST_FEATURE_DEVICE_CPU, 0, data, 0),
              nullptr);
  }
}

GstBuffer* make_frame(GstClockTime pts) {
  GstBuffer* buf = gst_buffer_new_allocate(nullptr, 64 * 48 * 3, nullptr);
  gst_buffer_memset(buf, 0, 0x40, 64 * 48 * 3);
  GST_BUFFER_PTS(buf) = pts;
  GST_BUFFER_DURATION(buf) = GST_SECOND / 30;
  return buf;
}

GstClockTime pts_of(int i) { return static_cast<GstClockTime>(i) * GST_SECOND / 30; }

const std::vector<LevelDesc> kLevels = {{"res2", 3, 4, 5, 4}, {"res3", 2, 2, 3, 8}};

GstStaticPadTemplate kSrcTemplate = GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

class FeatureSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gchar* d = g_dir_make_tmp("featuresink-XXXXXX", nullptr);
    ASSERT_NE(d, nullptr);
    root_ = d;
    g_free(d);
    dir_ = root_ + "/out/nested";  // created by the element
  }
  void TearDown() override {
    if (h_) gst_harness_teardown(h_);
    if (bus_) {
      // The messages still queued on the bus hold refs to the element, which holds the bus: drop
      // them, or element, bus, pads and clock stay alive in a cycle.
      gst_bus_set_flushing(bus_, TRUE);
      gst_object_unref(bus_);
    }
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // A harness around a featuresink configured by `setup` before it starts.
  void start(std::function<void(GstElement*)> setup = nullptr, const char* caps = kCaps) {
    GstElement* e = gst_element_factory_make("featuresink", nullptr);
    ASSERT_NE(e, nullptr) << "featuresink is not in the registry";
    g_object_set(e, "location", dir_.c_str(), nullptr);
    if (setup) setup(e);
    bus_ = gst_bus_new();
    gst_element_set_bus(e, bus_);
    h_ = gst_harness_new_empty();
    gst_harness_add_element_full(h_, e, &kSrcTemplate, "sink", nullptr, nullptr);
    gst_object_unref(e);
    gst_harness_set_src_caps_str(h_, caps);
  }

  GstFlowReturn push(int i, const std::vector<LevelDesc>& levels = kLevels, GstClockTime pts = GST_CLOCK_TIME_NONE - 1) {
    GstBuffer* b = make_frame(pts == GST_CLOCK_TIME_NONE - 1 ? pts_of(i) : pts);
    if (!levels.empty()) add_meta(b, i, levels);
    return gst_harness_push(h_, b);
  }

  void eos() { ASSERT_TRUE(gst_harness_push_event(h_, gst_event_new_eos())); }

  std::string error_text() {
    GstMessage* m = gst_bus_pop_filtered(bus_, GST_MESSAGE_ERROR);
    if (!m) return "";
    GError* err = nullptr;
    gchar* dbg = nullptr;
    gst_message_parse_error(m, &err, &dbg);
    std::string s = std::string(g_quark_to_string(err->domain)) + ": " + err->message + " | " + (dbg ? dbg : "");
    g_error_free(err);
    g_free(dbg);
    gst_message_unref(m);
    return s;
  }

  std::set<std::string> names() const {
    std::set<std::string> out;
    if (!fs::exists(dir_)) return out;
    for (const auto& e : fs::directory_iterator(dir_)) out.insert(e.path().filename().string());
    return out;
  }

  std::map<std::string, backbone::Tensor> read(const std::string& name) const {
    auto raw = backbone::read_checkpoint_file(dir_ + "/" + name, backbone::CheckpointFormat::SafeTensors);
    std::map<std::string, backbone::Tensor> out;
    for (auto& kv : raw.tensors) out[kv.first] = kv.second;
    return out;
  }

  json header(const std::string& name) const {
    std::ifstream f(dir_ + "/" + name, std::ios::binary);
    unsigned char len[8];
    f.read(reinterpret_cast<char*>(len), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    std::string text(n, '\0');
    f.read(text.data(), static_cast<std::streamsize>(n));
    EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
    return json::parse(text);
  }

  json index() const {
    std::ifstream f(dir_ + "/index.json");
    return json::parse(f);
  }

  std::string root_, dir_;
  GstHarness* h_ = nullptr;
  GstBus* bus_ = nullptr;
};

// Checks a level tensor read back against value_of for frames `frames` (file order).
void expect_level(const backbone::Tensor& t, const LevelDesc& d, int level_index, const std::vector<int>& frames) {
  ASSERT_TRUE(t.defined());
  ASSERT_EQ(t.shape(), (backbone::Shape{static_cast<int64_t>(frames.size()), static_cast<int64_t>(d.C),
                                        static_cast<int64_t>(d.H), static_cast<int64_t>(d.W)}));
  backbone::Tensor f = t.to(backbone::DType::Float32);
  const float* p = f.data_ptr<float>();
  std::size_t k = 0;
  for (int fr : frames)
    for (std::size_t c = 0; c < d.C; ++c)
      for (std::size_t y = 0; y < d.H; ++y)
        for (std::size_t x = 0; x < d.W; ++x, ++k)
          ASSERT_EQ(p[k], value_of(fr, level_index, c, y, x)) << d.name << " frame " << fr << " c" << c << " y" << y << " x" << x;
}

TEST_F(FeatureSinkTest, WritesLevelsPtsAndMetadataAsFloat32) {
  start();
  for (int i = 0; i < 4; ++i) ASSERT_EQ(push(i), GST_FLOW_OK);
  ASSERT_EQ(push(4, kLevels, GST_CLOCK_TIME_NONE), GST_FLOW_OK);
  eos();

  EXPECT_EQ(names(), (std::set<std::string>{"features-00000.safetensors", "index.json"}));
  auto t = read("features-00000.safetensors");
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t["res2"].dtype(), backbone::DType::Float32);
  expect_level(t["res2"], kLevels[0], 0, {0, 1, 2, 3, 4});
  expect_level(t["res3"], kLevels[1], 1, {0, 1, 2, 3, 4});
  ASSERT_EQ(t["pts"].dtype(), backbone::DType::Int64);
  ASSERT_EQ(t["pts"].shape(), (backbone::Shape{5}));
  const int64_t* pts = t["pts"].data_ptr<int64_t>();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pts[i], static_cast<int64_t>(pts_of(i)));
  EXPECT_EQ(pts[4], -1) << "GST_CLOCK_TIME_NONE is written as -1";

  json hdr = header("features-00000.safetensors");
  EXPECT_EQ(hdr["res2"]["dtype"], "F32");
  EXPECT_EQ(hdr["pts"]["dtype"], "I64");
  const json& md = hdr["__metadata__"];
  EXPECT_EQ(md["model_name"], "R-50-narrow");
  EXPECT_EQ(md["unique_id"], "0");
  GstCaps* written = gst_caps_from_string(md["caps"].get<std::string>().c_str());
  GstCaps* sent = gst_caps_from_string(kCaps);
  ASSERT_NE(written, nullptr);
  EXPECT_TRUE(gst_caps_is_equal(written, sent)) << md["caps"];
  gst_caps_unref(written);
  gst_caps_unref(sent);
  EXPECT_EQ(json::parse(md["strides"].get<std::string>()), (json{{"res2", 4}, {"res3", 8}}));
}

TEST_F(FeatureSinkTest, Float16RoundsToNearestEven) {
  // Values whose float16 rounding is known from IEEE 754 binary16 (numpy.float16 gives the same):
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> 1 (even); 1 + 3 * 2^-11 -> 1 + 2^-9 (even);
  // 0.1 -> 0.0999755859375; 1/3 -> 0.333251953125; 65519 -> 65504 (largest finite); 2^-24 stays.
  static const float in[6] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 0.1f, 1.0f / 3.0f, 65519.0f, 0x1p-24f};
  static const float out[6] = {1.0f, 1.0f + 0x1p-9f, 0.0999755859375f, 0.333251953125f, 65504.0f, 0x1p-24f};
  start([](GstElement* e) { gst_util_set_object_arg(G_OBJECT(e), "dtype", "float16"); });
  GstBuffer* b = make_frame(0);
  add_meta(b, 0, {{"res4", 6, 1, 1, 16}}, 0, "R-50",
           [](int, int, std::size_t c, std::size_t, std::size_t) { return in[c]; });
  ASSERT_EQ(gst_harness_push(h_, b), GST_FLOW_OK);
  eos();
  auto t = read("features-00000.safetensors");
  ASSERT_EQ(t["res4"].dtype(), backbone::DType::Float16);
  ASSERT_EQ(t["res4"].shape(), (backbone::Shape{1, 6, 1, 1}));
  backbone::Tensor f = t["res4"].to(backbone::DType::Float32);
  for (int c = 0; c < 6; ++c) EXPECT_EQ(f.data_ptr<float>()[c], out[c]) << "value " << in[c];
  EXPECT_EQ(header("features-00000.safetensors")["res4"]["dtype"], "F16");
  EXPECT_EQ(index()["dtype"], "float16");
  EXPECT_EQ(index()["files"][0]["dtype"], "float16");
}

TEST_F(FeatureSinkTest, ConvertsHalfAndStridedLevels) {
  // bfloat16 and float16 levels written as float32 (frame 0's values of levels 0 and 1 are
  // exact in them: below 16 in steps of 0.25 for bfloat16, below 128 for float16), and a level
  // whose rows are padded (strides describe it, the padding holds NaNs) written without it.
  const std::vector<LevelDesc> levels = {{"res2", 2, 3, 4, 4, GST_FEATURE_DTYPE_BFLOAT16, 1},
                                         {"res3", 2, 2, 2, 8, GST_FEATURE_DTYPE_FLOAT16},
                                         {"res4", 2, 2, 2, 16, GST_FEATURE_DTYPE_FLOAT32, 3}};
  start();
  ASSERT_EQ(push(0, levels), GST_FLOW_OK);
  eos();
  auto t = read("features-00000.safetensors");
  EXPECT_EQ(t["res2"].dtype(), backbone::DType::Float32);
  expect_level(t["res2"], levels[0], 0, {0});
  expect_level(t["res3"], levels[1], 1, {0});
  expect_level(t["res4"], levels[2], 2, {0});
}

TEST_F(FeatureSinkTest, SplitsAtMaxFrames) {
  start([](GstElement* e) { g_object_set(e, "max-frames", 3u, nullptr); });
  for (int i = 0; i < 7; ++i) ASSERT_EQ(push(i), GST_FLOW_OK);
  eos();
  EXPECT_EQ(names(), (std::set<std::string>{"features-00000.safetensors", "features-00001.safetensors",
                                            "features-00002.safetensors", "index.json"}));
  const std::vector<std::vector<int>> expect = {{0, 1, 2}, {3, 4, 5}, {6}};
  json idx = index();
  ASSERT_EQ(idx["files"].size(), 3u);
  for (int f = 0; f < 3; ++f) {
    gchar* name = g_strdup_printf("features-%05d.safetensors", f);
    auto t = read(name);
    expect_level(t["res2"], kLevels[0], 0, expect[f]);
    expect_level(t["res3"], kLevels[1], 1, expect[f]);
    for (std::size_t k = 0; k < expect[f].size(); ++k)
      EXPECT_EQ(t["pts"].data_ptr<int64_t>()[k], static_cast<int64_t>(pts_of(expect[f][k])));
    const json& e = idx["files"][f];
    EXPECT_EQ(e["file"], name);
    EXPECT_EQ(e["first_frame"], expect[f].front());
    EXPECT_EQ(e["last_frame"], expect[f].back());
    EXPECT_EQ(e["frames"], expect[f].size());
    g_free(name);
  }
  EXPECT_EQ(idx["frames"], 7);
}

TEST_F(FeatureSinkTest, SplitsAtShapeChange) {
  const std::vector<LevelDesc> a = kLevels;
  std::vector<LevelDesc> b = kLevels;
  b[1].W = 4;  // only res3 changes
  start();
  ASSERT_EQ(push(0, a), GST_FLOW_OK);
  ASSERT_EQ(push(1, a), GST_FLOW_OK);
  for (int i = 2; i < 5; ++i) ASSERT_EQ(push(i, b), GST_FLOW_OK);
  ASSERT_EQ(push(5, a), GST_FLOW_OK);
  eos();
  json idx = index();
  ASSERT_EQ(idx["files"].size(), 3u);
  EXPECT_EQ(idx["files"][0]["shapes"]["res3"], (json{2, 2, 2, 3}));
  EXPECT_EQ(idx["files"][1]["shapes"]["res3"], (json{3, 2, 2, 4}));
  EXPECT_EQ(idx["files"][1]["shapes"]["res2"], (json{3, 3, 4, 5}));
  EXPECT_EQ(idx["files"][2]["shapes"]["res3"], (json{1, 2, 2, 3}));
  expect_level(read("features-00001.safetensors")["res3"], b[1], 1, {2, 3, 4});
  expect_level(read("features-00002.safetensors")["res2"], a[0], 0, {5});
}

TEST_F(FeatureSinkTest, SplitsAtCapsChange) {
  start();
  ASSERT_EQ(push(0), GST_FLOW_OK);
  gst_harness_set_src_caps_str(h_, "video/x-raw, format=(string)RGB, width=(int)64, height=(int)48, framerate=(fraction)15/1");
  ASSERT_EQ(push(1), GST_FLOW_OK);
  eos();
  json idx = index();
  ASSERT_EQ(idx["files"].size(), 2u);
  EXPECT_NE(idx["files"][0]["caps"].get<std::string>().find("30/1"), std::string::npos);
  EXPECT_NE(idx["files"][1]["caps"].get<std::string>().find("15/1"), std::string::npos);
}

TEST_F(FeatureSinkTest, NewStreamStartsANewFile) {
  start();
  ASSERT_EQ(push(0), GST_FLOW_OK);
  ASSERT_TRUE(gst_harness_push_event(h_, gst_event_new_stream_start("second-stream")));
  ASSERT_EQ(push(1), GST_FLOW_OK);
  eos();
  json idx = index();
  ASSERT_EQ(idx["files"].size(), 2u);
  EXPECT_EQ(idx["files"][0]["stream"], 0);
  EXPECT_EQ(idx["files"][1]["stream"], 1);
  EXPECT_EQ(idx["files"][1]["first_frame"], 1);
}

TEST_F(FeatureSinkTest, IndexListsFilesAndCountsFramesWithoutFeatures) {
  start([](GstElement* e) { g_object_set(e, "max-frames", 2u, nullptr); });
  // frames 1 and 4 have no meta (as resnetbackbone's inference-interval leaves them)
  ASSERT_EQ(push(0), GST_FLOW_OK);
  ASSERT_EQ(push(1, {}), GST_FLOW_OK);
  ASSERT_EQ(push(2), GST_FLOW_OK);
  ASSERT_EQ(push(3), GST_FLOW_OK);
  ASSERT_EQ(push(4, {}), GST_FLOW_OK);
  eos();
  json idx = index();
  EXPECT_EQ(idx["model_name"], "R-50-narrow");
  EXPECT_EQ(idx["unique_id"], 0);
  EXPECT_EQ(idx["dtype"], "float32");
  EXPECT_EQ(idx["frames"], 3);
  EXPECT_EQ(idx["frames_without_features"], 2);
  EXPECT_EQ(idx["frames_seen"], 5);
  ASSERT_EQ(idx["files"].size(), 2u);
  const json& f0 = idx["files"][0];
  EXPECT_EQ(f0["file"], "features-00000.safetensors");
  EXPECT_EQ(f0["first_frame"], 0);
  EXPECT_EQ(f0["last_frame"], 2);
  EXPECT_EQ(f0["frames"], 2);
  EXPECT_EQ(f0["first_pts"], pts_of(0));
  EXPECT_EQ(f0["last_pts"], pts_of(2));
  EXPECT_EQ(f0["shapes"], (json{{"res2", {2, 3, 4, 5}}, {"res3", {2, 2, 2, 3}}}));
  EXPECT_EQ(f0["strides"], (json{{"res2", 4}, {"res3", 8}}));
  EXPECT_EQ(f0["dtype"], "float32");
  EXPECT_EQ(f0["model_name"], "R-50-narrow");
  EXPECT_EQ(f0["unique_id"], 0);
  GstCaps* written = gst_caps_from_string(f0["caps"].get<std::string>().c_str());
  GstCaps* sent = gst_caps_from_string(kCaps);
  EXPECT_TRUE(gst_caps_is_equal(written, sent));
  gst_caps_unref(written);
  gst_caps_unref(sent);
  EXPECT_EQ(idx["files"][1]["first_frame"], 3);
  EXPECT_EQ(idx["files"][1]["last_frame"], 3);
  EXPECT_EQ(idx["files"][1]["frames"], 1);
  expect_level(read("features-00000.safetensors")["res2"], kLevels[0], 0, {0, 2});
}

TEST_F(FeatureSinkTest, WritesAtomically) {
  start([](GstElement* e) { g_object_set(e, "max-frames", 2u, nullptr); });
  ASSERT_EQ(push(0), GST_FLOW_OK);
  // a crash now would leave only temporary names: no final-named partial file
  for (const auto& n : names()) EXPECT_TRUE(n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) << n;
  EXPECT_FALSE(fs::exists(dir_ + "/features-00000.safetensors"));
  ASSERT_EQ(push(1), GST_FLOW_OK);
  ASSERT_EQ(push(2), GST_FLOW_OK);  // starts file 1: file 0 is complete
  EXPECT_TRUE(fs::exists(dir_ + "/features-00000.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ + "/features-00001.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ + "/index.json")) << "the index is written once, at the end";
  eos();
  for (const auto& n : names()) EXPECT_EQ(n.find(".tmp"), std::string::npos) << n << " left after EOS";
  EXPECT_EQ(names(), (std::set<std::string>{"features-00000.safetensors", "features-00001.safetensors", "index.json"}));
}

TEST_F(FeatureSinkTest, StopWithoutEosCompletesTheOpenFile) {
  start();
  ASSERT_EQ(push(0), GST_FLOW_OK);
  ASSERT_EQ(push(1), GST_FLOW_OK);
  gst_harness_teardown(h_);
  h_ = nullptr;
  EXPECT_EQ(names(), (std::set<std::string>{"features-00000.safetensors", "index.json"}));
  expect_level(read("features-00000.safetensors")["res2"], kLevels[0], 0, {0, 1});
  json idx = index();
  EXPECT_EQ(idx["end"], "stopped");
  EXPECT_EQ(idx["frames"], 2);
  ASSERT_EQ(idx["files"].size(), 1u);
  EXPECT_EQ(idx["files"][0]["frames"], 2);
}

// index.json is written once per run, complete: not while streaming (an earlier run's is removed
// at start), at EOS with every file, and not again when the element stops after it. The index is
// replaced atomically (a new file renamed over), so an unchanged inode means not rewritten.
ino_t inode_of(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

TEST_F(FeatureSinkTest, IndexIsWrittenOnceAtEos) {
  fs::create_directories(dir_);
  std::ofstream(dir_ + "/index.json") << "{\"format\": \"an earlier run\"}\n";
  start([](GstElement* e) { g_object_set(e, "max-frames", 2u, nullptr); });
  EXPECT_FALSE(fs::exists(dir_ + "/index.json")) << "the index of an earlier run is removed at start";
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(push(i), GST_FLOW_OK);
    EXPECT_FALSE(fs::exists(dir_ + "/index.json")) << "frame " << i;
  }
  eos();
  const std::string path = dir_ + "/index.json";
  ASSERT_TRUE(fs::exists(path));
  const ino_t ino = inode_of(path);
  std::ifstream f(path);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  json idx = json::parse(text);
  EXPECT_EQ(idx["end"], "eos");
  EXPECT_EQ(idx["frames"], 5);
  EXPECT_EQ(idx["frames_seen"], 5);
  ASSERT_EQ(idx["files"].size(), 3u) << "every file, the one completed at EOS included";
  EXPECT_EQ(idx["files"][2]["first_frame"], 4);

  gst_harness_teardown(h_);  // PLAYING -> NULL after EOS: not written again
  h_ = nullptr;
  EXPECT_EQ(inode_of(path), ino) << "index.json was rewritten at stop";
  std::ifstream g(path);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>()), text);
}

TEST_F(FeatureSinkTest, IndexIsWrittenOnceAtReadyWithoutEos) {
  start([](GstElement* e) { g_object_set(e, "max-frames", 2u, nullptr); });
  for (int i = 0; i < 3; ++i) ASSERT_EQ(push(i), GST_FLOW_OK);
  EXPECT_FALSE(fs::exists(dir_ + "/index.json"));
  ASSERT_EQ(gst_element_set_state(h_->element, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
  const std::string path = dir_ + "/index.json";
  ASSERT_TRUE(fs::exists(path)) << "written at the transition to READY";
  const ino_t ino = inode_of(path);
  json idx = index();
  EXPECT_EQ(idx["end"], "stopped");
  EXPECT_EQ(idx["frames"], 3);
  ASSERT_EQ(idx["files"].size(), 2u) << "the open file is completed and listed";
  EXPECT_EQ(idx["files"][1]["frames"], 1);
  expect_level(read("features-00001.safetensors")["res3"], kLevels[1], 1, {2});
  gst_harness_teardown(h_);
  h_ = nullptr;
  EXPECT_EQ(inode_of(path), ino) << "index.json was rewritten at NULL";
}

TEST_F(FeatureSinkTest, LevelsPropertyKeepsOnlyThoseLevels) {
  start([](GstElement* e) { g_object_set(e, "levels", "res3", "file-prefix", "clip", nullptr); });
  ASSERT_EQ(push(0), GST_FLOW_OK);
  eos();
  auto t = read("clip-00000.safetensors");
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.count("res2"), 0u);
  expect_level(t["res3"], kLevels[1], 1, {0});
  EXPECT_EQ(index()["files"][0]["shapes"], (json{{"res3", {1, 2, 2, 3}}}));
}

TEST_F(FeatureSinkTest, MissingLevelIsAnError) {
  start([](GstElement* e) { g_object_set(e, "levels", "res3, res5", nullptr); });
  EXPECT_EQ(push(0), GST_FLOW_ERROR);
  std::string err = error_text();
  EXPECT_NE(err.find("gst-stream-error-quark"), std::string::npos) << err;
  EXPECT_NE(err.find("\"res5\""), std::string::npos) << err;
  EXPECT_NE(err.find("res2, res3"), std::string::npos) << "names the levels the meta has: " << err;
  for (const auto& n : names()) EXPECT_EQ(n.find("features-"), std::string::npos) << n;
}

TEST_F(FeatureSinkTest, UniqueIdSelectsTheProducer) {
  start([](GstElement* e) { g_object_set(e, "unique-id", 7, nullptr); });
  GstBuffer* b = make_frame(0);
  add_meta(b, 100, kLevels, 1, "first");
  add_meta(b, 0, kLevels, 7, "seventh");
  ASSERT_EQ(gst_harness_push(h_, b), GST_FLOW_OK);
  b = make_frame(pts_of(1));
  add_meta(b, 100, kLevels, 1, "first");  // no meta of producer 7
  ASSERT_EQ(gst_harness_push(h_, b), GST_FLOW_OK);
  eos();
  expect_level(read("features-00000.safetensors")["res2"], kLevels[0], 0, {0});
  json idx = index();
  EXPECT_EQ(idx["unique_id"], 7);
  EXPECT_EQ(idx["model_name"], "seventh");
  EXPECT_EQ(idx["frames_without_features"], 1);
}

TEST_F(FeatureSinkTest, UnwritableLocationFailsTheStateChange) {
  // a directory cannot be created below a regular file (this also holds for root)
  std::ofstream(root_ + "/file") << "x";
  GstElement* e = gst_element_factory_make("featuresink", nullptr);
  ASSERT_NE(e, nullptr);
  g_object_set(e, "location", (root_ + "/file/sub").c_str(), nullptr);
  bus_ = gst_bus_new();
  gst_element_set_bus(e, bus_);
  EXPECT_EQ(gst_element_set_state(e, GST_STATE_PAUSED), GST_STATE_CHANGE_FAILURE);
  std::string err = error_text();
  EXPECT_NE(err.find("gst-resource-error-quark"), std::string::npos) << err;
  EXPECT_NE(err.find("file/sub"), std::string::npos) << err;
  gst_element_set_state(e, GST_STATE_NULL);
  gst_object_unref(e);
}

TEST_F(FeatureSinkTest, WriteFailureIsAnErrorAndLeavesNoFile) {
  // A file size limit makes write() fail as a full disk does (EFBIG instead of ENOSPC).
  start();
  ASSERT_EQ(push(0), GST_FLOW_OK);
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 1000;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  GstFlowReturn ret = GST_FLOW_OK;
  for (int i = 1; i < 20 && ret == GST_FLOW_OK; ++i) ret = push(i);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_EQ(ret, GST_FLOW_ERROR);
  std::string err = error_text();
  EXPECT_NE(err.find("gst-resource-error-quark"), std::string::npos) << err;
  EXPECT_NE(err.find("File too large"), std::string::npos) << err;
  EXPECT_EQ(push(30), GST_FLOW_ERROR) << "the element stays failed";
  gst_harness_teardown(h_);
  h_ = nullptr;
  EXPECT_EQ(names(), (std::set<std::string>{"index.json"})) << "no partial file, no spool left";
  json idx = index();
  EXPECT_EQ(idx["end"], "error");
  EXPECT_EQ(idx["files"].size(), 0u) << "the file open at the error is not listed";
}

TEST_F(FeatureSinkTest, DefaultsAndSyncOff) {
  GstElement* e = gst_element_factory_make("featuresink", nullptr);
  ASSERT_NE(e, nullptr);
  gboolean sync = TRUE;
  guint max_frames = 0;
  gint uid = 0;
  gchar *prefix = nullptr, *levels = nullptr;
  g_object_get(e, "sync", &sync, "max-frames", &max_frames, "unique-id", &uid, "file-prefix", &prefix, "levels", &levels,
               nullptr);
  EXPECT_FALSE(sync);
  EXPECT_EQ(max_frames, 256u);
  EXPECT_EQ(uid, -1);
  EXPECT_STREQ(prefix, "features");
  EXPECT_STREQ(levels, "");
  g_free(prefix);
  g_free(levels);
  gst_object_unref(e);
}

// ---- end to end: metas made by resnetbackbone (narrow R-50 of tests/data/plugin) ----

std::string plugin_data(const std::string& name) { return std::string(BACKBONE_TEST_DATA_DIR) + "/plugin/" + name; }

TEST_F(FeatureSinkTest, EndToEndWithResnetBackbone) {
  GstElementFactory* f = gst_element_factory_find("resnetbackbone");
  if (!f) GTEST_SKIP() << "resnetbackbone is not in the registry";
  gst_object_unref(f);
  const std::string launch = "resnetbackbone inference-interval=2 unique-id=5 config-file=" + plugin_data("narrow.yaml") +
                             " weights=" + plugin_data("narrow.pth");
  GstHarness* bb = gst_harness_new_parse(launch.c_str());
  ASSERT_NE(bb, nullptr);
  gst_harness_set_src_caps_str(bb, kCaps);
  start([](GstElement* e) { gst_util_set_object_arg(G_OBJECT(e), "dtype", "float16"); });

  // what the backbone attached, per level: the values of frames 0, 2, 4
  std::map<std::string, std::vector<float>> expected;
  std::map<std::string, std::vector<gsize>> dims;
  for (int i = 0; i < 5; ++i) {
    GstBuffer* in = make_frame(pts_of(i));
    GstMapInfo m;
    ASSERT_TRUE(gst_buffer_map(in, &m, GST_MAP_WRITE));
    for (gsize k = 0; k < m.size; ++k) m.data[k] = static_cast<guint8>((k * 7 + static_cast<gsize>(i) * 31) % 251);
    gst_buffer_unmap(in, &m);
    GstBuffer* out = gst_harness_push_and_pull(bb, in);
    ASSERT_NE(out, nullptr);
    const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
    ASSERT_EQ(meta != nullptr, i % 2 == 0) << "frame " << i;
    if (meta) {
      EXPECT_EQ(meta->unique_id, 5u);
      ASSERT_EQ(meta->num_levels, 4u);
      for (guint l = 0; l < meta->num_levels; ++l) {
        const GstFeatureLevel* lv = &meta->levels[l];
        ASSERT_EQ(lv->dtype, GST_FEATURE_DTYPE_FLOAT32);
        std::string name = g_quark_to_string(lv->name);
        dims[name] = {lv->dims[1], lv->dims[2], lv->dims[3]};
        GstMapInfo lm;
        ASSERT_TRUE(gst_feature_level_map(lv, &lm, GST_MAP_READ));
        const float* p = reinterpret_cast<const float*>(lm.data);
        for (gsize c = 0; c < lv->dims[1]; ++c)
          for (gsize y = 0; y < lv->dims[2]; ++y)
            for (gsize x = 0; x < lv->dims[3]; ++x)
              expected[name].push_back(p[c * lv->strides[1] + y * lv->strides[2] + x * lv->strides[3]]);
        gst_feature_level_unmap(lv, &lm);
      }
    }
    ASSERT_EQ(gst_harness_push(h_, out), GST_FLOW_OK);
  }
  gst_harness_teardown(bb);
  eos();

  EXPECT_EQ(dims["res2"], (std::vector<gsize>{16, 12, 16}));
  EXPECT_EQ(dims["res5"], (std::vector<gsize>{128, 2, 2}));
  auto t = read("features-00000.safetensors");
  ASSERT_EQ(t.size(), 5u);
  for (const auto& kv : expected) {
    SCOPED_TRACE(kv.first);
    const backbone::Tensor& got = t[kv.first];
    ASSERT_EQ(got.dtype(), backbone::DType::Float16);
    ASSERT_EQ(got.shape(), (backbone::Shape{3, static_cast<int64_t>(dims[kv.first][0]), static_cast<int64_t>(dims[kv.first][1]),
                                            static_cast<int64_t>(dims[kv.first][2])}));
    const uint16_t* h = static_cast<const uint16_t*>(got.data());
    for (std::size_t k = 0; k < kv.second.size(); ++k)
      ASSERT_EQ(h[k], backbone::float_to_half(kv.second[k])) << "element " << k;
  }
  const int64_t* pts = t["pts"].data_ptr<int64_t>();
  EXPECT_EQ(pts[0], static_cast<int64_t>(pts_of(0)));
  EXPECT_EQ(pts[1], static_cast<int64_t>(pts_of(2)));
  EXPECT_EQ(pts[2], static_cast<int64_t>(pts_of(4)));
  json idx = index();
  EXPECT_EQ(idx["frames"], 3);
  EXPECT_EQ(idx["frames_without_features"], 2);
  EXPECT_EQ(idx["unique_id"], 5);
  EXPECT_EQ(idx["files"][0]["strides"], (json{{"res2", 4}, {"res3", 8}, {"res4", 16}, {"res5", 32}}));
  EXPECT_FALSE(idx["model_name"].get<std::string>().empty());
}

// An FPN's pyramid (narrow_fpn.yaml: p2..p6 on the narrow R-50): levels=p3,p6 writes those p-levels,
// with their strides in index.json and the file's metadata, values as the meta's.
TEST_F(FeatureSinkTest, EndToEndWithAnFpnPyramid) {
  GstElementFactory* f = gst_element_factory_find("resnetbackbone");
  if (!f) GTEST_SKIP() << "resnetbackbone is not in the registry";
  gst_object_unref(f);
  const std::string launch = "resnetbackbone device=cpu config-file=" + plugin_data("narrow_fpn.yaml") +
                             " weights=" + plugin_data("narrow.pth");
  GstHarness* bb = gst_harness_new_parse(launch.c_str());
  ASSERT_NE(bb, nullptr);
  gst_harness_set_src_caps_str(bb, kCaps);
  start([](GstElement* e) { g_object_set(e, "levels", "p6, p3", nullptr); });

  std::map<std::string, std::vector<float>> expected;
  std::map<std::string, backbone::Shape> shapes;
  for (int i = 0; i < 2; ++i) {
    GstBuffer* out = gst_harness_push_and_pull(bb, make_frame(pts_of(i)));
    ASSERT_NE(out, nullptr);
    const GstFeatureMeta* meta = gst_buffer_get_feature_meta(out);
    ASSERT_NE(meta, nullptr);
    ASSERT_EQ(meta->num_levels, 5u) << "every p-level by default";
    for (const char* name : {"p3", "p6"}) {
      const GstFeatureLevel* lv = gst_feature_meta_get_level(meta, name);
      ASSERT_NE(lv, nullptr) << name;
      shapes[name] = {2, int64_t(lv->dims[1]), int64_t(lv->dims[2]), int64_t(lv->dims[3])};
      GstMapInfo lm;
      ASSERT_TRUE(gst_feature_level_map(lv, &lm, GST_MAP_READ));
      const float* p = reinterpret_cast<const float*>(lm.data);
      expected[name].insert(expected[name].end(), p, p + gst_feature_level_n_elements(lv));
      gst_feature_level_unmap(lv, &lm);
    }
    ASSERT_EQ(gst_harness_push(h_, out), GST_FLOW_OK);
  }
  gst_harness_teardown(bb);
  eos();

  // 64x48 padded to 64x64: p3 8x8, p6 1x1
  EXPECT_EQ(shapes["p3"], (backbone::Shape{2, 16, 8, 8}));
  EXPECT_EQ(shapes["p6"], (backbone::Shape{2, 16, 1, 1}));
  auto t = read("features-00000.safetensors");
  EXPECT_EQ(t.size(), 3u) << "p3, p6 and pts";
  for (const auto& [name, values] : expected) {
    SCOPED_TRACE(name);
    ASSERT_EQ(t[name].dtype(), backbone::DType::Float32);
    ASSERT_EQ(t[name].shape(), shapes[name]);
    const float* got = t[name].data_ptr<float>();
    for (std::size_t k = 0; k < values.size(); ++k) ASSERT_EQ(got[k], values[k]) << "element " << k;
  }
  json idx = index();
  EXPECT_EQ(idx["model_name"], "R-50-FPN");
  EXPECT_EQ(idx["files"][0]["strides"], (json{{"p3", 8}, {"p6", 64}}));
  EXPECT_EQ(idx["files"][0]["shapes"], (json{{"p3", {2, 16, 8, 8}}, {"p6", {2, 16, 1, 1}}}));
  EXPECT_EQ(json::parse(header("features-00000.safetensors")["__metadata__"]["strides"].get<std::string>()),
            (json{{"p3", 8}, {"p6", 64}}));
}

}  // namespace
