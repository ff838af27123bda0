// SPDX-License-Identifier: Apache-2.0
#include "backbone/engine.h"

#include "backbone/error.h"
#include "build_config.h"
#include "engines/engines.h"

namespace backbone {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::Float32: return "fp32";
    case Precision::Float16: return "fp16";
    case Precision::BFloat16: return "bf16";
  }
  return "unknown";
}

Precision precision_from_name(const std::string& name) {
  if (name == "fp32" || name == "float32") return Precision::Float32;
  if (name == "fp16" || name == "float16") return Precision::Float16;
  if (name == "bf16" || name == "bfloat16") return Precision::BFloat16;
  throw Error("unknown precision '" + name + "': expected fp32, fp16 or bf16");
}

std::vector<std::string> available_engines() {
  std::vector<std::string> names;
#if BACKBONE_HAVE_LIBTORCH
  names.emplace_back("libtorch");
#endif
  return names;
}

std::unique_ptr<Engine> create_engine(const ResNet& model, const EngineOptions& options) {
  if (options.num_threads < 0)
    throw Error("num_threads must be 0 (every core) or positive, got " + std::to_string(options.num_threads));
  if (options.engine == "libtorch") {
#if BACKBONE_HAVE_LIBTORCH
    return detail::create_libtorch_engine(model, options);
#else
    throw Error("engine 'libtorch' is not built into this copy of libbackbone (configured with BACKBONE_WITH_LIBTORCH=OFF)");
#endif
  }
  std::string list;
  for (const auto& n : available_engines()) list += (list.empty() ? "" : ", ") + n;
  throw Error("unknown engine '" + options.engine + "': this build has " + (list.empty() ? std::string("none") : list));
}

}  // namespace backbone
