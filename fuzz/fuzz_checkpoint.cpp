// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for one checkpoint reader, chosen at build time (BACKBONE_FUZZ_FORMAT: the
// pickle reader, the torch.save reader (zip and legacy streams) or the safetensors reader). Every
// input must give a RawCheckpoint or a CheckpointError: any other exception, a crash, a sanitizer
// report, a leak or a large allocation is a finding.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backbone/error.h"
#include "checkpoint/reader.h"

#ifndef BACKBONE_FUZZ_FORMAT
#error "BACKBONE_FUZZ_FORMAT must name a CheckpointFormat (Pickle, Torch, SafeTensors)"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  auto bytes = std::make_shared<std::vector<uint8_t>>(data, data + size);
  try {
    const backbone::RawCheckpoint raw =
        backbone::detail::read_checkpoint_bytes(bytes, "fuzz", backbone::CheckpointFormat::BACKBONE_FUZZ_FORMAT);
    // Touch every tensor's bytes: views must lie inside the input.
    volatile uint8_t sink = 0;
    for (const auto& [name, t] : raw.tensors) {
      const auto* p = static_cast<const uint8_t*>(t.data());
      for (std::size_t k = 0; k < t.nbytes(); k += 4096) sink = sink ^ p[k];
      if (t.nbytes()) sink = sink ^ p[t.nbytes() - 1];
    }
    // detectron2's renaming of whatever names the file holds, for a ResNet and for an FPN model.
    std::vector<std::string> names;
    for (const auto& [name, t] : raw.tensors) names.push_back(name);
    for (bool fpn : {false, true}) (void)backbone::detail::plan_detectron2_names(names, raw.author, fpn);
  } catch (const backbone::CheckpointError&) {
  }
  return 0;
}
