// SPDX-License-Identifier: Apache-2.0
// backbone-bench's CPU workloads (the default set, FPN sizes padded to 32) and the CPU speed
// targets judged from a run's medians.
#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bench_core.h"

namespace backbone::bench {

namespace {

std::string size_text(const Size& s) { return std::to_string(s.height) + "x" + std::to_string(s.width); }

std::string fixed2(double v, int digits = 2) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(digits);
  s << v;
  return s.str();
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

const double* time_of(const CpuRow& r, const std::string& runner) {
  auto it = r.median_ms.find(runner);
  return it == r.median_ms.end() || !(it->second > 0) ? nullptr : &it->second;
}

std::string ours(const CpuRow& r) { return "ours-" + r.engine; }

constexpr const char* kOrt = "venv-onnxruntime";
constexpr const char* kOpenVino = "venv-openvino";
constexpr const char* kOpenVinoBf16 = "venv-openvino-bf16";

std::string where(const CpuRow& r) { return r.workload + ", " + std::to_string(r.threads) + " thread" + (r.threads > 1 ? "s" : ""); }

// The worst figure over the rows `pick` selects; a row without a time of a `needed` runner makes
// the target "not measured". lower_is_worse: the bound is a minimum (else a maximum).
struct Worst {
  bool any = false;
  double value = 0;
  std::string at, missing;
};

TargetVerdict judge(const std::string& target, const std::vector<CpuRow>& rows, const std::string& scope,
                    const std::function<bool(const CpuRow&)>& pick,
                    const std::function<std::vector<std::string>(const CpuRow&)>& needed,
                    const std::function<double(const CpuRow&, std::string*)>& figure, bool lower_is_worse, double bound,
                    const std::string& unit) {
  TargetVerdict v;
  v.target = target;
  Worst w;
  for (const auto& r : rows) {
    if (!pick(r)) continue;
    for (const auto& n : needed(r))
      if (!time_of(r, n) && w.missing.empty()) w.missing = "no time of " + n + " at " + where(r);
    if (!w.missing.empty()) continue;
    std::string at;
    const double x = figure(r, &at);
    if (!w.any || (lower_is_worse ? x < w.value : x > w.value)) {
      w.any = true;
      w.value = x;
      w.at = at.empty() ? where(r) : at + " at " + where(r);
    }
  }
  if (!w.missing.empty()) {
    v.verdict = "not measured: " + w.missing;
  } else if (!w.any) {
    v.verdict = "not measured: no workload " + scope + " in this run";
  } else {
    v.measured = "worst " + fixed2(w.value) + unit + " (" + w.at + ")";
    v.verdict = (lower_is_worse ? w.value >= bound : w.value <= bound) ? "met" : "not met";
  }
  return v;
}

}  // namespace

std::string CpuWorkload::weights_key() const { return std::to_string(depth) + (fpn() ? "-fpn" : ""); }

std::string CpuWorkload::title() const {
  return model + " " + size_text(asked) + (padded() ? " (padded to " + size_text(size) + ")" : "");
}

std::vector<CpuWorkload> cpu_workloads(const std::string& models, const std::string& sizes) {
  std::vector<std::tuple<std::string, Size>> asked;
  if (models.empty() && sizes.empty()) {
    asked = {{"R-50", {224, 224}},   {"R-50", {480, 640}},   {"R-50", {720, 1280}},     {"R-50", {800, 1216}},
             {"R-101", {800, 1216}}, {"R-101", {480, 640}},  {"R-50-FPN", {480, 640}}, {"R-50-FPN", {800, 1216}}};
  } else {
    const auto ms = split_list(models.empty() ? "R-50" : models);
    const auto ss = parse_sizes(sizes.empty() ? "224x224,800x1216" : sizes);
    for (const auto& m : ms)
      for (const auto& s : ss) asked.emplace_back(m, s);
  }
  std::vector<CpuWorkload> out;
  for (const auto& [m, s] : asked) {
    CpuWorkload w;
    w.model = m;
    w.depth = model_depth(m);  // throws for an unknown model
    w.asked = w.size = s;
    if (w.fpn()) w.size = {round_up(s.height, 32), round_up(s.width, 32)};
    out.push_back(w);
  }
  if (out.empty()) throw std::invalid_argument("--models: expected at least one model");
  return out;
}

std::string auto_precision_choice(const std::string& describe) {
  if (describe.find("auto: bf16") != std::string::npos) return "bf16";
  if (describe.find("auto: fp32") != std::string::npos) return "fp32";
  return "";
}

std::vector<TargetVerdict> evaluate_cpu_targets(const std::vector<CpuRow>& rows) {
  std::vector<TargetVerdict> out;
  auto peers = [](const CpuRow& r) { return std::vector<std::string>{ours(r), kOrt, kOpenVino}; };
  // The slower of the two peers' speed-ups over ours.
  auto speedup = [](const CpuRow& r, std::string* at) {
    const double o = *time_of(r, ours(r));
    const double ort = *time_of(r, kOrt) / o, ov = *time_of(r, kOpenVino) / o;
    *at = ort <= ov ? "vs ONNX Runtime" : "vs OpenVINO";
    return std::min(ort, ov);
  };
  const std::string name = rows.empty() ? "ours-<engine>" : ours(rows.front());
  out.push_back(judge(name + " fp32 >= 1.1x ONNX Runtime and OpenVINO (fp32), all cores, every workload", rows, "on all cores",
                      [](const CpuRow& r) { return r.all_cores; }, peers, speedup, true, 1.1, "x"));
  out.push_back(judge(name + " fp32 >= 1.0x ONNX Runtime and OpenVINO (fp32), one thread, every workload", rows, "on one thread",
                      [](const CpuRow& r) { return r.threads == 1; }, peers, speedup, true, 1.0, "x"));
  out.push_back(judge(
      name + " fp32 >= 75% of the FMA-loop peak at 224x224, all cores", rows, "at 224x224 on all cores",
      [](const CpuRow& r) { return r.all_cores && r.at_224; },
      [](const CpuRow& r) { return std::vector<std::string>{ours(r)}; },
      [](const CpuRow& r, std::string*) {
        const double gf = r.flops / (*time_of(r, ours(r)) / 1e3) / 1e9;
        return r.peak_gflops > 0 ? 100 * gf / r.peak_gflops : 0.0;
      },
      true, 75.0, "%"));
  out.push_back(judge(
      name + "-auto (precision=auto) time <= 1.0x " + name + " fp32, every workload", rows, "",
      [](const CpuRow&) { return true; },
      [](const CpuRow& r) { return std::vector<std::string>{ours(r), ours(r) + "-auto"}; },
      [](const CpuRow& r, std::string* at) {
        auto d = r.describe.find(ours(r) + "-auto");
        const std::string chose = d == r.describe.end() ? "" : auto_precision_choice(d->second);
        *at = chose.empty() ? "" : "chose " + chose;
        return *time_of(r, ours(r) + "-auto") / *time_of(r, ours(r));
      },
      false, 1.0, "x"));
  return out;
}

std::string cpu_targets_markdown(const std::vector<CpuRow>& rows) {
  std::ostringstream m;
  const std::string name = rows.empty() ? "ours-<engine>" : ours(rows.front());
  m << "#### Targets\n\n";
  m << "Speed-ups are the peer's time over " << name << "'s (fp32, the defaults); above 1 means this project is "
    << "faster. auto / fp32: " << name << "-auto's time over " << name << "'s, with the precision it chose.\n\n";
  m << "| workload | threads | " << name << " ms | vs ONNX Runtime | vs OpenVINO | % FMA peak | auto / fp32 (chose) "
    << "| bf16 speed-up | OpenVINO bf16 / ours bf16 |\n";
  m << "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows) {
    const double* o = time_of(r, ours(r));
    auto ratio = [&](const double* num, const double* den) { return num && den ? fixed2(*num / *den) + "x" : std::string("-"); };
    m << "| " << r.workload << " | " << r.threads << (r.all_cores ? " (all)" : "") << " | "
      << (o ? fixed2(*o, *o < 100 ? 2 : 1) : "-") << " | " << ratio(time_of(r, kOrt), o) << " | "
      << ratio(time_of(r, kOpenVino), o) << " | ";
    if (o && r.peak_gflops > 0)
      m << fixed2(100 * (r.flops / (*o / 1e3) / 1e9) / r.peak_gflops, 1) << "%";
    else
      m << "-";
    const double* a = time_of(r, ours(r) + "-auto");
    m << " | ";
    if (a && o) {
      auto d = r.describe.find(ours(r) + "-auto");
      const std::string chose = d == r.describe.end() ? "" : auto_precision_choice(d->second);
      m << fixed2(*a / *o) << " (" << (chose.empty() ? "?" : chose) << ")";
    } else {
      m << "-";
    }
    const double* bf = time_of(r, ours(r) + "-bf16");
    m << " | " << ratio(o, bf) << " | " << ratio(time_of(r, kOpenVinoBf16), bf) << " |\n";
  }
  m << "\n";
  for (const auto& v : evaluate_cpu_targets(rows)) {
    const std::string verdict = v.verdict == "met" ? "met" : v.verdict == "not met" ? "NOT met" : v.verdict;
    m << "- " << v.target << ": " << (v.measured.empty() ? "" : v.measured + ": ") << verdict << "\n";
  }
  m << "\n";
  return m.str();
}

}  // namespace backbone::bench
