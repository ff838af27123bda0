// SPDX-License-Identifier: Apache-2.0
// backbone-bench: this project's engines beside PyTorch eager and OpenCV DNN (and, with
// --peers-venv, PyTorch 2.x eager and torch.compile, ONNX Runtime, OpenVINO and current OpenCV), on
// the same weights, input and thread count, each in its own worker process, alternated after
// warm-up, after an agreement check. See README.md ("Benchmark (backbone-bench)") and --help.
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "bench_core.h"
#include "cli.h"
#include "driver_util.h"
#include "gpu_section.h"
#include "process.h"
#include "worker.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace backbone::bench {
namespace {

// ---- runners ---------------------------------------------------------------------------------

enum class RunnerKind { Ours, CvDnn, Python };

struct RunnerSpec {
  std::string name;
  RunnerKind kind;
  std::string py_runner;  // peer.py --runner
  bool venv = false;      // Python from --peers-venv
  bool onnx = false;      // runs the ONNX export
  std::string what;       // one line for --list-runners and the report
  bool is_ours() const { return kind == RunnerKind::Ours; }
  bool bf16_hardware = false;  // runs only where the CPU has AVX512_BF16 or AMX
  // bf16, fp16 or precision=auto (which may run bf16): checked against the bf16 bound
  bool is_low_precision() const {
    for (const char* s : {"-bf16", "-fp16", "-auto"})
      if (name.size() > 5 && name.compare(name.size() - 5, 5, s) == 0) return true;
    return false;
  }
};

std::vector<RunnerSpec> runner_catalog(const Options& o) {
  std::vector<RunnerSpec> c;
  // Each engine of this build with its defaults (fp32, conv algorithm auto); a CPU engine also at
  // its other precisions, at precision=auto, and with the convolution algorithm forced either way
  // where it has Winograd kernels (the GPU section times the cuda engine's variants).
  for (const auto& e : available_engines()) {
    const EngineInfo* info = find_engine(e);
    const bool cpu = info && !info->cuda_device;
    c.push_back({"ours-" + e, RunnerKind::Ours, "", false, false,
                 "this project, engine " + e + ", fp32" + (cpu && info->winograd ? ", conv algorithm auto (the defaults)" : "")});
    if (!cpu) continue;
    std::string lower;  // the precisions auto measures against fp32
    for (const Precision p : info->precisions)
      if (p != Precision::Float32 && p != Precision::Auto) {
        c.push_back({"ours-" + e + "-" + precision_name(p), RunnerKind::Ours, "", false, false,
                     "this project, engine " + e + ", " + precision_name(p)});
        lower += (lower.empty() ? "" : ", ") + std::string(precision_name(p));
      }
    if (!lower.empty())
      c.push_back({"ours-" + e + "-auto", RunnerKind::Ours, "", false, false,
                   "this project, engine " + e + ", precision auto (the engine measures fp32 against " + lower +
                       "), conv algorithm auto"});
    if (info->winograd) {
      c.push_back({"ours-" + e + "-direct", RunnerKind::Ours, "", false, false,
                   "this project, engine " + e + ", fp32, conv algorithm direct (no Winograd)"});
      c.push_back({"ours-" + e + "-winograd", RunnerKind::Ours, "", false, false,
                   "this project, engine " + e + ", fp32, conv algorithm winograd (every 3x3 layer that has it)"});
    }
  }
  c.push_back({"pytorch-eager", RunnerKind::Python, "torch-eager", false, false,
               "PyTorch eager (" + o.python + ": Debian's torch), torchvision's model"});
#ifdef BACKBONE_BENCH_HAVE_OPENCV_DNN
  c.push_back({"opencv-dnn", RunnerKind::CvDnn, "", false, true, "OpenCV DNN (C++, this system's OpenCV) on the ONNX export"});
#endif
  c.push_back({"venv-pytorch-eager", RunnerKind::Python, "torch-eager", true, false, "PyTorch 2.x eager (--peers-venv)"});
  c.push_back({"venv-torch-compile", RunnerKind::Python, "torch-compile", true, false, "PyTorch 2.x torch.compile (--peers-venv)"});
  c.push_back({"venv-onnxruntime", RunnerKind::Python, "onnxruntime", true, true, "ONNX Runtime on the ONNX export (--peers-venv)"});
  c.push_back({"venv-openvino", RunnerKind::Python, "openvino", true, true, "OpenVINO on the ONNX export (--peers-venv)"});
  c.push_back({"venv-openvino-bf16", RunnerKind::Python, "openvino-bf16", true, true,
               "OpenVINO with INFERENCE_PRECISION_HINT bf16 on the ONNX export (--peers-venv; CPUs with AVX512_BF16 or AMX)",
               true});
  c.push_back({"venv-opencv-dnn", RunnerKind::Python, "opencv", true, true, "current OpenCV DNN (python cv2) on the ONNX export (--peers-venv)"});
  return c;
}

using Workload = CpuWorkload;

std::vector<Workload> make_workloads(const Options& o) { return cpu_workloads(o.models, o.sizes); }

// ---- files -----------------------------------------------------------------------------------

std::string find_peer_script(const Options& o) {
  std::vector<fs::path> candidates;
  if (!o.peers_dir.empty()) candidates.push_back(fs::path(o.peers_dir) / "peer.py");
  const fs::path exe_dir = fs::path(self_exe()).parent_path();
  candidates.push_back(exe_dir.parent_path() / "share" / "backbone" / "bench" / "peers" / "peer.py");
#ifdef BACKBONE_BENCH_SOURCE_PEERS_DIR
  candidates.push_back(fs::path(BACKBONE_BENCH_SOURCE_PEERS_DIR) / "peer.py");
#endif
  for (const auto& c : candidates)
    if (fs::exists(c)) return c.string();
  std::string tried;
  for (const auto& c : candidates) tried += " " + c.string();
  throw Error("cannot find bench/peers/peer.py (tried" + tried + "); pass --peers-dir DIR");
}

std::string size_str(const Size& s) { return std::to_string(s.height) + "x" + std::to_string(s.width); }
// inputs_'s key: the size asked, and the size run when padded
std::string input_key(const Workload& w) { return size_str(w.asked) + (w.padded() ? "-" + size_str(w.size) : ""); }

// ---- results ---------------------------------------------------------------------------------

struct RunnerResult : WorkerRun {
  const RunnerSpec* spec = nullptr;
  ProcMemory after_warmup, at_end;
};

struct WorkloadResult {
  Workload w;
  int threads = 0;
  double flops = 0;
  std::string reference;  // the runner whose output is the reference, and the denominator of the ratios
  std::vector<RunnerResult> runners;
  const RunnerResult* find(const std::string& name) const {
    for (const auto& r : runners)
      if (r.spec->name == name) return &r;
    return nullptr;
  }
};

// ---- the run ---------------------------------------------------------------------------------

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {}
  int run();

 private:
  void prepare_files(const std::vector<Workload>& workloads, const std::vector<const RunnerSpec*>& runners);
  WorkloadResult run_workload(const Workload& w, int threads, const std::vector<const RunnerSpec*>& runners);
  void fail(RunnerResult& r, const std::string& msg);
  // Measures the FP32 peak for each thread count; peaks_ keeps the highest of every measurement
  // of the run (other load on the machine can only lower it), peak_samples_ all of them.
  void measure_peaks(const std::vector<int>& thread_counts);
  std::string report_markdown() const;
  std::string cpu_markdown() const;
  std::vector<CpuRow> cpu_rows() const;  // the figures the CPU targets are judged from
  json report_json() const;

  Options o_;
  MachineInfo machine_;
  std::map<int, PeakResult> peaks_;
  std::map<int, std::vector<double>> peak_samples_;
  fs::path work_, logs_;
  std::string peer_script_, venv_python_;
  std::vector<RunnerSpec> catalog_;
  std::map<std::string, fs::path> weights_;  // by Workload::weights_key()
  std::map<std::string, fs::path> onnx_, inputs_;
  std::vector<WorkloadResult> results_;
  std::string started_;
  bool run_cpu_ = true;
  std::string gpu_skipped_;  // why the GPU section did not run ("" when it ran or was not asked for)
  std::unique_ptr<GpuSection> gpu_;
};

void Bench::fail(RunnerResult& r, const std::string& msg) { fail_worker(r, r.spec->name, msg); }

void Bench::measure_peaks(const std::vector<int>& thread_counts) {
  for (int t : thread_counts) {
    const PeakResult p = measure_fp32_peak(t);
    peak_samples_[t].push_back(p.gflops);
    if (!peaks_.count(t) || p.gflops > peaks_[t].gflops) peaks_[t] = p;
    std::cerr << "backbone-bench: FP32 peak (" << p.isa << " FMA loop) on " << t << " thread(s): " << fixed(p.gflops, 1)
              << " GFLOP/s (highest this run: " << fixed(peaks_[t].gflops, 1) << ")\n";
  }
}

void Bench::prepare_files(const std::vector<Workload>& workloads, const std::vector<const RunnerSpec*>& runners) {
  bool need_onnx = false;
  for (const auto* r : runners) need_onnx |= r->onnx;
  fs::create_directories(work_ / "weights");
  fs::create_directories(work_ / "onnx");
  fs::create_directories(work_ / "inputs");
  const std::string seed = std::to_string(o_.seed);
  for (const auto& w : workloads) {
    const std::string tag = "resnet" + std::to_string(w.depth) + (w.fpn() ? "-fpn" : "") + "-seed" + seed;
    const std::string wkey = w.weights_key();
    if (!weights_.count(wkey))
      weights_[wkey] = ensure_weights(work_, logs_, o_.python, peer_script_, w.depth, o_.seed, w.fpn());
    const std::string key = w.model + "@" + size_str(w.size);
    if (need_onnx && !onnx_.count(key)) {
      const fs::path p = work_ / "onnx" / (tag + "-" + size_str(w.size) + "-opset13.onnx");
      if (!newer_than(p, weights_[wkey])) {
        std::vector<std::string> argv = {o_.python, peer_script_, "export-onnx", "--depth", std::to_string(w.depth),
                                         "--weights", weights_[wkey].string(), "--height", std::to_string(w.size.height),
                                         "--width", std::to_string(w.size.width), "--opset", "13", "--out", p.string()};
        if (w.fpn()) argv.push_back("--fpn");
        run_logged("exporting " + p.string(), argv, (logs_ / ("export-" + tag + "-" + size_str(w.size) + ".log")).string());
      }
      onnx_[key] = p;
    }
    const std::string skey = input_key(w);
    if (!inputs_.count(skey))
      inputs_[skey] = ensure_input(work_, 1, w.asked.height, w.asked.width, o_.seed, w.size.height, w.size.width);
  }
}

WorkloadResult Bench::run_workload(const Workload& w, int threads, const std::vector<const RunnerSpec*>& runners) {
  WorkloadResult res;
  res.w = w;
  res.threads = threads;
  res.flops = bench_flops(w.model, w.size.height, w.size.width);
  const std::string key = w.model + "@" + size_str(w.size);
  const std::string tag = w.model + "-" + size_str(w.size) + "-t" + std::to_string(threads);
  std::cerr << "backbone-bench: " << w.title() << ", " << threads << " thread(s), "
            << fixed(res.flops / 1e9, 2) << " GFLOP per frame\n";

  // Start the workers: this project's one at a time, each through its agreement check (its first
  // frame, where the oneDNN engine measures its choices for the shape) before the next starts, so
  // that nothing else is loading on the machine while it measures (workers loading beside it were
  // measured to slow its two-thread measurements down several times); then the peers together.
  const fs::path check_dir = work_ / "check" / tag;
  fs::remove_all(check_dir);
  std::map<std::string, FeatureMaps> outputs;
  std::vector<std::vector<const RunnerSpec*>> groups;
  for (const auto* spec : runners)
    if (spec->is_ours()) groups.push_back({spec});
  groups.emplace_back();
  for (const auto* spec : runners)
    if (!spec->is_ours()) groups.back().push_back(spec);
  for (const auto& group : groups) {
    const size_t first = res.runners.size();
    for (const auto* spec : group) {
      RunnerResult r;
      r.spec = spec;
      if (spec->bf16_hardware && !machine_.avx512_bf16 && !machine_.amx_bf16) {
        r.status = "unsupported";
        r.message = "this CPU has neither AVX512_BF16 nor AMX (" + machine_.flags_summary() + "): not run";
        std::cerr << "backbone-bench:   " << spec->name << " does not run here: " << r.message << "\n";
        res.runners.push_back(std::move(r));
        continue;
      }
      std::vector<std::string> argv;
      if (spec->kind == RunnerKind::Python) {
        argv = {spec->venv ? venv_python_ : o_.python, peer_script_, "worker", "--runner", spec->py_runner, "--depth",
                std::to_string(w.depth), "--weights", weights_.at(w.weights_key()).string(), "--input",
                inputs_.at(input_key(w)).string(), "--threads", std::to_string(threads), "--reply-fd", "3"};
        if (w.fpn()) argv.push_back("--fpn");
        if (spec->onnx) argv.insert(argv.end(), {"--onnx", onnx_.at(key).string()});
      } else {
        argv = {self_exe(), "--worker", spec->name, "--model", w.model, "--weights", weights_.at(w.weights_key()).string(),
                "--input", inputs_.at(input_key(w)).string(), "--threads", std::to_string(threads)};
        if (spec->onnx) argv.insert(argv.end(), {"--onnx", onnx_.at(key).string()});
      }
      const std::string t = std::to_string(threads);
      std::vector<std::string> env = {"OMP_NUM_THREADS=" + t, "MKL_NUM_THREADS=" + t, "OPENBLAS_NUM_THREADS=" + t,
                                      "TORCHINDUCTOR_CACHE_DIR=" + (work_ / "inductor-cache").string(),
                                      "PYTHONDONTWRITEBYTECODE=1"};
      try {
        r.proc = std::make_unique<WorkerProcess>(argv, env, (logs_ / (tag + "-" + spec->name + ".log")).string());
      } catch (const std::exception& e) {
        r.status = "failed";
        r.message = e.what();
      }
      res.runners.push_back(std::move(r));
    }
    for (size_t i = first; i < res.runners.size(); ++i) await_ready(res.runners[i], res.runners[i].spec->name, o_.timeout);

    // Agreement check: one frame each, compared with the reference (this project's first fp32 engine).
    for (size_t i = first; i < res.runners.size(); ++i) {
      auto& r = res.runners[i];
      if (!r.proc) continue;
      const fs::path dir = check_dir / r.spec->name;
      fs::create_directories(dir);
      try {
        run_check(r, dir, o_.timeout);
        outputs[r.spec->name] = load_levels(dir);
      } catch (const std::exception& e) {
        fail(r, std::string("agreement check: ") + e.what());
      }
    }
  }
  for (auto& r : res.runners)
    if (r.proc && r.spec->is_ours() && !r.spec->is_low_precision()) {
      res.reference = r.spec->name;
      break;
    }
  if (res.reference.empty()) {
    fs::remove_all(check_dir);
    throw Error("the agreement check needs one of this project's fp32 engines (ours-*) among the runners, and none ran for " +
                tag);
  }
  const FeatureMaps& ref = outputs.at(res.reference);
  for (auto& r : res.runners) {
    if (!r.proc) continue;
    const double tol = r.spec->is_low_precision() ? kBf16Tolerance : kFp32Tolerance;
    judge_agreement(r, r.spec->name, res.reference, ref, outputs.at(r.spec->name), tol);
  }
  outputs.clear();
  fs::remove_all(check_dir);
  std::error_code ec;
  fs::remove(work_ / "check", ec);  // when empty

  // Warm-up, then the timed rounds.
  for (auto& r : res.runners) {
    if (!r.proc) continue;
    // The check's frame is the first warm-up frame; slow runners get one more (see --help).
    const int warm = r.check_ms > o_.seconds * 1000 / 3 ? std::min(o_.warmup, 1) : o_.warmup;
    if (warm_up(r, r.spec->name, warm, o_.frames, o_.seconds, o_.timeout)) r.after_warmup = proc_memory(r.proc->pid());
  }
  const auto active =
      run_timed_rounds(res.runners, o_.rounds, o_.timeout, [](const RunnerResult& r) { return r.spec->name; });
  for (auto* r : active) {
    if (!r->proc) continue;
    r->at_end = proc_memory(r->proc->pid());
    stop_timed(*r, r->spec->name, 2);
  }
  return res;
}

// The first python3 on PATH (the GPU section's default Python), else /usr/bin/python3.
std::string python_on_path() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string d; std::getline(dirs, d, ':');) {
    if (d.empty()) continue;
    const fs::path p = fs::path(d) / "python3";
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "/usr/bin/python3";
}

int Bench::run() {
  started_ = now_utc();
  catalog_ = runner_catalog(o_);
  if (o_.list_runners) {
    for (const auto& r : catalog_) std::cout << std::left << std::setw(26) << r.name << " " << r.what << "\n";
    for (const auto& r : gpu_runner_catalog())
      std::cout << std::left << std::setw(26) << r.name << " [GPU section] " << r.what << "\n";
    return 0;
  }
  run_cpu_ = o_.cpu || !o_.gpu;
  // The GPU section's options are checked before anything runs, whether or not it will run.
  Device gpu_device;
  try {
    gpu_device = Device::parse(o_.device);
  } catch (const std::exception& e) {
    throw UsageError(std::string("--device: ") + e.what());
  }
  if (!gpu_device.is_cuda()) throw UsageError("--device expects cuda or cuda:N (the GPU section's device), got '" + o_.device + "'");
  try {
    parse_gpu_workloads(o_.gpu_workloads);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  for (const auto& n : split_list(o_.gpu_runners)) {
    const auto& c = gpu_runner_catalog();
    if (n != "all" && std::none_of(c.begin(), c.end(), [&](const GpuRunnerSpec& s) { return s.name == n; })) {
      std::string names;
      for (const auto& s : c) names += " " + s.name;
      throw UsageError("--gpu-runners: unknown GPU runner '" + n + "'; the GPU section has:" + names);
    }
  }
  std::vector<Workload> workloads;
  std::vector<int> thread_counts;
  try {
    workloads = make_workloads(o_);
    thread_counts = parse_threads(o_.threads);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  machine_ = machine_info();
  for (int& t : thread_counts)
    if (t == 0) t = machine_.cores;
  {
    std::vector<int> uniq;
    for (int t : thread_counts)
      if (std::find(uniq.begin(), uniq.end(), t) == uniq.end()) uniq.push_back(t);
    thread_counts = uniq;
  }

  if (o_.setup_peers) {
    // The PyPI peers' venv, made by the bench itself, outside the build (under the work dir unless
    // --peers-venv names another place).
    if (o_.peers_venv.empty())
      o_.peers_venv = ((o_.work_dir.empty() ? fs::path(default_work_dir()) : fs::path(o_.work_dir)) / "venv").string();
    const std::string script = (fs::path(find_peer_script(o_)).parent_path() / "setup-venv.sh").string();
    std::cerr << "backbone-bench: setting up the peers' venv " << o_.peers_venv << " with " << script << "\n";
    if (std::system(("bash " + shell_quote(script) + " " + shell_quote(o_.peers_venv)).c_str()) != 0)
      throw Error("setting up the peers' venv failed: bash " + script + " " + o_.peers_venv);
  }
  // Runners: the requested ones, or every one that can run here.
  std::vector<const RunnerSpec*> runners;
  if (!o_.runners.empty() && o_.runners != "all") {
    for (const auto& n : split_list(o_.runners)) {
      auto it = std::find_if(catalog_.begin(), catalog_.end(), [&](const RunnerSpec& r) { return r.name == n; });
      if (it == catalog_.end()) {
        std::string names;
        for (const auto& r : catalog_) names += " " + r.name;
        throw UsageError("unknown runner '" + n + "'; this build has:" + names +
                         (std::any_of(gpu_runner_catalog().begin(), gpu_runner_catalog().end(),
                                      [&](const GpuRunnerSpec& g) { return g.name == n; })
                              ? " (" + n + " is a GPU runner: --gpu-runners)"
                              : std::string()));
      }
      if (it->venv && o_.peers_venv.empty()) throw UsageError("runner " + n + " needs --peers-venv DIR");
      runners.push_back(&*it);
    }
  } else {
    for (const auto& r : catalog_)
      if (!r.venv || !o_.peers_venv.empty()) runners.push_back(&r);
  }
  if (!o_.peers_venv.empty()) {
    venv_python_ = (fs::path(o_.peers_venv) / "bin" / "python").string();
    if (!fs::exists(venv_python_))
      throw UsageError("--peers-venv " + o_.peers_venv + " has no bin/python; make it with bench/peers/setup-venv.sh");
  }

  // The GPU, before the (long) CPU section: --gpu without one fails at once; otherwise the section
  // is skipped with one line.
  const bool want_gpu = o_.gpu || !o_.cpu;
  const GpuProbe probe = want_gpu ? probe_gpu(gpu_device) : GpuProbe{};
  if (want_gpu && !probe.info) {
    if (o_.gpu) throw GpuUnavailableError("--gpu: no usable CUDA device " + gpu_device.str() + ": " + probe.why);
    gpu_skipped_ = probe.why;
    std::cerr << "backbone-bench: " << gpu_skip_line(gpu_skipped_) << "\n";
  }

  const std::string gpu_python =
      !o_.gpu_python.empty() ? o_.gpu_python : o_.python_given ? o_.python : python_on_path();
  if (probe.info && !fs::exists(gpu_python)) throw UsageError("--gpu-python " + gpu_python + " does not exist");

  work_ = o_.work_dir.empty() ? default_work_dir() : o_.work_dir;
  logs_ = work_ / "logs";
  fs::create_directories(logs_);
  peer_script_ = find_peer_script(o_);
  if (run_cpu_ && !fs::exists(o_.python)) throw UsageError("--python " + o_.python + " does not exist");

  std::cerr << "backbone-bench " << version() << ": " << machine_.cpu_model << ", " << machine_.cores << " CPUs, "
            << machine_.flags_summary() << "\n";
  auto write_json = [&] {
    if (!o_.json_path.empty()) std::ofstream(o_.json_path) << report_json().dump(2) << "\n";
  };
  if (run_cpu_) {
    measure_peaks(thread_counts);
    prepare_files(workloads, runners);
    for (const auto& w : workloads)
      for (int t : thread_counts) {
        results_.push_back(run_workload(w, t, runners));
        measure_peaks(thread_counts);
        write_json();  // partial results survive
      }
  }

  if (probe.info) {
    GpuSectionOptions g;
    g.device = gpu_device;
    g.workloads = o_.gpu_workloads;
    g.runners = o_.gpu_runners;
    g.frames = o_.gpu_frames.value_or(o_.quick ? 30 : 100);
    g.warmup = o_.gpu_warmup.value_or(o_.quick ? 3 : 10);
    g.seconds = o_.gpu_seconds.value_or(o_.quick ? 0.5 : 2.0);
    g.rounds = o_.rounds_given.value_or(o_.quick ? 3 : o_.rounds);
    g.timeout = o_.timeout;
    g.seed = o_.seed;
    g.python = gpu_python;
    g.weights_python = o_.python;
    g.peer_script = peer_script_;
    g.self_exe = self_exe();
    g.work = work_;
    g.logs = logs_;
    g.cpu_threads = machine_.cores;
    g.after_workload = [&] {  // partial results survive a run cut off by a time limit
      write_json();
      if (!o_.markdown_path.empty()) std::ofstream(o_.markdown_path) << report_markdown();
    };
    gpu_ = std::make_unique<GpuSection>(std::move(g), *probe.info);
    try {
      gpu_->run();
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }

  const std::string md = report_markdown();
  std::cout << md;
  if (!o_.markdown_path.empty()) std::ofstream(o_.markdown_path) << md;
  write_json();
  for (const auto& wr : results_)
    for (const auto& r : wr.runners)
      if (r.status == "disagrees" || r.status == "failed") return 3;
  if (gpu_ && !gpu_->all_ok()) return 3;
  return 0;
}

// ---- reports ---------------------------------------------------------------------------------

double mib(int64_t kb) { return kb / 1024.0; }

std::string Bench::report_markdown() const {
  std::ostringstream m;
  if (run_cpu_) {
    m << cpu_markdown();
  } else {
    m << "### backbone-bench " << version() << ", " << started_ << "\n\n";
  }
  if (gpu_)
    m << gpu_->markdown();
  else if (!gpu_skipped_.empty())
    m << "### GPU section\n\n" << gpu_skip_line(gpu_skipped_) << "\n\n";
  return m.str();
}

std::string Bench::cpu_markdown() const {
  std::ostringstream m;
  m << "### backbone-bench " << version() << ", " << started_ << "\n\n";
  m << "- CPU: " << machine_.cpu_model << ", " << machine_.cores << " logical CPUs; " << machine_.flags_summary() << "\n";
  m << "- FP32 peak, measured (FMA loop, " << (peaks_.empty() ? "" : peaks_.begin()->second.isa)
    << ", 16 accumulators per thread; the highest of the measurements before and after each workload):";
  for (const auto& [t, p] : peaks_) m << " " << t << " thread" << (t > 1 ? "s " : " ") << fixed(p.gflops, 1) << " GFLOP/s;";
  m << " bf16 rows can pass 100%: an AVX512_BF16 dot-product instruction does twice the multiply-adds of an fp32 FMA\n";
  m << "- Weights: torchvision resnet<N>, seed " << o_.seed
    << ", random BatchNorm statistics; our engines load the .pth (detectron2 R-<N>, STRIDE_IN_1X1 False, res2..res5); "
       "R-<N>-FPN: detectron2's FPN on it (p2..p6, 256 channels, sum; fpn_* weights seeded in the same .pth), "
       "PyTorch eager runs the same graph written in plain torch (bench/peers/peer.py); "
       "ONNX: the same model exported once per size (opset 13, constant folding, eval) by "
    << o_.python << "\n";
  m << "- GFLOP: 2 x multiply-accumulates of every convolution (stem, blocks, projection shortcuts; an FPN's lateral "
       "and output convolutions) for that input; "
       "BN (folded), ReLU, max-pool, residual adds and the classifier are not counted\n";
  m << "- Each runner is its own process; after the agreement check and " << o_.warmup
    << " warm-up frames, up to " << o_.frames << " frames each (budget " << o_.seconds << " s), alternated over "
    << o_.rounds << " rounds; median ms per frame; peak mem = VmHWM of the worker process, RSS = VmRSS after warm-up -> "
       "at the end\n";
  m << "- rel. error: the worst level's max|out - ref| / max|ref| in the agreement check\n";
  m << "- time / ours: runner's median time over the median of the reference runner (this project's fp32 engine, "
       "the agreement reference); above 1 means this project is faster\n\n";

  std::vector<std::string> peers;
  for (const auto& wr : results_) {
    const RunnerResult* ours = wr.find(wr.reference);
    const double ours_ms = ours ? ours->median_ms() : 0;
    const double peak = peaks_.count(wr.threads) ? peaks_.at(wr.threads).gflops : 0;
    m << "#### " << wr.w.title() << ", batch 1, " << wr.threads << " thread"
      << (wr.threads > 1 ? "s" : "") << " (" << fixed(wr.flops / 1e9, 2) << " GFLOP per frame)\n\n";
    m << "| runner | ms/frame | frames/s | GFLOP/s | % FP32 peak | time / ours | peak mem MiB | RSS MiB | rel. error | frames |\n";
    m << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& r : wr.runners) {
      const std::string err = r.agreement ? (r.spec->name == wr.reference ? "ref" : sci(r.agreement->worst_relative())) : "-";
      if (r.status != "ok" || r.times_ms.empty()) {
        m << "| " << r.spec->name << " | " << r.status << " | | | | | | | " << err << " | |\n";
        continue;
      }
      const double ms = r.median_ms();
      const double gf = wr.flops / (ms / 1e3) / 1e9;
      m << "| " << r.spec->name << " | " << fixed(ms, ms < 100 ? 2 : 1) << " | " << fixed(1e3 / ms, 2) << " | "
        << fixed(gf, 1) << " | " << (peak > 0 ? fixed(100 * gf / peak, 1) + "%" : "-") << " | "
        << (ours_ms > 0 ? fixed(ms / ours_ms, 2) : "-") << " | " << fixed(mib(r.at_end.vm_hwm_kb), 0) << " | "
        << fixed(mib(r.after_warmup.vm_rss_kb), 0) << " -> " << fixed(mib(r.at_end.vm_rss_kb), 0) << " | " << err << " | "
        << r.times_ms.size() << " |\n";
      // bf16 peers: beside ours bf16 in the targets table, not against our fp32 here
      if (!r.spec->is_ours() && !r.spec->is_low_precision() &&
          std::find(peers.begin(), peers.end(), r.spec->name) == peers.end())
        peers.push_back(r.spec->name);
    }
    m << "\n";
    for (const auto& r : wr.runners) {
      m << "- " << r.spec->name << ": ";
      if (!r.describe.empty()) m << r.describe;
      if (!r.message.empty()) m << (r.describe.empty() ? "" : "; ") << r.status << ": " << one_line(r.message, 400);
      m << "\n";
    }
    m << "\n";
  }

  // Summary: peers' time over ours, and bf16 over fp32.
  m << "#### Speed-ups of this project's fp32 engine (time of the peer / time of ours)\n\n| workload | threads | ours |";
  for (const auto& p : peers) m << " " << p << " |";
  m << " bf16 speed-up |\n|---|---:|---|";
  for (size_t i = 0; i < peers.size(); ++i) m << "---:|";
  m << "---:|\n";
  for (const auto& wr : results_) {
    const RunnerResult* ours = wr.find(wr.reference);
    const double ours_ms = ours && ours->status == "ok" && !ours->times_ms.empty() ? ours->median_ms() : 0;
    m << "| " << wr.w.title() << " | " << wr.threads << " | " << wr.reference << " |";
    for (const auto& p : peers) {
      const RunnerResult* r = wr.find(p);
      if (r && r->status == "ok" && !r->times_ms.empty() && ours_ms > 0)
        m << " " << fixed(r->median_ms() / ours_ms, 2) << "x |";
      else
        m << " " << (r ? r->status : "-") << " |";
    }
    // The first CPU engine timed at both bf16 and fp32.
    const RunnerResult* bf = nullptr;
    const RunnerResult* fp = nullptr;
    for (const auto& e : engine_table())
      if (!bf && !e.cuda_device) {
        bf = wr.find("ours-" + e.name + "-bf16");
        fp = wr.find("ours-" + e.name);
        if (!bf || !fp) bf = fp = nullptr;
      }
    if (bf && fp && bf->status == "ok" && fp->status == "ok" && !bf->times_ms.empty() && !fp->times_ms.empty())
      m << " " << fixed(fp->median_ms() / bf->median_ms(), 2) << "x (err " << sci(bf->agreement->worst_relative()) << ") |\n";
    else
      m << " - |\n";
  }
  m << "\n";
  m << cpu_targets_markdown(cpu_rows());
  return m.str();
}

std::vector<CpuRow> Bench::cpu_rows() const {
  std::vector<CpuRow> rows;
  for (const auto& wr : results_) {
    CpuRow row;
    row.workload = wr.w.title();
    row.at_224 = wr.w.asked.height == 224 && wr.w.asked.width == 224;
    row.threads = wr.threads;
    row.all_cores = wr.threads == machine_.cores;
    row.flops = wr.flops;
    row.peak_gflops = peaks_.count(wr.threads) ? peaks_.at(wr.threads).gflops : 0;
    OursRunner ref;
    if (parse_ours_runner(wr.reference, ref)) row.engine = ref.engine;
    for (const auto& r : wr.runners) {
      row.describe[r.spec->name] = r.describe;
      if (r.status == "ok" && !r.times_ms.empty()) row.median_ms[r.spec->name] = r.median_ms();
    }
    rows.push_back(row);
  }
  return rows;
}

json Bench::report_json() const {
  json j;
  j["benchmark"] = "backbone-bench";
  j["version"] = version();
  j["started"] = started_;
  j["machine"] = {{"cpu", machine_.cpu_model},
                  {"logical_cpus", machine_.cores},
                  {"avx2", machine_.avx2},
                  {"fma", machine_.fma},
                  {"avx512f", machine_.avx512f},
                  {"avx512_bf16", machine_.avx512_bf16},
                  {"amx_bf16", machine_.amx_bf16},
                  {"amx_tile", machine_.amx_tile}};
  json peaks = json::array();
  for (const auto& [t, p] : peaks_)
    peaks.push_back({{"threads", t}, {"gflops", p.gflops}, {"isa", p.isa}, {"samples", peak_samples_.at(t)}});
  j["fp32_peak"] = peaks;
  j["settings"] = {{"frames", o_.frames}, {"warmup", o_.warmup}, {"seconds", o_.seconds}, {"rounds", o_.rounds},
                   {"seed", o_.seed}, {"python", o_.python}, {"peers_venv", o_.peers_venv}, {"work_dir", work_.string()}};
  j["flops_counted"] = "2 x MACs of every convolution (stem, blocks, projection shortcuts); BN, ReLU, max-pool, adds, classifier excluded";
  json wl = json::array();
  for (const auto& wr : results_) {
    const RunnerResult* ours = wr.find(wr.reference);
    const double ours_ms = ours && !ours->times_ms.empty() ? ours->median_ms() : 0;
    const double peak = peaks_.count(wr.threads) ? peaks_.at(wr.threads).gflops : 0;
    json w = {{"model", wr.w.model},    {"height", wr.w.size.height}, {"width", wr.w.size.width}, {"batch", 1},
              {"title", wr.w.title()},  {"asked_height", wr.w.asked.height}, {"asked_width", wr.w.asked.width},
              {"threads", wr.threads},  {"gflop", wr.flops / 1e9},    {"reference", wr.reference}};
    json rs = json::array();
    for (const auto& r : wr.runners) {
      json x = {{"name", r.spec->name}, {"status", r.status}, {"describe", r.describe}, {"message", r.message},
                {"check_ms", r.check_ms}, {"warmup_ms", r.warmup_ms}, {"times_ms", r.times_ms}};
      if (r.agreement) {
        json levels = json::array();
        for (const auto& l : r.agreement->levels)
          levels.push_back({{"name", l.name}, {"max_abs_diff", std::isfinite(l.max_abs_diff) ? json(l.max_abs_diff) : json("inf")},
                            {"max_abs_ref", l.max_abs_ref}, {"relative", std::isfinite(l.relative) ? json(l.relative) : json("inf")},
                            {"ok", l.ok}});
        x["agreement"] = {{"ok", r.agreement->ok}, {"tolerance", r.agreement->tolerance}, {"levels", levels}};
      }
      if (!r.times_ms.empty()) {
        const double ms = r.median_ms();
        const double gf = wr.flops / (ms / 1e3) / 1e9;
        x["median_ms"] = ms;
        x["frames_per_s"] = 1e3 / ms;
        x["gflops"] = gf;
        x["peak_fraction"] = peak > 0 ? gf / peak : 0.0;
        x["time_over_ours"] = ours_ms > 0 ? ms / ours_ms : 0.0;
        x["vm_hwm_mib"] = mib(r.at_end.vm_hwm_kb);
        x["rss_after_warmup_mib"] = mib(r.after_warmup.vm_rss_kb);
        x["rss_end_mib"] = mib(r.at_end.vm_rss_kb);
      }
      rs.push_back(x);
    }
    w["runners"] = rs;
    wl.push_back(w);
  }
  j["workloads"] = wl;
  if (run_cpu_) {
    json targets = json::array();
    for (const auto& v : evaluate_cpu_targets(cpu_rows()))
      targets.push_back({{"target", v.target}, {"measured", v.measured}, {"verdict", v.verdict}});
    j["cpu_targets"] = targets;
  }
  j["sections"] = {{"cpu", run_cpu_}, {"gpu", gpu_ != nullptr}};
  if (gpu_)
    j["gpu"] = gpu_->to_json();
  else if (!gpu_skipped_.empty())
    j["gpu"] = {{"skipped", gpu_skipped_}};
  return j;
}

}  // namespace
}  // namespace backbone::bench

int main(int argc, char** argv) {
  using namespace backbone::bench;
  signal(SIGPIPE, SIG_IGN);
  try {
    for (int i = 1; i < argc; ++i)
      if (std::string(argv[i]) == "--worker") return run_worker(parse_worker_args(argc, argv));
    Bench bench(parse_args(argc, argv));
    return bench.run();
  } catch (const UsageError& e) {
    std::cerr << "backbone-bench: " << e.what() << "\n";
    return 2;
  } catch (const GpuUnavailableError& e) {
    std::cerr << "backbone-bench: error: " << e.what() << "\n";
    return 4;
  } catch (const std::exception& e) {
    std::cerr << "backbone-bench: error: " << e.what() << "\n";
    return 1;
  }
}
