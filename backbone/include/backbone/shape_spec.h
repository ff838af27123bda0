// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <optional>

namespace backbone {

// detectron2's layers.ShapeSpec: a simple structure that contains basic shape specification
// about a tensor. Every field is optional.
struct ShapeSpec {
  std::optional<int> channels{};
  std::optional<int> height{};
  std::optional<int> width{};
  std::optional<int> stride{};
};

}  // namespace backbone
