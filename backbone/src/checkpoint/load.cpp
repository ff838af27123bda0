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
std::set<std::string> frozen_bn_prefixes(const ResNet& model, const std::string& prefix = "") {
  std::set<std::string> out;
  for (const auto& [name, conv] : static_cast<const CNNBlockBase&>(model.stem()).convs())
    if (conv->norm.kind == "FrozenBN") out.insert(prefix + "stem." + name + ".norm.");
  const auto& stages = model.stages();
  const auto& names = model.stage_names();
  for (std::size_t s = 0; s < stages.size() && s < names.size(); ++s)
    for (std::size_t b = 0; b < stages[s].size(); ++b)
      for (const auto& [name, conv] : static_cast<const CNNBlockBase&>(*stages[s][b]).convs())
        if (conv->norm.kind == "FrozenBN")
          out.insert(prefix + names[s] + "." + std::to_string(b) + "." + name + ".norm.");
  return out;
}

std::set<std::string> frozen_bn_prefixes(const FPN& model) {
  std::set<std::string> out = frozen_bn_prefixes(model.bottom_up(), "bottom_up.");
  if (model.norm() == "FrozenBN")
    for (int stage : model.stages())
      for (const char* conv : {"fpn_lateral", "fpn_output"}) out.insert(conv + std::to_string(stage) + ".norm.");
  return out;
}

bool is_fpn_model(const ResNet&) { return false; }
bool is_fpn_model(const FPN&) { return true; }

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

namespace {

template <typename Model>
LoadReport load_checkpoint_into(Model& model, const std::string& path, bool strict) {
  const bool fpn = is_fpn_model(model);
  const StateDict model_sd = model.state_dict();
  std::map<std::string, const Tensor*> slots;
  for (const auto& [n, t] : model_sd) slots[n] = &t;

  // The memory budget (see checkpoint.h): while the file is read, no entry can be wider than 8
  // bytes per element; once the entries the model takes are known, their own dtypes count.
  auto budget_for = [&](const std::map<std::string, std::size_t>& elem_size) {
    uint64_t bytes = 0;
    for (const auto& [n, t] : model_sd) {
      auto it = elem_size.find(n);
      bytes += static_cast<uint64_t>(t.numel()) * (it == elem_size.end() ? 8 : it->second);
    }
    return bytes;
  };
  auto limit_of = [](uint64_t model_bytes) { return model_bytes + model_bytes / 10 + detail::kBudgetSlack; };
  auto budget = std::make_shared<detail::MemoryBudget>();
  budget->what = path;
  budget->limit = limit_of(budget_for({}));
  budget->limit_reason = "the model's tensors at 8 bytes per element + 10% + 1 MiB, while the file is read";

  const detail::LazyCheckpoint lazy =
      detail::open_checkpoint_bytes(detail::read_file_bytes(path), path, CheckpointFormat::Auto, budget);
  std::vector<std::string> names;
  for (const auto& t : lazy.tensors) names.push_back(t.name);
  detail::NamePlan plan = detail::plan_detectron2_names(names, lazy.author, fpn);
  LoadReport report;
  report.path = path;
  report.ignored = std::move(plan.ignored);
  report.skipped = std::move(plan.skipped);

  // Shapes and dtypes are checked on the listing: nothing is materialised for a file that does
  // not fit, nor for the entries the model does not take.
  std::vector<std::pair<std::string, std::size_t>> take;
  std::map<std::string, std::size_t> elem_size;
  std::set<std::string> loaded;
  for (const auto& [name, index] : plan.kept) {
    auto it = slots.find(name);
    if (it == slots.end()) {
      report.unexpected.push_back(name);
      continue;
    }
    const Tensor& slot = *it->second;
    const detail::LazyTensor& value = lazy.tensors[index];
    const std::string where =
        "the checkpoint (file " + path + (value.name != name ? ", entry " + value.name : "") + ")";
    if (value.shape != slot.shape())
      throw CheckpointError("shape mismatch for " + name + ": the model has " + shape_str(slot.shape()) + ", " + where +
                            " has " + shape_str(value.shape));
    if (value.dtype != slot.dtype() && (!is_floating(value.dtype) || !is_floating(slot.dtype())))
      throw CheckpointError("dtype mismatch for " + name + ": the model has " + dtype_name(slot.dtype()) + ", " + where +
                            " has " + dtype_name(value.dtype));
    take.emplace_back(name, index);
    elem_size[name] = dtype_size(value.dtype);
    loaded.insert(name);
  }
  for (const auto& [n, t] : model_sd)
    if (!elem_size.count(n)) elem_size[n] = dtype_size(t.dtype());
  const uint64_t model_bytes = budget_for(elem_size);
  budget->limit = limit_of(model_bytes);
  budget->limit_reason = "the model's tensors (" + std::to_string(model_bytes) + " bytes in the file's dtypes) + 10% + 1 MiB";
  budget->charge(0, "what was decoded while reading the file");
  // Views of the file, or copies charged to the budget; converted to the model's dtype by
  // load_state_dict, one entry at a time.
  StateDict to_load;
  for (const auto& [name, index] : take) to_load.emplace_back(name, lazy.make(lazy, index));
  report.materialised_bytes = budget->used;
  report.budget_bytes = budget->limit;

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
    // An FPN's own layers absent from the file (an ImageNet ResNet checkpoint under an FPN config)
    // keep their values, as detectron2 keeps their initialisation; only the caller's warning says so.
    if (!(fpn && FPN::is_fpn_entry(name))) fatal.push_back(name);
  }
  if (strict && !fatal.empty())
    throw CheckpointError("checkpoint " + path + " lacks " + std::to_string(fatal.size()) + " entries of the model: " +
                          join_some(fatal) + " (load with strict=false to keep their current values)");
  model.load_state_dict(to_load);
  return report;
}

}  // namespace

LoadReport load_checkpoint(ResNet& model, const std::string& path, bool strict) {
  return load_checkpoint_into(model, path, strict);
}

LoadReport load_checkpoint(FPN& model, const std::string& path, bool strict) {
  return load_checkpoint_into(model, path, strict);
}

}  // namespace backbone
