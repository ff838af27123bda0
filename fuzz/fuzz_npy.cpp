// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the .npy reader (load_npy reads a path: each input is written to a
// per-process temporary file). Every input must give a tensor or a backbone::Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "backbone/error.h"
#include "backbone/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/backbone_fuzz_npy_" + std::to_string(::getpid()) + ".npy";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  const bool written = size == 0 || std::fwrite(data, 1, size, f) == size;
  std::fclose(f);
  if (!written) return 0;
  try {
    backbone::Tensor t = backbone::load_npy(path);
    volatile uint8_t sink = 0;
    const auto* p = static_cast<const uint8_t*>(t.data());
    if (t.nbytes()) sink = sink ^ p[t.nbytes() - 1];
  } catch (const backbone::Error&) {
  }
  return 0;
}
