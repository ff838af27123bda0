// SPDX-License-Identifier: Apache-2.0
// Checkpoints read directly in C++: detectron2 model-zoo .pkl (Caffe2/MSRA names, Python 2 and
// Python 3 pickles), PyTorch .pth/.pt state dicts (zip and legacy formats; detectron2 names with or
// without backbone.bottom_up./backbone. prefixes, C4 models' roi_heads.res5, torchvision ResNet
// names) and .safetensors. Pickles go through a restricted reader that never runs code: a global
// outside the few that numpy arrays, torch tensors and dicts need is an error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backbone/fpn.h"
#include "backbone/resnet.h"
#include "backbone/tensor.h"

namespace backbone {

enum class CheckpointFormat { Auto, Pickle, Torch, SafeTensors };

// The raw tensors of a file, with their names as stored (no renaming). Non-tensor entries
// (strings, numbers, metadata) are left out. Throws CheckpointError for a file that cannot be read,
// is truncated or corrupt, or holds a forbidden pickle global (named in the message).
//
// Hostile files. Reading never runs code from the file, and what it allocates is bounded:
// - Tensors are views of the file's bytes wherever the data is contiguous, aligned and
//   little-endian (they then keep the file's bytes alive, and tensors that share a storage share
//   memory, as torch.load's do). Other data is copied once per distinct object: a storage, a bytes
//   object, a latin-1 text or a safetensors range referenced many times is never copied per
//   reference, and a torch storage pickled with pickle (_load_from_bytes) is parsed once per
//   distinct bytes object.
// - read_checkpoint_file materialises every tensor; what it allocates beyond the file (copies,
//   decoded latin-1 text) is at most the file's size + 64 MiB (`materialised_bytes` says how much).
// - load_checkpoint materialises only the entries the model takes (Detectron1 `_momentum` blobs,
//   detection heads and optimizer state are listed, never copied) and allocates beyond the file at
//   most the model's tensors, counted in the dtypes the file stores them, + 10% + 1 MiB
//   (LoadReport::materialised_bytes and budget_bytes). Past either bound: a CheckpointError.
// - safetensors files follow the format's rules: a header of at most 100,000,000 bytes, no tensor
//   named twice, data_offsets that cover the data in order without overlaps or holes. Zip archives
//   with overlapping records or two entries of one name are refused (each CRC-32 is then checked
//   once). Pickles: at most 2^20 objects, 2^21 stack entries, 2^22 container items copied by
//   constructors, 64 dimensions per shape; dict insertion is linear in the number of keys.
struct RawCheckpoint {
  StateDict tensors;
  std::string author;              // "__author__" of detectron2 .pkl files, "" elsewhere
  bool matching_heuristics = false;  // detectron2's flag: the names need C2 conversion
  uint64_t materialised_bytes = 0;   // what reading allocated for tensor data beyond the file itself
};
RawCheckpoint read_checkpoint_file(const std::string& path, CheckpointFormat format = CheckpointFormat::Auto);

// detectron2's names for the backbone: C2/MSRA names converted as convert_basic_c2_names does,
// torchvision names converted as tools/convert-torchvision-to-d2.py does (except that "fc." becomes
// the classifier "linear.", where the script writes "stem.fc."), prefixes "backbone.bottom_up." /
// "backbone." (and "module." when every key has it, as fvcore strips it) removed,
// "roi_heads.res5." mapped to "res5.", the keys detectron2 ignores (fc1000_*, conv1_b /
// stem.conv1.bias, *_momentum, num_batches_tracked) dropped, and entries of other parts of a
// detector (proposal_generator, roi_heads heads, backbone.fpn_*, pixel_mean, ...) left out. (An FPN
// model's names, FPN's own layers included, are those of load_checkpoint(FPN&).)
// Two entries that map to the same name are a CheckpointError.
StateDict to_detectron2_names(const RawCheckpoint& raw);

// What loading a checkpoint into a model found.
struct LoadReport {
  std::vector<std::string> missing;     // model entries the file lacks
  std::vector<std::string> unexpected;  // backbone entries of the file that the model lacks
  std::vector<std::string> ignored;     // entries dropped as detectron2 drops them
  std::vector<std::string> loaded;      // model entries replaced from the file
  std::vector<std::string> skipped;     // file entries of other parts of a detector (FPN, heads, pixel_mean)
  std::string path;                     // the file
  uint64_t materialised_bytes = 0;  // what the reader allocated for tensor data beyond the file itself
  uint64_t budget_bytes = 0;        // its limit: the model's tensors (in the file's dtypes) + 10% + 1 MiB
  // "loaded 25 of 25 model entries from X; missing 0; unexpected 2: [...]; ignored ...; skipped ..."
  std::string summary() const;
};

// Reads `path`, renames, checks shapes and dtypes (float16/bfloat16/float64 are converted to
// float32) and loads into `model`. A shape mismatch is a CheckpointError naming the key, the
// model's shape and the file's shape. Missing entries are an error when `strict`, otherwise
// reported; FrozenBN running statistics absent from Caffe2 files keep their identity values, as in
// detectron2.
LoadReport load_checkpoint(ResNet& model, const std::string& path, bool strict = true);
// The same for an FPN model, by FPN::state_dict()'s names: detectron2 files ("backbone.bottom_up.*",
// "backbone.fpn_lateral2.*", "backbone.top_block.p6.*"), the FPN module's own state dict
// ("bottom_up.*", "fpn_*", "top_block.*"), Caffe2 .pkl names as convert_c2_detectron_names maps them
// ("fpn_inner_res4_5_sum_lateral_w", "fpn_res4_5_sum_gn_s") and ResNet-only files (every name of the
// bottom-up). The FPN's own entries (fpn_*, top_block.*) absent from the file are reported as
// missing but never an error, even when `strict`: they keep their current values, as detectron2
// keeps their initialisation when it loads an ImageNet checkpoint.
LoadReport load_checkpoint(FPN& model, const std::string& path, bool strict = true);

}  // namespace backbone
