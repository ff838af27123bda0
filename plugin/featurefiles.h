/* SPDX-License-Identifier: Apache-2.0
 *
 * The files of one featuresink run (no GObject): the levels of each frame's GstFeatureMeta,
 * converted to the output dtype, appended to the safetensors file being filled (one spool per
 * level, see safetensors_writer.h), a new file per shape run, caps, stream or max_frames frames,
 * and index.json listing them, written once when the run ends.
 */
#ifndef __GST_BACKBONE_FEATURE_FILES_H__
#define __GST_BACKBONE_FEATURE_FILES_H__

#include <gst/featuremeta/featuremeta.h>
#include <gst/gst.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "safetensors_writer.h"

namespace backbone {
namespace gst {

/* A failure of the stream's content (a level missing or of another shape): featuresink posts it
 * as a GST_ELEMENT_ERROR of the STREAM domain, with @debug as the debug text. */
struct StreamError : std::runtime_error {
  StreamError (std::string msg, std::string dbg)
  :  std::runtime_error (std::move (msg)), debug (std::move (dbg)) {}
  std::string debug;
};

/* "res3, res5" -> {"res3", "res5"} (blanks around names dropped, empty items skipped). */
std::vector<std::string> split_levels (const std::string & text);

/* dir/name, with one '/' between. */
std::string join_path (const std::string & dir, const std::string & name);

struct FeatureFilesOptions {
  std::string dir;                      /* the location, existing */
  std::string prefix = "features";      /* <prefix>-00000.safetensors, ... */
  guint max_frames = 256;               /* frames per file at most */
  SafetensorsDType dtype = SafetensorsDType::F32;       /* F32 or F16 */
  std::vector<std::string> levels;      /* the levels to write, in this order; empty: all */
};

struct OpenFile;

class FeatureFiles {
 public:
  explicit FeatureFiles (FeatureFilesOptions options);
  ~FeatureFiles ();             /* an open file is discarded (its spools removed) */
  FeatureFiles (const FeatureFiles &) = delete;
  FeatureFiles & operator= (const FeatureFiles &) = delete;

  /* The source caps (a caps change starts a new file). */
  void set_caps (std::string caps);
  /* A new stream (stream-start after the first): its frames go to new files. */
  void new_stream ();
  /* The next frame: @meta's levels appended (a new file first when the shapes, caps or stream
   * changed or the file is full), or with @meta NULL only counted. Throws StreamError for a meta
   * that cannot be written (a level asked for is missing, not one N,C,H,W frame, unknown dtype)
   * and WriteError for an I/O failure. */
  void add_frame (GstBuffer * buffer, const GstFeatureMeta * meta);
  /* Completes the open file (header + spools -> <file>.tmp -> fsync -> rename), listed in the
   * index; no-op without one. Throws WriteError. */
  void close_file ();
  /* Drops the open file: its spools are removed, it is not listed. */
  void discard_file ();
  /* Writes index.json atomically: every completed file, the totals, and @end ("eos", "stopped"
   * or "error"). Throws WriteError. */
  void write_index (const char *end);
  /* Whether the index lists every frame added: written, and no frame added since. */
  bool index_written () const { return index_written_; }
  guint64 frames_seen () const { return frame_index_; }

 private:
  void append_level (const GstFeatureLevel * level, Spool & spool);

  FeatureFilesOptions opt_;
  std::unique_ptr<OpenFile> file_;
  nlohmann::ordered_json files_ = nlohmann::ordered_json::array ();   /* the index's entries */
  guint file_count_ = 0;
  guint stream_ = 0;
  std::string caps_;
  guint64 frame_index_ = 0;
  guint64 frames_written_ = 0;
  guint64 frames_without_ = 0;
  bool have_model_ = false;
  std::string model_name_;
  guint model_unique_id_ = 0;
  bool index_written_ = false;
  std::vector<uint8_t> scratch_;
};

}  // namespace gst
}  // namespace backbone

#endif /* __GST_BACKBONE_FEATURE_FILES_H__ */
