// SPDX-License-Identifier: Apache-2.0
// backbone-bench's parts that tests call: the agreement check, the FLOP count, the FP32 peak loop,
// the machine description and the workload/option parsing.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backbone/config.h"
#include "backbone/engine.h"
#include "backbone/fpn.h"
#include "backbone/frame.h"
#include "backbone/resnet.h"

namespace backbone::bench {

// ---- agreement -------------------------------------------------------------------------------

// The bounds of the check: an fp32 runner must satisfy max|out - ref| <= 1e-3 * max|ref| at every
// level, a bf16 (or fp16) one max|out - ref| <= 2e-2 * max|ref|.
constexpr double kFp32Tolerance = 1e-3;
constexpr double kBf16Tolerance = 2e-2;

struct LevelAgreement {
  std::string name;
  double max_abs_diff = 0;  // max |out - ref| (NaN/inf make it infinite)
  double max_abs_ref = 0;   // max |ref|
  double relative = 0;      // max_abs_diff / max_abs_ref (infinite when max_abs_ref is 0 and they differ)
  bool ok = false;
};

struct Agreement {
  bool ok = false;
  double tolerance = 0;
  std::vector<LevelAgreement> levels;
  std::string message;  // "" when ok, else what disagreed (level, error, bound; or a missing/misshaped level)
  double worst_relative() const;
};

// Compares each level of `ref` (by name, in ref's order) with the level of the same name in `out`:
// same shape, every value finite, max|out - ref| <= tolerance * max|ref|. Both may be on any CPU
// dtype convertible to float32. A level missing from `out` or shaped differently fails.
Agreement check_agreement(const FeatureMaps& ref, const FeatureMaps& out, double tolerance);

// ---- FLOPs -----------------------------------------------------------------------------------

// FLOPs of one forward pass of `model` on an [1, C, height, width] input: 2 x the multiply-
// accumulates of every convolution (stem, each block's convolutions, projection shortcuts, the
// deformable convolutions' offset convolutions), following the spatial sizes through the stem's
// max-pool. Not counted: BatchNorm (folded), ReLU, the max-pool, residual additions, the
// classifier. Only stages up to the last out_feature are built in the model, so only those count.
double conv_flops(const ResNet& model, int64_t height, int64_t width);
// The same for an FPN: its bottom-up, then each lateral (1x1) and output (3x3) convolution at its
// level's size (ceil(H / stride)), and LastLevelP6P7's two convolutions. Not counted: the
// upsampling, the additions, LastLevelMaxPool.
double conv_flops(const FPN& model, int64_t height, int64_t width);

// ---- FP32 peak -------------------------------------------------------------------------------

struct PeakResult {
  double gflops = 0;  // measured GFLOP/s over all threads
  int threads = 0;
  std::string isa;    // "avx512f" (zmm FMA), "avx2+fma" (ymm FMA) or "sse" (no FMA: mul+add)
};

// Runs a fused multiply-add loop (16 independent accumulators per thread, AVX-512 when the CPU
// has it, else AVX2/FMA) on `threads` threads for about `seconds` (best of 3 runs) and returns the
// FLOP rate (one FMA = 2 FLOPs per lane).
PeakResult measure_fp32_peak(int threads, double seconds = 0.3);

// ---- machine ---------------------------------------------------------------------------------

struct MachineInfo {
  std::string cpu_model;
  int cores = 0;  // online logical CPUs
  bool avx2 = false, fma = false, avx512f = false, avx512_bf16 = false, amx_bf16 = false, amx_tile = false;
  std::string flags_summary() const;  // "avx512f avx512_bf16 -amx" style
};
MachineInfo machine_info();

// VmHWM and VmRSS of a process from /proc/<pid>/status, in kB (0 when unknown).
struct ProcMemory {
  int64_t vm_hwm_kb = 0, vm_rss_kb = 0;
};
ProcMemory proc_memory(int pid);

// ---- workloads -------------------------------------------------------------------------------

struct Size {
  int64_t height = 0, width = 0;
};
// "224x224,800x1216" (HxW); throws std::invalid_argument naming the bad entry.
std::vector<Size> parse_sizes(const std::string& text);
// "1,2" -> {1, 2}; 0 means every core. Throws std::invalid_argument.
std::vector<int> parse_threads(const std::string& text);
// "a,b,c" -> {"a","b","c"} (empty entries dropped).
std::vector<std::string> split_list(const std::string& text);
// "R-50" -> 50 (R-18, R-34, R-50, R-101, R-152; "R-50-FPN" -> 50 as well); throws std::invalid_argument.
int model_depth(const std::string& name);
// "R-50-FPN": detectron2's FPN (build_resnet_fpn_backbone, FPN.IN_FEATURES res2..res5, 256 channels,
// no norm, sum; outputs p2..p6) on torchvision's resnet<depth> body.
bool is_fpn_model(const std::string& name);
// The config overrides of a benchmark model: torchvision_config_overrides(depth), plus for an FPN
// model MODEL.BACKBONE.NAME build_resnet_fpn_backbone and its MODEL.FPN settings.
std::vector<std::string> bench_config_overrides(const std::string& model);
// conv_flops of the benchmark model (built from bench_config_overrides) on 1 x 3 x height x width.
double bench_flops(const std::string& model, int64_t height, int64_t width);
// The detectron2 config overrides of torchvision's resnet<depth> body: DEPTH, STRIDE_IN_1X1 False,
// OUT_FEATURES res2..res5, RES2_OUT_CHANNELS 64 below depth 50 (configs/R-<depth>.yaml with
// MODEL.RESNETS.STRIDE_IN_1X1 False gives the same network).
std::vector<std::string> torchvision_config_overrides(int depth);

// The benchmark's network: torchvision's resnet<depth> body (torchvision_config_overrides) with the
// weights of `weights` (a torchvision .pth; "" keeps detectron2's initialisation from `seed`). With
// `deform`, res3-res5 use deformable convolutions as detectron2's DEFORM_ON_PER_STAGE [False, True,
// True, True], DEFORM_MODULATED False, DEFORM_NUM_GROUPS 1 give them; the .pth has no offset
// convolutions, so their weights are drawn from `seed` (N(0, (0.1/sqrt(fan_in))^2), bias U(-2, 2):
// fractional offsets of up to a few pixels, every tap interpolated) instead of detectron2's zeros,
// which would sample the grid points only. `summary`, when given, receives the load report.
ResNet bench_model(int depth, bool deform, const std::string& weights, uint64_t seed, std::string* summary = nullptr);
// The config of bench_model (no weights): for FLOP counts.
Config bench_config(int depth, bool deform);

// A seeded NV12 frame, [height * 3 / 2, width] uint8 (Y plane, then interleaved UV rows): Y uniform
// in 16..235, U and V in 16..240. height and width must be even.
Tensor make_nv12_frame(int64_t height, int64_t width, uint64_t seed);
// The FrameView of such a frame at `data` (host or CUDA memory on `device`): BT.709, limited range.
FrameView nv12_frame_view(const uint8_t* data, int64_t height, int64_t width, Device device);
// The preprocessing of the "nv12" workload: ShortestEdge 800/1333, detectron2's BGR mean, no padding.
FramePreprocessOptions nv12_preprocess_options();

// ---- GPU section -----------------------------------------------------------------------------

// Dense fp16 tensor-core rate of one SM (FLOPs per clock, fp32 accumulation, no 2:4 sparsity) by
// compute capability, from NVIDIA's architecture whitepapers and datasheets (FLOP = 2 x FMA):
//   sm_70/72 Volta (V100, Xavier): 8 tensor cores x 64 FMA       = 1024 (V100 SXM2 80 SMs x 1.53 GHz = 125 TFLOPS)
//   sm_75    Turing (T4, RTX 20): 8 tensor cores x 64 FMA        = 1024 (T4 40 SMs x 1.59 GHz = 65 TFLOPS)
//   sm_80    A100, A30: 4 tensor cores x 256 FMA                  = 2048 (A100 108 SMs x 1.41 GHz = 312 TFLOPS)
//   sm_86    GA10x (A10, A40, RTX A6000, RTX 30): 4 x 128 FMA     = 1024 (A10 72 SMs x 1.695 GHz = 125 TFLOPS)
//   sm_89    Ada (L4, L40S, RTX 40): 4 x 128 FMA                  = 1024 (L4 58 SMs x 2.04 GHz = 121 TFLOPS)
//   sm_90    Hopper (H100, H200): 4 x 512 FMA                     = 4096 (H100 SXM 132 SMs x 1.83 GHz = 989 TFLOPS)
// GeForce parts of sm_75/86/89 run fp16 with fp32 accumulation at half that rate (GA102 and AD102
// whitepapers: RTX 3090 71 vs 142 TFLOPS, RTX 4090 165 vs 330), so a device whose name contains
// "GeForce" gets half. Other capabilities (sm_87 Orin, sm_100 and later) are not in the table: 0.
struct GpuTensorRate {
  double flops_per_sm_clock = 0;  // 0: not in the table
  std::string entry;              // "sm_90 (Hopper): 4096 FLOP/clk/SM", or why there is none
};
GpuTensorRate fp16_tensor_rate(int major, int minor, const std::string& device_name);
// sm_count x clock x rate, in FLOP/s (0 when the capability is not in the table). The clock is the
// peak SM clock CUDA reports (cudaDevAttrClockRate): NVIDIA's datasheets use a lower tensor clock
// for some parts (H100 SXM: 989 TFLOPS at 1.83 GHz, CUDA reports 1.98 GHz), so fractions of this
// peak are on the low side, never flattering.
double fp16_tensor_peak_flops(int major, int minor, int sm_count, int clock_khz, const std::string& device_name);

// The GPU workloads, by key: "b1" R-50 800x1216 batch 1, "b8" the same at batch 8, "deform" R-50
// with deformable convolutions in res3-res5 at 800x1216 batch 1, "nv12" a 1920x1080 NV12 frame in
// CUDA memory through the engine's frame path (ShortestEdge 800/1333) at batch 1.
struct GpuWorkload {
  std::string key;
  std::string title;
  int batch = 1;
  bool deform = false;
  bool nv12 = false;
  int64_t height = 0, width = 0;  // network input (for nv12: the resized frame)
};
// "b1,b8,deform,nv12" or "all"; throws std::invalid_argument naming an unknown key.
std::vector<GpuWorkload> parse_gpu_workloads(const std::string& text);
extern const char* const kGpuWorkloadKeys;  // "b1,b8,deform,nv12"

// The GPU speed targets, judged from measured medians only.
struct GpuTimes {
  // median ms per forward of each runner that agreed and was timed, by workload key and runner name
  std::map<std::string, std::map<std::string, double>> median_ms;
  std::map<std::string, double> flops;  // FLOPs of one forward (whole batch) by workload key
  double peak_flops = 0;                // fp16_tensor_peak_flops of the device; 0 when unknown
};
struct TargetVerdict {
  std::string target;    // what is compared, with the bound
  std::string measured;  // the measured figure ("3.41x (12.10 ms vs 41.26 ms)"), "" when not measured
  std::string verdict;   // "met", "not met", or "not measured: <why>"
};
// 1. ours-cuda-fp32 >= 3x pytorch-cuda-fp32 (PyTorch's defaults) at b1; 2. ours-cuda-fp16 >= 1.3x
// pytorch-cuda-fp16-cl at b1; 3. ours-cuda-fp16 at b8 >= 40% of peak_flops; 4. for each of
// ours-cuda-fp32/fp16/bf16: deform time <= 1.25x its b1 time.
std::vector<TargetVerdict> evaluate_gpu_targets(const GpuTimes& times);

// "ours-<engine>[-direct|-winograd|-tf32][-fp32|-bf16|-fp16|-auto]", e.g. "ours-onednn" (the
// defaults: fp32, conv algorithm auto), "ours-onednn-direct" (ConvAlgorithm::Direct),
// "ours-onednn-winograd" (ConvAlgorithm::Winograd), "ours-onednn-auto" (Precision::Auto),
// "ours-onednn-bf16", "ours-cuda-fp16", "ours-cuda-tf32" (fp32 with EngineOptions::allow_tf32).
struct OursRunner {
  std::string engine;
  std::string precision = "fp32";        // fp32, bf16, fp16 or auto
  std::string conv_algorithm = "auto";   // auto, direct or winograd (conv_algorithm_name)
  bool tf32 = false;
};
// False for names that are not ours-<engine>...
bool parse_ours_runner(const std::string& runner, OursRunner& parsed);

// ---- CPU workloads and targets (cpu_targets.cpp) ----------------------------------------------

// One CPU workload: `model` at `asked` (HxW). An FPN model at a size that is not a multiple of 32
// (the FPN's size_divisibility) runs zero-padded at the bottom/right to the next multiples, as
// detectron2's ImageList pads it: `size` is what every runner gets.
struct CpuWorkload {
  std::string model;  // "R-50", "R-50-FPN"
  int depth = 0;
  Size asked, size;
  bool fpn() const { return is_fpn_model(model); }
  bool padded() const { return asked.height != size.height || asked.width != size.width; }
  std::string weights_key() const;  // "50", "50-fpn"
  std::string title() const;        // "R-50 224x224", "R-50-FPN 720x1280 (padded to 736x1280)"
};
// `models` x `sizes` (each a comma list; "" for the default of each); both empty: the default set,
// R-50 at 224x224, 480x640, 720x1280 and 800x1216, R-101 at 800x1216 and 480x640, R-50-FPN at
// 480x640 and 800x1216. Throws std::invalid_argument naming a bad model or size.
std::vector<CpuWorkload> cpu_workloads(const std::string& models, const std::string& sizes);

// One workload at one thread count, as measured: the median ms of each runner that agreed and was
// timed, and every runner's description.
struct CpuRow {
  std::string workload;  // CpuWorkload::title()
  bool at_224 = false;   // asked 224x224 (the % of peak target's size)
  int threads = 0;
  bool all_cores = false;
  double flops = 0;        // of one frame
  double peak_gflops = 0;  // the FMA-loop peak at this thread count; 0 when unknown
  std::string engine;      // ours-<engine> is the default fp32 runner, e.g. "onednn"
  std::map<std::string, double> median_ms;
  std::map<std::string, std::string> describe;
};
// "bf16" or "fp32" where a precision=auto engine's description says "auto: bf16" / "auto: fp32",
// else "".
std::string auto_precision_choice(const std::string& describe);
// The CPU speed targets over every row: 1. the default fp32 runner (ours-<engine>) at least 1.1x
// ONNX Runtime and OpenVINO fp32 (venv-onnxruntime, venv-openvino) on all cores, 2. at least 1.0x
// on one thread, 3. at least 75% of the FMA-loop peak at 224x224 on all cores, 4. precision=auto
// (ours-<engine>-auto) never slower than the default fp32 (time ratio <= 1.0).
std::vector<TargetVerdict> evaluate_cpu_targets(const std::vector<CpuRow>& rows);
// The "targets" markdown: a table per row (the figures behind the targets, the bf16 speed-up and
// OpenVINO bf16 over ours bf16), then one line per target ending in met / NOT met / not measured.
std::string cpu_targets_markdown(const std::vector<CpuRow>& rows);

// Median of a non-empty list.
double median(std::vector<double> values);

}  // namespace backbone::bench
