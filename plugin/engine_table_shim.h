/* Temporary until the library's engine table lands (model assembly). */
#pragma once
#include <string>
#include <vector>
#include "backbone/engine.h"
namespace backbone {
struct EngineInfo { std::string name, description; bool built; };
inline std::vector<EngineInfo> engine_table () {
  std::vector<EngineInfo> t = {{"onednn", "oneDNN, fp32 and bf16", false}, {"libtorch", "LibTorch's ATen", false},
    {"opencv", "OpenCV's dnn", false}, {"cuda", "CUDA/cuDNN, device cuda:N", true}};
  for (auto &e : t) for (auto &a : available_engines ()) if (a == e.name) e.built = true;
  return t;
}
inline bool is_known_engine (const std::string &n) { for (auto &e : engine_table ()) if (e.name == n) return true; return false; }
}
