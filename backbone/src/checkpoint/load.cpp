// SPDX-License-Identifier: Apache-2.0
// load_checkpoint: read, rename as detectron2 does, check shapes and dtypes, load into a ResNet.
#include <algorithm>
#include <map>
#include <set>

#include "backbone/error.h"
#include "checkpoint/reader.h"

namespace backbone {

namespace {

bool is_floating(DType t) {
  return t == DType::Float32 || t == DType::Float16 || t == DType::BFloat16 || t == DType::Float64;
}

std::string join_some(const std::vector<std::string>& names, std::size_t most = 10) {
  std::string s = "[";
  for (std::size_t k = 0; k < names.size() && k < most; ++k) s += (k ? ", " : "") + names[k];
  if (names.size() > most) s += ", ... (" + std::to_string(names.size() - most) + " more)";
  return s + "]";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Prefixes ("stem.conv1.norm.", "res2.0.conv1.norm.") of the model's FrozenBN layers.
std::set<std::string> frozen_bn_prefixes(const ResNet& model) {
  std::set<std::string> out;
  for (const auto& [name, conv] : static_cast<const CNNBlockBase&>(model.stem()).convs())
    if (conv->norm.kind == "FrozenBN") out.insert("stem." + name + ".norm.");
  const auto& stages = model.stages();
  const auto& names = model.stage_names();
  for (std::size_t s = 0; s < stages.size() && s < names.size(); ++s)
    for (std::size_t b = 0; b < stages[s].size(); ++b)
      for (const auto& [name, conv] : static_cast<const CNNBlockBase&>(*stages[s][b]).convs())
        if (conv->norm.kind == "FrozenBN") out.insert(names[s] + "." + std::to_string(b) + "." + name + ".norm.");
  return out;
}

}  // namespace

std::string LoadReport::summary() const {
  std::string s = "loaded " + std::to_string(loaded.size()) + " of " + std::to_string(loaded.size() + missing.size()) +
                  " model entries" + (path.empty() ? "" : " from " + path);
  s += "; missing " + std::to_string(missing.size()) + (missing.empty() ? "" : ": " + join_some(missing));
  s += "; unexpected " + std::to_string(unexpected.size()) + (unexpected.empty() ? "" : ": " + join_some(unexpected));
  s += "; ignored " + std::to_string(ignored.size()) + (ignored.empty() ? "" : ": " + join_some(ignored));
  s += "; skipped (not backbone) " + std::to_string(skipped.size()) + (skipped.empty() ? "" : ": " + join_some(skipped));
  return s;
}

LoadReport load_checkpoint(ResNet& model, const std::string& path, bool strict) {
  const RawCheckpoint raw = read_checkpoint_file(path);
  detail::NameMapping m = detail::map_to_detectron2(raw);
  LoadReport report;
  report.path = path;
  report.ignored = std::move(m.ignored);
  report.skipped = std::move(m.skipped);

  const StateDict model_sd = model.state_dict();
  std::map<std::string, const Tensor*> slots;
  for (const auto& [n, t] : model_sd) slots[n] = &t;
  std::map<std::string, std::string> origin(m.origin.begin(), m.origin.end());

  StateDict to_load;
  std::set<std::string> loaded;
  for (const auto& [name, value] : m.tensors) {
    auto it = slots.find(name);
    if (it == slots.end()) {
      report.unexpected.push_back(name);
      continue;
    }
    const Tensor& slot = *it->second;
    const std::string& from = origin[name];
    const std::string where = "the checkpoint (file " + path + (from != name ? ", entry " + from : "") + ")";
    if (value.shape() != slot.shape())
      throw CheckpointError("shape mismatch for " + name + ": the model has " + shape_str(slot.shape()) + ", " + where +
                            " has " + shape_str(value.shape()));
    Tensor v = value;
    if (v.dtype() != slot.dtype()) {
      if (!is_floating(v.dtype()) || !is_floating(slot.dtype()))
        throw CheckpointError("dtype mismatch for " + name + ": the model has " + dtype_name(slot.dtype()) + ", " + where +
                              " has " + dtype_name(v.dtype()));
      v = v.to(slot.dtype());
    }
    to_load.emplace_back(name, v);
    loaded.insert(name);
  }

  // FrozenBatchNorm2d._load_from_state_dict: a file without the running statistics of a
  // FrozenBN layer (Caffe2/MSRA models fold them into scale and bias; detectron2 loads such
  // dicts without version metadata) gets running_mean = 0 and running_var = 1 -- not the
  // 1 - eps of a fresh layer -- so the layer computes x * weight / sqrt(1 + eps) + bias exactly
  // as detectron2 does after loading the same file.
  const std::set<std::string> frozen = frozen_bn_prefixes(model);
  std::vector<std::string> fatal;
  for (const auto& [name, t] : model_sd) {
    if (loaded.count(name)) {
      report.loaded.push_back(name);
      continue;
    }
    const bool mean = ends_with(name, "running_mean"), var = ends_with(name, "running_var");
    if ((mean || var) && frozen.count(name.substr(0, name.rfind('.') + 1))) {
      Tensor fill = Tensor::empty(t.shape(), t.dtype());
      float* p = fill.data_ptr<float>();
      std::fill(p, p + fill.numel(), mean ? 0.f : 1.f);
      to_load.emplace_back(name, fill);
      continue;
    }
    report.missing.push_back(name);
    fatal.push_back(name);
  }
  if (strict && !fatal.empty())
    throw CheckpointError("checkpoint " + path + " lacks " + std::to_string(fatal.size()) + " entries of the model: " +
                          join_some(fatal) + " (load with strict=false to keep their current values)");
  model.load_state_dict(to_load);
  return report;
}

}  // namespace backbone
