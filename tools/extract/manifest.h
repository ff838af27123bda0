// SPDX-License-Identifier: Apache-2.0
// backbone-extract: file hashes, atomic JSON files, the per-video sidecar and the run's manifest.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace backbone::extract {

using Json = nlohmann::ordered_json;

// SHA-256 of a file's bytes, lower-case hex. Throws std::runtime_error when it cannot be read.
std::string sha256_file(const std::string& path);

// Writes `path` through `path.tmp`: written, fsync'ed, renamed. Throws std::runtime_error.
void write_json_atomically(const std::string& path, const Json& json);

// Reads a JSON file; throws std::runtime_error.
Json read_json(const std::string& path);

// The manifest's name: manifest.json, or manifest-shard-K-of-N.json with several shards.
std::string manifest_name(int shard_index, int num_shards);

}  // namespace backbone::extract
