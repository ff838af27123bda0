// SPDX-License-Identifier: Apache-2.0
#include "driver_util.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "backbone/backbone.h"
#include "bench_core.h"

namespace fs = std::filesystem;

namespace backbone::bench {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

void run_logged(const std::string& what, const std::vector<std::string>& argv, const std::string& log) {
  std::string cmd;
  for (const auto& a : argv) cmd += shell_quote(a) + " ";
  cmd += "> " + shell_quote(log) + " 2>&1";
  std::cerr << "backbone-bench: " << what << "\n";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (text.size() > 3000) text = "..." + text.substr(text.size() - 3000);
    throw Error(what + " failed (" + cmd + "):\n" + text);
  }
}

bool newer_than(const fs::path& a, const fs::path& b) {
  return fs::exists(a) && fs::exists(b) && fs::last_write_time(a) >= fs::last_write_time(b);
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string sci(double v) {
  std::ostringstream s;
  s << std::scientific << std::setprecision(1) << v;
  return s.str();
}

std::string one_line(const std::string& text, size_t max) {
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      if (!out.empty() && out.back() != ' ') out += " / ";
    } else {
      out += c;
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '/')) out.pop_back();
  return out.size() > max ? out.substr(0, max) + "..." : out;
}

FeatureMaps load_levels(const fs::path& dir) {
  FeatureMaps maps;
  for (const char* n : {"res2", "res3", "res4", "res5", "p2", "p3", "p4", "p5", "p6"}) {
    const fs::path p = dir / (std::string(n) + ".npy");
    if (fs::exists(p)) maps.emplace_back(n, load_npy(p.string()));
  }
  return maps;
}

std::vector<double> parse_times(const std::string& reply) {
  std::istringstream in(reply);
  std::string head;
  in >> head;
  if (head != "times") throw std::runtime_error("expected 'times ...', got '" + reply + "'");
  std::vector<double> t;
  for (double v; in >> v;) t.push_back(v);
  return t;
}

std::string default_work_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return (fs::path(x) / "backbone-bench").string();
  if (const char* h = std::getenv("HOME"); h && *h) return (fs::path(h) / ".cache" / "backbone-bench").string();
  return (fs::temp_directory_path() / "backbone-bench").string();
}

std::string self_exe() { return fs::read_symlink("/proc/self/exe").string(); }

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

void fail_worker(WorkerRun& r, const std::string& label, const std::string& msg) {
  r.status = "failed";
  r.message = msg;
  std::cerr << "backbone-bench:   " << label << " failed: " << msg << "\n";
  if (r.proc) r.proc->stop(2);
  r.proc.reset();
}

void await_ready(WorkerRun& r, const std::string& label, double timeout) {
  if (!r.proc) return;
  try {
    const std::string reply = r.proc->receive(timeout);
    if (reply.rfind("ready ", 0) == 0) {
      r.describe = nlohmann::json::parse(reply.substr(6)).value("describe", "");
      std::cerr << "backbone-bench:   " << label << ": " << r.describe << "\n";
    } else if (reply.rfind("unsupported ", 0) == 0) {
      r.status = "unsupported";
      r.message = reply.substr(12);
      std::cerr << "backbone-bench:   " << label << " does not run here: " << r.message << "\n";
      r.proc->stop(2);
      r.proc.reset();
    } else {
      fail_worker(r, label, reply.rfind("error ", 0) == 0 ? reply.substr(6) : reply);
    }
  } catch (const std::exception& e) {
    fail_worker(r, label, e.what());
  }
}

void run_check(WorkerRun& r, const fs::path& dir, double timeout) {
  const auto t0 = std::chrono::steady_clock::now();
  r.proc->send("check " + dir.string());
  const std::string reply = r.proc->receive(timeout);
  r.check_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (reply != "ok") throw std::runtime_error(reply.rfind("error ", 0) == 0 ? reply.substr(6) : reply);
}

void judge_agreement(WorkerRun& r, const std::string& label, const std::string& reference, const FeatureMaps& ref,
                     const FeatureMaps& out, double tolerance) {
  r.agreement = check_agreement(ref, out, tolerance);
  std::ostringstream errs;
  for (const auto& l : r.agreement->levels) errs << " " << l.name << " " << std::setprecision(3) << l.relative;
  std::cerr << "backbone-bench:   " << label << " vs " << reference << ": max|out-ref|/max|ref|" << errs.str()
            << " (bound " << tolerance << ")" << (r.agreement->ok ? "" : " DISAGREES") << "\n";
  if (!r.agreement->ok) {
    r.status = "disagrees";
    r.message = r.agreement->message;
    r.proc->stop(2);
    r.proc.reset();
  }
}

bool warm_up(WorkerRun& r, const std::string& label, int warm, int frames, double seconds, double timeout) {
  try {
    if (warm > 0) {
      r.proc->send("run " + std::to_string(warm));
      r.warmup_ms = parse_times(r.proc->receive(timeout));
    }
    const double frame_ms = r.warmup_ms.empty() ? r.check_ms : r.warmup_ms.back();
    r.planned = std::clamp(static_cast<int>(seconds * 1000 / std::max(frame_ms, 1e-3)), std::min(3, frames), frames);
    return true;
  } catch (const std::exception& e) {
    fail_worker(r, label, std::string("warm-up: ") + e.what());
    return false;
  }
}

void stop_timed(WorkerRun& r, const std::string& label, int digits) {
  r.proc->stop();
  r.proc.reset();
  std::cerr << "backbone-bench:   " << label << ": median " << fixed(r.median_ms(), digits) << " ms over "
            << r.times_ms.size() << " frames\n";
}

namespace {

// Writes through a temporary file, so an interrupted run leaves no half-written input behind.
void save_atomically(const fs::path& p, const Tensor& t) {
  const fs::path tmp = p.string() + ".tmp";
  save_npy(tmp.string(), t);
  fs::rename(tmp, p);
}

}  // namespace

fs::path ensure_weights(const fs::path& work, const fs::path& logs, const std::string& python,
                        const std::string& peer_script, int depth, int seed, bool fpn) {
  fs::create_directories(work / "weights");
  const std::string tag = "resnet" + std::to_string(depth) + (fpn ? "-fpn" : "") + "-seed" + std::to_string(seed);
  const fs::path p = work / "weights" / (tag + ".pth");
  if (!fs::exists(p)) {
    std::vector<std::string> argv = {python, peer_script, "prepare", "--depth", std::to_string(depth),
                                     "--seed", std::to_string(seed), "--out", p.string()};
    if (fpn) argv.push_back("--fpn");
    run_logged("making the weights " + p.string(), argv, (logs / ("prepare-" + tag + ".log")).string());
  }
  return p;
}

fs::path ensure_input(const fs::path& work, int batch, int64_t height, int64_t width, int seed, int64_t padded_height,
                      int64_t padded_width) {
  fs::create_directories(work / "inputs");
  const int64_t ph = std::max(padded_height, height), pw = std::max(padded_width, width);
  const bool padded = ph != height || pw != width;
  const std::string size = std::to_string(height) + "x" + std::to_string(width);
  const fs::path p = work / "inputs" /
                     ((batch == 1 ? "input-" : "input-b" + std::to_string(batch) + "-") + size + "-seed" +
                      std::to_string(seed) +
                      (padded ? "-padded-" + std::to_string(ph) + "x" + std::to_string(pw) : std::string()) + ".npy");
  if (!fs::exists(p)) {
    // The values of the unpadded input (the same draws, in the same order), zeros in the padding.
    Tensor x = Tensor::zeros({batch, 3, ph, pw});
    std::mt19937 gen(static_cast<uint32_t>(seed) * 7919u + 17u);
    std::normal_distribution<float> dist(0.f, 1.f);
    float* d = x.data_ptr<float>();
    for (int64_t plane = 0; plane < batch * 3; ++plane)
      for (int64_t y = 0; y < height; ++y)
        for (int64_t xx = 0; xx < width; ++xx) d[(plane * ph + y) * pw + xx] = dist(gen);
    save_atomically(p, x);
  }
  return p;
}

fs::path ensure_nv12_frame(const fs::path& work, int64_t height, int64_t width, int seed) {
  fs::create_directories(work / "inputs");
  const fs::path p = work / "inputs" /
                     ("nv12-" + std::to_string(width) + "x" + std::to_string(height) + "-seed" + std::to_string(seed) + ".npy");
  if (!fs::exists(p)) save_atomically(p, make_nv12_frame(height, width, static_cast<uint64_t>(seed)));
  return p;
}

}  // namespace backbone::bench
