// SPDX-License-Identifier: Apache-2.0
// Many streams, one model: a loaded model (load_model) shared by every user in the process that
// names the same instance id, and a batcher that runs the frames of its users as one forward.
//
//   auto inst = backbone::ModelInstance::acquire("cams", spec, {4, 20'000'000});  // batch 4, 20 ms
//   auto stream = inst->open_stream(preprocess);          // one per camera / element
//   backbone::BatchResult r = stream->infer(frame);       // on that stream's thread
//
// Sharing. The first acquire() of an id loads the model (other callers of that id wait for the
// load); later ones share it when their settings agree, else InstanceMismatch names the first
// setting that differs and both values. The instance is freed when the last holder (the
// shared_ptr and every Stream) is gone: a later acquire() of the id loads afresh.
//
// Batching. infer() preprocesses the frame on the caller's thread, queues it, and waits until it
// has run: a batch of frames with the same preprocessed shape (frames of other sizes run in
// separate batches; nothing is padded to another frame's size) starts when batch_size frames are
// waiting or when the oldest has waited batch_timeout_ns, and as soon as the engine is free after
// that. One thread of those waiting runs the batch; one forward runs at a time, on the engine's one
// thread pool. Each frame gets its own levels: views [1, C, H, W] of the batch's outputs (no copy;
// the batch's storage lives until every frame's views are released, as Engine::forward's contract
// says). A wait is bounded by batch_timeout_ns plus the forwards queued before it; a flushing
// stream returns at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backbone/engine.h"
#include "backbone/error.h"
#include "backbone/frame.h"
#include "backbone/model.h"

namespace backbone {

struct BatchOptions {
  int batch_size = 1;             // 1 .. kMaxBatchSize frames per forward
  int64_t batch_timeout_ns = 0;   // how long the oldest waiting frame waits for others (0 .. 10 s)
  static constexpr int kMaxBatchSize = 256;
  static constexpr int64_t kMaxBatchTimeoutNs = 10'000'000'000;
};

// acquire() found the id loaded with other settings.
class InstanceMismatch : public Error {
 public:
  InstanceMismatch(const std::string& message, std::string setting, std::string ours, std::string theirs)
      : Error(message), setting_(std::move(setting)), ours_(std::move(ours)), theirs_(std::move(theirs)) {}
  const std::string& setting() const { return setting_; }  // e.g. "weights", "batch-size"
  const std::string& ours() const { return ours_; }        // the caller's value
  const std::string& theirs() const { return theirs_; }    // the instance's value

 private:
  std::string setting_, ours_, theirs_;
};

// One frame's outcome.
struct BatchResult {
  enum class Status { Done, Flushing };
  Status status = Status::Flushing;
  FeatureMaps features;       // Done: the frame's levels, [1, C, H, W] views of the batch's outputs
  PreprocessResult info;      // Done: geometry (info.tensor: the frame's preprocessed input)
  int batch_size = 0;         // Done: frames in the forward that ran it
  int64_t waited_ns = 0;      // from queueing to the start of its forward
};

struct InstanceStats {
  uint64_t frames = 0, batches = 0;
  std::vector<uint64_t> batches_by_size;  // [k]: batches of k frames (index 0 unused)
  int64_t waited_ns_total = 0, waited_ns_max = 0;  // queueing to forward, over all frames
  int users = 0;                                     // streams open now
  int waiting = 0;                                   // frames queued now, not yet running
};

class ModelInstance : public std::enable_shared_from_this<ModelInstance> {
 public:
  class Stream;

  // The settings acquire() compares, as (name, value text) in this order: config-file,
  // config-overrides, weights, seed, out-features, engine, device, precision, num-threads,
  // conv-algorithm, allow-tf32, input-format, pixel-mean, pixel-std, batch-size, batch-timeout. (The
  // resize settings and size-divisibility may differ: each stream preprocesses its own frames.)
  static std::vector<std::pair<std::string, std::string>> settings(const ModelSpec& spec, const BatchOptions& batch);

  // The instance `id` (non-empty): loaded now (load_model, ModelError as it throws them) or shared
  // (InstanceMismatch). Error for an empty id or batch options out of range.
  static std::shared_ptr<ModelInstance> acquire(const std::string& id, const ModelSpec& spec,
                                                const BatchOptions& batch);
  // A private instance (not registered: nobody shares it), e.g. for batching one's own frames.
  static std::shared_ptr<ModelInstance> create(const ModelSpec& spec, const BatchOptions& batch);
  ~ModelInstance();

  const std::string& id() const { return id_; }
  const Model& model() const { return model_; }
  const BatchOptions& batch_options() const { return batch_; }

  // A user of the instance with its own preprocessing (model().preprocess by default; checked as
  // load_model checks it). The stream keeps the instance alive.
  std::unique_ptr<Stream> open_stream();
  std::unique_ptr<Stream> open_stream(const FramePreprocessOptions& preprocess);

  InstanceStats stats() const;
  // Runs `fn` on the engine while no batch runs (e.g. Engine::describe(), which may read state a
  // forward writes). Exceptions from fn pass through.
  void exclusive(const std::function<void(Engine&)>& fn);

  ModelInstance(const ModelInstance&) = delete;
  ModelInstance& operator=(const ModelInstance&) = delete;

 private:
  struct Request;
  struct Impl;
  ModelInstance(std::string id, Model model, const BatchOptions& batch, std::vector<std::pair<std::string, std::string>> settings);
  BatchResult submit(Stream& stream, Tensor input, PreprocessResult info);
  void drop_waiting(const Stream& stream);
  void run_batch(std::vector<std::shared_ptr<Request>> batch, std::unique_lock<std::mutex>& lock);

  std::string id_;
  Model model_;
  BatchOptions batch_;
  std::vector<std::pair<std::string, std::string>> settings_;
  std::unique_ptr<Impl> impl_;
  friend class Stream;
};

class ModelInstance::Stream {
 public:
  ~Stream();
  // One frame through preprocessing and a batched forward (see the top of this file). Engine and
  // preprocessing errors are thrown (every frame of a failed batch gets the error).
  BatchResult infer(const FrameView& frame);
  // While flushing, infer() returns Flushing at once and this stream's waiting frames return
  // Flushing; frames of a batch already running complete. (GStreamer's FLUSH_START / FLUSH_STOP.)
  void set_flushing(bool flushing);
  bool flushing() const;
  const FramePreprocessOptions& preprocess() const { return preprocess_; }
  ModelInstance& instance() { return *instance_; }

 private:
  friend class ModelInstance;
  Stream(std::shared_ptr<ModelInstance> instance, FramePreprocessOptions preprocess);
  std::shared_ptr<ModelInstance> instance_;
  FramePreprocessOptions preprocess_;
  bool flushing_ = false;  // guarded by the instance's lock
};

}  // namespace backbone
