// SPDX-License-Identifier: Apache-2.0
// detectron2's names for checkpoint entries: detectron2/checkpoint/c2_model_loading.py
// (convert_basic_c2_names) for Caffe2/MSRA names, tools/convert-torchvision-to-d2.py for
// torchvision names, and the prefixes of detectron2's detectors (backbone.bottom_up., backbone.,
// roi_heads.res5. of C4 models) removed.
#include <algorithm>
#include <map>
#include <regex>

#include "backbone/error.h"
#include "backbone/fpn.h"
#include "checkpoint/reader.h"

namespace backbone::detail {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
}

// Whether a detectron2 name belongs to the ResNet backbone (stem, res2..res5, the classifier).
bool is_backbone_name(const std::string& k) {
  static const std::regex stage("^res[0-9]+\\.");
  return starts_with(k, "stem.") || starts_with(k, "linear.") || std::regex_search(k, stage);
}

// torchvision's ResNet names -> detectron2's, as tools/convert-torchvision-to-d2.py renames them;
// "fc." becomes detectron2's classifier "linear." (the script leaves it as "stem.fc.").
bool is_torchvision_name(const std::string& k) {
  static const std::regex tv("^(conv1\\.|bn1\\.|fc\\.|layer[1-4]\\.)");
  return std::regex_search(k, tv);
}
std::string convert_torchvision_name(std::string k) {
  if (starts_with(k, "fc.")) return "linear." + k.substr(3);
  if (k.find("layer") == std::string::npos) k = "stem." + k;
  for (int t = 1; t <= 4; ++t) replace_all(k, "layer" + std::to_string(t), "res" + std::to_string(t + 1));
  for (int t = 1; t <= 3; ++t) replace_all(k, "bn" + std::to_string(t), "conv" + std::to_string(t) + ".norm");
  replace_all(k, "downsample.0", "shortcut");
  replace_all(k, "downsample.1", "shortcut.norm");
  return k;
}

}  // namespace

std::string convert_c2_name(const std::string& name) {
  struct Rule {
    std::regex re;
    const char* to;
  };
  // The re.sub calls of convert_basic_c2_names, in order (the ECMAScript regexes mean the same).
  static const std::vector<Rule> rules = [] {
    std::vector<Rule> r;
    const std::pair<const char*, const char*> spec[] = {
        {"\\.b$", ".bias"},
        {"\\.w$", ".weight"},
        {"bn\\.s$", "norm.weight"},
        {"bn\\.bias$", "norm.bias"},
        {"bn\\.rm", "norm.running_mean"},
        {"bn\\.running.mean$", "norm.running_mean"},
        {"bn\\.riv$", "norm.running_var"},
        {"bn\\.running.var$", "norm.running_var"},
        {"bn\\.gamma$", "norm.weight"},
        {"bn\\.beta$", "norm.bias"},
        {"gn\\.s$", "norm.weight"},
        {"gn\\.bias$", "norm.bias"},
        {"^res\\.conv1\\.norm\\.", "conv1.norm."},
        {"^conv1\\.", "stem.conv1."},
    };
    for (const auto& [from, to] : spec) r.push_back({std::regex(from), to});
    return r;
  }();
  std::string k = name == "pred_b" ? "linear_b" : name == "pred_w" ? "linear_w" : name;
  replace_all(k, "_", ".");
  for (const auto& rule : rules) k = std::regex_replace(k, rule.re, rule.to);
  replace_all(k, ".branch1.", ".shortcut.");
  replace_all(k, ".branch2a.", ".conv1.");
  replace_all(k, ".branch2b.", ".conv2.");
  replace_all(k, ".branch2c.", ".conv3.");
  // fpn_map of convert_c2_detectron_names: lateral ("fpn.inner.res2.2.sum.lateral.weight") and output
  // ("fpn.res2.2.sum.weight") convolutions.
  const bool inner = starts_with(k, "fpn.inner.res"), output = starts_with(k, "fpn.res");
  if (inner || output) {
    std::vector<std::string> splits;
    for (std::size_t b = 0;;) {
      const std::size_t e = k.find('.', b);
      splits.push_back(k.substr(b, e == std::string::npos ? std::string::npos : e - b));
      if (e == std::string::npos) break;
      b = e + 1;
    }
    const std::string& res = splits[inner ? 2 : 1];
    std::string stage = res.substr(3);
    const bool digits = !stage.empty() && stage.size() <= 2 && stage.find_first_not_of("0123456789") == std::string::npos;
    if (digits) {
      const bool norm = std::find(splits.begin(), splits.end(), "norm") != splits.end();
      return (inner ? "fpn_lateral" : "fpn_output") + std::to_string(std::stoi(stage)) + (norm ? ".norm." : ".") +
             splits.back();
    }
  }
  return k;
}

NamePlan plan_detectron2_names(const std::vector<std::string>& names, const std::string& author, bool fpn) {
  const bool caffe2 = author == "Caffe2";
  // fvcore's Checkpointer strips "module." (DistributedDataParallel) when every key has it.
  bool strip_module = !names.empty();
  for (const auto& n : names)
    if (!n.empty() && !starts_with(n, "module.")) strip_module = false;
  NamePlan m;
  std::map<std::string, std::string> origin;
  for (std::size_t index = 0; index < names.size(); ++index) {
    const std::string& orig = names[index];
    std::string k = strip_module && !orig.empty() ? orig.substr(7) : orig;
    // Caffe2 blobs have no dots; convert_basic_c2_names turns their underscores into dots.
    const bool c2 = caffe2 || (k.find('.') == std::string::npos && k.find('_') != std::string::npos);
    if (c2) {
      if (ends_with(k, "_momentum") || starts_with(k, "fc1000_") || k == "conv1_b") {
        m.ignored.push_back(orig);
        continue;
      }
      k = convert_c2_name(k);
    } else {
      if (ends_with(k, "num_batches_tracked") || ends_with(k, "_momentum")) {
        m.ignored.push_back(orig);
        continue;
      }
      if (starts_with(k, "backbone.bottom_up.")) k = k.substr(19);
      else if (starts_with(k, "backbone.")) k = k.substr(9);
      else if (starts_with(k, "bottom_up.")) k = k.substr(10);  // the FPN module's own state dict
      if (starts_with(k, "roi_heads.res5.")) k = k.substr(10);
      if (is_torchvision_name(k)) k = convert_torchvision_name(k);
    }
    if (k == "stem.conv1.bias") {  // detectron2's stem convolution has no bias (Caffe2's conv1_b)
      m.ignored.push_back(orig);
      continue;
    }
    if (fpn && FPN::is_fpn_entry(k)) {
      // kept as it is
    } else if (!is_backbone_name(k)) {
      m.skipped.push_back(orig);
      continue;
    } else if (fpn) {
      k = "bottom_up." + k;
    }
    auto [it, fresh] = origin.emplace(k, orig);
    if (!fresh)
      throw CheckpointError("checkpoint entries '" + it->second + "' and '" + orig + "' both map to detectron2's '" + k +
                            "'");
    m.kept.emplace_back(k, index);
  }
  return m;
}

NameMapping map_to_detectron2(const RawCheckpoint& raw) {
  std::vector<std::string> names;
  for (const auto& kv : raw.tensors) names.push_back(kv.first);
  NamePlan plan = plan_detectron2_names(names, raw.author);
  NameMapping m;
  m.ignored = std::move(plan.ignored);
  m.skipped = std::move(plan.skipped);
  for (const auto& [k, index] : plan.kept) {
    m.tensors.emplace_back(k, raw.tensors[index].second);
    m.origin.emplace_back(k, names[index]);
  }
  return m;
}

}  // namespace backbone::detail

namespace backbone {

StateDict to_detectron2_names(const RawCheckpoint& raw) { return detail::map_to_detectron2(raw).tensors; }

}  // namespace backbone
