/* SPDX-License-Identifier: Apache-2.0
 *
 * safetensors writer for featuresink: see safetensors_writer.h for the format and the atomicity.
 */
#include "safetensors_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

namespace backbone {
namespace gst {

namespace {

[[noreturn]] void
throw_errno (const std::string & what, const std::string & path, int err)
{
  throw WriteError ("cannot " + what + " '" + path + "': " + std::strerror (err), err);
}

void
write_all (int fd, const void *data, std::size_t size, const std::string & path)
{
  const char *p = static_cast<const char *> (data);
  while (size > 0) {
    ssize_t n = ::write (fd, p, size);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      throw_errno ("write", path, errno);
    }
    if (n == 0)
      throw_errno ("write", path, ENOSPC);
    p += n;
    size -= static_cast<std::size_t> (n);
  }
}

/* Appends the first @size bytes of @src_fd (read from offset 0) to @dst_fd. */
void
copy_fd (int src_fd, uint64_t size, const std::string & src_path, int dst_fd, const std::string & dst_path)
{
  std::vector<char> buf (std::size_t (1) << 20);
  uint64_t offset = 0;
  while (offset < size) {
    std::size_t want = static_cast<std::size_t> (std::min<uint64_t> (buf.size (), size - offset));
    ssize_t n = ::pread (src_fd, buf.data (), want, static_cast<off_t> (offset));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      throw_errno ("read", src_path, errno);
    }
    if (n == 0)
      throw WriteError ("cannot read '" + src_path + "': it ends after " + std::to_string (offset) +
          " of " + std::to_string (size) + " bytes", EIO);
    write_all (dst_fd, buf.data (), static_cast<std::size_t> (n), dst_path);
    offset += static_cast<uint64_t> (n);
  }
}

std::string
dir_of (const std::string & path)
{
  auto slash = path.rfind ('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr (0, slash);
}

void
fsync_dir (const std::string & path)
{
  std::string dir = dir_of (path);
  int fd = ::open (dir.c_str (), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    throw_errno ("open directory", dir, errno);
  int rc = ::fsync (fd);
  int err = errno;
  ::close (fd);
  /* Some file systems refuse fsync on directories (EINVAL); the rename is done anyway. */
  if (rc != 0 && err != EINVAL)
    throw_errno ("fsync directory", dir, err);
}

/* Creates @tmp, calls @fill (fd), fsyncs, closes and renames to @path. Removes @tmp on failure. */
template <typename Fill>
void
write_atomically (const std::string & path, Fill fill)
{
  const std::string tmp = path + ".tmp";
  int fd = ::open (tmp.c_str (), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw_errno ("create", tmp, errno);
  try {
    fill (fd, tmp);
    if (::fsync (fd) != 0)
      throw_errno ("fsync", tmp, errno);
    int fd_to_close = fd;
    fd = -1;
    if (::close (fd_to_close) != 0)
      throw_errno ("close", tmp, errno);
    if (::rename (tmp.c_str (), path.c_str ()) != 0)
      throw_errno ("rename to '" + path + "'", tmp, errno);
  } catch (...) {
    if (fd >= 0)
      ::close (fd);
    ::unlink (tmp.c_str ());
    throw;
  }
  fsync_dir (path);
}

}  // namespace

const char *
safetensors_dtype_name (SafetensorsDType dtype)
{
  switch (dtype) {
    case SafetensorsDType::F32:
      return "F32";
    case SafetensorsDType::F16:
      return "F16";
    case SafetensorsDType::I64:
      return "I64";
  }
  return "?";
}

std::size_t
safetensors_dtype_size (SafetensorsDType dtype)
{
  switch (dtype) {
    case SafetensorsDType::F32:
      return 4;
    case SafetensorsDType::F16:
      return 2;
    case SafetensorsDType::I64:
      return 8;
  }
  return 0;
}

std::string
safetensors_header (const std::vector<SafetensorsTensorInfo> & tensors,
    const std::map<std::string, std::string> & metadata)
{
  nlohmann::ordered_json header = nlohmann::ordered_json::object ();
  if (!metadata.empty ()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object ();
    for (const auto & kv : metadata)
      meta[kv.first] = kv.second;
    header["__metadata__"] = std::move (meta);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto & t : tensors) {
    if (t.name.empty () || t.name == "__metadata__")
      throw std::invalid_argument ("safetensors: invalid tensor name '" + t.name + "'");
    if (!names.insert (t.name).second)
      throw std::invalid_argument ("safetensors: tensor '" + t.name + "' added twice");
    uint64_t n = safetensors_dtype_size (t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0)
        throw std::invalid_argument ("safetensors: tensor '" + t.name + "' has a negative size");
      n *= static_cast<uint64_t> (d);
    }
    nlohmann::ordered_json entry = nlohmann::ordered_json::object ();
    entry["dtype"] = safetensors_dtype_name (t.dtype);
    entry["shape"] = t.shape;
    entry["data_offsets"] = { offset, offset + n };
    header[t.name] = std::move (entry);
    offset += n;
  }
  std::string json = header.dump ();
  /* data starts at 8 + json size: pad the JSON with spaces to a multiple of 8 */
  json.append ((8 - json.size () % 8) % 8, ' ');
  std::string out (8, '\0');
  uint64_t size = json.size ();
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t> (i)] = static_cast<char> ((size >> (8 * i)) & 0xff);
  out += json;
  return out;
}

void
write_file_atomically (const std::string & path, const std::string & content)
{
  write_atomically (path, [&content] (int fd, const std::string & tmp) {
        write_all (fd, content.data (), content.size (), tmp);
      });
}

/* ---- Spool ---- */

Spool::Spool (std::string path) : path_ (std::move (path))
{
  fd_ = ::open (path_.c_str (), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw_errno ("create", path_, errno);
}

Spool::~Spool ()
{
  if (fd_ >= 0)
    ::close (fd_);
  ::unlink (path_.c_str ());
}

void
Spool::append (const void *data, std::size_t size)
{
  write_all (fd_, data, size, path_);
  size_ += size;
}

/* ---- SafetensorsWriter ---- */

SafetensorsWriter::SafetensorsWriter (std::string path) : path_ (std::move (path))
{
}

SafetensorsWriter::~SafetensorsWriter ()
{
  /* commit() removes its .tmp itself on failure; nothing to do otherwise */
}

void
SafetensorsWriter::set_metadata (const std::string & key, const std::string & value)
{
  metadata_[key] = value;
}

void
SafetensorsWriter::add_tensor (const std::string & name, SafetensorsDType dtype,
    const std::vector<int64_t> & shape, const void *data, std::size_t size)
{
  Entry e;
  e.info = SafetensorsTensorInfo { name, dtype, shape };
  e.data = data;
  e.size = size;
  entries_.push_back (std::move (e));
}

void
SafetensorsWriter::add_tensor (const std::string & name, SafetensorsDType dtype,
    const std::vector<int64_t> & shape, const Spool & spool)
{
  Entry e;
  e.info = SafetensorsTensorInfo { name, dtype, shape };
  e.spool = &spool;
  e.size = static_cast<std::size_t> (spool.size ());
  entries_.push_back (std::move (e));
}

void
SafetensorsWriter::commit ()
{
  std::vector<SafetensorsTensorInfo> infos;
  for (const auto & e : entries_) {
    uint64_t expected = safetensors_dtype_size (e.info.dtype);
    for (int64_t d : e.info.shape)
      expected *= static_cast<uint64_t> (d < 0 ? 0 : d);
    if (expected != e.size)
      throw std::invalid_argument ("safetensors: tensor '" + e.info.name + "' of shape " +
          nlohmann::json (e.info.shape).dump () + " and dtype " + safetensors_dtype_name (e.info.dtype) +
          " needs " + std::to_string (expected) + " bytes, found " + std::to_string (e.size));
    infos.push_back (e.info);
  }
  const std::string header = safetensors_header (infos, metadata_);
  write_atomically (path_, [this, &header] (int fd, const std::string & tmp) {
        write_all (fd, header.data (), header.size (), tmp);
        for (const auto & e : entries_) {
          if (e.spool)
            copy_fd (e.spool->fd (), e.spool->size (), e.spool->path (), fd, tmp);
          else
            write_all (fd, e.data, e.size, tmp);
        }
      });
}

}  // namespace gst
}  // namespace backbone
