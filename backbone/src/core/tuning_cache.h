// SPDX-License-Identifier: Apache-2.0
// Measurements an engine makes once per machine (which convolution algorithm is faster for a layer
// shape, which precision for a model and input shape) and keeps in tuning_cache_path(), so that a
// later process makes the same choices without measuring: for a given machine and cache file the
// choices are deterministic.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace backbone::detail {

// The CPU's model name ("model name" of /proc/cpuinfo, else "unknown cpu"), for cache keys.
std::string cpu_model_name();

// One process-wide table, read from tuning_cache_path() at first use. Keys and values are single
// lines without tabs. put() records a measurement and rewrites the file (a new file renamed over the
// old one, so that readers never see half of it); a file that cannot be written leaves the value in
// memory only.
class TuningCache {
 public:
  static TuningCache& instance();
  std::optional<std::string> get(const std::string& key);
  void put(const std::string& key, const std::string& value);
  // Forgets what was read and reads the file again (tests that change BACKBONE_CACHE_DIR).
  void reload();

 private:
  TuningCache() = default;
  void load_locked();
  struct Impl;
  Impl& impl();
};

// A recorded value: "<choice> name=number name=number ...", e.g. "winograd direct_us=1903.2
// winograd_us=624.4 err=1.84e-06". Fields that are not name=number are skipped; a figure that does
// not parse reads as 0.
struct TuningValue {
  std::string choice;
  std::map<std::string, double> figures;
  double figure(const std::string& name) const {
    auto it = figures.find(name);
    return it == figures.end() ? 0.0 : it->second;
  }
};
TuningValue parse_tuning_value(const std::string& value);

}  // namespace backbone::detail
