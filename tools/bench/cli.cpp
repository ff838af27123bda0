// SPDX-License-Identifier: Apache-2.0
// backbone-bench's command line (cli.h).
#include "cli.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>

#include "backbone/backbone.h"

namespace backbone::bench {

const char* const kUsage = R"(usage: backbone-bench [--models R-50,R-101] [--sizes 224x224,800x1216] [--threads 1,0]
                      [--runners LIST] [--frames 20] [--warmup 2] [--seconds 6] [--rounds 5]
                      [--json FILE] [--markdown FILE] [--work-dir DIR] [--peers-venv DIR]
                      [--python /usr/bin/python3] [--peers-dir DIR] [--seed 0] [--timeout 1800]
                      [--list-runners]
                      [--gpu] [--cpu] [--device cuda:0] [--gpu-workloads b1,b8,deform,nv12]
                      [--gpu-runners LIST] [--gpu-frames 100] [--gpu-warmup 10] [--gpu-seconds 2]
                      [--gpu-python PATH] [--quick]

Times this project's engines, PyTorch eager and OpenCV DNN on the same weights (one seeded
torchvision ResNet with random BatchNorm statistics; for an FPN model, detectron2's FPN on it with
seeded weights), the same input and the same thread count, each runner in its own worker process.
Before timing, every runner's levels (res2..res5; an FPN model's p2..p6) are compared with
this project's fp32 output: max|out - ref| <= 1e-3 * max|ref| per level (2e-2 for bf16 and
precision=auto). A runner that disagrees is reported and not timed. Prints a markdown report, with
the CPU speed targets judged from this run at its end (met / NOT met); --json writes every figure.

Sections: without --gpu or --cpu, the CPU section and then the GPU section, which is skipped with
one line ("GPU section skipped: <why>") when no usable CUDA device is there; --gpu runs only the
GPU section and fails (exit status 4) without a usable CUDA device; --cpu runs only the CPU
section; --gpu --cpu both, the GPU required.

CPU section:
  --models LIST      R-18, R-34, R-50, R-101, R-152 (torchvision's resnet<N> = detectron2's
                     R-<N> with STRIDE_IN_1X1 False), each also as R-<N>-FPN: detectron2's FPN
                     on it (build_resnet_fpn_backbone: FPN.IN_FEATURES res2..res5, 256 channels,
                     no norm, sum; outputs p2..p6), which PyTorch eager runs as the same graph in
                     plain torch (bench/peers/peer.py) and OpenCV DNN from its ONNX export; at a
                     size that is not a multiple of 32 every runner gets the input zero-padded to
                     the next multiples, as detectron2 pads it; the workload's title says so,
                     e.g. R-50-FPN 720x1280 (padded to 736x1280)
  --sizes LIST       HxW input sizes, batch 1. Without --models and --sizes: R-50 at 224x224,
                     480x640, 720x1280 and 800x1216, R-101 at 800x1216 and 480x640, R-50-FPN at
                     480x640 and 800x1216; with either, every model at every size
  --threads LIST     thread counts; 0 = every core (default: 1,0)
  --runners LIST     which runners (default: every available one; --list-runners shows them):
                     ours-<engine> runs the defaults (fp32; onednn: conv algorithm auto), and for
                     a CPU engine with more precisions or Winograd kernels also -bf16, -auto
                     (precision=auto), -direct (no Winograd) and -winograd (Winograd on every
                     3x3 layer that has it); venv-openvino-bf16 (OpenVINO with
                     INFERENCE_PRECISION_HINT bf16) runs only on CPUs with AVX512_BF16 or AMX
  --frames N         at most N timed frames per runner and workload (default: 20)
  --seconds S        timing budget per runner and workload: frames = S / (time of one frame),
                     between min(3, --frames) and --frames (default: 6)
  --warmup N         untimed frames after the agreement check, whose frame is the first warm-up
                     frame (default: 2; 1 for runners whose check frame took more than S/3)
  --rounds N         the timed frames of each runner are spread over N rounds; each round runs
                     every runner in turn, starting with a different one (default: 5; both sections)
  --json FILE        write the results as JSON (the GPU section under "gpu")
  --markdown FILE    also write the markdown report to FILE
  --work-dir DIR     weights, ONNX exports, inputs and worker logs (default:
                     $XDG_CACHE_HOME/backbone-bench or ~/.cache/backbone-bench)
  --peers-venv DIR   a virtual environment made by bench/peers/setup-venv.sh: adds PyTorch 2.x
                     eager and torch.compile, ONNX Runtime, OpenVINO and current OpenCV (python)
  --setup-peers      make (or update) the --peers-venv DIR first with setup-venv.sh, next to
                     peer.py (PyPI must be reachable; DIR defaults to WORK_DIR/venv)
  --python PATH      the Python with PyTorch and torchvision that makes the weights and the ONNX
                     export and runs pytorch-eager (default: /usr/bin/python3, Debian's torch)
  --peers-dir DIR    where peer.py is (default: found next to the installed tool or in the source)
  --seed N           seed of the weights and of the input (default: 0)
  --timeout S        a worker that does not answer a command within S seconds is killed and
                     reported as failed (default: 1800; both sections)

GPU section (--gpu): this project's engine "cuda" against PyTorch eager on the same GPU, with
the same weights (torchvision resnet50, seed N) and the same input, already in GPU memory.
  Runners (--gpu-runners, default all):
    ours-cuda-fp32            engine cuda, fp32, TF32 off (EngineOptions::allow_tf32 false)
    ours-cuda-tf32            engine cuda, fp32 with EngineOptions::allow_tf32 (cuDNN's TF32)
    ours-cuda-fp16            engine cuda, fp16
    ours-cuda-bf16            engine cuda, bf16
    pytorch-cuda-fp32         PyTorch eager fp32 with PyTorch's defaults (cuDNN may use TF32)
    pytorch-cuda-fp32-notf32  torch.backends.cudnn.allow_tf32 = cuda.matmul.allow_tf32 = False
    pytorch-cuda-fp16-cl      model.half().to(memory_format=torch.channels_last), input likewise
  Workloads (--gpu-workloads, default all):
    b1      R-50 at 800x1216, batch 1 (every runner)
    b8      R-50 at 800x1216, batch 8 (every runner)
    deform  R-50 with deformable convolutions in res3-res5 (DEFORM_ON_PER_STAGE [False, True,
            True, True], DEFORM_MODULATED False, DEFORM_NUM_GROUPS 1; offset convolutions drawn
            from the seed) at 800x1216, batch 1 (ours-cuda-* only: no PyTorch counterpart)
    nv12    a 1920x1080 NV12 frame uploaded once into CUDA memory, Engine::forward_frame with a
            FrameView on the device and ShortestEdge 800/1333 (750x1333), preprocessing timed
            with the network (ours-cuda-* only)
  A frame's time runs from the call to its finished outputs: ours waits with
  backbone::cuda_wait_ready on every level, PyTorch with torch.cuda.synchronize(). Agreement
  before timing against this project's first CPU engine (fp32, every core, checked only, never
  timed), else pytorch-cuda-fp32-notf32: 1e-3 * max|ref| for ours-cuda-fp32 and
  pytorch-cuda-fp32-notf32, 2e-2 for fp16, bf16 and the TF32 runners. Reports ms, images/s,
  GFLOP/s, the fraction of the GPU's dense fp16 tensor peak (SMs x peak SM clock x FLOP/clk/SM
  of its compute capability), speed-ups over PyTorch and the speed targets, each
  marked met / not met from this run's medians.
  --gpu              run the GPU section (only it, unless --cpu is given too); exit status 4 when
                     no usable CUDA device is there, with the reason
  --cpu              run the CPU section (only it, unless --gpu is given too)
  --device cuda:N    the GPU (default: cuda:0)
  --gpu-workloads L  some of b1,b8,deform,nv12, or all (default: all)
  --gpu-runners L    some of the runners above (default: all)
  --gpu-frames N     at most N timed frames per runner and workload (default: 100)
  --gpu-seconds S    timing budget per runner and workload (default: 2)
  --gpu-warmup N     untimed frames after the agreement check (default: 10)
  --gpu-python PATH  the Python with a CUDA build of PyTorch and torchvision for the
                     pytorch-cuda-* runners (default: --python when given, else the first
                     python3 on PATH)
  --quick            GPU section: --gpu-frames 30 --gpu-seconds 0.5 --gpu-warmup 3 --rounds 3
                     unless given
Exit status: 0 when every runner agreed and ran (or does not support this CPU/GPU; also when the
GPU section was skipped without --gpu), 3 when one disagreed or failed, 2 on a usage error, 4 when
--gpu was given and no usable CUDA device is there, 1 on any other error.
)";

namespace {

int parse_int(const std::string& flag, const std::string& v, int lo) {
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || x < lo || x > 1000000)
    throw UsageError(flag + " expects an integer >= " + std::to_string(lo) + ", got '" + v + "'");
  return static_cast<int>(x);
}

double parse_seconds(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !(x > 0) || !std::isfinite(x))
    throw UsageError(flag + " expects a positive number, got '" + v + "'");
  return x;
}

}  // namespace

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (a == "--version") {
      std::cout << "backbone-bench " << version() << "\n";
      std::exit(0);
    }
    if (a == "--list-runners") {
      o.list_runners = true;
      continue;
    }
    if (a == "--gpu" || a == "--cpu" || a == "--quick") {
      (a == "--gpu" ? o.gpu : a == "--cpu" ? o.cpu : o.quick) = true;
      continue;
    }
    std::string value;
    bool inline_value = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      inline_value = true;
    }
    auto next = [&]() -> std::string {
      if (inline_value) return value;
      if (i + 1 >= argc) throw UsageError(a + " expects a value");
      return argv[++i];
    };
    if (a == "--models") o.models = next();
    else if (a == "--sizes") o.sizes = next();
    else if (a == "--threads") o.threads = next();
    else if (a == "--runners") o.runners = next();
    else if (a == "--frames") o.frames = parse_int(a, next(), 1);
    else if (a == "--warmup") o.warmup = parse_int(a, next(), 0);
    else if (a == "--rounds") o.rounds = *(o.rounds_given = parse_int(a, next(), 1));
    else if (a == "--seconds") o.seconds = parse_seconds(a, next());
    else if (a == "--gpu-seconds") o.gpu_seconds = parse_seconds(a, next());
    else if (a == "--gpu-frames") o.gpu_frames = parse_int(a, next(), 1);
    else if (a == "--gpu-warmup") o.gpu_warmup = parse_int(a, next(), 0);
    else if (a == "--device") o.device = next();
    else if (a == "--gpu-workloads") o.gpu_workloads = next();
    else if (a == "--gpu-runners") o.gpu_runners = next();
    else if (a == "--gpu-python") o.gpu_python = next();
    else if (a == "--timeout") {
      o.timeout = parse_int(a, next(), 1);
    } else if (a == "--json") o.json_path = next();
    else if (a == "--markdown") o.markdown_path = next();
    else if (a == "--work-dir") o.work_dir = next();
    else if (a == "--peers-venv") o.peers_venv = next();
    else if (a == "--setup-peers") o.setup_peers = true;
    else if (a == "--python") {
      o.python = next();
      o.python_given = true;
    }
    else if (a == "--peers-dir") o.peers_dir = next();
    else if (a == "--seed") o.seed = parse_int(a, next(), 0);
    else throw UsageError("unknown option " + a + " (see --help)");
  }
  return o;
}

WorkerOptions parse_worker_args(int argc, char** argv) {
  WorkerOptions w;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " expects a value");
      return argv[++i];
    };
    if (a == "--worker") w.runner = next();
    else if (a == "--model") w.model = next();
    else if (a == "--weights") w.weights = next();
    else if (a == "--onnx") w.onnx = next();
    else if (a == "--input") w.input = next();
    else if (a == "--threads") w.threads = parse_int(a, next(), 1);
    else if (a == "--reply-fd") w.reply_fd = parse_int(a, next(), 0);
    else if (a == "--device") w.device = next();
    else if (a == "--seed") w.seed = static_cast<uint64_t>(parse_int(a, next(), 0));
    else if (a == "--deform") w.deform = true;
    else if (a == "--nv12") w.nv12 = true;
    else throw UsageError("unknown worker option " + a);
  }
  return w;
}

}  // namespace backbone::bench
