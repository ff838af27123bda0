// SPDX-License-Identifier: Apache-2.0
// backbone-extract: command-line options (Boost.Program_options) and their checks.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace backbone::extract {

// A bad option or option value: main prints the message and the usage and exits with status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Options {
  std::vector<std::string> inputs;      // files, folders, glob patterns, URIs
  std::vector<std::string> list_files;  // --list: one input per line
  std::vector<std::string> extensions;  // lower case, without the dot
  std::string output_dir;

  // Model: the element's properties.
  std::string config_file, weights, out_features, engine = "auto", device = "auto";
  std::string precision = "fp32";  // fp32, fp16, bf16 or auto (the element's precision)
  std::string conv_algorithm = "auto";  // auto, direct or winograd (the element's conv-algorithm)
  int threads = 0;  // engine threads per job; 0: the machine's cores divided by --jobs

  // Frames.
  int every = 1;            // every Nth frame (resnetbackbone inference-interval)
  std::string fps;          // target rate (videorate drop-only), "" = every decoded frame
  int fps_num = 0, fps_den = 1;
  std::string resize = "none";
  int min_size = 0, max_size = 0, width = 0, height = 0, size_divisibility = 0;

  // Output.
  std::string dtype = "float32";
  int max_frames_per_file = 256;
  bool overwrite = false;

  // Work split.
  int shard_index = 0, num_shards = 1, jobs = 1;
  // With jobs > 1 the pipelines share one model instance (weights once, one thread pool) whose
  // batcher runs up to batch_size of their frames in one forward; private_models: one model each.
  int batch_size = 0;  // 0: --jobs
  bool private_models = false;
  bool shared_model() const { return jobs > 1 && !private_models; }

  // Reporting.
  bool quiet = false;
  double progress_interval = 10.0;  // seconds between plain progress lines (not a terminal)
  std::string progress = "auto";    // auto, bar, lines, none
};

// Parses and checks argv; throws UsageError. Returns false when --help or --version was handled
// (the text is in *help_text).
bool parse_options(int argc, char** argv, Options* options, std::string* help_text);

// The usage text (synopsis and every option).
std::string usage_text();

}  // namespace backbone::extract
