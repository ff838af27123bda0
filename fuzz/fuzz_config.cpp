// SPDX-License-Identifier: Apache-2.0
// libFuzzer targets for the config loader: BACKBONE_FUZZ_CONFIG_YAML merges the input as a YAML
// config (relative _BASE_ paths resolve in BACKBONE_FUZZ_CONFIG_DIR, the test configs), otherwise
// the input is a Python-literal override value (merge_from_list) for one of a few keys of
// different types, picked by its first byte. Every input must give a Config or a backbone::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "backbone/config.h"
#include "backbone/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  try {
    backbone::Config cfg;
#ifdef BACKBONE_FUZZ_CONFIG_YAML
    cfg.merge_from_string(std::string(reinterpret_cast<const char*>(data), size), BACKBONE_FUZZ_CONFIG_DIR);
#else
    if (size == 0) return 0;
    static const char* const keys[] = {"MODEL.RESNETS.OUT_FEATURES", "MODEL.PIXEL_MEAN", "MODEL.RESNETS.DEPTH",
                                       "MODEL.RESNETS.NORM", "INPUT.MIN_SIZE_TEST", "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
                                       "MODEL.FPN.IN_FEATURES", "MODEL.FPN.OUT_CHANNELS", "MODEL.BACKBONE.NAME"};
    const char* key = keys[data[0] % (sizeof keys / sizeof keys[0])];
    cfg.merge_from_list({key, std::string(reinterpret_cast<const char*>(data + 1), size - 1)});
#endif
    (void)cfg.dump();
  } catch (const backbone::Error&) {
  }
  return 0;
}
