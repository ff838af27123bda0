// SPDX-License-Identifier: Apache-2.0
// backbone::Config: detectron2's CfgNode (yacs + fvcore + detectron2's versioned merge) over the
// defaults of detectron2's get_cfg().
#include "backbone/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "backbone/error.h"
#include "config/defaults_generated.h"
#include "config/py_value.h"

namespace backbone {

using detail::PyKind;
using detail::PyValue;

namespace {

constexpr int64_t kLatestVersion = 2;
const char* const kBaseKey = "_BASE_";

// Limits on what one load (a file with its _BASE_ files, or a string) may hold, so that a hostile
// config takes bounded memory, time and stack (README.md, "Limits"). detectron2's own configs stay
// far below them (a few hundred nodes, _BASE_ chains of 2 or 3 files).
constexpr std::size_t kMaxConfigFileBytes = 4u << 20;  // 4 MiB per YAML file
constexpr std::size_t kMaxConfigNodes = 100000;        // YAML nodes, aliases and merge keys expanded
constexpr std::size_t kMaxConfigBytes = 64u << 20;     // the text those nodes hold (values, keys, file names)
constexpr int kMaxConfigNesting = 200;                 // nested YAML mappings and sequences
constexpr std::size_t kMaxBaseDepth = 32;              // files in one chain of _BASE_ inclusions

// ---------------------------------------------------------------------------------------------
// The project's key checking: the sections the backbone reads are checked as yacs checks them,
// everything else is stored unchecked.

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

bool is_checked(const std::string& full_key) {
  static const char* const kSections[] = {"INPUT", "MODEL.RESNETS", "MODEL.BACKBONE", "MODEL.FPN"};
  static const char* const kLeaves[] = {"VERSION", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD",
                                        "MODEL.WEIGHTS", "MODEL.DEVICE"};
  for (const char* leaf : kLeaves)
    if (full_key == leaf) return true;
  for (const char* section : kSections)
    if (full_key == section || starts_with(full_key, std::string(section) + ".")) return true;
  return false;
}

// Nodes above a checked section keep their type (MODEL cannot become a number).
bool is_checked_or_ancestor(const std::string& full_key) {
  return is_checked(full_key) || full_key == "MODEL";
}

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  size_t pos = 0;
  for (;;) {
    const size_t dot = key.find('.', pos);
    parts.push_back(key.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos));
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return parts;
}

std::string with_origin(const std::string& origin, const std::string& message) {
  return origin.empty() ? message : origin + ": " + message;
}

// yacs' _decode_cfg_value, its errors (a literal nested too deep) naming the key.
PyValue decode(const PyValue& v, const std::string& full_key) {
  try {
    return detail::decode_cfg_value(v);
  } catch (const ConfigError& e) {
    throw ConfigError(with_origin(v.origin, "key " + full_key + ": " + e.what()));
  }
}

// yacs' _check_and_coerce_cfg_value_type.
PyValue check_and_coerce(PyValue replacement, const PyValue& original, const std::string& full_key) {
  auto valid = [](PyKind k) { return k != PyKind::Node && k != PyKind::Dict; };
  if (replacement.kind == original.kind) return replacement;
  if ((replacement.kind == PyKind::None && valid(original.kind)) ||
      (original.kind == PyKind::None && valid(replacement.kind)))
    return replacement;
  if (replacement.is_sequence() && original.is_sequence()) {
    replacement.kind = original.kind;
    return replacement;
  }
  throw ConfigError(with_origin(
      replacement.origin, "Type mismatch (" + detail::py_type(original) + " vs. " +
                              detail::py_type(replacement) + ") with values (" +
                              detail::py_str(original) + " vs. " + detail::py_str(replacement) +
                              ") for config key: " + full_key));
}

// yacs' _merge_a_into_b with the project's key checking.
void merge_a_into_b(const PyValue& a, PyValue& b, const std::string& prefix) {
  for (const auto& kv : a.node) {
    const std::string full_key = join_key(prefix, kv.first);
    PyValue v = decode(kv.second, full_key);
    auto it = b.node.find(kv.first);
    if (it != b.node.end()) {
      if (is_checked_or_ancestor(full_key)) v = check_and_coerce(std::move(v), it->second, full_key);
      if (v.is_node() && it->second.is_node()) {
        merge_a_into_b(v, it->second, full_key);
      } else {
        it->second = std::move(v);
      }
    } else if (is_checked(full_key)) {
      throw ConfigError(with_origin(v.origin, "Non-existent config key: " + full_key));
    } else {
      b.node.emplace(kv.first, std::move(v));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// YAML reading: yaml.safe_load's typing of scalars, restricted to YAML's core schema.

// `identity` (for detectron2's defaults only): YAML aliases become lists that share one identity,
// as the Python objects behind detectron2's dump do.
using Identities = std::vector<std::pair<YAML::Node, int>>;

const char* const kCoreTagPrefix = "tag:yaml.org,2002:";

// A tag as it is written in YAML ("!!python/object/apply:os.system", "!foo").
std::string written_tag(const std::string& tag) {
  if (starts_with(tag, kCoreTagPrefix)) return "!!" + tag.substr(std::strlen(kCoreTagPrefix));
  return tag;
}

// What the YAML documents of one load have created so far.
struct YamlBudget {
  std::size_t nodes = 0;
  std::size_t bytes = 0;
};

// One YAML document read into PyValues. yaml-cpp shares the node of an anchor between its
// aliases, while PyValues are trees: every alias and merge key is expanded, and `budget` counts
// what the expansion creates (over all the files of one load) against kMaxConfigNodes and
// kMaxConfigBytes, so that a few aliases of aliases ("billion laughs") or of one long string
// cannot take memory and time without bound.
struct YamlReader {
  std::string origin;
  YamlBudget* budget = nullptr;
  Identities* identity = nullptr;

  // The dotted key of a child, for messages; capped so that long keys nested deep cannot make
  // every level of the recursion hold a long copy.
  static std::string capped(std::string k) {
    constexpr std::size_t kMaxShown = 256;
    if (k.size() > kMaxShown) k = k.substr(0, kMaxShown - 3) + "...";
    return k;
  }

  PyValue read(const YAML::Node& n, const std::string& key, int depth) const {
    auto fail = [&](const std::string& what) {
      throw ConfigError(with_origin(origin, (key.empty() ? std::string("the document") : "key " + key) + ": " + what));
    };
    if (++budget->nodes > kMaxConfigNodes)
      fail("the config expands to more than " + std::to_string(kMaxConfigNodes) +
           " YAML nodes (aliases and merge keys expanded, all _BASE_ files together)");
    // The text this node holds: a scalar's value, and the file name every PyValue records.
    budget->bytes += origin.size() + (n.IsScalar() ? n.Scalar().size() : 0);
    if (budget->bytes > kMaxConfigBytes)
      fail("the config expands to more than " + std::to_string(kMaxConfigBytes) +
           " bytes of text (aliases and merge keys expanded, all _BASE_ files together)");
    if (depth > kMaxConfigNesting)
      fail("the YAML nests deeper than " + std::to_string(kMaxConfigNesting) + " levels");
    const std::string& tag = n.Tag();
    auto check_tag = [&](const char* core) {
      if (tag.empty() || tag == "?" || tag == "!" || tag == std::string(kCoreTagPrefix) + core) return;
      fail("the YAML tag " + written_tag(tag) +
           " is not allowed: a config holds plain data, and only YAML's core schema tags (!!str, !!int, "
           "!!float, !!bool, !!null, !!seq, !!map) are accepted");
    };
    PyValue v;
    switch (n.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        if (tag == std::string(kCoreTagPrefix) + "str") {
          v = PyValue::str("");
        } else {
          check_tag("null");
        }
        break;
      case YAML::NodeType::Scalar: {
        const std::string& text = n.Scalar();
        try {
          if (tag == "?" || tag.empty()) {
            v = detail::resolve_plain_scalar(text);
          } else if (tag == "!" || tag == "tag:yaml.org,2002:str") {
            v = PyValue::str(text);
          } else if (tag == "tag:yaml.org,2002:int") {
            v = detail::resolve_plain_scalar(text);
            if (v.kind != PyKind::Int) fail("'" + text + "' is not an int");
          } else if (tag == "tag:yaml.org,2002:float") {
            v = detail::resolve_plain_scalar(text);
            if (v.kind == PyKind::Int) v = PyValue::floating(static_cast<double>(v.i));
            if (v.kind != PyKind::Float) fail("'" + text + "' is not a float");
          } else if (tag == "tag:yaml.org,2002:bool") {
            v = detail::resolve_plain_scalar(text);
            if (v.kind != PyKind::Bool) fail("'" + text + "' is not a bool");
          } else if (tag == "tag:yaml.org,2002:null") {
            v = PyValue::none();
          } else {
            check_tag("str");
          }
        } catch (const ConfigError&) {
          throw;
        } catch (const std::exception& e) {
          fail(e.what());
        }
        break;
      }
      case YAML::NodeType::Sequence: {
        // detectron2's Base-RetinaNet.yaml computes MODEL.ANCHOR_GENERATOR.SIZES with
        // `!!python/object/apply:eval ["<expression>"]`, which yaml.unsafe_load runs. In the
        // sections this project does not read, that one form is kept as its expression text (an
        // unevaluated str: nothing runs); everywhere else, and every other Python tag, is refused.
        if (tag == std::string(kCoreTagPrefix) + "python/object/apply:eval" && !key.empty() && !is_checked_or_ancestor(key) &&
            n.size() == 1 &&
            n[0].IsScalar() && (n[0].Tag() == "!" || n[0].Tag() == "?" || n[0].Tag() == std::string(kCoreTagPrefix) + "str")) {
          budget->bytes += n[0].Scalar().size();
          v = PyValue::str(n[0].Scalar());
          break;
        }
        check_tag("seq");
        v.kind = PyKind::List;
        size_t index = 0;
        for (const auto& item : n)
          v.items.push_back(read(item, capped(key + "[" + std::to_string(index++) + "]"), depth + 1));
        if (identity != nullptr) {
          for (const auto& seen : *identity)
            if (seen.first.is(n)) v.shared = seen.second;
          if (v.shared == 0) {
            v.shared = static_cast<int>(identity->size()) + 1;
            identity->emplace_back(n, v.shared);
          }
        }
        break;
      }
      case YAML::NodeType::Map: {
        check_tag("map");
        v.kind = PyKind::Node;
        auto is_merge_key = [](const YAML::Node& k) { return k.IsScalar() && k.Tag() == "?" && k.Scalar() == "<<"; };
        // YAML merge keys ("<<: *anchor", as yaml.safe_load flattens them): the merged mappings
        // first (an earlier one in a list wins), then the explicit keys over them.
        for (const auto& kv : n) {
          if (!is_merge_key(kv.first)) continue;
          // (YAML::Node's assignment writes through to the node it refers to: index, never swap.)
          std::vector<PyValue> sources;
          if (kv.second.IsMap()) {
            sources.push_back(read(kv.second, key, depth + 1));
          } else if (kv.second.IsSequence()) {
            for (const auto& item : kv.second) {
              if (!item.IsMap()) fail("a YAML merge key (<<) takes mappings");
              sources.push_back(read(item, key, depth + 1));
            }
          } else {
            fail("a YAML merge key (<<) takes a mapping or a list of mappings");
          }
          for (size_t k = sources.size(); k-- > 0;)
            for (const auto& m : sources[k].node) v.node[m.first] = m.second;
        }
        for (const auto& kv : n) {
          if (!kv.first.IsScalar()) fail("a mapping key must be a scalar");
          if (is_merge_key(kv.first)) continue;
          const std::string& key_tag = kv.first.Tag();
          if (!(key_tag == "?" || key_tag == "!" || key_tag == std::string(kCoreTagPrefix) + "str"))
            fail("the YAML tag " + written_tag(key_tag) + " on the mapping key '" + kv.first.Scalar() +
                 "' is not allowed: keys are plain strings");
          const std::string k = kv.first.Scalar();
          budget->bytes += k.size();
          v.node[k] = read(kv.second, capped(join_key(key, k)), depth + 1);  // the last duplicate wins
        }
        break;
      }
    }
    v.origin = origin;
    return v;
  }
};

PyValue parse_yaml_document(const std::string& text, const std::string& name, YamlBudget* budget,
                            Identities* identity = nullptr) {
  if (text.size() > kMaxConfigFileBytes)
    throw ConfigError("Config file '" + name + "' has " + std::to_string(text.size()) + " bytes, more than the " +
                      std::to_string(kMaxConfigFileBytes) + " a config may have");
  YAML::Node doc;
  try {
    doc = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError("Config file '" + name + "' is not valid YAML: line " +
                      std::to_string(e.mark.line + 1) + ", column " + std::to_string(e.mark.column + 1) +
                      ": " + e.msg);
  }
  if (!doc.IsMap()) {
    throw ConfigError("Config file '" + name + "' must hold a YAML mapping (KEY: value lines), found " +
                      (doc.IsNull() ? std::string("an empty document")
                                    : doc.IsSequence() ? std::string("a list") : std::string("a scalar")));
  }
  return YamlReader{name, budget, identity}.read(doc, "", 0);
}

// fvcore's merge_a_into_b for the dicts of load_yaml_with_base.
void merge_dicts(const PyValue& a, PyValue& b, const std::string& file) {
  for (const auto& kv : a.node) {
    auto it = b.node.find(kv.first);
    if (kv.second.is_node() && it != b.node.end()) {
      if (!it->second.is_node())
        throw ConfigError(with_origin(file, "Cannot inherit key '" + kv.first + "' from base!"));
      merge_dicts(kv.second, it->second, file);
    } else {
      b.node[kv.first] = kv.second;
    }
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("Config file '" + path + "' cannot be read");
  std::string text;
  char buffer[65536];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxConfigFileBytes)
      throw ConfigError("Config file '" + path + "' has more than the " + std::to_string(kMaxConfigFileBytes) +
                        " bytes a config may have");
  }
  if (in.bad()) throw ConfigError("Config file '" + path + "' cannot be read");
  return text;
}

std::string normalized(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(std::filesystem::path(path), ec);
  return ec ? path : p.string();
}

// One merge_from_file / merge_from_string: the files being loaded (cycle detection, depth), the
// files already loaded (each file is read once, however many _BASE_ lists name it), and the YAML
// nodes read so far.
struct LoadContext {
  std::vector<std::string> stack;
  std::map<std::string, PyValue> loaded;
  YamlBudget budget;
};

PyValue load_yaml_with_base(const std::string& text, const std::string& name, const std::string& dir,
                            LoadContext& ctx);

PyValue load_file_with_base(const std::string& path, const std::string& included_from, LoadContext& ctx) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    if (included_from.empty()) throw ConfigError("Config file '" + path + "' does not exist!");
    throw ConfigError("Config file '" + path + "' (the _BASE_ of '" + included_from + "') does not exist!");
  }
  const std::string key = normalized(path);
  if (std::find(ctx.stack.begin(), ctx.stack.end(), key) != ctx.stack.end()) {
    std::string chain;
    for (const auto& s : ctx.stack) chain += s + " -> ";
    throw ConfigError("Config file '" + included_from + "' has a _BASE_ cycle: " + chain + key);
  }
  if (auto it = ctx.loaded.find(key); it != ctx.loaded.end()) return it->second;
  if (ctx.stack.size() >= kMaxBaseDepth)
    throw ConfigError("Config file '" + included_from + "': its _BASE_ '" + path + "' would be file " +
                      std::to_string(ctx.stack.size() + 1) + " of one chain of _BASE_ inclusions; at most " +
                      std::to_string(kMaxBaseDepth) + " are allowed (starting at '" + ctx.stack.front() + "')");
  ctx.stack.push_back(key);
  const std::string dir = std::filesystem::path(path).parent_path().string();
  PyValue r = load_yaml_with_base(read_file(path), path, dir, ctx);
  ctx.stack.pop_back();
  ctx.loaded.emplace(key, r);
  return r;
}

// fvcore's CfgNode.load_yaml_with_base.
PyValue load_yaml_with_base(const std::string& text, const std::string& name, const std::string& dir,
                            LoadContext& ctx) {
  PyValue cfg = parse_yaml_document(text, name, &ctx.budget);
  auto base_it = cfg.node.find(kBaseKey);
  if (base_it == cfg.node.end()) return cfg;

  auto load_base = [&](const PyValue& entry) {
    if (entry.kind != PyKind::Str)
      throw ConfigError(with_origin(name, "_BASE_ must be a file name or a list of file names, found " +
                                              detail::py_repr(entry) + " (" + detail::py_type(entry) + ")"));
    std::string base = entry.s;
    if (starts_with(base, "~")) {
      const char* home = std::getenv("HOME");
      if (home != nullptr) base = std::string(home) + base.substr(1);
    }
    if (base.find("://") != std::string::npos) {
      throw ConfigError(with_origin(name, "_BASE_ '" + base +
                                              "' is a URL; this library reads local files only: download "
                                              "it and name its local path"));
    }
    if (!starts_with(base, "/")) base = (std::filesystem::path(dir) / base).string();
    return load_file_with_base(base, name, ctx);
  };

  PyValue base_cfg;
  const PyValue& base_entry = base_it->second;
  if (base_entry.kind == PyKind::List) {
    base_cfg = PyValue::cfg_node();
    for (const PyValue& entry : base_entry.items) merge_dicts(load_base(entry), base_cfg, name);
  } else {
    base_cfg = load_base(base_entry);
  }
  cfg.node.erase(base_it);
  merge_dicts(cfg, base_cfg, name);
  return base_cfg;
}

// ---------------------------------------------------------------------------------------------
// detectron2/config/compat.py: the key renames between config versions (a partial config's keys
// are renamed in place, which is what downgrade -> merge -> upgrade does to them).

const PyValue* find_path(const PyValue& root, const std::vector<std::string>& parts) {
  const PyValue* cur = &root;
  for (const auto& p : parts) {
    if (!cur->is_node()) return nullptr;
    auto it = cur->node.find(p);
    if (it == cur->node.end()) return nullptr;
    cur = &it->second;
  }
  return cur;
}

void erase_path(PyValue& root, const std::vector<std::string>& parts) {
  // compat._rename's _del: remove the key, then parents that became empty.
  std::vector<PyValue*> chain{&root};
  for (size_t k = 0; k + 1 < parts.size(); ++k) chain.push_back(&chain.back()->node.at(parts[k]));
  for (size_t k = parts.size(); k-- > 0;) {
    chain[k]->node.erase(parts[k]);
    if (!chain[k]->node.empty() || k == 0) break;
  }
}

void rename_key(PyValue& cfg, const std::string& old_key, const std::string& new_key) {
  const auto old_parts = split_key(old_key);
  const PyValue* value = find_path(cfg, old_parts);
  if (value == nullptr) return;
  const PyValue moved = *value;
  erase_path(cfg, old_parts);
  const auto new_parts = split_key(new_key);
  PyValue* cur = &cfg;
  for (size_t k = 0; k + 1 < new_parts.size(); ++k) {
    auto it = cur->node.find(new_parts[k]);
    if (it == cur->node.end() || !it->second.is_node()) {
      PyValue node = PyValue::cfg_node();
      node.origin = moved.origin;
      cur->node[new_parts[k]] = node;
    }
    cur = &cur->node[new_parts[k]];
  }
  cur->node[new_parts.back()] = moved;
}

// ConverterV1 and ConverterV2 of compat.py (old name, new name).
const std::pair<const char*, const char*> kRenamesV1[] = {{"MODEL.RPN_HEAD.NAME", "MODEL.RPN.HEAD_NAME"}};
const std::pair<const char*, const char*> kRenamesV2[] = {
    {"MODEL.WEIGHT", "MODEL.WEIGHTS"},
    {"MODEL.PANOPTIC_FPN.SEMANTIC_LOSS_SCALE", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT"},
    {"MODEL.PANOPTIC_FPN.RPN_LOSS_SCALE", "MODEL.RPN.LOSS_WEIGHT"},
    {"MODEL.PANOPTIC_FPN.INSTANCE_LOSS_SCALE", "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT"},
    {"MODEL.PANOPTIC_FPN.COMBINE_ON", "MODEL.PANOPTIC_FPN.COMBINE.ENABLED"},
    {"MODEL.PANOPTIC_FPN.COMBINE_OVERLAP_THRESHOLD", "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH"},
    {"MODEL.PANOPTIC_FPN.COMBINE_STUFF_AREA_LIMIT", "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT"},
    {"MODEL.PANOPTIC_FPN.COMBINE_INSTANCES_CONFIDENCE_THRESHOLD",
     "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH"},
    {"MODEL.ROI_HEADS.SCORE_THRESH", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"},
    {"MODEL.ROI_HEADS.NMS", "MODEL.ROI_HEADS.NMS_THRESH_TEST"},
    {"MODEL.RETINANET.INFERENCE_SCORE_THRESHOLD", "MODEL.RETINANET.SCORE_THRESH_TEST"},
    {"MODEL.RETINANET.INFERENCE_TOPK_CANDIDATES", "MODEL.RETINANET.TOPK_CANDIDATES_TEST"},
    {"MODEL.RETINANET.INFERENCE_NMS_THRESHOLD", "MODEL.RETINANET.NMS_THRESH_TEST"},
    {"TEST.DETECTIONS_PER_IMG", "TEST.DETECTIONS_PER_IMAGE"},
    {"TEST.AUG_ON", "TEST.AUG.ENABLED"},
    {"TEST.AUG_MIN_SIZES", "TEST.AUG.MIN_SIZES"},
    {"TEST.AUG_MAX_SIZE", "TEST.AUG.MAX_SIZE"},
    {"TEST.AUG_FLIP", "TEST.AUG.FLIP"},
};

void upgrade_partial(PyValue& loaded, int64_t from_version, const PyValue& current, const std::string& name) {
  // A key that only exists under its new name is unknown to the old version's defaults.
  for (const auto& r : kRenamesV2) {
    if (is_checked(r.second) && find_path(loaded, split_key(r.second)) != nullptr)
      throw ConfigError(with_origin(name, std::string("Non-existent config key: ") + r.second + " (a v" +
                                              std::to_string(from_version) + " config names it " + r.first + ")"));
  }
  if (from_version < 1)
    for (const auto& r : kRenamesV1) rename_key(loaded, r.first, r.second);
  for (const auto& r : kRenamesV2) rename_key(loaded, r.first, r.second);
  // ConverterV2.upgrade: the anchors of v1 lived in RPN or RETINANET, depending on the model.
  std::string arch;
  if (const PyValue* a = find_path(loaded, {"MODEL", "META_ARCHITECTURE"})) {
    arch = decode(*a, "MODEL.META_ARCHITECTURE").s;
  } else if (const PyValue* c = find_path(current, {"MODEL", "META_ARCHITECTURE"})) {
    arch = c->s;
  }
  const std::string from = arch == "RetinaNet" ? "MODEL.RETINANET." : "MODEL.RPN.";
  const std::string other = arch == "RetinaNet" ? "MODEL.RPN." : "MODEL.RETINANET.";
  rename_key(loaded, from + "ANCHOR_ASPECT_RATIOS", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS");
  rename_key(loaded, from + "ANCHOR_SIZES", "MODEL.ANCHOR_GENERATOR.SIZES");
  for (const std::string& key : {other + "ANCHOR_SIZES", other + "ANCHOR_ASPECT_RATIOS",
                                std::string("MODEL.RETINANET.ANCHOR_STRIDES")}) {
    if (find_path(loaded, split_key(key)) != nullptr) erase_path(loaded, split_key(key));
  }
}

// ---------------------------------------------------------------------------------------------
// Defaults

PyValue build_defaults() {
  Identities identity;
  YamlBudget budget;
  PyValue root = parse_yaml_document(detail::kDefaultConfigYaml, "<detectron2 defaults>", &budget, &identity);
  root.set_origin("");
  for (size_t k = 0; k < detail::kDefaultConfigTypeCount; ++k) {
    const auto& entry = detail::kDefaultConfigTypes[k];
    PyValue* cur = &root;
    for (const auto& part : split_key(entry.key)) cur = &cur->node.at(part);
    const std::string type = entry.type;
    if (type == "tuple" && cur->kind == PyKind::List) cur->kind = PyKind::Tuple;
    const std::string expected = type == "CfgNode" ? "<class 'detectron2.config.config.CfgNode'>"
                                                   : "<class '" + type + "'>";
    if (detail::py_type(*cur) != expected)
      throw ConfigError(std::string("internal: the default of ") + entry.key + " reads back as " +
                        detail::py_type(*cur) + ", detectron2 has " + expected);
  }
  return root;
}

const PyValue& defaults() {
  static const PyValue root = build_defaults();
  return root;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Config::Impl {
  PyValue root;

  const PyValue& at(const std::string& key) const {
    const PyValue* v = find_path(root, split_key(key));
    if (v == nullptr) throw ConfigError("Non-existent config key: " + key);
    return *v;
  }

  // detectron2's CfgNode.merge_from_file after load_yaml_with_base.
  void merge_loaded(PyValue loaded, const std::string& name) {
    const PyValue* own = find_path(root, {"VERSION"});
    if (own == nullptr || own->kind != PyKind::Int || own->i != kLatestVersion)
      throw ConfigError("CfgNode.merge_from_file is only allowed on a config object of latest version!");
    int64_t version = kLatestVersion;
    if (auto it = loaded.node.find("VERSION"); it != loaded.node.end()) {
      const PyValue v = check_and_coerce(decode(it->second, "VERSION"), *own, "VERSION");
      if (v.kind != PyKind::Int)
        throw ConfigError(with_origin(name, "VERSION must be an int, found " + detail::py_repr(v)));
      version = v.i;
    } else if (find_path(loaded, {"MODEL", "WEIGHT"}) != nullptr ||
               find_path(loaded, {"TEST", "AUG_ON"}) != nullptr) {
      version = 1;  // compat.guess_version
    }
    if (version > kLatestVersion)
      throw ConfigError(with_origin(name, "Cannot merge a v" + std::to_string(version) + " config into a v" +
                                              std::to_string(kLatestVersion) + " config."));
    if (version < 0)
      throw ConfigError(with_origin(name, "VERSION " + std::to_string(version) +
                                              " is not a detectron2 config version (0, 1 or 2)"));
    if (version < kLatestVersion) {
      loaded.node.erase("VERSION");
      upgrade_partial(loaded, version, root, name);
    }
    // All or nothing: a failing key leaves the config as it was.
    PyValue merged = root;
    merge_a_into_b(loaded, merged, "");
    root = std::move(merged);
  }

  // yacs' merge_from_list for one pair, with the project's key checking.
  void set_from_text(const std::string& full_key, const std::string& text) {
    const auto parts = split_key(full_key);
    PyValue* d = &root;
    std::string prefix;
    for (size_t k = 0; k + 1 < parts.size(); ++k) {
      prefix = join_key(prefix, parts[k]);
      auto it = d->node.find(parts[k]);
      if (it == d->node.end()) {
        if (is_checked(prefix)) throw ConfigError("Non-existent key: " + full_key);
        it = d->node.emplace(parts[k], PyValue::cfg_node()).first;
      } else if (!it->second.is_node()) {
        throw ConfigError("Non-existent key: " + full_key + " (" + prefix + " is the value " +
                          detail::py_repr(it->second) + ", not a config node)");
      }
      d = &it->second;
    }
    PyValue value = decode(PyValue::str(text), full_key);
    auto it = d->node.find(parts.back());
    if (it == d->node.end()) {
      if (is_checked(full_key)) throw ConfigError("Non-existent key: " + full_key);
      d->node.emplace(parts.back(), std::move(value));
      return;
    }
    if (is_checked_or_ancestor(full_key)) value = check_and_coerce(std::move(value), it->second, full_key);
    it->second = std::move(value);
  }
};

Config::Config() : impl_(std::make_unique<Impl>()) { impl_->root = defaults(); }
Config::~Config() = default;
Config::Config(const Config& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
Config& Config::operator=(const Config& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
Config::Config(Config&&) noexcept = default;
Config& Config::operator=(Config&&) noexcept = default;

void Config::merge_from_file(const std::string& path) {
  LoadContext ctx;
  PyValue loaded = load_file_with_base(path, "", ctx);
  impl_->merge_loaded(std::move(loaded), path);
}

void Config::merge_from_string(const std::string& yaml_text, const std::string& base_dir) {
  LoadContext ctx;
  PyValue loaded = load_yaml_with_base(yaml_text, "<string>", base_dir, ctx);
  impl_->merge_loaded(std::move(loaded), "<string>");
}

void Config::merge_from_list(const std::vector<std::string>& key_value_pairs) {
  for (size_t k = 0; k < key_value_pairs.size(); k += 2) {
    if (key_value_pairs[k] == kBaseKey)
      throw ConfigError("The reserved key '_BASE_' can only be used in files!");
  }
  if (key_value_pairs.size() % 2 != 0) {
    std::string list = "[";
    for (size_t k = 0; k < key_value_pairs.size(); ++k)
      list += (k ? ", " : "") + detail::py_repr_string(key_value_pairs[k]);
    throw ConfigError("Override list has odd length: " + list + "]; it must be a list of pairs");
  }
  // All or nothing: a failing pair leaves the config as it was.
  Impl updated = *impl_;
  for (size_t k = 0; k < key_value_pairs.size(); k += 2)
    updated.set_from_text(key_value_pairs[k], key_value_pairs[k + 1]);
  impl_->root = std::move(updated.root);
}

bool Config::has(const std::string& key) const {
  return find_path(impl_->root, split_key(key)) != nullptr;
}

namespace {

[[noreturn]] void wrong_type(const std::string& key, const PyValue& v, const char* expected) {
  throw ConfigError("Config key " + key + " is " + detail::py_type(v) + " (" + detail::py_str(v) +
                    "), expected " + expected);
}

template <typename T, typename F>
std::vector<T> get_list(const std::string& key, const PyValue& v, const char* expected, F convert) {
  if (!v.is_sequence()) wrong_type(key, v, expected);
  std::vector<T> out;
  for (const PyValue& item : v.items) {
    T x;
    if (!convert(item, &x)) wrong_type(key, v, expected);
    out.push_back(x);
  }
  return out;
}

}  // namespace

bool Config::get_bool(const std::string& key) const {
  const PyValue& v = impl_->at(key);
  if (v.kind != PyKind::Bool) wrong_type(key, v, "a bool");
  return v.b;
}

int64_t Config::get_int(const std::string& key) const {
  const PyValue& v = impl_->at(key);
  if (v.kind != PyKind::Int) wrong_type(key, v, "an int");
  return v.i;
}

double Config::get_float(const std::string& key) const {
  const PyValue& v = impl_->at(key);
  if (v.kind == PyKind::Int) return static_cast<double>(v.i);
  if (v.kind != PyKind::Float) wrong_type(key, v, "a float");
  return v.f;
}

std::string Config::get_string(const std::string& key) const {
  const PyValue& v = impl_->at(key);
  if (v.kind != PyKind::Str) wrong_type(key, v, "a str");
  return v.s;
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  return get_list<int64_t>(key, impl_->at(key), "a list of ints", [](const PyValue& x, int64_t* out) {
    if (x.kind != PyKind::Int) return false;
    *out = x.i;
    return true;
  });
}

std::vector<double> Config::get_float_list(const std::string& key) const {
  return get_list<double>(key, impl_->at(key), "a list of floats", [](const PyValue& x, double* out) {
    if (x.kind == PyKind::Int) {
      *out = static_cast<double>(x.i);
      return true;
    }
    if (x.kind != PyKind::Float) return false;
    *out = x.f;
    return true;
  });
}

std::vector<std::string> Config::get_string_list(const std::string& key) const {
  return get_list<std::string>(key, impl_->at(key), "a list of strs", [](const PyValue& x, std::string* out) {
    if (x.kind != PyKind::Str) return false;
    *out = x.s;
    return true;
  });
}

std::vector<bool> Config::get_bool_list(const std::string& key) const {
  return get_list<bool>(key, impl_->at(key), "a list of bools", [](const PyValue& x, bool* out) {
    if (x.kind != PyKind::Bool) return false;
    *out = x.b;
    return true;
  });
}

std::string Config::repr(const std::string& key) const { return detail::py_repr(impl_->at(key)); }

void Config::set(const std::string& key, const std::string& value) { merge_from_list({key, value}); }

std::string Config::dump() const { return detail::dump_yaml(impl_->root); }

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config cfg;
  if (!path.empty()) cfg.merge_from_file(path);
  cfg.merge_from_list(overrides);
  return cfg;
}

}  // namespace backbone
