// SPDX-License-Identifier: Apache-2.0
// Internal entry points of the checkpoint readers (used by checkpoint.cpp and the tests).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backbone/checkpoint.h"

namespace backbone::detail {

using Bytes = std::shared_ptr<const std::vector<uint8_t>>;

// Reads a whole file; CheckpointError when it cannot be opened or read.
Bytes read_file_bytes(const std::string& path);

// read_checkpoint_file on bytes already in memory. `name` is the file name: its extension picks
// the format when `format` is Auto, and it names the input in messages.
RawCheckpoint read_checkpoint_bytes(const Bytes& data, const std::string& name,
                                    CheckpointFormat format = CheckpointFormat::Auto);

// The format a file name's extension implies (Auto for an unknown extension).
CheckpointFormat format_from_extension(const std::string& name);
// The format the first bytes imply; CheckpointError when none fits.
CheckpointFormat sniff_format(const std::vector<uint8_t>& data, const std::string& name);

// One stored entry of a zip archive (only stored, unencrypted entries are accepted).
struct ZipEntry {
  std::string name;
  uint64_t offset = 0;  // of the data in the archive
  uint64_t size = 0;
  uint32_t crc32 = 0;
};
// Reads the central directory (ZIP64 included) and every local header; CheckpointError for a
// damaged or truncated archive, or a compressed or encrypted entry.
std::vector<ZipEntry> read_zip_directory(const uint8_t* data, std::size_t size, const std::string& what);
uint32_t crc32(const uint8_t* data, std::size_t size);

// detectron2's renaming (to_detectron2_names) with what was dropped and why.
struct NameMapping {
  StateDict tensors;                                     // detectron2 backbone names
  std::vector<std::pair<std::string, std::string>> origin;  // new name -> name in the file
  std::vector<std::string> ignored;  // dropped as detectron2 drops them (fc1000_*, *_momentum, ...)
  std::vector<std::string> skipped;  // other parts of a detector (proposal_generator, fpn, pixel_mean, ...)
};
NameMapping map_to_detectron2(const RawCheckpoint& raw);
// convert_basic_c2_names for one name.
std::string convert_c2_name(const std::string& name);

}  // namespace backbone::detail
