// SPDX-License-Identifier: Apache-2.0
// A worker process of backbone-bench: commands on its stdin, one-line replies on its fd 3, its
// stdout and stderr in a log file.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace backbone::bench {

class WorkerProcess {
 public:
  // Starts argv[0] (a path) with `env` added ("KEY=VALUE"); output goes to `log_path`.
  WorkerProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& log_path);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // Sends one command line.
  void send(const std::string& line);
  // The next reply line; throws std::runtime_error (with the log's tail) when the worker exits, or
  // kills it and throws when no line comes within `timeout_s`.
  std::string receive(double timeout_s = 1800);
  // Sends "quit", closes the pipes and waits for the process (kills it after `grace_s`).
  void stop(double grace_s = 10);
  // The last `lines` lines of the log.
  std::string log_tail(int lines = 15) const;

 private:
  pid_t pid_ = -1;
  int to_fd_ = -1;
  int from_fd_ = -1;
  std::string buffer_;  // bytes read from the reply pipe, not yet returned
  std::string log_path_;
};

}  // namespace backbone::bench
