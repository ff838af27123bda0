// SPDX-License-Identifier: Apache-2.0
#include "gpu_section.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "backbone/backbone.h"
#include "driver_util.h"
#include "process.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace backbone::bench {

const std::vector<GpuRunnerSpec>& gpu_runner_catalog() {
  static const std::vector<GpuRunnerSpec> catalog = {
      {"ours-cuda-fp32", true, "", kFp32Tolerance, false,
       "this project, engine cuda, fp32 with TF32 off (EngineOptions::allow_tf32 false, the default)"},
      {"ours-cuda-tf32", true, "", kBf16Tolerance, false,
       "this project, engine cuda, fp32 with EngineOptions::allow_tf32 (cuDNN may use TF32, as PyTorch's default)"},
      {"ours-cuda-fp16", true, "", kBf16Tolerance, false, "this project, engine cuda, fp16"},
      {"ours-cuda-bf16", true, "", kBf16Tolerance, false, "this project, engine cuda, bf16"},
      {"pytorch-cuda-fp32", false, "torch-cuda-fp32", kBf16Tolerance, true,
       "PyTorch eager fp32 with PyTorch's defaults (torch.backends.cudnn.allow_tf32 True: cuDNN may use TF32)"},
      {"pytorch-cuda-fp32-notf32", false, "torch-cuda-fp32-notf32", kFp32Tolerance, true,
       "PyTorch eager fp32, torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False"},
      {"pytorch-cuda-fp16-cl", false, "torch-cuda-fp16-cl", kBf16Tolerance, true,
       "PyTorch eager fp16: model.half().to(memory_format=torch.channels_last), the input likewise"},
  };
  return catalog;
}

std::string gpu_skip_line(const std::string& reason) { return "GPU section skipped: " + reason; }

GpuProbe probe_gpu(const Device& device) {
  GpuProbe p;
  if (!device.is_cuda()) {
    p.why = "expected a CUDA device cuda:N, got " + device.str();
    return p;
  }
  try {
    p.info = cuda_device_info(device.index);
  } catch (const std::exception& e) {
    p.why = e.what();
  }
  return p;
}

namespace {

// The name of the agreement reference that runs this project's CPU engine: only checked, never timed.
constexpr const char* kCpuReferenceSuffix = " (CPU reference)";

struct RunnerRun : WorkerRun {  // status: also "reference" (the CPU reference, checked only)
  const GpuRunnerSpec* spec = nullptr;  // nullptr for the CPU reference
  std::string name;                     // runner name ("ours-onednn" for the CPU reference)
  double tolerance = kFp32Tolerance;
  bool cpu_reference = false;
  bool is_reference = false;

  std::string label() const { return cpu_reference ? name + kCpuReferenceSuffix : name; }
  bool timed() const { return status == "ok" && !times_ms.empty(); }
};

struct WorkloadRun {
  GpuWorkload w;
  double flops = 0;       // one forward, the whole batch
  std::string reference;  // label of the runner whose output is the reference
  std::vector<RunnerRun> runners;
  const RunnerRun* find(const std::string& name) const {
    for (const auto& r : runners)
      if (!r.cpu_reference && r.name == name) return &r;
    return nullptr;
  }
};

std::string mhz(int khz) { return fixed(khz / 1e3, 0) + " MHz"; }

}  // namespace

struct GpuSection::Impl {
  GpuSectionOptions o;
  CudaDeviceInfo info;
  GpuTensorRate rate;
  double peak = 0;
  std::string cpu_ref_engine;  // first CPU engine of this build; "" when none
  fs::path weights;
  std::string started;
  std::vector<WorkloadRun> results;

  void run();
  WorkloadRun run_workload(const GpuWorkload& w, const std::vector<const GpuRunnerSpec*>& runners, const fs::path& input);
  void fail(RunnerRun& r, const std::string& msg);
  std::optional<FeatureMaps> check(RunnerRun& r, const fs::path& dir);
  std::string markdown() const;
  json to_json() const;
};

void GpuSection::Impl::fail(RunnerRun& r, const std::string& msg) { fail_worker(r, r.label(), msg); }

// One frame of `r` written to `dir` and read back; nullopt (and r failed) when it did not work.
std::optional<FeatureMaps> GpuSection::Impl::check(RunnerRun& r, const fs::path& dir) {
  if (!r.proc) return std::nullopt;
  fs::remove_all(dir);
  fs::create_directories(dir);
  try {
    run_check(r, dir, o.timeout);
    FeatureMaps maps = load_levels(dir);
    fs::remove_all(dir);
    if (maps.empty()) throw std::runtime_error("the worker wrote no level into " + dir.string());
    return maps;
  } catch (const std::exception& e) {
    fs::remove_all(dir);
    fail(r, std::string("agreement check: ") + e.what());
    return std::nullopt;
  }
}

WorkloadRun GpuSection::Impl::run_workload(const GpuWorkload& w, const std::vector<const GpuRunnerSpec*>& runners,
                                           const fs::path& input) {
  WorkloadRun res;
  res.w = w;
  res.flops = w.batch * conv_flops(build_resnet_backbone(bench_config(50, w.deform), ShapeSpec{3}), w.height, w.width);
  const std::string tag = "gpu-" + w.key;
  std::cerr << "backbone-bench: GPU " << w.title << ", " << fixed(res.flops / 1e9, 1) << " GFLOP per forward\n";

  // The CPU reference first, then the GPU runners of this workload.
  if (!cpu_ref_engine.empty()) {
    RunnerRun r;
    r.name = "ours-" + cpu_ref_engine;
    r.cpu_reference = true;
    res.runners.push_back(std::move(r));
  }
  for (const auto* spec : runners) {
    if (spec->plain_only && (w.deform || w.nv12)) continue;
    RunnerRun r;
    r.spec = spec;
    r.name = spec->name;
    r.tolerance = spec->tolerance;
    res.runners.push_back(std::move(r));
  }
  const std::string threads = std::to_string(o.cpu_threads);
  const std::vector<std::string> env = {"OMP_NUM_THREADS=" + threads, "MKL_NUM_THREADS=" + threads,
                                        "OPENBLAS_NUM_THREADS=" + threads, "PYTHONDONTWRITEBYTECODE=1"};
  for (auto& r : res.runners) {
    std::vector<std::string> argv;
    if (r.cpu_reference || r.spec->ours) {
      argv = {o.self_exe, "--worker", r.name, "--model", "R-50", "--weights", weights.string(), "--input", input.string(),
              "--threads", threads, "--device", r.cpu_reference ? std::string("cpu") : o.device.str(), "--seed",
              std::to_string(o.seed)};
      if (w.deform) argv.push_back("--deform");
      if (w.nv12) argv.push_back("--nv12");
    } else {
      argv = {o.python, o.peer_script, "worker", "--runner", r.spec->py_runner, "--depth", "50", "--weights",
              weights.string(), "--input", input.string(), "--threads", threads, "--device", o.device.str(),
              "--reply-fd", "3"};
    }
    try {
      r.proc = std::make_unique<WorkerProcess>(argv, env, (o.logs / (tag + "-" + r.name + ".log")).string());
    } catch (const std::exception& e) {
      r.status = "failed";
      r.message = e.what();
    }
  }
  for (auto& r : res.runners) await_ready(r, r.label(), o.timeout);

  // Agreement: the reference is the CPU engine's output, else (b1, b8) pytorch-cuda-fp32-notf32's.
  // Each runner's levels are read and compared one runner at a time (batch 8: ~1 GB per runner).
  const fs::path check_dir = o.work / "check" / tag;
  std::vector<RunnerRun*> candidates;
  for (auto& r : res.runners)
    if (r.cpu_reference) candidates.push_back(&r);
  for (auto& r : res.runners)
    if (!r.cpu_reference && r.name == "pytorch-cuda-fp32-notf32") candidates.push_back(&r);
  FeatureMaps ref;
  for (RunnerRun* r : candidates) {
    auto out = check(*r, check_dir / r->name);
    if (!out) continue;
    ref = std::move(*out);
    res.reference = r->label();
    r->is_reference = true;
    break;
  }
  for (auto& r : res.runners)
    if (r.cpu_reference) {  // checked only: its process goes before the GPU runners are timed
      if (r.proc) r.proc->stop(2);
      r.proc.reset();
      if (r.status == "ok") r.status = "reference";
    }
  if (res.reference.empty()) {
    std::string why = "no reference for the agreement check: ";
    why += cpu_ref_engine.empty() ? "this build has no CPU engine" : "the CPU reference failed";
    why += w.deform || w.nv12 ? "" : " and pytorch-cuda-fp32-notf32 did not run or failed";
    for (auto& r : res.runners)
      if (r.proc) fail(r, why);
  } else {
    for (auto& r : res.runners) {
      if (!r.proc || r.is_reference) continue;
      auto out = check(r, check_dir / r.name);
      if (!out) continue;
      judge_agreement(r, r.name, res.reference, ref, *out, r.tolerance);
    }
  }
  ref.clear();
  std::error_code ec;
  fs::remove_all(check_dir, ec);
  fs::remove(o.work / "check", ec);  // when empty

  // Warm-up, then the timed frames spread over the rounds, each round running every runner in turn.
  for (auto& r : res.runners)
    if (r.proc) warm_up(r, r.label(), o.warmup, o.frames, o.seconds, o.timeout);
  for (auto* r : run_timed_rounds(res.runners, o.rounds, o.timeout, [](const RunnerRun& r) { return r.label(); }))
    if (r->proc) stop_timed(*r, r->name, 3);

  return res;
}

void GpuSection::Impl::run() {
  const std::vector<GpuWorkload> workloads = parse_gpu_workloads(o.workloads);
  std::vector<const GpuRunnerSpec*> runners;
  const auto& catalog = gpu_runner_catalog();
  if (o.runners.empty() || o.runners == "all") {
    for (const auto& s : catalog) runners.push_back(&s);
  } else {
    for (const auto& n : split_list(o.runners)) {
      auto it = std::find_if(catalog.begin(), catalog.end(), [&](const GpuRunnerSpec& s) { return s.name == n; });
      if (it == catalog.end()) {
        std::string names;
        for (const auto& s : catalog) names += " " + s.name;
        throw std::invalid_argument("--gpu-runners: unknown GPU runner '" + n + "'; the GPU section has:" + names);
      }
      runners.push_back(&*it);
    }
  }
  for (const auto& e : available_engines())
    if (!find_engine(e)->cuda_device) {
      cpu_ref_engine = e;
      break;
    }
  started = now_utc();
  std::cerr << "backbone-bench: GPU section on " << o.device.str() << ": " << info.name << ", sm_" << info.major
            << info.minor << ", " << info.sm_count << " SMs at " << mhz(info.clock_khz) << "; dense fp16 tensor peak "
            << (peak > 0 ? fixed(peak / 1e12, 1) + " TFLOP/s" : std::string("unknown")) << " (" << rate.entry << ")\n";
  try {
    weights = ensure_weights(o.work, o.logs, o.python, o.peer_script, 50, o.seed);
  } catch (const Error& e) {
    if (o.weights_python.empty() || o.weights_python == o.python) throw;
    std::cerr << "backbone-bench: " << o.python << " could not make the weights; trying " << o.weights_python << "\n";
    weights = ensure_weights(o.work, o.logs, o.weights_python, o.peer_script, 50, o.seed);
  }
  for (const auto& w : workloads) {
    const fs::path input = w.nv12 ? ensure_nv12_frame(o.work, 1080, 1920, o.seed)
                                  : ensure_input(o.work, w.batch, w.height, w.width, o.seed);
    results.push_back(run_workload(w, runners, input));
    if (o.after_workload) o.after_workload();
  }
}

// ---- reports ---------------------------------------------------------------------------------

namespace {

GpuTimes gpu_times(const std::vector<WorkloadRun>& results, double peak) {
  GpuTimes t;
  t.peak_flops = peak;
  for (const auto& wr : results) {
    t.flops[wr.w.key] = wr.flops;
    for (const auto& r : wr.runners)
      if (!r.cpu_reference && r.timed()) t.median_ms[wr.w.key][r.name] = r.median_ms();
  }
  return t;
}

}  // namespace

std::string GpuSection::Impl::markdown() const {
  std::ostringstream m;
  m << "### GPU section: " << info.name << " (" << o.device.str() << "), " << started << "\n\n";
  m << "- GPU: " << info.name << ", sm_" << info.major << info.minor << ", " << info.sm_count << " SMs, peak SM clock "
    << mhz(info.clock_khz) << ", " << fixed(info.total_memory / 1073741824.0, 1) << " GiB; driver " << info.driver_version
    << ", cuDNN " << info.cudnn_version << "; " << info.module << "\n";
  if (peak > 0)
    m << "- Dense fp16 tensor peak: " << fixed(peak / 1e12, 1) << " TFLOP/s = " << info.sm_count << " SMs x "
      << fixed(info.clock_khz / 1e6, 3) << " GHz x " << rate.flops_per_sm_clock << " FLOP/clk/SM (" << rate.entry
      << "; the clock is the peak SM clock CUDA reports, above the tensor clock of some datasheets: the fractions "
         "are on the low side)\n";
  else
    m << "- Dense fp16 tensor peak: unknown (" << rate.entry << "): no fraction of peak is reported\n";
  m << "- Weights: torchvision resnet50, seed " << o.seed
    << ", random BatchNorm statistics (the CPU section's file); deformable R-50: the same weights, res3-res5 "
       "DEFORM_ON_PER_STAGE [False, True, True, True], DEFORM_MODULATED False, DEFORM_NUM_GROUPS 1, the offset "
       "convolutions drawn from the seed (fractional offsets); inputs seeded N(0, 1), in GPU memory before timing "
       "(ours: uploaded once; PyTorch: .to(device), fp16-cl: .half() channels_last); NV12: a seeded 1920x1080 frame "
       "(BT.709, limited range) uploaded once, Engine::forward_frame with ShortestEdge 800/1333 on the engine's stream\n";
  m << "- A frame's time: from the call to its finished outputs (ours: forward/forward_frame, then "
       "backbone::cuda_wait_ready on every level; PyTorch: the module call under inference_mode, then "
       "torch.cuda.synchronize()); each runner its own process; after the agreement check and "
    << o.warmup << " warm-up frames, up to " << o.frames << " frames (budget " << o.seconds << " s) alternated over "
    << o.rounds << " rounds; median\n";
  m << "- Agreement: every level res2..res5 vs the reference (this project's CPU engine "
    << (cpu_ref_engine.empty() ? std::string("(none in this build)") : "'" + cpu_ref_engine + "'")
    << ", fp32, checked only; else pytorch-cuda-fp32-notf32): max|out-ref| <= " << kFp32Tolerance
    << " x max|ref| for fp32 runners, " << kBf16Tolerance
    << " for fp16, bf16 and TF32 runners (ours-cuda-tf32, pytorch-cuda-fp32); rel. error = the worst level's\n";
  m << "- GFLOP/s: 2 x MACs of every convolution for the whole batch (the CPU section's count; the deformable "
       "model's offset convolutions included, the NV12 preprocessing not); % fp16 peak for every runner, fp32 "
       "included\n\n";

  for (const auto& wr : results) {
    const RunnerRun* base = wr.find("ours-cuda-fp32");
    const double base_ms = base && base->timed() ? base->median_ms() : 0;
    m << "#### " << wr.w.title << " (" << fixed(wr.flops / 1e9, 1) << " GFLOP per forward)\n\n";
    m << "| runner | ms | images/s | GFLOP/s | % fp16 peak | time / ours-cuda-fp32 | rel. error | frames |\n";
    m << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& r : wr.runners) {
      const std::string err = r.is_reference ? "ref" : r.agreement ? sci(r.agreement->worst_relative()) : "-";
      if (!r.timed()) {
        m << "| " << r.label() << " | " << r.status << " | | | | | " << err << " | |\n";
        continue;
      }
      const double ms = r.median_ms();
      const double rate_flops = wr.flops / (ms / 1e3);
      m << "| " << r.label() << " | " << fixed(ms, ms < 10 ? 3 : 2) << " | " << fixed(wr.w.batch * 1e3 / ms, 1) << " | "
        << fixed(rate_flops / 1e9, 0) << " | " << (peak > 0 ? fixed(100 * rate_flops / peak, 1) + "%" : "-") << " | "
        << (base_ms > 0 ? fixed(ms / base_ms, 2) : "-") << " | " << err << " | " << r.times_ms.size() << " |\n";
    }
    m << "\n";
    for (const auto& r : wr.runners) {
      m << "- " << r.label() << ": ";
      if (!r.describe.empty()) m << r.describe;
      if (!r.message.empty()) m << (r.describe.empty() ? "" : "; ") << r.status << ": " << one_line(r.message, 400);
      m << "\n";
    }
    m << "\n";
  }

  // Speed-ups over PyTorch at b1 and b8: time of the PyTorch runner / time of ours.
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"pytorch-cuda-fp32", "ours-cuda-fp32"},        {"pytorch-cuda-fp32-notf32", "ours-cuda-fp32"},
      {"pytorch-cuda-fp32", "ours-cuda-tf32"},        {"pytorch-cuda-fp16-cl", "ours-cuda-fp16"},
      {"pytorch-cuda-fp16-cl", "ours-cuda-bf16"},
  };
  bool any_plain = false;
  for (const auto& wr : results) any_plain |= !wr.w.deform && !wr.w.nv12;
  if (any_plain) {
    m << "#### Speed-ups over PyTorch eager on this GPU (time of PyTorch / time of ours)\n\n| workload |";
    for (const auto& [p, q] : pairs) m << " " << p << " / " << q << " |";
    m << "\n|---|";
    for (size_t i = 0; i < pairs.size(); ++i) m << "---:|";
    m << "\n";
    for (const auto& wr : results) {
      if (wr.w.deform || wr.w.nv12) continue;
      m << "| " << wr.w.title << " |";
      for (const auto& [p, q] : pairs) {
        const RunnerRun* a = wr.find(p);
        const RunnerRun* b = wr.find(q);
        if (a && b && a->timed() && b->timed())
          m << " " << fixed(a->median_ms() / b->median_ms(), 2) << "x |";
        else
          m << " - |";
      }
      m << "\n";
    }
    m << "\n";
  }

  m << "#### Speed targets on this GPU (from this run's medians only)\n\n| target | measured | verdict |\n"
       "|---|---|---|\n";
  for (const auto& v : evaluate_gpu_targets(gpu_times(results, peak)))
    m << "| " << v.target << " | " << (v.measured.empty() ? "-" : v.measured) << " | " << v.verdict << " |\n";
  m << "\n";
  return m.str();
}

json GpuSection::Impl::to_json() const {
  json j;
  j["started"] = started;
  j["device"] = {{"index", o.device.index},
                 {"name", info.name},
                 {"compute_capability", std::to_string(info.major) + "." + std::to_string(info.minor)},
                 {"sm_count", info.sm_count},
                 {"clock_khz", info.clock_khz},
                 {"memory_clock_khz", info.memory_clock_khz},
                 {"memory_bus_width", info.memory_bus_width},
                 {"total_memory", info.total_memory},
                 {"cudnn_version", info.cudnn_version},
                 {"driver_version", info.driver_version},
                 {"module", info.module}};
  j["fp16_tensor_peak"] = {{"flops", peak}, {"flops_per_sm_clock", rate.flops_per_sm_clock}, {"entry", rate.entry}};
  j["settings"] = {{"frames", o.frames}, {"warmup", o.warmup},     {"seconds", o.seconds},
                   {"rounds", o.rounds}, {"seed", o.seed},         {"python", o.python},
                   {"cpu_threads", o.cpu_threads}, {"cpu_reference_engine", cpu_ref_engine}};
  json wl = json::array();
  for (const auto& wr : results) {
    json w = {{"key", wr.w.key},       {"title", wr.w.title},           {"batch", wr.w.batch},
              {"height", wr.w.height}, {"width", wr.w.width},           {"deform", wr.w.deform},
              {"nv12", wr.w.nv12},     {"gflop", wr.flops / 1e9},       {"reference", wr.reference}};
    json rs = json::array();
    for (const auto& r : wr.runners) {
      json x = {{"name", r.name},         {"cpu_reference", r.cpu_reference}, {"status", r.status},
                {"describe", r.describe}, {"message", r.message},             {"tolerance", r.tolerance},
                {"check_ms", r.check_ms}, {"warmup_ms", r.warmup_ms},         {"times_ms", r.times_ms}};
      if (r.agreement) {
        json levels = json::array();
        for (const auto& l : r.agreement->levels)
          levels.push_back({{"name", l.name},
                            {"max_abs_diff", std::isfinite(l.max_abs_diff) ? json(l.max_abs_diff) : json("inf")},
                            {"max_abs_ref", l.max_abs_ref},
                            {"relative", std::isfinite(l.relative) ? json(l.relative) : json("inf")},
                            {"ok", l.ok}});
        x["agreement"] = {{"ok", r.agreement->ok}, {"tolerance", r.agreement->tolerance}, {"levels", levels}};
      }
      if (r.timed()) {
        const double ms = r.median_ms();
        const double f = wr.flops / (ms / 1e3);
        x["median_ms"] = ms;
        x["images_per_s"] = wr.w.batch * 1e3 / ms;
        x["gflops"] = f / 1e9;
        x["fp16_peak_fraction"] = peak > 0 ? json(f / peak) : json(nullptr);
      }
      rs.push_back(x);
    }
    w["runners"] = rs;
    wl.push_back(w);
  }
  j["workloads"] = wl;
  json targets = json::array();
  for (const auto& v : evaluate_gpu_targets(gpu_times(results, peak)))
    targets.push_back({{"target", v.target}, {"measured", v.measured}, {"verdict", v.verdict}});
  j["targets"] = targets;
  return j;
}

GpuSection::GpuSection(GpuSectionOptions options, CudaDeviceInfo info) : impl_(std::make_unique<Impl>()) {
  impl_->o = std::move(options);
  impl_->info = std::move(info);
  impl_->rate = fp16_tensor_rate(impl_->info.major, impl_->info.minor, impl_->info.name);
  impl_->peak = fp16_tensor_peak_flops(impl_->info.major, impl_->info.minor, impl_->info.sm_count, impl_->info.clock_khz,
                                       impl_->info.name);
}

GpuSection::~GpuSection() = default;

void GpuSection::run() { impl_->run(); }

bool GpuSection::all_ok() const {
  for (const auto& wr : impl_->results)
    for (const auto& r : wr.runners)
      if (r.status == "failed" || r.status == "disagrees") return false;
  return true;
}

std::string GpuSection::markdown() const { return impl_->markdown(); }

json GpuSection::to_json() const { return impl_->to_json(); }

}  // namespace backbone::bench
