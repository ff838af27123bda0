// SPDX-License-Identifier: Apache-2.0
// detectron2's get_cfg() defaults as data (defaults_generated.cpp, made by gen_defaults.py).
#pragma once

#include <cstddef>

namespace backbone::detail {

struct DefaultKeyType {
  const char* key;   // dotted key, e.g. "MODEL.RESNETS.DEPTH"
  const char* type;  // Python type name: int, float, str, bool, NoneType, list, tuple, CfgNode
};

extern const char* const kDefaultConfigYaml;
extern const DefaultKeyType kDefaultConfigTypes[];
extern const std::size_t kDefaultConfigTypeCount;

}  // namespace backbone::detail
