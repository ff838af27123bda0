// SPDX-License-Identifier: Apache-2.0
#include "process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace backbone::bench {

WorkerProcess::WorkerProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                             const std::string& log_path)
    : log_path_(log_path) {
  int cmd[2], rep[2];
  if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(rep, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("cannot create " + log_path + ": " + std::strerror(errno));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    // Child: stdin <- commands, fd 3 -> replies, stdout/stderr -> log (dup2 clears O_CLOEXEC).
    dup2(cmd[0], 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    dup2(rep[1], 3);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    execv(args[0], args.data());
    dprintf(2, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(cmd[0]);
  close(rep[1]);
  close(log_fd);
  to_fd_ = cmd[1];
  from_fd_ = rep[0];
}

WorkerProcess::~WorkerProcess() { stop(2); }

void WorkerProcess::send(const std::string& line) {
  const std::string s = line + "\n";
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = write(to_fd_, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("the worker stopped reading its commands; its log ends:\n" + log_tail());
    off += static_cast<size_t>(n);
  }
}

std::string WorkerProcess::receive(double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    pollfd p{from_fd_, POLLIN, 0};
    const int ready = left > 0 ? poll(&p, 1, static_cast<int>(std::min(left * 1000, 60000.0)) + 1) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      if (std::chrono::steady_clock::now() < deadline) continue;
      if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
      }
      throw std::runtime_error("the worker gave no answer within " + std::to_string(static_cast<int>(timeout_s)) +
                               " s and was killed; its log (" + log_path_ + ") ends:\n" + log_tail());
    }
    char buf[4096];
    const ssize_t n = ready > 0 ? read(from_fd_, buf, sizeof buf) : -1;
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) {
      buffer_.append(buf, static_cast<size_t>(n));
      continue;
    }
    break;  // end of file (or an error): the worker is gone
  }
  int status = 0;
  std::string how = "exited";
  if (pid_ > 0 && waitpid(pid_, &status, 0) == pid_) {
    if (WIFEXITED(status)) how = "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) how = "was killed by signal " + std::to_string(WTERMSIG(status));
    pid_ = -1;
  }
  throw std::runtime_error("the worker " + how + " without answering; its log (" + log_path_ + ") ends:\n" + log_tail());
}

void WorkerProcess::stop(double grace_s) {
  if (to_fd_ >= 0) {
    const char q[] = "quit\n";
    (void)!write(to_fd_, q, sizeof(q) - 1);
    close(to_fd_);
    to_fd_ = -1;
  }
  if (from_fd_ >= 0) {
    close(from_fd_);
    from_fd_ = -1;
  }
  if (pid_ > 0) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }
}

std::string WorkerProcess::log_tail(int lines) const {
  std::ifstream in(log_path_);
  std::deque<std::string> tail;
  for (std::string l; std::getline(in, l);) {
    tail.push_back(l);
    if (static_cast<int>(tail.size()) > lines) tail.pop_front();
  }
  std::string out;
  for (const auto& l : tail) out += "    " + l + "\n";
  return out;
}

}  // namespace backbone::bench
