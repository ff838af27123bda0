// SPDX-License-Identifier: Apache-2.0
// Error types of the backbone library. Every error says what was expected and what was found.
#pragma once

#include <stdexcept>
#include <string>

namespace backbone {

// Base of every error this library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A config file, a config key or value, or an argument that detectron2 would reject.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A checkpoint file that cannot be read, or whose contents do not fit the model.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// A device that is not available, or a failing call into a device runtime (CUDA, cuDNN).
class DeviceError : public Error {
 public:
  using Error::Error;
};

// Tensors whose shapes, dtypes or devices do not fit an operation.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A valid request that this engine does not run (a precision, or a part of the model); another
// engine may ("auto" moves on to the next one).
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

}  // namespace backbone
