// SPDX-License-Identifier: Apache-2.0
//
// backbone-extract: the backbone features of many videos, one GStreamer pipeline per video
// (uridecodebin ! videoconvert ! resnetbackbone ! featuresink, in this process), safe to stop and
// rerun, split across machines by shards and across cores by jobs. See README.md, "Batch feature
// extraction".
//
// Per input, with F = OUT/<relative path>:
//   1. F exists with extract.json: finished, skipped (unless --overwrite);
//   2. F.partial (a leftover of a stopped run) is removed; the pipeline writes into F.partial;
//   3. at EOS extract.json is written into F.partial, and F.partial is renamed to F.
// So F exists only when complete. At the end OUT/manifest.json lists every input with its status.
// Exit status: 0 all done or skipped, 1 some input failed, 2 bad options, 130 interrupted.

#include <gst/gst.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <thread>

#include "inputs.h"
#include "manifest.h"
#include "options.h"
#include "pipeline.h"
#include "progress.h"

namespace fs = std::filesystem;
using namespace backbone::extract;

namespace {

std::atomic<bool> g_cancel{false};

void on_signal(int) { g_cancel = true; }

std::string now_iso8601() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string exe_dir() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.parent_path().string();
}

struct Entry {
  Input input;
  int shard = 0;
  std::string status = "pending";  // done, skipped, failed, other-shard, interrupted
  std::string error;
  std::string note;  // e.g. skipped although finished with other settings
  int64_t frames = 0;
  double seconds = 0.0;
};

struct Run {
  const Options& options;
  std::string config_sha256, weights_sha256;
  Progress* progress = nullptr;
  std::mutex engine_mutex;
  std::string engine_printed;  // the engine description printed (once per run)
};

// The engine as resnetbackbone describes it (kernels, precision, threads), printed once per run,
// at the first frame of the first video (each extract.json has its own video's); nothing with
// --quiet.
void report_engine(Run& run, const std::string& description) {
  if (run.options.quiet || !run.progress) return;
  std::lock_guard<std::mutex> lock(run.engine_mutex);
  if (!run.engine_printed.empty()) return;
  run.engine_printed = description;
  run.progress->message("backbone-extract: engine: " + description);
}

// What decides the features (not the threads nor where the files are): compared on resume.
// "engine", "precision" and "conv_algorithm" are the options as given: with --engine auto a later run on a build
// with another first engine resumes without redoing finished outputs (every engine gives the same
// fp32 features within the backbone tests' tolerance); a change of --precision, --conv-algorithm or
// of a named --engine is reported (a sidecar without conv_algorithm ran direct convolutions). The engine that ran is the sidecar's "engine" (not compared).
Json settings_json(const Options& o) {
  return {{"out_features", o.out_features}, {"engine", o.engine}, {"device", o.device},
          {"precision", o.precision}, {"conv_algorithm", o.conv_algorithm}, {"dtype", o.dtype}, {"every", o.every},
          {"fps", o.fps.empty() ? Json(nullptr) : Json(o.fps)}, {"resize", o.resize}, {"min_size", o.min_size},
          {"max_size", o.max_size}, {"width", o.width}, {"height", o.height},
          {"size_divisibility", o.size_divisibility}, {"max_frames_per_file", o.max_frames_per_file}};
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

// One input: skip, or run the pipeline into F.partial and rename it to F.
void process(Run& run, Entry& e, int slot) {
  const Options& o = run.options;
  const fs::path final_dir = fs::path(o.output_dir) / e.input.relative;
  const fs::path partial = final_dir.string() + ".partial";
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    if (!fs::exists(final_dir / "extract.json", ec)) {
      e.status = "failed";
      e.error = "the output folder " + final_dir.string() +
                " exists but was not written by backbone-extract (no extract.json); move it away";
      return;
    }
    if (!o.overwrite) {
      e.status = "skipped";
      try {
        const Json old = read_json((final_dir / "extract.json").string());
        e.frames = old.value("frames", int64_t(0));
        Json settings = old.value("settings", Json::object());
        settings.erase("threads");
        if (!settings.contains("conv_algorithm")) settings["conv_algorithm"] = "direct";  // before the option
        const std::string config = old["config"].value("sha256", Json(nullptr)).is_string()
                                       ? old["config"]["sha256"].get<std::string>() : "";
        const std::string weights = old["weights"].value("sha256", Json(nullptr)).is_string()
                                        ? old["weights"]["sha256"].get<std::string>() : "";
        if (settings != settings_json(o) || config != run.config_sha256 || weights != run.weights_sha256)
          e.note = "finished earlier with another config, weights or settings (kept; --overwrite redoes it)";
      } catch (const std::exception&) {
      }
      return;
    }
  }
  remove_quietly(partial);  // an unfinished output of an earlier run
  fs::create_directories(partial, ec);
  if (ec) {
    e.status = "failed";
    e.error = "cannot create " + partial.string() + ": " + ec.message();
    return;
  }
  const std::string started = now_iso8601();
  // One shared model: one pool over every core; private models: the cores split between them.
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int threads = o.threads > 0 ? o.threads : o.shared_model() ? cores : std::max(1, cores / o.jobs);
  RunResult r;
  try {
    r = run_pipeline(
        e.input.uri, partial.string(), o, threads, g_cancel,
        [&](int64_t frames, double fraction) {
          if (run.progress) run.progress->update(slot, frames, fraction);
        },
        [&](const std::string& description) { report_engine(run, description); });
  } catch (const std::exception& ex) {
    r.ok = false;
    r.error = ex.what();
  }
  e.frames = r.frames;
  e.seconds = r.seconds;
  if (run.progress) run.progress->update(slot, r.frames, 1.0);
  if (!r.ok) {
    remove_quietly(partial);
    e.status = r.error == "interrupted" ? "interrupted" : "failed";
    e.error = r.error;
    return;
  }
  try {
    Json index = read_json((partial / "index.json").string());
    Json sidecar;
    sidecar["format"] = "gst-backbone backbone-extract";
    sidecar["version"] = 1;
    sidecar["source"] = {{"argument", e.input.argument}, {"path", e.input.source}, {"uri", e.input.uri},
                         {"relative_path", e.input.relative}};
    if (e.input.uri.rfind("file://", 0) == 0) sidecar["source"]["bytes"] = fs::file_size(e.input.source);
    sidecar["config"] = {{"file", o.config_file.empty() ? Json(nullptr) : Json(fs::absolute(o.config_file).string())},
                         {"sha256", o.config_file.empty() ? Json(nullptr) : Json(run.config_sha256)}};
    sidecar["weights"] = {{"file", o.weights.empty() ? Json(nullptr) : Json(fs::absolute(o.weights).string())},
                          {"sha256", o.weights.empty() ? Json(nullptr) : Json(run.weights_sha256)}};
    sidecar["settings"] = settings_json(o);
    sidecar["settings"]["threads"] = threads;
    sidecar["engine"] = r.engine;  // resnetbackbone's engine-description: kernels, precision, threads
    sidecar["pipeline"] = r.launch;
    sidecar["model_name"] = index.value("model_name", Json(nullptr));
    sidecar["frames"] = index.value("frames", int64_t(0));
    sidecar["frames_decoded"] = index.value("frames_seen", int64_t(0));
    sidecar["frames_without_features"] = index.value("frames_without_features", int64_t(0));
    // The levels written and their strides (res2..res5, or an FPN's p-levels), as the files have them.
    const Json index_files = index.value("files", Json::array());
    sidecar["strides"] = index_files.empty() ? Json::object() : index_files[0].value("strides", Json::object());
    Json files = Json::array();
    for (const auto& f : index.value("files", Json::array())) files.push_back(f.value("file", ""));
    sidecar["files"] = files;
    // seconds: pipeline start (model loading included) to the end; the steady rate leaves out the
    // model loading and the first frame.
    sidecar["timing"] = {{"started", started}, {"finished", now_iso8601()}, {"seconds", r.seconds},
                         {"frames_per_second", r.seconds > 0 ? r.frames / r.seconds : 0.0},
                         {"seconds_to_first_frame", r.first_frame},
                         {"frames_per_second_after_first_frame",
                          r.frames > 1 && r.last_frame > r.first_frame
                              ? Json((r.frames - 1) / (r.last_frame - r.first_frame))
                              : Json(nullptr)}};
    write_json_atomically((partial / "extract.json").string(), sidecar);
    e.frames = sidecar["frames"].get<int64_t>();
    if (fs::exists(final_dir)) {  // --overwrite: the old output goes only after the new one is complete
      const fs::path old = final_dir.string() + ".old.partial";
      remove_quietly(old);
      fs::rename(final_dir, old);
      fs::rename(partial, final_dir);
      remove_quietly(old);
    } else {
      fs::rename(partial, final_dir);
    }
    e.status = "done";
  } catch (const std::exception& ex) {
    remove_quietly(partial);
    e.status = "failed";
    e.error = std::string("finishing the output: ") + ex.what();
  }
}

Json manifest_json(const Options& o, const std::vector<Entry>& entries, const std::string& started, double seconds) {
  Json m;
  m["format"] = "gst-backbone backbone-extract manifest";
  m["version"] = 1;
  m["output_dir"] = fs::absolute(o.output_dir).string();
  m["shard_index"] = o.shard_index;
  m["num_shards"] = o.num_shards;
  m["sharding"] = "fnv1a64(relative_path) % num_shards";
  m["started"] = started;
  m["finished"] = now_iso8601();
  m["seconds"] = seconds;
  Json counts = Json::object();
  Json list = Json::array();
  for (const auto& e : entries) {
    counts[e.status] = counts.value(e.status, 0) + 1;
    Json j;
    j["input"] = e.input.argument;
    j["source"] = e.input.source;
    j["relative_path"] = e.input.relative;
    j["shard"] = e.shard;
    j["status"] = e.status;
    if (e.status == "done" || e.status == "skipped") {
      j["output"] = e.input.relative;
      j["frames"] = e.frames;
    }
    if (e.status == "done") j["seconds"] = e.seconds;
    if (!e.error.empty()) j["error"] = e.error;
    if (!e.note.empty()) j["note"] = e.note;
    list.push_back(j);
  }
  m["counts"] = counts;
  m["inputs"] = list;
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    std::string text;
    if (!parse_options(argc, argv, &o, &text)) {
      std::fputs(text.c_str(), stdout);
      return 0;
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "backbone-extract: %s\n\n%s", e.what(), usage_text().c_str());
    return 2;
  }

  gst_init(nullptr, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string started = now_iso8601();
  Run run{o, {}, {}, nullptr, {}, {}};
  try {
    ensure_plugin(exe_dir() + "/../lib/gstreamer-1.0");
    if (!o.config_file.empty()) run.config_sha256 = sha256_file(o.config_file);
    if (!o.weights.empty()) run.weights_sha256 = sha256_file(o.weights);
    fs::create_directories(o.output_dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "backbone-extract: %s\n", e.what());
    return 1;
  }

  std::vector<Entry> entries;
  for (auto& in : resolve_inputs(o.inputs, o.list_files, o.extensions)) {
    Entry e;
    e.input = std::move(in);
    e.shard = shard_of(e.input.relative, o.num_shards);
    if (e.shard != o.shard_index) e.status = "other-shard";
    else if (!e.input.error.empty()) {
      e.status = "failed";
      e.error = e.input.error;
    }
    entries.push_back(std::move(e));
  }
  std::vector<size_t> todo;
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].status == "pending") todo.push_back(i);

  Progress::Mode mode = Progress::Mode::None;
  if (!o.quiet) {
    if (o.progress == "bar" || (o.progress == "auto" && isatty(STDERR_FILENO))) mode = Progress::Mode::Bar;
    else if (o.progress == "lines" || o.progress == "auto") mode = Progress::Mode::Lines;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  for (const auto& e : entries)
    if (e.status == "failed")
      std::fprintf(stderr, "backbone-extract: FAILED %s: %s\n", e.input.argument.c_str(), e.error.c_str());
  const int jobs = std::max(1, std::min<int>(o.jobs, static_cast<int>(todo.size())));
  {
    Progress progress(mode, static_cast<int>(todo.size()), jobs, o.progress_interval);
    run.progress = &progress;
    std::atomic<size_t> next{0};
    std::vector<std::thread> workers;
    for (int slot = 0; slot < jobs; ++slot) {
      workers.emplace_back([&, slot] {
        while (!g_cancel) {
          const size_t k = next++;
          if (k >= todo.size()) break;
          Entry& e = entries[todo[k]];
          process(run, e, slot);
          progress.finish(slot, e.status == "done" || e.status == "skipped", e.status == "skipped");
          if (e.status == "failed")
            progress.message("backbone-extract: FAILED " + e.input.relative + ": " + e.error);
          else if (!e.note.empty() && !o.quiet)
            progress.message("backbone-extract: warning: " + e.input.relative + ": " + e.note);
        }
      });
    }
    for (auto& w : workers) w.join();
    progress.stop();
  }
  for (auto& e : entries)
    if (e.status == "pending") e.status = "interrupted";

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string manifest = (fs::path(o.output_dir) / manifest_name(o.shard_index, o.num_shards)).string();
  int failed = 0, done = 0, skipped = 0, interrupted = 0, other = 0;
  int64_t frames = 0;
  for (const auto& e : entries) {
    failed += e.status == "failed";
    done += e.status == "done";
    skipped += e.status == "skipped";
    interrupted += e.status == "interrupted";
    other += e.status == "other-shard";
    if (e.status == "done") frames += e.frames;
  }
  try {
    write_json_atomically(manifest, manifest_json(o, entries, started, seconds));
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "backbone-extract: %s\n", ex.what());
    failed++;
  }
  if (!o.quiet) {
    std::fprintf(stderr,
                 "backbone-extract: %zu inputs: %d done, %d skipped (already done), %d failed%s%s; %lld frames in "
                 "%.1f s (%.1f frames/s); manifest %s\n",
                 entries.size() - other, done, skipped, failed,
                 interrupted ? (", " + std::to_string(interrupted) + " interrupted").c_str() : "",
                 other ? (", " + std::to_string(other) + " in other shards").c_str() : "",
                 static_cast<long long>(frames), seconds, seconds > 0 ? frames / seconds : 0.0, manifest.c_str());
  }
  gst_deinit();
  if (g_cancel) return 130;
  return failed ? 1 : 0;
}
