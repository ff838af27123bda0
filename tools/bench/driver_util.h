// SPDX-License-Identifier: Apache-2.0
// Small helpers of backbone-bench's driver, shared by its CPU and GPU sections.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "backbone/engine.h"

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
// DIR/res2.npy .. DIR/res5.npy, those that exist.
FeatureMaps load_levels(const std::filesystem::path& dir);
// "times 1.2 3.4" -> {1.2, 3.4}; throws std::runtime_error for another reply.
std::vector<double> parse_times(const std::string& reply);
// $XDG_CACHE_HOME/backbone-bench, ~/.cache/backbone-bench, or the temp dir's backbone-bench.
std::string default_work_dir();
// This executable (/proc/self/exe).
std::string self_exe();
// "2026-11-25 21:32:00 UTC"
std::string now_utc();

// WORK/weights/resnet<depth>-seed<seed>.pth, made by `peer.py prepare` with `python` when missing
// (log in LOGS/prepare-....log).
std::filesystem::path ensure_weights(const std::filesystem::path& work, const std::filesystem::path& logs,
                                     const std::string& python, const std::string& peer_script, int depth, int seed);
// WORK/inputs/input-<H>x<W>-seed<seed>.npy (batch 1) or input-b<N>-<H>x<W>-seed<seed>.npy: float32
// [batch, 3, H, W] of seeded N(0, 1) values (the scale of a normalised image), made when missing.
// The first image of a batch is the batch-1 input of the same size and seed.
std::filesystem::path ensure_input(const std::filesystem::path& work, int batch, int64_t height, int64_t width, int seed);
// WORK/inputs/nv12-<W>x<H>-seed<seed>.npy: make_nv12_frame, made when missing.
std::filesystem::path ensure_nv12_frame(const std::filesystem::path& work, int64_t height, int64_t width, int seed);

}  // namespace backbone::bench
