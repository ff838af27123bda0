// SPDX-License-Identifier: Apache-2.0
// Internal entry points of the checkpoint readers (used by checkpoint.cpp and the tests).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backbone/checkpoint.h"
#include "checkpoint/budget.h"

namespace backbone::detail {

using Bytes = std::shared_ptr<const std::vector<uint8_t>>;

// Reads a whole file; CheckpointError when it cannot be opened or read.
Bytes read_file_bytes(const std::string& path);

// One tensor of a file, listed (name, dtype, shape checked against its data) but not materialised.
struct LazyTensor {
  std::string name;
  DType dtype;
  Shape shape;
};

// The tensors of a file, materialised on demand: a view of the file's bytes where the data allows
// it, else a copy charged to `budget`. Holds the file (and the parsed pickle) while it lives.
struct LazyCheckpoint {
  std::vector<LazyTensor> tensors;
  std::string author;                // as RawCheckpoint
  bool matching_heuristics = false;  // as RawCheckpoint
  std::shared_ptr<MemoryBudget> budget;
  // Tensor `i` (CheckpointError when the budget would be exceeded).
  std::function<Tensor(const LazyCheckpoint&, std::size_t)> make;
  std::shared_ptr<void> keep;
};

// Lists the tensors of a file in memory; `budget` (a fresh unlimited one when null) is charged
// for what reading and materialising allocate beyond the file.
LazyCheckpoint open_checkpoint_bytes(const Bytes& data, const std::string& name,
                                     CheckpointFormat format = CheckpointFormat::Auto,
                                     std::shared_ptr<MemoryBudget> budget = nullptr);

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
  uint64_t record = 0;  // of its local header
};
// Reads the central directory (ZIP64 included) and every local header; CheckpointError for a
// damaged or truncated archive, a compressed or encrypted entry, entries whose records overlap,
// and two entries of one name.
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
// The same on names alone: which file entry (by index) becomes which detectron2 name.
struct NamePlan {
  std::vector<std::pair<std::string, std::size_t>> kept;  // detectron2 backbone name, index in `names`
  std::vector<std::string> ignored, skipped;
};
// `fpn`: the names are those of an FPN model (FPN::state_dict(): "bottom_up.res2...", "fpn_lateral2...",
// "top_block.p6..."); otherwise of a ResNet ("res2...") with the FPN's entries skipped.
NamePlan plan_detectron2_names(const std::vector<std::string>& names, const std::string& author, bool fpn = false);
// convert_basic_c2_names for one name, then convert_c2_detectron_names' fpn_map
// ("fpn_inner_res4_5_sum_lateral_w" -> "fpn_lateral4.weight", "fpn_res4_5_sum_gn_s" -> "fpn_output4.norm.weight").
std::string convert_c2_name(const std::string& name);

}  // namespace backbone::detail
