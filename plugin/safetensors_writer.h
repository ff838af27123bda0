/* SPDX-License-Identifier: Apache-2.0
 *
 * A small safetensors writer for featuresink (no GStreamer types).
 *
 * File layout (https://github.com/huggingface/safetensors, "Format"): 8 bytes little-endian
 * header size N, N bytes of JSON header, then the tensor data. The header maps each tensor name to
 * {"dtype": "F32"|"F16"|"I64", "shape": [...], "data_offsets": [begin, end]} (offsets relative to
 * the first byte after the header, in the order the tensors were added, no holes) plus an optional
 * "__metadata__" object of string -> string. The JSON is padded with spaces so that the data starts
 * on an 8-byte boundary.
 *
 * Writes are atomic: everything goes to "<path>.tmp", which is fsync'ed and renamed to <path>
 * (then the directory is fsync'ed). A writer destroyed before commit() removes its ".tmp"; a
 * process that dies leaves at most a ".tmp" behind, never a partial file under the final name.
 *
 * Tensor data comes from memory or from a spool file (a raw byte file that featuresink appends
 * one frame at a time), so a file of many frames never has to be held in memory.
 */
#ifndef __GST_BACKBONE_SAFETENSORS_WRITER_H__
#define __GST_BACKBONE_SAFETENSORS_WRITER_H__

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace backbone {
namespace gst {

/* An I/O failure: the message names the file and the operation, err is the errno (ENOSPC for a
 * full disk, 0 when not from a system call). */
class WriteError : public std::runtime_error {
 public:
  WriteError (const std::string & what, int err) : std::runtime_error (what), err_ (err) {}
  int err () const { return err_; }
 private:
  int err_;
};

enum class SafetensorsDType { F32, F16, I64 };

/* "F32", "F16", "I64" */
const char *safetensors_dtype_name (SafetensorsDType dtype);
std::size_t safetensors_dtype_size (SafetensorsDType dtype);

struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDType dtype;
  std::vector<int64_t> shape;
};

/* The header (8-byte size + padded JSON) for tensors stored in this order. Throws
 * std::invalid_argument for a duplicate or empty name or the reserved name "__metadata__". */
std::string safetensors_header (const std::vector<SafetensorsTensorInfo> & tensors,
    const std::map<std::string, std::string> & metadata);

/* Writes @content to "<path>.tmp", fsyncs, renames to @path and fsyncs the directory. */
void write_file_atomically (const std::string & path, const std::string & content);

/* A raw byte file that grows by append() and is removed by the destructor. */
class Spool {
 public:
  explicit Spool (std::string path);
  ~Spool ();
  Spool (const Spool &) = delete;
  Spool & operator= (const Spool &) = delete;

  void append (const void *data, std::size_t size);
  uint64_t size () const { return size_; }
  const std::string & path () const { return path_; }
  int fd () const { return fd_; }
 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

class SafetensorsWriter {
 public:
  /* @path: the final name; nothing is created before commit(). */
  explicit SafetensorsWriter (std::string path);
  ~SafetensorsWriter ();
  SafetensorsWriter (const SafetensorsWriter &) = delete;
  SafetensorsWriter & operator= (const SafetensorsWriter &) = delete;

  void set_metadata (const std::string & key, const std::string & value);
  /* @data is copied when commit() runs; it must stay valid until then. */
  void add_tensor (const std::string & name, SafetensorsDType dtype, const std::vector<int64_t> & shape,
      const void *data, std::size_t size);
  /* The whole content of @spool, which must stay open until commit(). */
  void add_tensor (const std::string & name, SafetensorsDType dtype, const std::vector<int64_t> & shape,
      const Spool & spool);

  /* Writes "<path>.tmp", fsyncs, renames to the final path. Throws WriteError (the .tmp is
   * removed), or std::invalid_argument when a tensor's byte size does not match its shape. */
  void commit ();

  const std::string & path () const { return path_; }
  std::string tmp_path () const { return path_ + ".tmp"; }

 private:
  struct Entry {
    SafetensorsTensorInfo info;
    const void *data = nullptr;
    std::size_t size = 0;
    const Spool *spool = nullptr;
  };
  std::string path_;
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace gst
}  // namespace backbone

#endif /* __GST_BACKBONE_SAFETENSORS_WRITER_H__ */
