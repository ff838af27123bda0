// SPDX-License-Identifier: Apache-2.0
#include "manifest.h"

#include <fcntl.h>
#include <glib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace backbone::extract {

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read \"" + path + "\" to hash it");
  GChecksum* sum = g_checksum_new(G_CHECKSUM_SHA256);
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (f.gcount() > 0) g_checksum_update(sum, reinterpret_cast<const guchar*>(buf.data()), f.gcount());
  }
  std::string hex = g_checksum_get_string(sum);
  g_checksum_free(sum);
  return hex;
}

void write_json_atomically(const std::string& path, const Json& json) {
  const std::string tmp = path + ".tmp";
  const std::string text = json.dump(2) + "\n";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write \"" + tmp + "\": " + std::strerror(errno));
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      throw std::runtime_error("cannot write \"" + tmp + "\": " + std::strerror(e));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw std::runtime_error("cannot write \"" + tmp + "\": " + std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot rename \"" + tmp + "\" to \"" + path + "\": " + std::strerror(errno));
}

Json read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot read \"" + path + "\"");
  try {
    return Json::parse(f);
  } catch (const std::exception& e) {
    throw std::runtime_error("\"" + path + "\" is not valid JSON: " + e.what());
  }
}

std::string manifest_name(int shard_index, int num_shards) {
  if (num_shards <= 1) return "manifest.json";
  return "manifest-shard-" + std::to_string(shard_index) + "-of-" + std::to_string(num_shards) + ".json";
}

}  // namespace backbone::extract
