// SPDX-License-Identifier: Apache-2.0
// backbone-extract: progress on stderr. On a terminal a bar redrawn in place (files done, frames,
// frames per second, time left); otherwise a plain line every --progress-interval seconds.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace backbone::extract {

class Progress {
 public:
  enum class Mode { None, Bar, Lines };
  // `total`: the inputs this run processes; `slots`: pipelines at the same time (--jobs).
  Progress(Mode mode, int total, int slots, double interval_s);
  ~Progress();

  void update(int slot, int64_t frames, double fraction);  // running file in `slot`
  void finish(int slot, bool ok, bool skipped);            // that file ended (frames kept)
  void message(const std::string& line);                  // a line that must not tear the bar
  void stop();                                             // last update, then the thread ends

  int64_t frames() const;

 private:
  void loop();
  std::string line(bool bar);

  Mode mode_;
  int total_;
  double interval_s_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool drawn_ = false;
  int done_ = 0, failed_ = 0, skipped_ = 0;
  int64_t frames_done_ = 0;  // frames of ended files
  std::vector<int64_t> slot_frames_;
  std::vector<double> slot_fraction_;
  std::chrono::steady_clock::time_point start_;
  std::thread thread_;
};

}  // namespace backbone::extract
