// SPDX-License-Identifier: Apache-2.0
// The engine table: every engine name the library knows, whether this build has it, and what it
// runs. The one list of engine names: the element's `engine` property, the tools' --engine help and
// backbone-bench's runners are generated from it, so that no engine name is written elsewhere.
#pragma once

#include <string>
#include <vector>

#include "backbone/engine.h"

namespace backbone {

struct EngineInfo {
  std::string name;         // "onednn", "libtorch", "opencv", "cuda": EngineOptions::engine
  std::string description;  // one line, e.g. "this project's oneDNN route on the CPU: ..."
  // Compiled into this build. "cuda" always is (its library side; it runs through the separately
  // loaded module libbackbone-cuda.so, on a machine where that module loads and sees a device):
  // available_engines() says whether it runs here.
  bool built = false;
  bool cuda_device = false;             // runs on CUDA devices (cuda:N) only; else on the CPU only
  std::vector<Precision> precisions;    // the precisions it runs, fp32 first
  bool winograd = false;                // has Winograd kernels (EngineOptions::conv_algorithm)
  bool allow_tf32 = false;              // honours EngineOptions::allow_tf32
};

// Every engine the library knows, in the order "auto" tries them: cuda, onednn, libtorch, opencv.
const std::vector<EngineInfo>& engine_table();

// The table's entry named `name`, or nullptr ("auto" is not an engine of the table).
const EngineInfo* find_engine(const std::string& name);

// Whether `name` is an engine of the table (built into this copy or not).
bool is_known_engine(const std::string& name);

// "cuda, onednn, libtorch or opencv": the table's names joined as the messages and help texts list
// them (with `built_only`, those of this build only; "none" when there is none).
std::string engine_names(bool built_only = false);

}  // namespace backbone
