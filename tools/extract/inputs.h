// SPDX-License-Identifier: Apache-2.0
// backbone-extract: inputs (files, folders, globs, list files, URIs) -> videos with a relative path,
// and the split into shards.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace backbone::extract {

struct Input {
  std::string argument;  // what the user gave (command line or list line)
  std::string source;    // local path, or the URI as given
  std::string uri;       // what uridecodebin reads; empty when the input could not be resolved
  std::string relative;  // relative path: key of sharding and of the output folder
  std::string error;     // set when the input could not be resolved (not found, pattern matched nothing, ...)
};

// Resolves every argument:
//  - a folder: every regular file below it (recursively, symlinks followed) whose extension is in
//    `extensions`; relative path = path below the folder;
//  - a glob pattern (*, ?, [...] in it): the matching files; relative path = path below the
//    pattern's longest folder without wildcards;
//  - a file: relative path = its file name;
//  - a URI (scheme://...): file:// URIs as files; others with relative path = host/path.
// List files hold one argument per line (blank lines and lines starting with # skipped); relative
// paths in them are relative to the list file's folder.
// The result is sorted by relative path; the same source given twice is kept once; two sources with
// the same relative path: the second gets an error (their outputs would collide).
std::vector<Input> resolve_inputs(const std::vector<std::string>& arguments, const std::vector<std::string>& list_files,
                                  const std::vector<std::string>& extensions);

// 64-bit FNV-1a of the bytes of s.
uint64_t fnv1a64(const std::string& s);

// The shard of a relative path: fnv1a64(relative) % num_shards. Depends on nothing but the path,
// so every machine computes the same split whatever else it sees.
int shard_of(const std::string& relative, int num_shards);

}  // namespace backbone::extract
