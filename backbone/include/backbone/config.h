// SPDX-License-Identifier: Apache-2.0
// detectron2's config system (yacs CfgNode + detectron2's get_cfg() defaults) for the keys this
// project reads. detectron2's own YAML files load unchanged, with _BASE_ chains and
// merge_from_list-style overrides ("MODEL.RESNETS.DEPTH", "101").
//
// Key checking follows detectron2 for the sections this project uses (MODEL.RESNETS,
// MODEL.BACKBONE, MODEL.FPN, MODEL.PIXEL_MEAN, MODEL.PIXEL_STD, MODEL.DEVICE, MODEL.WEIGHTS, INPUT): a key
// that detectron2's defaults do not have there is a ConfigError "Non-existent config key: KEY"
// (from merge_from_list/set: yacs' "Non-existent key: KEY"), and a value whose type does not fit
// is yacs' "Type mismatch" error; errors from a file start with "FILE: ". Every other section
// (ROI_HEADS, SOLVER, DATASETS, ...) is accepted and ignored, so a full config dumped by
// detectron2 loads.
//
// Configs are plain data: YAML tags outside the core schema (!!python/..., custom !tags) are a
// ConfigError naming the tag, and a file's size, its YAML nodes and text with aliases and merge
// keys expanded, nesting, Python-literal nesting and the _BASE_ depth are bounded (README.md,
// "Limits"); each _BASE_ file is read once per load.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace backbone {

class Config {
 public:
  // detectron2's get_cfg(): every default of detectron2/config/defaults.py.
  Config();
  ~Config();
  Config(const Config&);
  Config& operator=(const Config&);
  Config(Config&&) noexcept;
  Config& operator=(Config&&) noexcept;

  // cfg.merge_from_file(path): follows _BASE_ (relative to the file's folder, recursively),
  // then merges the file over it. Throws ConfigError naming the file and the problem.
  void merge_from_file(const std::string& path);
  // The same for YAML text; `base_dir` resolves relative _BASE_ paths.
  void merge_from_string(const std::string& yaml_text, const std::string& base_dir = ".");
  // cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "101", ...]): values are parsed as Python
  // literals would be by yacs (ints, floats, bools, strings, lists, tuples). An odd count is an
  // error, as in yacs ("Override list has odd length: ...").
  void merge_from_list(const std::vector<std::string>& key_value_pairs);

  // True when the dotted key exists (a default or merged from a file).
  bool has(const std::string& key) const;
  // Typed reads of a dotted key ("MODEL.RESNETS.DEPTH"); throw ConfigError when the key is
  // missing or its value has another type. get_float accepts integers; lists accept tuples.
  bool get_bool(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;
  std::vector<double> get_float_list(const std::string& key) const;
  std::vector<std::string> get_string_list(const std::string& key) const;
  std::vector<bool> get_bool_list(const std::string& key) const;

  // Python's repr() of the value at a dotted key, as detectron2 holds it: "50", "(800,)",
  // "[103.53, 116.28, 123.675]", "'BGR'", "None"; a section prints as yacs' str(CfgNode).
  std::string repr(const std::string& key) const;

  // Sets a key from YAML/Python-literal text, with the same checks as merge_from_list.
  void set(const std::string& key, const std::string& value);

  // The whole tree as YAML (as cfg.dump() would write it; keys sorted).
  std::string dump() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Loads detectron2's defaults, then `path` (may be empty: defaults alone), then the overrides.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

}  // namespace backbone
