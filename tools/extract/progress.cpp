// SPDX-License-Identifier: Apache-2.0
#include "progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace backbone::extract {
namespace {

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const long t = std::lround(s);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

}  // namespace

Progress::Progress(Mode mode, int total, int slots, double interval_s)
    : mode_(mode), total_(total), interval_s_(interval_s), slot_frames_(slots, 0), slot_fraction_(slots, 0.0),
      start_(std::chrono::steady_clock::now()) {
  if (mode_ != Mode::None) thread_ = std::thread([this] { loop(); });
}

Progress::~Progress() { stop(); }

void Progress::update(int slot, int64_t frames, double fraction) {
  std::lock_guard<std::mutex> lock(mutex_);
  slot_frames_[slot] = frames;
  slot_fraction_[slot] = fraction < 0 ? 0.0 : fraction;
}

void Progress::finish(int slot, bool ok, bool skipped) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (skipped) ++skipped_;
  else if (ok) ++done_;
  else ++failed_;
  if (ok && !skipped) frames_done_ += slot_frames_[slot];
  slot_frames_[slot] = 0;
  slot_fraction_[slot] = 0.0;
}

int64_t Progress::frames() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return frames_done_;
}

void Progress::message(const std::string& text) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (drawn_) std::fputs("\r\033[K", stderr);
  std::fputs(text.c_str(), stderr);
  std::fputc('\n', stderr);
  if (drawn_) std::fputs(line(true).c_str(), stderr);
  std::fflush(stderr);
}

std::string Progress::line(bool bar) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  int64_t frames = frames_done_;
  double running = 0.0;
  for (size_t i = 0; i < slot_frames_.size(); ++i) {
    frames += slot_frames_[i];
    running += slot_fraction_[i];
  }
  const int ended = done_ + failed_ + skipped_;
  const double fps = elapsed > 0 ? frames / elapsed : 0.0;
  // Time left: the work fraction reached (ended files, and how far the running ones are into
  // their duration) against the time spent; skipped files cost nothing and count as done.
  const int work_total = total_ - skipped_;
  const double work_done = (done_ + failed_) + running;
  const double left = work_total <= 0 ? 0.0 : work_done > 0 ? elapsed * (work_total - work_done) / work_done : NAN;
  char buf[256];
  if (bar) {
    const int width = 24;
    const double f = total_ > 0 ? (ended + running) / total_ : 1.0;
    const int fill = std::min(width, static_cast<int>(f * width));
    std::string b(fill, '#');
    b += std::string(width - fill, '.');
    std::snprintf(buf, sizeof buf, "\r\033[K[%s] %d/%d files%s, %lld frames, %.1f frames/s, %s left", b.c_str(), ended,
                  total_, failed_ ? (" (" + std::to_string(failed_) + " failed)").c_str() : "",
                  static_cast<long long>(frames), fps, duration(left).c_str());
  } else {
    std::snprintf(buf, sizeof buf, "backbone-extract: %d/%d files (%d failed, %d skipped), %lld frames, %.1f frames/s, "
                  "%s elapsed, %s left", ended, total_, failed_, skipped_, static_cast<long long>(frames), fps,
                  duration(elapsed).c_str(), duration(left).c_str());
  }
  return buf;
}

void Progress::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto period = mode_ == Mode::Bar ? std::chrono::milliseconds(200)
                                         : std::chrono::milliseconds(static_cast<long>(interval_s_ * 1000));
  while (!stopping_) {
    cv_.wait_for(lock, period, [this] { return stopping_; });
    if (mode_ == Mode::Bar) {
      std::fputs(line(true).c_str(), stderr);
      drawn_ = true;
    } else {
      std::fputs((line(false) + "\n").c_str(), stderr);
    }
    std::fflush(stderr);
  }
  if (mode_ == Mode::Bar && drawn_) std::fputc('\n', stderr);
  drawn_ = false;
  std::fflush(stderr);
}

void Progress::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace backbone::extract
