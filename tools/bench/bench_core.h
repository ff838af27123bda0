// SPDX-License-Identifier: Apache-2.0
// backbone-bench's parts that tests call: the agreement check, the FLOP count, the FP32 peak loop,
// the machine description and the workload/option parsing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backbone/engine.h"
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
// "R-50" -> 50; throws std::invalid_argument.
int model_depth(const std::string& name);
// The detectron2 config overrides of torchvision's resnet<depth> body: DEPTH, STRIDE_IN_1X1 False,
// OUT_FEATURES res2..res5, RES2_OUT_CHANNELS 64 below depth 50 (configs/R-<depth>.yaml with
// MODEL.RESNETS.STRIDE_IN_1X1 False gives the same network).
std::vector<std::string> torchvision_config_overrides(int depth);

// Median of a non-empty list.
double median(std::vector<double> values);

}  // namespace backbone::bench
