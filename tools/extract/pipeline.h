// SPDX-License-Identifier: Apache-2.0
// backbone-extract: one video through uridecodebin ! videoconvert [! videorate ! caps] ! queue !
// resnetbackbone ! featuresink, in this process.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "options.h"

namespace backbone::extract {

struct RunResult {
  bool ok = false;
  std::string error;       // the reason when !ok
  int64_t frames = 0;      // frames with features (written)
  double seconds = 0.0;    // from the start (model loading included) to EOS
  double first_frame = -1.0;  // seconds from the start to the first frame with features at the sink
  double last_frame = -1.0;   // ... to the last one
  std::string launch;      // the pipeline, in gst-launch-1.0 syntax, for the sidecar
  std::string engine;      // resnetbackbone's engine-description ("" when the model did not load)
};

// Called from the pipeline's thread with the frames written so far and the fraction of the
// video's duration reached (-1 when unknown).
using ProgressFn = std::function<void(int64_t frames, double fraction)>;
// Called from the calling thread once the first frame has reached the sink, with resnetbackbone's
// engine-description (the engine's kernels, precision, device and threads).
using EngineFn = std::function<void(const std::string& description)>;

// Loads the backbone plugin when the registry does not have resnetbackbone yet (a build tree
// run): from `extra_dir` first, then GStreamer's own plugin folders. Throws std::runtime_error.
void ensure_plugin(const std::string& extra_dir);

// Runs `uri` through the elements configured from `options`, writing featuresink's files into
// `location`. `threads`: resnetbackbone num-threads. Stops early (ok = false, error "interrupted")
// when *cancel becomes true.
RunResult run_pipeline(const std::string& uri, const std::string& location, const Options& options, int threads,
                       const std::atomic<bool>& cancel, const ProgressFn& progress, const EngineFn& on_engine = {});

}  // namespace backbone::extract
