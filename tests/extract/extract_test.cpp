// SPDX-License-Identifier: Apache-2.0
//
// backbone-extract, run as a child process the way a user runs it. Videos are made at test time
// with gst-launch-1.0 (64x48, 10 frames at 10 fps) in several codecs and containers; the model is
// the narrow R-50 of tests/data/plugin. The features are checked against the resnetbackbone
// element's own meta (appsink in this process), the outputs' completeness after a SIGKILL, the
// shard split against an independent FNV-1a, and every bad option against its message.

#include <gst/app/gstappsink.h>
#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backbone/engine.h"
#include "backbone/engine_table.h"
#include "backbone/tensor.h"

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

const std::string kData = BACKBONE_TEST_DATA_DIR "/plugin";
const std::string kConfig = kData + "/narrow.yaml";
const std::string kWeights = kData + "/narrow.pth";

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

Json read_json(const fs::path& p) { return Json::parse(read_text(p)); }

// gst-launch-1.0 line; fails the test when it does not succeed.
void launch(const std::string& line) {
  const std::string cmd = "gst-launch-1.0 -q " + line + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

void make_video(const fs::path& path, const std::string& encode, int frames = 10, const std::string& pattern = "ball") {
  fs::create_directories(path.parent_path());
  launch("videotestsrc num-buffers=" + std::to_string(frames) + " pattern=" + pattern +
         " ! video/x-raw,width=64,height=48,framerate=10/1 ! " + encode + " ! filesink location=" + path.string());
}

struct Result {
  int rc = -1;
  std::string out;  // stdout and stderr
};

pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    static std::string tool = EXTRACT_TOOL;
    argv.push_back(tool.data());
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(tool.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

class ExtractTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    gst_init(nullptr, nullptr);
    fs::create_directories(EXTRACT_TEST_TMP);
  }

  void SetUp() override {
    std::string templ = std::string(EXTRACT_TEST_TMP) + "/run-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    videos_ = dir_ / "videos";
    make_video(videos_ / "a" / "clip.avi", "jpegenc ! avimux");
    make_video(videos_ / "b" / "clip.avi", "jpegenc ! avimux", 10, "smpte");
    make_video(videos_ / "b" / "clip.mp4", "x264enc ! mp4mux");
    make_video(videos_ / "c" / "sub" / "clip.webm", "vp8enc ! webmmux");
    make_video(videos_ / "c" / "clip.ogv", "theoraenc ! oggmux");
    {  // not a video: pseudo-random bytes
      std::ofstream broken(videos_ / "broken.mp4", std::ios::binary);
      uint32_t x = 12345;
      for (int k = 0; k < 4096; ++k) broken.put(static_cast<char>((x = x * 1664525u + 1013904223u) >> 24));
    }
    std::ofstream(videos_ / "notes.txt") << "not an input\n";
  }

  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::vector<std::string> model_args() const {
    return {"--config-file", kConfig, "--weights", kWeights, "--threads", "1"};
  }

  Result run(std::vector<std::string> args, bool with_model = true) {
    if (with_model) {
      auto m = model_args();
      args.insert(args.end(), m.begin(), m.end());
    }
    const fs::path log = dir_ / ("log-" + std::to_string(runs_++) + ".txt");
    const pid_t pid = spawn(args, log);
    int status = 0;
    waitpid(pid, &status, 0);
    Result r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = read_text(log);
    return r;
  }

  static std::set<std::string> partials(const fs::path& root) {
    std::set<std::string> s;
    for (auto& e : fs::recursive_directory_iterator(root)) {
      const std::string n = e.path().filename().string();
      if (n.find(".partial") != std::string::npos || n.find(".tmp") != std::string::npos) s.insert(e.path().string());
    }
    return s;
  }

  fs::path dir_, videos_;
  int runs_ = 0;
};

const std::vector<std::string> kGood = {"a/clip.avi", "b/clip.avi", "b/clip.mp4", "c/clip.ogv", "c/sub/clip.webm"};

// ---- safetensors --------------------------------------------------------------------------------

struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<float> f;    // F32/F16 as floats
  std::vector<int64_t> i;  // I64
};

std::map<std::string, Tensor> read_safetensors(const fs::path& p) {
  const std::string bytes = read_text(p);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const Json header = Json::parse(bytes.substr(8, n));
  const char* data = bytes.data() + 8 + n;
  std::map<std::string, Tensor> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    Tensor t;
    t.dtype = it.value()["dtype"];
    t.shape = it.value()["shape"].get<std::vector<int64_t>>();
    const auto off = it.value()["data_offsets"].get<std::vector<size_t>>();
    const char* b = data + off[0];
    const size_t len = off[1] - off[0];
    if (t.dtype == "F32") {
      t.f.resize(len / 4);
      std::memcpy(t.f.data(), b, len);
    } else if (t.dtype == "F16") {
      for (size_t k = 0; k < len / 2; ++k) {
        uint16_t h;
        std::memcpy(&h, b + 2 * k, 2);
        t.f.push_back(backbone::half_to_float(h));
      }
    } else if (t.dtype == "I64") {
      t.i.resize(len / 8);
      std::memcpy(t.i.data(), b, len);
    }
    out[it.key()] = std::move(t);
  }
  return out;
}

// ---- the element's own meta -----------------------------------------------------------------------

struct Frame {
  int64_t pts;
  std::map<std::string, std::vector<float>> levels;  // C*H*W, contiguous
  std::map<std::string, std::vector<int64_t>> shapes;
};

std::vector<Frame> element_features(const fs::path& video) {
  const std::string line = "filesrc location=\"" + video.string() +
                           "\" ! decodebin ! videoconvert ! resnetbackbone config-file=\"" + kConfig +
                           "\" weights=\"" + kWeights + "\" num-threads=1 ! appsink name=sink sync=false";
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(line.c_str(), &err);
  EXPECT_TRUE(pipeline && !err) << (err ? err->message : "");
  g_clear_error(&err);
  std::vector<Frame> frames;
  if (!pipeline) return frames;
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  EXPECT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  GstBus* bus = gst_element_get_bus(pipeline);
  while (GstSample* s = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 30 * GST_SECOND)) {
    GstBuffer* buf = gst_sample_get_buffer(s);
    GstFeatureMeta* meta = gst_buffer_get_feature_meta(buf);
    EXPECT_NE(meta, nullptr);
    Frame f;
    f.pts = GST_BUFFER_PTS_IS_VALID(buf) ? static_cast<int64_t>(GST_BUFFER_PTS(buf)) : -1;
    for (guint l = 0; meta && l < meta->num_levels; ++l) {
      const GstFeatureLevel* level = &meta->levels[l];
      EXPECT_EQ(level->dtype, GST_FEATURE_DTYPE_FLOAT32);
      GstMapInfo map;
      EXPECT_TRUE(gst_feature_level_map(level, &map, GST_MAP_READ));
      const float* x = reinterpret_cast<const float*>(map.data);
      std::vector<float> v;
      for (gsize c = 0; c < level->dims[1]; ++c)
        for (gsize h = 0; h < level->dims[2]; ++h)
          for (gsize w = 0; w < level->dims[3]; ++w)
            v.push_back(x[c * level->strides[1] + h * level->strides[2] + w * level->strides[3]]);
      gst_feature_level_unmap(level, &map);
      const std::string name = g_quark_to_string(level->name);
      f.levels[name] = v;
      f.shapes[name] = {static_cast<int64_t>(level->dims[1]), static_cast<int64_t>(level->dims[2]),
                        static_cast<int64_t>(level->dims[3])};
    }
    frames.push_back(std::move(f));
    gst_sample_unref(s);
  }
  if (GstMessage* msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) {
    GError* e = nullptr;
    gst_message_parse_error(msg, &e, nullptr);
    ADD_FAILURE() << "reference pipeline: " << (e ? e->message : "error");
    g_clear_error(&e);
    gst_message_unref(msg);
  }
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
  return frames;
}

// Checks the output folder `out` against the element's frames `ref` at indices `picked`.
void expect_matches(const fs::path& out, const std::vector<Frame>& ref, const std::vector<size_t>& picked,
                    bool half) {
  const Json side = read_json(out / "extract.json");
  ASSERT_EQ(side["frames"].get<size_t>(), picked.size());
  ASSERT_EQ(side["files"].size(), 1u);
  auto t = read_safetensors(out / side["files"][0].get<std::string>());
  ASSERT_EQ(t.count("pts"), 1u);
  ASSERT_EQ(t["pts"].i.size(), picked.size());
  for (size_t k = 0; k < picked.size(); ++k) EXPECT_EQ(t["pts"].i[k], ref[picked[k]].pts) << "frame " << k;
  for (const auto& [name, v0] : ref[0].levels) {
    ASSERT_EQ(t.count(name), 1u) << name;
    const Tensor& x = t[name];
    EXPECT_EQ(x.dtype, half ? "F16" : "F32");
    const auto& s = ref[0].shapes.at(name);
    ASSERT_EQ(x.shape, (std::vector<int64_t>{static_cast<int64_t>(picked.size()), s[0], s[1], s[2]})) << name;
    const size_t per = v0.size();
    for (size_t k = 0; k < picked.size(); ++k) {
      const auto& r = ref[picked[k]].levels.at(name);
      size_t bad = 0;
      for (size_t j = 0; j < per; ++j) {
        const float want = half ? backbone::half_to_float(backbone::float_to_half(r[j])) : r[j];
        if (x.f[k * per + j] != want) ++bad;
      }
      EXPECT_EQ(bad, 0u) << name << " frame " << k << ": " << bad << " of " << per << " values differ";
    }
  }
}

// ---- tests ----------------------------------------------------------------------------------------

TEST_F(ExtractTest, FolderOfSeveralCodecsOneBrokenFile) {
  const fs::path out = dir_ / "out";
  Result r = run({videos_.string(), "-o", out.string(), "--progress", "lines", "--progress-interval", "0.05"});
  EXPECT_EQ(r.rc, 1) << r.out;  // broken.mp4 failed, the rest went on
  EXPECT_NE(r.out.find("FAILED broken.mp4: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("6 inputs: 5 done, 0 skipped (already done), 1 failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" files (1 failed, 0 skipped), "), std::string::npos) << "no progress line: " << r.out;
  for (const auto& rel : kGood) {
    const Json side = read_json(out / rel / "extract.json");
    EXPECT_EQ(side["frames"], 10) << rel;
    EXPECT_EQ(side["source"]["relative_path"], rel);
    EXPECT_EQ(side["weights"]["sha256"].get<std::string>().size(), 64u);
    EXPECT_EQ(read_json(out / rel / "index.json")["frames"], 10) << rel;
  }
  EXPECT_FALSE(fs::exists(out / "broken.mp4"));
  EXPECT_FALSE(fs::exists(out / "notes.txt"));
  EXPECT_TRUE(partials(out).empty());
  const Json m = read_json(out / "manifest.json");
  ASSERT_EQ(m["inputs"].size(), 6u);
  std::map<std::string, std::string> status;
  for (const auto& e : m["inputs"]) status[e["relative_path"]] = e["status"];
  for (const auto& rel : kGood) EXPECT_EQ(status[rel], "done") << rel;
  EXPECT_EQ(status["broken.mp4"], "failed");
  for (const auto& e : m["inputs"])
    if (e["status"] == "failed") {
      EXPECT_FALSE(e["error"].get<std::string>().empty());
    }
  EXPECT_EQ(m["counts"]["done"], 5);
  EXPECT_EQ(m["counts"]["failed"], 1);
}

TEST_F(ExtractTest, FeaturesEqualTheElementsMeta) {
  const fs::path video = videos_ / "a" / "clip.avi";
  const auto ref = element_features(video);
  ASSERT_EQ(ref.size(), 10u);
  Result r = run({video.string(), "-o", (dir_ / "all").string(), "-q"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(r.out, "");  // --quiet
  expect_matches(dir_ / "all" / "clip.avi", ref, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, false);
  // Every 3rd frame, float16.
  r = run({video.string(), "-o", (dir_ / "every3").string(), "--every", "3", "--dtype", "float16", "-q"});
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_matches(dir_ / "every3" / "clip.avi", ref, {0, 3, 6, 9}, true);
  const Json side = read_json(dir_ / "every3" / "clip.avi" / "extract.json");
  EXPECT_EQ(side["frames_decoded"], 10);
  EXPECT_EQ(side["frames_without_features"], 6);
}

TEST_F(ExtractTest, FpsSampling) {
  const fs::path video = videos_ / "b" / "clip.mp4";
  Result r = run({video.string(), "-o", (dir_ / "out").string(), "--fps", "5", "--out-features", "res2,res3"});
  ASSERT_EQ(r.rc, 0) << r.out;
  const fs::path out = dir_ / "out" / "clip.mp4";
  const Json side = read_json(out / "extract.json");
  EXPECT_EQ(side["frames"], 5);  // 10 frames at 10 fps -> 5 at 5 fps
  auto t = read_safetensors(out / side["files"][0].get<std::string>());
  ASSERT_EQ(t["pts"].i.size(), 5u);
  for (size_t k = 1; k < 5; ++k) EXPECT_EQ(t["pts"].i[k] - t["pts"].i[k - 1], 200000000) << k;
  EXPECT_EQ(t.count("res2") + t.count("res3") + t.count("res4"), 2u);
  EXPECT_EQ(t["res2"].shape, (std::vector<int64_t>{5, 16, 12, 16}));
  // Half a frame per second: frames at 0 s only in a 1 s clip.
  r = run({video.string(), "-o", (dir_ / "slow").string(), "--fps", "1/2"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(read_json(dir_ / "slow" / "clip.mp4" / "extract.json")["frames"], 1);
  // A rate above the video's keeps every frame (frames are never duplicated).
  r = run({video.string(), "-o", (dir_ / "fast").string(), "--fps", "30"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(read_json(dir_ / "fast" / "clip.mp4" / "extract.json")["frames"], 10);
}

// An FPN config (detectron2's FPN on the narrow R-50): --out-features picks p-levels; the files and
// extract.json name them with their strides; 64x48 frames are padded to 64x64.
TEST_F(ExtractTest, FpnConfigWritesPLevels) {
  const fs::path video = videos_ / "a" / "clip.avi";
  Result r = run({video.string(), "-o", (dir_ / "out").string(), "--every", "5", "--out-features", "p6,p3", "--config-file",
                  kData + "/narrow_fpn.yaml", "--weights", kWeights, "--threads", "1"},
                 false);
  ASSERT_EQ(r.rc, 0) << r.out;
  const fs::path out = dir_ / "out" / "clip.avi";
  const Json side = read_json(out / "extract.json");
  EXPECT_EQ(side["model_name"], "R-50-FPN");
  EXPECT_EQ(side["frames"], 2);
  EXPECT_EQ(side["strides"], (Json{{"p3", 8}, {"p6", 64}}));
  auto t = read_safetensors(out / side["files"][0].get<std::string>());
  EXPECT_EQ(t.size(), 3u) << "p3, p6 and pts";
  EXPECT_EQ(t["p3"].shape, (std::vector<int64_t>{2, 16, 8, 8}));
  EXPECT_EQ(t["p6"].shape, (std::vector<int64_t>{2, 16, 1, 1}));
}

TEST_F(ExtractTest, ResumeAfterKillGivesEveryFileOnce) {
  const fs::path long_dir = dir_ / "long";
  for (int k = 0; k < 3; ++k) make_video(long_dir / ("v" + std::to_string(k) + ".avi"), "jpegenc ! avimux", 300);
  const fs::path out = dir_ / "out";
  std::vector<std::string> args = {long_dir.string(), "-o", out.string(), "--max-frames-per-file", "16", "-q"};
  auto m = model_args();
  args.insert(args.end(), m.begin(), m.end());
  const pid_t pid = spawn(args, dir_ / "killed.txt");
  // Kill it once one file is finished and the next one is part-written (a committed chunk of it).
  bool killed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!killed && std::chrono::steady_clock::now() < deadline) {
    int done = 0, chunks = 0;
    for (int k = 0; k < 3; ++k) {
      const fs::path f = out / ("v" + std::to_string(k) + ".avi");
      done += fs::exists(f);
      const fs::path p = f.string() + ".partial";
      std::error_code ec;
      if (fs::exists(p, ec))
        for (auto& e : fs::directory_iterator(p, ec))
          chunks += e.path().extension() == ".safetensors";
    }
    if (done >= 1 && chunks >= 1) {
      kill(pid, SIGKILL);
      killed = true;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(killed) << "the run ended before it could be killed mid-file: " << read_text(dir_ / "killed.txt");
  ASSERT_TRUE(WIFSIGNALED(status));
  // Nothing half-written under a final name: every final folder is complete.
  std::map<std::string, std::string> first;
  int partial_left = 0;
  for (int k = 0; k < 3; ++k) {
    const std::string rel = "v" + std::to_string(k) + ".avi";
    if (fs::exists(out / rel)) {
      const Json side = read_json(out / rel / "extract.json");
      EXPECT_EQ(side["frames"], 300);
      first[rel] = read_text(out / rel / "extract.json");
    }
    partial_left += fs::exists(out / (rel + ".partial"));
  }
  EXPECT_GE(first.size(), 1u);
  EXPECT_LT(first.size(), 3u);
  EXPECT_EQ(partial_left, 1);
  EXPECT_FALSE(fs::exists(out / "manifest.json"));

  Result r = run({long_dir.string(), "-o", out.string(), "--max-frames-per-file", "16"});
  ASSERT_EQ(r.rc, 0) << r.out;
  const Json man = read_json(out / "manifest.json");
  ASSERT_EQ(man["inputs"].size(), 3u);
  for (const auto& e : man["inputs"]) {
    const std::string rel = e["relative_path"];
    // Exactly once: finished before the kill -> skipped and untouched; the others -> done now.
    EXPECT_EQ(e["status"], first.count(rel) ? "skipped" : "done") << rel;
    EXPECT_EQ(e["frames"], 300) << rel;
    const Json side = read_json(out / rel / "extract.json");
    EXPECT_EQ(side["frames"], 300);
    EXPECT_EQ(read_json(out / rel / "index.json")["files"].size(), 19u);  // ceil(300 / 16)
    if (first.count(rel)) {
      EXPECT_EQ(read_text(out / rel / "extract.json"), first[rel]) << rel;
    }
  }
  EXPECT_TRUE(partials(out).empty());
  EXPECT_NE(r.out.find("3 inputs: " + std::to_string(3 - first.size()) + " done, " + std::to_string(first.size()) +
                       " skipped (already done), 0 failed"),
            std::string::npos)
      << r.out;
}

TEST_F(ExtractTest, OverwriteRedoesFinishedOutputs) {
  const fs::path out = dir_ / "out";
  const fs::path video = videos_ / "a" / "clip.avi";
  ASSERT_EQ(run({video.string(), "-o", out.string()}).rc, 0);
  const Json before = read_json(out / "clip.avi" / "extract.json");
  Result r = run({video.string(), "-o", out.string()});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("1 inputs: 0 done, 1 skipped"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("warning"), std::string::npos) << r.out;
  // Other settings without --overwrite: kept, with a warning.
  r = run({video.string(), "-o", out.string(), "--every", "2"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("warning: clip.avi: finished earlier with another config, weights or settings"),
            std::string::npos) << r.out;
  EXPECT_EQ(read_json(out / "manifest.json")["inputs"][0]["status"], "skipped");
  EXPECT_EQ(read_json(out / "clip.avi" / "extract.json"), before);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  r = run({video.string(), "-o", out.string(), "--overwrite", "--dtype", "float16"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("1 inputs: 1 done, 0 skipped"), std::string::npos) << r.out;
  const Json after = read_json(out / "clip.avi" / "extract.json");
  EXPECT_EQ(after["settings"]["dtype"], "float16");
  EXPECT_NE(after["timing"]["started"], before["timing"]["started"]);
  EXPECT_TRUE(partials(out).empty());
}

uint64_t fnv1a(const std::string& s) {  // reference: FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3)
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

TEST_F(ExtractTest, ShardsSplitEveryInputOnce) {
  const fs::path out = dir_ / "out";
  std::map<std::string, int> processed;  // relative path -> times processed (done or failed)
  for (int k = 0; k < 3; ++k) {
    Result r = run({videos_.string(), "-o", out.string(), "--num-shards", "3", "--shard-index", std::to_string(k)});
    const Json m = read_json(out / ("manifest-shard-" + std::to_string(k) + "-of-3.json"));
    ASSERT_EQ(m["inputs"].size(), 6u);  // every manifest lists every input
    bool any_failed = false;
    for (const auto& e : m["inputs"]) {
      const std::string rel = e["relative_path"];
      const int shard = static_cast<int>(fnv1a(rel) % 3);
      EXPECT_EQ(e["shard"], shard) << rel;
      if (shard == k) {
        EXPECT_NE(e["status"], "other-shard") << rel;
        processed[rel]++;
        any_failed |= e["status"] == "failed";
      } else {
        EXPECT_EQ(e["status"], "other-shard") << rel;
      }
    }
    EXPECT_EQ(r.rc, any_failed ? 1 : 0) << r.out;
  }
  ASSERT_EQ(processed.size(), 6u);
  for (const auto& [rel, n] : processed) EXPECT_EQ(n, 1) << rel;
  for (const auto& rel : kGood) EXPECT_TRUE(fs::exists(out / rel / "extract.json")) << rel;
}

TEST_F(ExtractTest, ParallelJobsWithPrivateModelsGiveTheSameFiles) {
  Result r1 = run({videos_.string(), "-o", (dir_ / "j1").string(), "--jobs", "1"});
  Result r2 = run({videos_.string(), "-o", (dir_ / "j2").string(), "--jobs", "2", "--private-models"});
  EXPECT_EQ(r1.rc, 1) << r1.out;
  EXPECT_EQ(r2.rc, 1) << r2.out;
  EXPECT_NE(r2.out.find("6 inputs: 5 done, 0 skipped (already done), 1 failed"), std::string::npos) << r2.out;
  for (const auto& rel : kGood) {
    const std::string f = "features-00000.safetensors";
    ASSERT_TRUE(fs::exists(dir_ / "j2" / rel / f)) << rel;
    EXPECT_EQ(read_text(dir_ / "j1" / rel / f), read_text(dir_ / "j2" / rel / f)) << rel;
  }
}

// --jobs 4 shares one model whose batcher runs the four pipelines' frames together: the features
// equal those of --jobs 1 within the fp32 tolerance (a batched forward may sum in another order).
TEST_F(ExtractTest, ParallelJobsShareOneModelWithTheSameFeatures) {
  Result r1 = run({videos_.string(), "-o", (dir_ / "j1").string(), "--jobs", "1"});
  Result r4 = run({videos_.string(), "-o", (dir_ / "j4").string(), "--jobs", "4"});
  EXPECT_EQ(r1.rc, 1) << r1.out;
  EXPECT_EQ(r4.rc, 1) << r4.out;
  EXPECT_NE(r4.out.find("6 inputs: 5 done, 0 skipped (already done), 1 failed"), std::string::npos) << r4.out;
  for (const auto& rel : kGood) {
    const std::string f = "features-00000.safetensors";
    ASSERT_TRUE(fs::exists(dir_ / "j4" / rel / f)) << rel;
    const auto a = read_safetensors(dir_ / "j1" / rel / f);
    const auto b = read_safetensors(dir_ / "j4" / rel / f);
    ASSERT_EQ(a.size(), b.size()) << rel;
    for (const auto& [name, t] : a) {
      ASSERT_TRUE(b.count(name)) << rel << " " << name;
      const Tensor& u = b.at(name);
      ASSERT_EQ(t.shape, u.shape) << rel << " " << name;
      EXPECT_EQ(t.i, u.i) << rel << " " << name;
      ASSERT_EQ(t.f.size(), u.f.size());
      double diff = 0, ref = 0;
      for (size_t k = 0; k < t.f.size(); ++k) {
        diff = std::max(diff, static_cast<double>(std::fabs(t.f[k] - u.f[k])));
        ref = std::max(ref, static_cast<double>(std::fabs(t.f[k])));
      }
      EXPECT_LE(diff, 1e-5 * std::max(ref, 1.0)) << rel << " " << name;
    }
  }
}

TEST_F(ExtractTest, GlobsListsUrisAndMissingInputs) {
  const fs::path list = dir_ / "list.txt";
  {
    std::ofstream l(list);
    l << "# inputs\n\nvideos/c/clip.ogv\n"
      << "file://" << (videos_ / "b" / "clip.mp4").string() << "\n"
      << "videos/none.mp4\n";
  }
  const fs::path out = dir_ / "out";
  Result r = run({(videos_ / "*" / "clip.avi").string(), "--list", list.string(), "-o", out.string(),
                  (videos_ / "nothing*.mkv").string()});
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_TRUE(fs::exists(out / "a" / "clip.avi" / "extract.json"));  // a glob's paths are below its fixed part
  EXPECT_TRUE(fs::exists(out / "b" / "clip.avi" / "extract.json"));
  EXPECT_TRUE(fs::exists(out / "clip.ogv" / "extract.json"));
  EXPECT_TRUE(fs::exists(out / "clip.mp4" / "extract.json"));
  EXPECT_NE(r.out.find("videos/none.mp4: no such file or folder"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nothing*.mkv: the pattern matched no file"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("6 inputs: 4 done, 0 skipped (already done), 2 failed"), std::string::npos) << r.out;
  // Two files of the same name given directly: the second's output would collide.
  r = run({(videos_ / "a" / "clip.avi").string(), (videos_ / "b" / "clip.avi").string(), "-o",
           (dir_ / "same").string()});
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("is already that of"), std::string::npos) << r.out;
}

TEST_F(ExtractTest, SigintStopsCleanly) {
  const fs::path long_dir = dir_ / "long";
  // Long enough that the first file is still running when the signal comes (the engine runs these
  // 64x48 frames in well under a millisecond each; the tool looks at the signal every 100 ms).
  for (int k = 0; k < 2; ++k) make_video(long_dir / ("v" + std::to_string(k) + ".avi"), "jpegenc ! avimux", 3000);
  const fs::path out = dir_ / "out";
  std::vector<std::string> args = {long_dir.string(), "-o", out.string()};
  auto m = model_args();
  args.insert(args.end(), m.begin(), m.end());
  const pid_t pid = spawn(args, dir_ / "interrupted.txt");
  bool sent = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!sent && std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(out / "v0.avi.partial")) {
      kill(pid, SIGINT);
      sent = true;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(sent);
  ASSERT_TRUE(WIFEXITED(status)) << read_text(dir_ / "interrupted.txt");
  EXPECT_EQ(WEXITSTATUS(status), 130) << read_text(dir_ / "interrupted.txt");
  EXPECT_TRUE(partials(out).empty());  // the unfinished output is removed
  const Json man = read_json(out / "manifest.json");
  ASSERT_EQ(man["inputs"].size(), 2u);
  for (const auto& e : man["inputs"]) EXPECT_EQ(e["status"], "interrupted") << e.dump();
  EXPECT_FALSE(fs::exists(out / "v0.avi"));
  EXPECT_NE(read_text(dir_ / "interrupted.txt").find("2 interrupted"), std::string::npos);
}

TEST_F(ExtractTest, ProgressBar) {
  const fs::path video = videos_ / "a" / "clip.avi";
  Result r = run({video.string(), "-o", (dir_ / "out").string(), "--progress", "bar"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\r\033[K["), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("] 1/1 files, 10 frames, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" left"), std::string::npos) << r.out;
}

TEST_F(ExtractTest, HelpAndQuiet) {
  Result r = run({"--help"}, false);
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("usage: backbone-extract"), std::string::npos);
  EXPECT_NE(r.out.find("--shard-index"), std::string::npos);
  // Engine and precision defaults.
  EXPECT_NE(r.out.find("--engine NAME (=auto)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--precision P (=fp32)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--conv-algorithm A (=auto)"), std::string::npos) << r.out;
  r = run({videos_.string(), "-o", (dir_ / "q").string(), "-q"});
  EXPECT_EQ(r.rc, 1);
  // Quiet: only the failure.
  EXPECT_EQ(r.out.rfind("backbone-extract: FAILED broken.mp4: ", 0), 0u) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
}

TEST_F(ExtractTest, BadOptionsGetAMessageAndTheUsage) {
  const std::string v = (videos_ / "a" / "clip.avi").string();
  const std::string o = (dir_ / "out").string();
  const fs::path a_file = dir_ / "file";
  std::ofstream(a_file) << "x";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"-o", o}, "no input"},
      {{v}, "--output-dir (-o) is required"},
      {{v, "-o", o, "--frobnicate"}, "unrecognised option '--frobnicate'"},
      {{v, "-o", a_file.string()}, "exists and is not a folder"},
      {{v, "-o", o, "--jobs", "0"}, "--jobs must be at least 1, got 0"},
      {{v, "-o", o, "--jobs", "two"}, "the argument ('two') for option '--jobs' is invalid"},
      {{v, "-o", o, "--num-shards", "0"}, "--num-shards must be at least 1, got 0"},
      {{v, "-o", o, "--num-shards", "3", "--shard-index", "3"}, "--shard-index must be below --num-shards (3), got 3"},
      {{v, "-o", o, "--shard-index", "1"}, "--shard-index must be below --num-shards (1), got 1"},
      {{v, "-o", o, "--every", "0"}, "--every must be at least 1, got 0"},
      {{v, "-o", o, "--every", "2", "--fps", "5"}, "--every and --fps exclude each other"},
      {{v, "-o", o, "--fps", "0"}, "--fps must be a positive number"},
      {{v, "-o", o, "--fps", "fast"}, "--fps must be a positive number"},
      {{v, "-o", o, "--fps", "1/0"}, "--fps must be a positive rate"},
      {{v, "-o", o, "--dtype", "float64"}, "--dtype must be one of float32, float16, got \"float64\""},
      {{v, "-o", o, "--precision", "fp8"}, "--precision must be one of fp32, fp16, bf16, auto, got \"fp8\""},
      {{v, "-o", o, "--conv-algorithm", "fast"},
       "--conv-algorithm must be one of auto, direct, winograd, got \"fast\""},
      {{v, "-o", o, "--device", "gpu"}, "--device must be cpu, cuda:N or auto, got \"gpu\""},
      {{v, "-o", o, "--engine", "tensorrt"}, "--engine must be auto, " + backbone::engine_names() + ", got \"tensorrt\""},
      {{v, "-o", o, "--resize", "half"}, "--resize must be one of none, shortest-edge, fixed"},
      {{v, "-o", o, "--resize", "fixed", "--width", "32"}, "--resize fixed needs --width and --height"},
      {{v, "-o", o, "--width", "32", "--height", "32"}, "--width and --height need --resize fixed"},
      {{v, "-o", o, "--min-size", "32"}, "--min-size and --max-size need --resize shortest-edge"},
      {{v, "-o", o, "--resize", "shortest-edge", "--min-size", "20000"}, "sizes must be at most 16384"},
      {{v, "-o", o, "--size-divisibility", "-1"}, "--size-divisibility"},
      {{v, "-o", o, "--threads", "-2"}, "--threads"},
      {{v, "-o", o, "--max-frames-per-file", "0"}, "--max-frames-per-file must be at least 1, got 0"},
      {{v, "-o", o, "--out-features", "res4,res6"}, "--out-features must be one of stem, res2, res3, res4, res5, p2, p3, p4, p5, p6, p7"},
      {{v, "-o", o, "--config-file", "/nonexistent.yaml"}, "--config-file \"/nonexistent.yaml\": no such file"},
      {{v, "-o", o, "--weights", "/nonexistent.pth"}, "--weights \"/nonexistent.pth\": no such file"},
      {{"-o", o, "--list", "/nonexistent.txt"}, "--list \"/nonexistent.txt\": no such file"},
      {{v, "-o", o, "--progress", "loud"}, "--progress must be one of auto, bar, lines, none"},
      {{v, "-o", o, "--progress-interval", "0"}, "--progress-interval must be a positive number of seconds"},
      {{v, "-o", o, "--extensions", ","}, "--extensions must name at least one extension"},
      {{v, "-o", o, "--overwrite=yes"}, "overwrite"},
      {{v, "-o"}, "the required argument for option '--output-dir' is missing"},
  };
  for (const auto& [args, message] : cases) {
    Result r = run(args, false);
    std::string line;
    for (const auto& a : args) line += a + " ";
    EXPECT_EQ(r.rc, 2) << line << "\n" << r.out;
    EXPECT_NE(r.out.find("backbone-extract: "), std::string::npos) << line;
    EXPECT_NE(r.out.find(message), std::string::npos) << line << "\nexpected: " << message << "\ngot: " << r.out;
    EXPECT_NE(r.out.find("usage: backbone-extract"), std::string::npos) << line;
  }
  EXPECT_FALSE(fs::exists(o));  // nothing was started
}

// The engine: auto by default, described once per run on stderr (not per file) and in every
// extract.json; --engine and --precision reach the element and count as settings on resume.
TEST_F(ExtractTest, EngineAndPrecision) {
  const fs::path out = dir_ / "out";
  Result r = run({videos_.string(), "-o", out.string(), "--progress", "none"});
  EXPECT_EQ(r.rc, 1) << r.out;  // broken.mp4
  const std::string prefix = "backbone-extract: engine: ";
  const auto at = r.out.find(prefix);
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(prefix, at + 1), std::string::npos) << "printed more than once:\n" << r.out;
  const std::string description = r.out.substr(at + prefix.size(), r.out.find('\n', at) - at - prefix.size());
  const auto engines = backbone::available_engines();
  EXPECT_NE(std::find(engines.begin(), engines.end(), description.substr(0, description.find(' '))), engines.end())
      << description;
  EXPECT_NE(description.find("fp32"), std::string::npos) << description;
  if (description.rfind("cuda ", 0) != 0) {  // device auto takes engine cuda on a CUDA device: no CPU threads
    EXPECT_NE(description.find("1 thread"), std::string::npos) << description;  // --threads 1
  }
  for (const auto& rel : kGood) {
    const Json side = read_json(out / rel / "extract.json");
    EXPECT_EQ(side["settings"]["engine"], "auto") << rel;
    EXPECT_EQ(side["settings"]["precision"], "fp32") << rel;
    EXPECT_EQ(side["settings"]["conv_algorithm"], "auto") << rel;
    EXPECT_EQ(side["engine"], description) << rel;
  }

  // A named engine or another precision is another setting: finished outputs are kept, with a warning.
  const fs::path video = videos_ / "a" / "clip.avi";
  const std::string named = engines.front();
  r = run({videos_.string(), "-o", out.string(), "--engine", named});
  EXPECT_EQ(r.rc, 1) << r.out;  // broken.mp4 again
  EXPECT_NE(r.out.find("0 done, 5 skipped (already done), 1 failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("warning: a/clip.avi: finished earlier with another config, weights or settings"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(read_json(out / "a" / "clip.avi" / "extract.json")["engine"], description);  // kept

  // A precision the engine does not run fails every input with the element's message naming both.
  if (std::find(engines.begin(), engines.end(), "libtorch") != engines.end()) {
    r = run({video.string(), "-o", (dir_ / "bf16-libtorch").string(), "--engine", "libtorch", "--precision", "bf16"});
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("FAILED clip.avi: backbone: engine \"libtorch\", precision bf16, on cpu: "),
              std::string::npos)
        << r.out;
    EXPECT_EQ(r.out.find(prefix), std::string::npos) << "an engine was described although none ran:\n" << r.out;
  }

  // bf16 on oneDNN: the description says so, and the features are within 2e-2 * max of fp32 per level.
  if (std::find(engines.begin(), engines.end(), "onednn") == engines.end()) {
    std::cout << "[ INFO     ] bf16 part not run: this build has no oneDNN engine\n";
    return;
  }
  for (const std::string precision : {"fp32", "bf16"}) {
    r = run({video.string(), "-o", (dir_ / precision).string(), "--engine", "onednn", "--precision", precision, "-q"});
    ASSERT_EQ(r.rc, 0) << r.out;
    EXPECT_EQ(r.out, "");  // --quiet: no description either
    const Json side = read_json(dir_ / precision / "clip.avi" / "extract.json");
    EXPECT_EQ(side["settings"]["precision"], precision);
    EXPECT_EQ(side["engine"].get<std::string>().rfind("onednn " + precision, 0), 0u) << side["engine"];
  }
  auto fp32 = read_safetensors(dir_ / "fp32" / "clip.avi" / "features-00000.safetensors");
  auto bf16 = read_safetensors(dir_ / "bf16" / "clip.avi" / "features-00000.safetensors");
  int levels = 0;
  for (const auto& [name, t] : fp32) {
    if (name == "pts") continue;
    ++levels;
    ASSERT_EQ(bf16[name].shape, t.shape) << name;
    // Per frame and level.
    const size_t frames = static_cast<size_t>(t.shape[0]), per = t.f.size() / frames;
    for (size_t k = 0; k < frames; ++k) {
      double diff = 0.0, scale = 0.0;
      for (size_t j = k * per; j < (k + 1) * per; ++j) {
        diff = std::max(diff, std::fabs(double(bf16[name].f[j]) - double(t.f[j])));
        scale = std::max(scale, std::fabs(double(t.f[j])));
      }
      EXPECT_LE(diff, 2e-2 * scale) << name << " frame " << k;
      EXPECT_GT(diff, 0.0) << name << " frame " << k << ": bf16 gave exactly the fp32 features";
    }
  }
  EXPECT_EQ(levels, 4);
}

// --engine cuda --device cuda:0 reach the element's engine "cuda". Without a usable CUDA device every
// input fails with the loader's reason (no crash, nothing written as finished); with one, the
// features are those of the CPU engine within 1e-3 * max per level.
TEST_F(ExtractTest, CudaEngine) {
  const fs::path video = videos_ / "a" / "clip.avi";
  if (!backbone::cuda_is_available()) {
    for (const std::string engine : {"cuda", "auto"}) {
      const fs::path out = dir_ / ("cuda-" + engine);
      Result r = run({video.string(), "-o", out.string(), "--engine", engine, "--device", "cuda:0", "--progress", "none"});
      EXPECT_EQ(r.rc, 1) << r.out;
      // The element's message (its wording is the element's): the engine, the device, and CUDA as the cause.
      const auto at = r.out.find("FAILED clip.avi: backbone: engine \"" + engine + "\"");
      ASSERT_NE(at, std::string::npos) << r.out;
      const std::string line = r.out.substr(at, r.out.find('\n', at) - at);
      EXPECT_NE(line.find("cuda:0"), std::string::npos) << line;
      EXPECT_NE(line.find("CUDA"), std::string::npos) << line;
      EXPECT_EQ(r.out.find("backbone-extract: engine: "), std::string::npos) << r.out;
      EXPECT_FALSE(fs::exists(out / "clip.avi" / "extract.json")) << r.out;
    }
    return;
  }
  Result r = run({video.string(), "-o", (dir_ / "cuda").string(), "--engine", "cuda", "--device", "cuda:0", "-q"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(read_json(dir_ / "cuda" / "clip.avi" / "extract.json")["engine"].get<std::string>().rfind("cuda fp32 on cuda:0", 0),
            0u);
  r = run({video.string(), "-o", (dir_ / "cpu").string(), "--device", "cpu", "-q"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto gpu = read_safetensors(dir_ / "cuda" / "clip.avi" / "features-00000.safetensors");
  auto cpu = read_safetensors(dir_ / "cpu" / "clip.avi" / "features-00000.safetensors");
  int levels = 0;
  for (const auto& [name, t] : cpu) {
    if (name == "pts") continue;
    ++levels;
    ASSERT_EQ(gpu[name].shape, t.shape) << name;
    double diff = 0.0, scale = 0.0;
    for (size_t j = 0; j < t.f.size(); ++j) {
      diff = std::max(diff, std::fabs(double(gpu[name].f[j]) - double(t.f[j])));
      scale = std::max(scale, std::fabs(double(t.f[j])));
    }
    EXPECT_LE(diff, 1e-3 * scale) << name;
  }
  EXPECT_EQ(levels, 4);
}

}  // namespace
