// SPDX-License-Identifier: Apache-2.0
// Small helpers of backbone-bench's driver, shared by its CPU and GPU sections.
#pragma once

#include <algorithm>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backbone/engine.h"
#include "bench_core.h"
#include "process.h"

namespace backbone::bench {

std::string shell_quote(const std::string& s);
// Runs argv with stdout and stderr into `log`; throws Error with the log's tail when it fails.
void run_logged(const std::string& what, const std::vector<std::string>& argv, const std::string& log);
// a and b exist and a is not older than b.
bool newer_than(const std::filesystem::path& a, const std::filesystem::path& b);
std::string fixed(double v, int digits);
std::string sci(double v);  // 1.2e-03
// A message on one markdown line: newlines as " / ", at most `max` characters.
std::string one_line(const std::string& text, size_t max);
// DIR/res2.npy .. DIR/res5.npy and DIR/p2.npy .. DIR/p6.npy (an FPN workload), those that exist.
FeatureMaps load_levels(const std::filesystem::path& dir);
// "times 1.2 3.4" -> {1.2, 3.4}; throws std::runtime_error for another reply.
std::vector<double> parse_times(const std::string& reply);
// $XDG_CACHE_HOME/backbone-bench, ~/.cache/backbone-bench, or the temp dir's backbone-bench.
std::string default_work_dir();
// This executable (/proc/self/exe).
std::string self_exe();
// "2026-11-25 21:32:00 UTC"
std::string now_utc();

// WORK/weights/resnet<depth>-seed<seed>.pth (with `fpn`: resnet<depth>-fpn-seed<seed>.pth, holding
// detectron2's FPN layers too), made by `peer.py prepare [--fpn]` with `python` when missing (log in
// LOGS/prepare-....log).
std::filesystem::path ensure_weights(const std::filesystem::path& work, const std::filesystem::path& logs,
                                     const std::string& python, const std::string& peer_script, int depth, int seed,
                                     bool fpn = false);
// WORK/inputs/input-<H>x<W>-seed<seed>.npy (batch 1) or input-b<N>-<H>x<W>-seed<seed>.npy: float32
// [batch, 3, H, W] of seeded N(0, 1) values (the scale of a normalised image), made when missing.
// The first image of a batch is the batch-1 input of the same size and seed. With padded_height/
// width above height/width (an FPN at a size that is not a multiple of 32):
// input-<H>x<W>-seed<seed>-padded-<PH>x<PW>.npy, the same values at the top left and zeros at the
// bottom and right (detectron2's ImageList padding).
std::filesystem::path ensure_input(const std::filesystem::path& work, int batch, int64_t height, int64_t width, int seed,
                                   int64_t padded_height = 0, int64_t padded_width = 0);
// WORK/inputs/nv12-<W>x<H>-seed<seed>.npy: make_nv12_frame, made when missing.
std::filesystem::path ensure_nv12_frame(const std::filesystem::path& work, int64_t height, int64_t width, int seed);

// ---- a runner's worker process: start-up, agreement check, warm-up, alternated timing --------
// The CPU and GPU sections keep one record per runner that derives from WorkerRun; the steps
// below are theirs in common. `label` is the runner's name as the progress lines print it.

struct WorkerRun {
  std::string status = "ok";  // ok | disagrees | failed | unsupported (the GPU section: also reference)
  std::string message, describe;
  std::optional<Agreement> agreement;
  std::vector<double> warmup_ms, times_ms;
  int planned = 0;      // timed frames, from --seconds and the last warm-up frame
  double check_ms = 0;  // the agreement check's frame
  std::unique_ptr<WorkerProcess> proc;  // null once the runner is stopped (done, failed, unsupported, disagrees)
  double median_ms() const { return times_ms.empty() ? 0 : median(times_ms); }
};

// Marks r failed with `msg`, prints it and stops its process.
void fail_worker(WorkerRun& r, const std::string& label, const std::string& msg);
// Waits for the worker's first reply: "ready {json}" (describe kept), "unsupported <why>" (r stopped,
// status unsupported) or anything else (r failed).
void await_ready(WorkerRun& r, const std::string& label, double timeout);
// Sends "check DIR" and waits for "ok" (r.check_ms measured); throws std::runtime_error with the
// worker's error otherwise.
void run_check(WorkerRun& r, const std::filesystem::path& dir, double timeout);
// Compares out with ref (check_agreement), prints the per-level errors and stops r, status
// disagrees, when it is outside `tolerance`.
void judge_agreement(WorkerRun& r, const std::string& label, const std::string& reference, const FeatureMaps& ref,
                     const FeatureMaps& out, double tolerance);
// `warm` untimed frames (none when 0), then r.planned = --seconds / (the last warm-up frame, else the
// check's frame), between min(3, frames) and frames. False (r failed) when the worker failed.
bool warm_up(WorkerRun& r, const std::string& label, int warm, int frames, double seconds, double timeout);
// Stops a timed runner and prints its median over its frames (`digits` decimals).
void stop_timed(WorkerRun& r, const std::string& label, int digits);

// The timed frames: each runner with a process runs its r.planned frames in `rounds` chunks of
// ceil(planned / rounds), every round running each of them in turn, round k starting with the k-th
// one. A runner that fails is stopped (label(r) names it) and skipped in later rounds. Returns the
// runners that took part, those still running included (stop_timed them).
template <class Runner, class Label>
std::vector<Runner*> run_timed_rounds(std::vector<Runner>& runners, int rounds, double timeout, Label&& label) {
  std::vector<Runner*> active;
  for (auto& r : runners)
    if (r.proc) active.push_back(&r);
  for (int round = 0; round < rounds && !active.empty(); ++round) {
    for (size_t k = 0; k < active.size(); ++k) {
      Runner& r = *active[(k + static_cast<size_t>(round)) % active.size()];
      if (!r.proc) continue;
      const int chunk = (r.planned + rounds - 1) / rounds;
      const int n = std::min(chunk, r.planned - static_cast<int>(r.times_ms.size()));
      if (n <= 0) continue;
      try {
        r.proc->send("run " + std::to_string(n));
        auto t = parse_times(r.proc->receive(timeout));
        r.times_ms.insert(r.times_ms.end(), t.begin(), t.end());
      } catch (const std::exception& e) {
        fail_worker(r, label(r), std::string("timing: ") + e.what());
      }
    }
  }
  return active;
}

}  // namespace backbone::bench
