// SPDX-License-Identifier: Apache-2.0
#include "core/tuning_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "backbone/engine.h"

namespace backbone {

std::string tuning_cache_path() {
  if (const char* dir = std::getenv("BACKBONE_CACHE_DIR")) {
    const std::string d = dir;
    if (d.empty() || d == "none") return "";
    return d + "/tuning.txt";
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/backbone/tuning.txt";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/backbone/tuning.txt";
  return "";
}

namespace detail {
namespace {

// A cache file is small (a line per layer shape and per model shape measured); anything larger, or
// any longer line, is not ours and is ignored.
constexpr std::streamoff kMaxFileBytes = 4 << 20;
constexpr size_t kMaxLine = 4096;

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return s.size() > kMaxLine / 2 ? s.substr(0, kMaxLine / 2) : s;
}

void make_dirs(const std::string& path) {
  for (size_t i = 1; i < path.size(); ++i)
    if (path[i] == '/') ::mkdir(path.substr(0, i).c_str(), 0755);
}

// The lines of a cache file (none when it is missing, oversized or unreadable).
std::map<std::string, std::string> read_file(const std::string& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path, std::ios::binary);
  if (!in) return values;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0 || size > kMaxFileBytes) return values;
  in.seekg(0);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.size() > kMaxLine) continue;
    const size_t tab = line.find('\t');
    if (tab != std::string::npos && tab > 0) values[line.substr(0, tab)] = line.substr(tab + 1);
  }
  return values;
}

}  // namespace

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  for (int n = 0; n < 4096 && std::getline(in, line); ++n) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    size_t b = line.find_first_not_of(" \t", colon + 1);
    return b == std::string::npos ? "unknown cpu" : one_line(line.substr(b));
  }
  return "unknown cpu";
}

struct TuningCache::Impl {
  std::mutex mutex;
  bool loaded = false;
  std::string path;
  std::map<std::string, std::string> values;
};

TuningCache::Impl& TuningCache::impl() {
  static Impl i;
  return i;
}

TuningCache& TuningCache::instance() {
  static TuningCache c;
  return c;
}

void TuningCache::load_locked() {
  Impl& m = impl();
  if (m.loaded) return;
  m.loaded = true;
  m.path = tuning_cache_path();
  m.values.clear();
  if (!m.path.empty()) m.values = read_file(m.path);
}

std::optional<std::string> TuningCache::get(const std::string& key) {
  std::lock_guard<std::mutex> lock(impl().mutex);
  load_locked();
  auto it = impl().values.find(one_line(key));
  if (it == impl().values.end()) return std::nullopt;
  return it->second;
}

void TuningCache::put(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(impl().mutex);
  load_locked();
  Impl& m = impl();
  m.values[one_line(key)] = one_line(value);
  if (m.path.empty()) return;
  // The file as it is now (other processes may have added lines, or it may have been deleted to
  // measure again), with this one value set: what this process read earlier is not written back.
  std::map<std::string, std::string> file = read_file(m.path);
  file[one_line(key)] = one_line(value);
  make_dirs(m.path);
  const std::string tmp = m.path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return;
    out << "# gst-backbone tuning cache: measurements per machine (key<TAB>choice and figures); safe to delete\n";
    for (const auto& [k, v] : file) out << k << '\t' << v << '\n';
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), m.path.c_str()) != 0) std::remove(tmp.c_str());
}

TuningValue parse_tuning_value(const std::string& value) {
  TuningValue v;
  std::istringstream in(value);
  in >> v.choice;
  std::string field;
  while (in >> field) {
    const size_t eq = field.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    char* end = nullptr;
    const double x = std::strtod(field.c_str() + eq + 1, &end);
    v.figures[field.substr(0, eq)] = end && *end == '\0' && std::isfinite(x) ? x : 0.0;
  }
  return v;
}

void TuningCache::reload() {
  std::lock_guard<std::mutex> lock(impl().mutex);
  impl().loaded = false;
  load_locked();
}

}  // namespace detail
}  // namespace backbone
