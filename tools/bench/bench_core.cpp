// SPDX-License-Identifier: Apache-2.0
#include "bench_core.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <unistd.h>

namespace backbone::bench {

// ---- agreement -------------------------------------------------------------------------------

double Agreement::worst_relative() const {
  double w = 0;
  for (const auto& l : levels) w = std::max(w, l.relative);
  return w;
}

namespace {

Tensor as_cpu_float(const Tensor& t) {
  Tensor c = t.to(Device::cpu());
  if (c.dtype() != DType::Float32) c = c.to(DType::Float32);
  return c.contiguous();
}

std::string fmt(double v) {
  std::ostringstream s;
  s.precision(3);
  s << std::scientific << v;
  return s.str();
}

}  // namespace

Agreement check_agreement(const FeatureMaps& ref, const FeatureMaps& out, double tolerance) {
  Agreement a;
  a.tolerance = tolerance;
  a.ok = !ref.empty();
  if (ref.empty()) a.message = "the reference has no output level";
  std::vector<std::string> problems;
  for (const auto& [name, rt] : ref) {
    LevelAgreement l;
    l.name = name;
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& p) { return p.first == name; });
    if (it == out.end()) {
      problems.push_back(name + ": missing from the output");
      l.max_abs_diff = l.relative = std::numeric_limits<double>::infinity();
      a.levels.push_back(l);
      continue;
    }
    if (it->second.shape() != rt.shape()) {
      problems.push_back(name + ": shape " + shape_str(it->second.shape()) + ", expected " + shape_str(rt.shape()));
      l.max_abs_diff = l.relative = std::numeric_limits<double>::infinity();
      a.levels.push_back(l);
      continue;
    }
    const Tensor r = as_cpu_float(rt), o = as_cpu_float(it->second);
    const float* rp = r.data_ptr<float>();
    const float* op = o.data_ptr<float>();
    double max_ref = 0, max_diff = 0;
    bool finite = true;
    for (int64_t i = 0, n = r.numel(); i < n; ++i) {
      if (!std::isfinite(op[i]) || !std::isfinite(rp[i])) {
        finite = false;
        continue;
      }
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(rp[i])));
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(op[i] - rp[i])));
    }
    l.max_abs_ref = max_ref;
    l.max_abs_diff = finite ? max_diff : std::numeric_limits<double>::infinity();
    l.relative = max_ref > 0 ? l.max_abs_diff / max_ref
                             : (l.max_abs_diff > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    l.ok = finite && l.max_abs_diff <= tolerance * max_ref;
    if (!finite)
      problems.push_back(name + ": non-finite values");
    else if (!l.ok)
      problems.push_back(name + ": max|out-ref| " + fmt(l.max_abs_diff) + " > " + fmt(tolerance) + " * max|ref| " +
                         fmt(max_ref) + " (relative " + fmt(l.relative) + ")");
    a.levels.push_back(l);
  }
  if (!problems.empty()) {
    a.ok = false;
    std::ostringstream m;
    for (size_t i = 0; i < problems.size(); ++i) m << (i ? "; " : "") << problems[i];
    a.message = m.str();
  }
  return a;
}

// ---- FLOPs -----------------------------------------------------------------------------------

namespace {

int64_t conv_out(int64_t in, const Conv2d& c) {
  return (in + 2 * c.padding - c.dilation * (c.kernel_size - 1) - 1) / c.stride + 1;
}

// Adds the conv's MACs for an input of h x w and returns its output size.
std::pair<int64_t, int64_t> add_conv(const Conv2d& c, int64_t h, int64_t w, double& macs) {
  const int64_t oh = conv_out(h, c), ow = conv_out(w, c);
  macs += static_cast<double>(c.out_channels) * oh * ow * (c.in_channels / c.groups) * c.kernel_size * c.kernel_size;
  return {oh, ow};
}

}  // namespace

double conv_flops(const ResNet& model, int64_t height, int64_t width) {
  double macs = 0;
  auto [h, w] = add_conv(model.stem().conv1, height, width, macs);
  // max_pool2d(kernel 3, stride 2, padding 1)
  h = (h + 2 - 3) / 2 + 1;
  w = (w + 2 - 3) / 2 + 1;
  for (const Stage& stage : model.stages()) {
    for (const auto& block : stage) {
      const CNNBlockBase* b = block.get();
      if (const auto* bb = dynamic_cast<const BottleneckBlock*>(b)) {
        if (bb->shortcut) add_conv(*bb->shortcut, h, w, macs);
        auto [h1, w1] = add_conv(bb->conv1, h, w, macs);
        if (const auto* db = dynamic_cast<const DeformBottleneckBlock*>(b)) add_conv(db->conv2_offset, h1, w1, macs);
        auto [h2, w2] = add_conv(bb->conv2, h1, w1, macs);
        std::tie(h, w) = add_conv(bb->conv3, h2, w2, macs);
      } else if (const auto* basic = dynamic_cast<const BasicBlock*>(b)) {
        if (basic->shortcut) add_conv(*basic->shortcut, h, w, macs);
        auto [h1, w1] = add_conv(basic->conv1, h, w, macs);
        std::tie(h, w) = add_conv(basic->conv2, h1, w1, macs);
      } else {
        throw std::invalid_argument("conv_flops: a block of unknown kind");
      }
    }
  }
  return 2.0 * macs;
}

// ---- machine ---------------------------------------------------------------------------------

std::string MachineInfo::flags_summary() const {
  std::ostringstream s;
  s << (avx512f ? "avx512f" : "-avx512f") << ' ' << (avx512_bf16 ? "avx512_bf16" : "-avx512_bf16") << ' '
    << (amx_tile && amx_bf16 ? "amx_bf16" : "-amx") << ' ' << (avx2 ? "avx2" : "-avx2") << ' ' << (fma ? "fma" : "-fma");
  return s.str();
}

MachineInfo machine_info() {
  MachineInfo m;
  m.cores = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && m.cpu_model.empty()) m.cpu_model = value;
    if (key == "flags" && flags.empty()) {
      std::istringstream fs(value);
      for (std::string f; fs >> f;) flags.insert(f);
    }
  }
  auto has = [&](const char* f) { return flags.count(f) > 0; };
  m.avx2 = has("avx2");
  m.fma = has("fma");
  m.avx512f = has("avx512f");
  m.avx512_bf16 = has("avx512_bf16");
  m.amx_bf16 = has("amx_bf16");
  m.amx_tile = has("amx_tile");
  if (m.cpu_model.empty()) m.cpu_model = "unknown CPU";
  return m;
}

ProcMemory proc_memory(int pid) {
  ProcMemory r;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  int64_t value = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    if (!(ls >> key >> value)) continue;
    if (key == "VmHWM:") r.vm_hwm_kb = value;
    if (key == "VmRSS:") r.vm_rss_kb = value;
  }
  return r;
}

// ---- workloads -------------------------------------------------------------------------------

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream s(text);
  while (std::getline(s, cur, ','))
    if (!cur.empty()) out.push_back(cur);
  return out;
}

namespace {
int64_t parse_positive(const std::string& v, const std::string& what, int64_t lo) {
  size_t pos = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size() || x < lo)
    throw std::invalid_argument(what + ": expected an integer >= " + std::to_string(lo) + ", got '" + v + "'");
  return x;
}
}  // namespace

std::vector<Size> parse_sizes(const std::string& text) {
  std::vector<Size> out;
  for (const auto& e : split_list(text)) {
    auto x = e.find('x');
    if (x == std::string::npos) throw std::invalid_argument("--sizes: expected HxW (e.g. 800x1216), got '" + e + "'");
    out.push_back({parse_positive(e.substr(0, x), "--sizes " + e, 32), parse_positive(e.substr(x + 1), "--sizes " + e, 32)});
  }
  if (out.empty()) throw std::invalid_argument("--sizes: expected at least one HxW, got '" + text + "'");
  return out;
}

std::vector<int> parse_threads(const std::string& text) {
  std::vector<int> out;
  for (const auto& e : split_list(text)) out.push_back(static_cast<int>(parse_positive(e, "--threads", 0)));
  if (out.empty()) throw std::invalid_argument("--threads: expected a list like 1,2, got '" + text + "'");
  return out;
}

int model_depth(const std::string& name) {
  for (int d : {18, 34, 50, 101, 152})
    if (name == "R-" + std::to_string(d)) return d;
  throw std::invalid_argument("unknown model '" + name + "' (expected R-18, R-34, R-50, R-101 or R-152)");
}

std::vector<std::string> torchvision_config_overrides(int depth) {
  std::vector<std::string> o = {"MODEL.RESNETS.DEPTH", std::to_string(depth),
                                "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                                "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
                                "MODEL.RESNETS.NORM", "FrozenBN"};
  if (depth < 50) {
    o.push_back("MODEL.RESNETS.RES2_OUT_CHANNELS");
    o.push_back("64");
  }
  return o;
}

double median(std::vector<double> v) {
  if (v.empty()) throw std::invalid_argument("median of an empty list");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace backbone::bench
