// SPDX-License-Identifier: Apache-2.0
#include "bench_core.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <tuple>

#include <unistd.h>

#include "backbone/backbone.h"

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

double conv_flops(const FPN& model, int64_t height, int64_t width) {
  double macs = 0;
  for (size_t i = 0; i < model.lateral_convs.size(); ++i) {
    // res<k> is ceil(H / 2^k) x ceil(W / 2^k): each stride-2 layer of the bottom-up rounds up
    const int64_t s = int64_t{1} << model.stages()[i];
    const int64_t h = (height + s - 1) / s, w = (width + s - 1) / s;
    add_conv(model.lateral_convs[i], h, w, macs);
    add_conv(model.output_convs[i], h, w, macs);
  }
  if (model.top_block.kind == TopBlockKind::LastLevelP6P7) {
    const int64_t h5 = (height + 31) / 32, w5 = (width + 31) / 32;
    auto [h6, w6] = add_conv(model.top_block.p6, h5, w5, macs);
    add_conv(model.top_block.p7, h6, w6, macs);
  }
  return conv_flops(model.bottom_up(), height, width) + 2.0 * macs;
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

bool is_fpn_model(const std::string& name) {
  return name.size() > 4 && name.compare(name.size() - 4, 4, "-FPN") == 0;
}

int model_depth(const std::string& name) {
  const std::string resnet = is_fpn_model(name) ? name.substr(0, name.size() - 4) : name;
  for (int d : {18, 34, 50, 101, 152})
    if (resnet == "R-" + std::to_string(d)) return d;
  throw std::invalid_argument("unknown model '" + name +
                              "' (expected R-18, R-34, R-50, R-101 or R-152, each also with detectron2's FPN on it: "
                              "R-50-FPN, ...)");
}

std::vector<std::string> bench_config_overrides(const std::string& model) {
  std::vector<std::string> o = torchvision_config_overrides(model_depth(model));
  if (is_fpn_model(model))
    o.insert(o.end(), {"MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone", "MODEL.FPN.IN_FEATURES",
                       "['res2', 'res3', 'res4', 'res5']", "MODEL.FPN.OUT_CHANNELS", "256"});  // NORM "", FUSE_TYPE sum
  return o;
}

double bench_flops(const std::string& model, int64_t height, int64_t width) {
  Config cfg;
  cfg.merge_from_list(bench_config_overrides(model));
  if (is_fpn_model(model)) return conv_flops(build_resnet_fpn_backbone(cfg), height, width);
  return conv_flops(build_resnet_backbone(cfg, ShapeSpec{3}), height, width);
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

Config bench_config(int depth, bool deform) {
  Config cfg;
  cfg.merge_from_list(torchvision_config_overrides(depth));
  if (deform)
    cfg.merge_from_list({"MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]", "MODEL.RESNETS.DEFORM_MODULATED",
                         "False", "MODEL.RESNETS.DEFORM_NUM_GROUPS", "1"});
  return cfg;
}

ResNet bench_model(int depth, bool deform, const std::string& weights, uint64_t seed, std::string* summary) {
  ResNet model = build_resnet_backbone(bench_config(depth, deform), ShapeSpec{3});
  if (!deform) {
    if (weights.empty()) {
      model.init_weights(seed);
    } else {
      const LoadReport r = load_checkpoint(model, weights, /*strict=*/true);
      if (summary) *summary = r.summary();
    }
    return model;
  }
  model.init_weights(seed);  // conv2_offset: zeros, replaced below
  if (!weights.empty()) {
    const LoadReport r = load_checkpoint(model, weights, /*strict=*/false);
    for (const auto& m : r.missing)
      if (m.find("conv2_offset") == std::string::npos)
        throw Error("bench_model: " + weights + " lacks " + m + ", which is not an offset convolution");
    if (summary) *summary = r.summary() + " (the offset convolutions drawn from seed " + std::to_string(seed) + ")";
  }
  std::mt19937_64 gen(seed * 1000003u + 7u);
  int blocks = 0;
  for (Stage& stage : model.stages())
    for (auto& block : stage)
      if (auto* db = dynamic_cast<DeformBottleneckBlock*>(block.get())) {
        Conv2d& c = db->conv2_offset;
        const double fan_in = static_cast<double>(c.in_channels / c.groups) * c.kernel_size * c.kernel_size;
        std::normal_distribution<float> w(0.f, static_cast<float>(0.1 / std::sqrt(fan_in)));
        std::uniform_real_distribution<float> b(-2.f, 2.f);
        float* wp = c.weight.data_ptr<float>();
        for (int64_t i = 0; i < c.weight.numel(); ++i) wp[i] = w(gen);
        if (!c.bias.defined()) c.bias = Tensor::zeros({c.out_channels});
        float* bp = c.bias.data_ptr<float>();
        for (int64_t i = 0; i < c.bias.numel(); ++i) bp[i] = b(gen);
        ++blocks;
      }
  if (blocks == 0) throw Error("bench_model: the deformable R-" + std::to_string(depth) + " has no deformable block");
  return model;
}

Tensor make_nv12_frame(int64_t height, int64_t width, uint64_t seed) {
  if (height <= 0 || width <= 0 || height % 2 || width % 2)
    throw std::invalid_argument("make_nv12_frame: expected an even positive size, got " + std::to_string(width) + "x" +
                                std::to_string(height));
  Tensor f = Tensor::empty({height * 3 / 2, width}, DType::UInt8);
  uint8_t* p = f.data_ptr<uint8_t>();
  std::mt19937 gen(static_cast<uint32_t>(seed) * 2654435761u + 99u);
  std::uniform_int_distribution<int> y(16, 235), uv(16, 240);
  const int64_t luma = height * width;
  for (int64_t i = 0; i < luma; ++i) p[i] = static_cast<uint8_t>(y(gen));
  for (int64_t i = luma; i < f.numel(); ++i) p[i] = static_cast<uint8_t>(uv(gen));
  return f;
}

FrameView nv12_frame_view(const uint8_t* data, int64_t height, int64_t width, Device device) {
  FrameView v;
  v.format = PixelFormat::NV12;
  v.device = device;
  v.width = width;
  v.height = height;
  v.planes[0] = data;
  v.planes[1] = data + height * width;
  v.strides[0] = width;
  v.strides[1] = width;
  v.matrix = ColorMatrix::BT709;
  v.range = ColorRange::Limited;
  return v;
}

FramePreprocessOptions nv12_preprocess_options() {
  FramePreprocessOptions o;  // INPUT.FORMAT BGR, detectron2's PIXEL_MEAN, PIXEL_STD 1
  o.resize = ResizeMode::ShortestEdge;
  o.min_size = 800;
  o.max_size = 1333;
  o.size_divisibility = 0;
  return o;
}

// ---- GPU section -----------------------------------------------------------------------------

GpuTensorRate fp16_tensor_rate(int major, int minor, const std::string& device_name) {
  const int cc = major * 10 + minor;
  GpuTensorRate r;
  const char* arch = nullptr;
  switch (cc) {
    case 70: case 72: r.flops_per_sm_clock = 1024; arch = "Volta"; break;
    case 75: r.flops_per_sm_clock = 1024; arch = "Turing"; break;
    case 80: r.flops_per_sm_clock = 2048; arch = "Ampere GA100"; break;
    case 86: r.flops_per_sm_clock = 1024; arch = "Ampere GA10x"; break;
    case 89: r.flops_per_sm_clock = 1024; arch = "Ada"; break;
    case 90: r.flops_per_sm_clock = 4096; arch = "Hopper"; break;
    default: break;
  }
  const std::string sm = "sm_" + std::to_string(major) + std::to_string(minor);
  if (!arch) {
    r.entry = sm + " is not in the table of dense fp16 tensor rates (sm_70/72/75/80/86/89/90)";
    return r;
  }
  std::string note;
  if ((cc == 75 || cc == 86 || cc == 89) && device_name.find("GeForce") != std::string::npos) {
    r.flops_per_sm_clock /= 2;
    note = ", halved for GeForce (fp16 with fp32 accumulation)";
  }
  std::ostringstream e;
  e << sm << " (" << arch << "): " << r.flops_per_sm_clock << " dense fp16 FLOP/clk/SM" << note;
  r.entry = e.str();
  return r;
}

double fp16_tensor_peak_flops(int major, int minor, int sm_count, int clock_khz, const std::string& device_name) {
  if (sm_count <= 0 || clock_khz <= 0) return 0;
  return static_cast<double>(sm_count) * clock_khz * 1e3 * fp16_tensor_rate(major, minor, device_name).flops_per_sm_clock;
}

const char* const kGpuWorkloadKeys = "b1,b8,deform,nv12";

std::vector<GpuWorkload> parse_gpu_workloads(const std::string& text) {
  const auto [nv12_h, nv12_w] = resize_shortest_edge_shape(1080, 1920, 800, 1333);
  const std::vector<GpuWorkload> all = {
      {"b1", "R-50 800x1216, batch 1", 1, false, false, 800, 1216},
      {"b8", "R-50 800x1216, batch 8", 8, false, false, 800, 1216},
      {"deform", "R-50 with deformable res3-res5 (v1, 1 group) 800x1216, batch 1", 1, true, false, 800, 1216},
      {"nv12",
       "NV12 1920x1080 frame in CUDA memory -> ShortestEdge 800/1333 (" + std::to_string(nv12_h) + "x" +
           std::to_string(nv12_w) + ") -> R-50, batch 1",
       1, false, true, nv12_h, nv12_w},
  };
  if (text == "all" || text.empty()) return all;
  std::vector<GpuWorkload> out;
  for (const auto& k : split_list(text)) {
    auto it = std::find_if(all.begin(), all.end(), [&](const GpuWorkload& w) { return w.key == k; });
    if (it == all.end())
      throw std::invalid_argument("--gpu-workloads: unknown workload '" + k + "' (expected some of " +
                                  kGpuWorkloadKeys + ", or all)");
    if (std::none_of(out.begin(), out.end(), [&](const GpuWorkload& w) { return w.key == k; })) out.push_back(*it);
  }
  if (out.empty()) throw std::invalid_argument("--gpu-workloads: expected at least one of " + std::string(kGpuWorkloadKeys));
  return out;
}

namespace {

std::string fixed_str(double v, int digits) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(digits);
  s << v;
  return s.str();
}

const double* find_time(const GpuTimes& t, const std::string& workload, const std::string& runner) {
  auto w = t.median_ms.find(workload);
  if (w == t.median_ms.end()) return nullptr;
  auto r = w->second.find(runner);
  return r == w->second.end() || !(r->second > 0) ? nullptr : &r->second;
}

std::string missing(const GpuTimes& t, const std::string& workload, const std::vector<std::string>& runners) {
  std::string m;
  for (const auto& r : runners)
    if (!find_time(t, workload, r)) m += (m.empty() ? "" : ", ") + r;
  return "not measured: no time of " + m + " at " + workload;
}

}  // namespace

std::vector<TargetVerdict> evaluate_gpu_targets(const GpuTimes& t) {
  std::vector<TargetVerdict> out;
  // Speed-up over a PyTorch runner at b1: time(peer) / time(ours) >= bound.
  auto speedup = [&](const std::string& ours, const std::string& peer, double bound, const std::string& what) {
    TargetVerdict v;
    v.target = ours + " >= " + fixed_str(bound, 1) + "x faster than " + peer + " (" + what + "), R-50 800x1216 batch 1";
    const double* o = find_time(t, "b1", ours);
    const double* p = find_time(t, "b1", peer);
    if (!o || !p) {
      v.verdict = missing(t, "b1", {ours, peer});
    } else {
      const double x = *p / *o;
      v.measured = fixed_str(x, 2) + "x (" + fixed_str(*o, 2) + " ms vs " + fixed_str(*p, 2) + " ms)";
      v.verdict = x >= bound ? "met" : "not met";
    }
    out.push_back(v);
  };
  speedup("ours-cuda-fp32", "pytorch-cuda-fp32", 3.0, "PyTorch eager fp32 with its defaults: cuDNN may use TF32");
  speedup("ours-cuda-fp16", "pytorch-cuda-fp16-cl", 1.3, "PyTorch eager fp16, channels_last");
  {
    TargetVerdict v;
    v.target = "ours-cuda-fp16 at R-50 800x1216 batch 8 >= 40% of the GPU's dense fp16 tensor peak";
    const double* o = find_time(t, "b8", "ours-cuda-fp16");
    auto f = t.flops.find("b8");
    if (!o) {
      v.verdict = missing(t, "b8", {"ours-cuda-fp16"});
    } else if (!(t.peak_flops > 0)) {
      v.verdict = "not measured: this GPU's peak is not in the table (fp16_tensor_rate)";
    } else if (f == t.flops.end() || !(f->second > 0)) {
      v.verdict = "not measured: no FLOP count for b8";
    } else {
      const double rate = f->second / (*o / 1e3);
      const double frac = rate / t.peak_flops;
      v.measured = fixed_str(100 * frac, 1) + "% (" + fixed_str(rate / 1e12, 1) + " of " + fixed_str(t.peak_flops / 1e12, 1) +
                   " TFLOP/s, " + fixed_str(*o, 2) + " ms per batch)";
      v.verdict = frac >= 0.40 ? "met" : "not met";
    }
    out.push_back(v);
  }
  for (const char* p : {"fp32", "fp16", "bf16"}) {
    const std::string r = std::string("ours-cuda-") + p;
    TargetVerdict v;
    v.target = r + ": deformable R-50 (res3-res5) <= 1.25x the time of the plain R-50, 800x1216 batch 1";
    const double* d = find_time(t, "deform", r);
    const double* b = find_time(t, "b1", r);
    if (!d || !b) {
      v.verdict = !d ? missing(t, "deform", {r}) : missing(t, "b1", {r});
    } else {
      const double x = *d / *b;
      v.measured = fixed_str(x, 2) + "x (" + fixed_str(*d, 2) + " ms vs " + fixed_str(*b, 2) + " ms)";
      v.verdict = x <= 1.25 ? "met" : "not met";
    }
    out.push_back(v);
  }
  return out;
}

bool parse_ours_runner(const std::string& runner, OursRunner& parsed) {
  if (runner.rfind("ours-", 0) != 0) return false;
  OursRunner r;
  r.engine = runner.substr(5);
  auto strip = [&](const std::string& suffix) {
    if (r.engine.size() > suffix.size() &&
        r.engine.compare(r.engine.size() - suffix.size(), suffix.size(), suffix) == 0) {
      r.engine.resize(r.engine.size() - suffix.size());
      return true;
    }
    return false;
  };
  for (const char* p : {"fp32", "bf16", "fp16", "auto"})
    if (strip(std::string("-") + p)) {
      r.precision = p;
      break;
    }
  for (const char* a : {"direct", "winograd"})
    if (strip(std::string("-") + a)) {
      r.conv_algorithm = a;
      break;
    }
  if (r.conv_algorithm == "auto") r.tf32 = strip("-tf32");
  if (r.tf32 && r.precision != "fp32") return false;  // TF32 is a float32 mode
  if (r.engine.empty()) return false;
  parsed = r;
  return true;
}

double median(std::vector<double> v) {
  if (v.empty()) throw std::invalid_argument("median of an empty list");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace backbone::bench
