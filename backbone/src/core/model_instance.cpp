// SPDX-License-Identifier: Apache-2.0
// Shared model instances and the batcher across their streams (backbone/model_instance.h).
#include "backbone/model_instance.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <sstream>

#include "frame/frame_internal.h"

namespace backbone {

namespace {

using Clock = std::chrono::steady_clock;

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + v[i];
  return s;
}

std::string join(const std::vector<double>& v) {
  std::ostringstream o;
  o.precision(17);
  for (size_t i = 0; i < v.size(); ++i) o << (i ? "," : "") << v[i];
  return o.str();
}

// The registry of named instances of this process.
struct Registry {
  std::mutex lock;
  struct Entry {
    std::weak_ptr<ModelInstance> instance;
    std::shared_ptr<std::mutex> loading = std::make_shared<std::mutex>();  // one load per id at a time
  };
  std::map<std::string, Entry> entries;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: instances may outlive static destruction order
  return *r;
}

void check_batch(const BatchOptions& b) {
  if (b.batch_size < 1 || b.batch_size > BatchOptions::kMaxBatchSize)
    throw Error("batch-size must be between 1 and " + std::to_string(BatchOptions::kMaxBatchSize) + ", found " +
                std::to_string(b.batch_size));
  if (b.batch_timeout_ns < 0 || b.batch_timeout_ns > BatchOptions::kMaxBatchTimeoutNs)
    throw Error("batch-timeout must be between 0 and " + std::to_string(BatchOptions::kMaxBatchTimeoutNs) +
                " ns, found " + std::to_string(b.batch_timeout_ns));
}

// View [1, ...] of row `i` of a contiguous [N, ...] tensor, sharing its storage (and so its CUDA
// ready event).
Tensor row(const Tensor& t, int64_t i) {
  if (t.size(0) == 1) return t;
  const Tensor c = t;  // engines return contiguous outputs; checked by the caller
  Shape shape = c.shape();
  shape[0] = 1;
  const std::size_t offset = static_cast<std::size_t>(i) * static_cast<std::size_t>(c.stride(0)) * dtype_size(c.dtype());
  return Tensor::from_blob(static_cast<char*>(const_cast<void*>(c.data())) + offset, shape, c.dtype(), c.device(),
                           c.storage(), c.strides());
}

}  // namespace

struct ModelInstance::Request {
  Stream* stream = nullptr;
  Tensor input;  // [1, C, H, W]
  PreprocessResult info;
  Clock::time_point queued;
  bool taken = false, done = false, flushed = false;
  BatchResult result;
  std::exception_ptr error;
};

struct ModelInstance::Impl {
  mutable std::mutex lock;
  std::condition_variable changed;
  std::vector<std::shared_ptr<Request>> waiting;  // in arrival order
  bool engine_busy = false;
  int users = 0;
  InstanceStats stats;
};

std::vector<std::pair<std::string, std::string>> ModelInstance::settings(const ModelSpec& s, const BatchOptions& b) {
  const auto& p = s.preprocess;
  return {
      {"config-file", s.config_file},
      {"config-overrides", join(s.config_overrides)},
      {"weights", s.weights},
      {"seed", std::to_string(s.seed)},
      {"out-features", join(s.out_features) + (s.out_features.empty() ? "(default: " + join(s.default_out_features) + ")" : "")},
      {"engine", s.engine},
      {"device", s.device},
      {"precision", precision_name(s.precision)},
      {"num-threads", std::to_string(s.num_threads)},
      {"conv-algorithm", conv_algorithm_name(s.conv_algorithm)},
      {"allow-tf32", s.allow_tf32 ? "true" : "false"},
      {"input-format", p.input_format.empty() ? "config" : p.input_format},
      {"pixel-mean", p.pixel_mean.empty() ? "config" : join(p.pixel_mean)},
      {"pixel-std", p.pixel_std.empty() ? "config" : join(p.pixel_std)},
      {"batch-size", std::to_string(b.batch_size)},
      {"batch-timeout", std::to_string(b.batch_timeout_ns)},
  };
}

ModelInstance::ModelInstance(std::string id, Model model, const BatchOptions& batch,
                             std::vector<std::pair<std::string, std::string>> settings)
    : id_(std::move(id)), model_(std::move(model)), batch_(batch), settings_(std::move(settings)),
      impl_(std::make_unique<Impl>()) {
  impl_->stats.batches_by_size.assign(static_cast<size_t>(batch_.batch_size) + 1, 0);
}

ModelInstance::~ModelInstance() = default;

std::shared_ptr<ModelInstance> ModelInstance::create(const ModelSpec& spec, const BatchOptions& batch) {
  check_batch(batch);
  auto settings = ModelInstance::settings(spec, batch);
  Model m = load_model(spec);
  return std::shared_ptr<ModelInstance>(new ModelInstance("", std::move(m), batch, std::move(settings)));
}

std::shared_ptr<ModelInstance> ModelInstance::acquire(const std::string& id, const ModelSpec& spec,
                                                      const BatchOptions& batch) {
  if (id.empty()) throw Error("model instance id is empty: give a name to share the model by");
  check_batch(batch);
  auto wanted = settings(spec, batch);
  Registry& r = registry();
  std::shared_ptr<std::mutex> loading;
  {
    std::lock_guard<std::mutex> g(r.lock);
    loading = r.entries[id].loading;
  }
  // One caller loads an id at a time; the others wait here for it, then share.
  std::lock_guard<std::mutex> load_guard(*loading);
  {
    std::lock_guard<std::mutex> g(r.lock);
    if (auto inst = r.entries[id].instance.lock()) {
      for (size_t i = 0; i < wanted.size() && i < inst->settings_.size(); ++i)
        if (wanted[i].second != inst->settings_[i].second) {
          const auto& [name, ours] = wanted[i];
          const std::string& theirs = inst->settings_[i].second;
          throw InstanceMismatch("model instance \"" + id + "\" is loaded with " + name + " \"" + theirs +
                                     "\", this user asks for " + name + " \"" + ours +
                                     "\": every user of an instance must agree on it (or use another "
                                     "model-instance-id)",
                                 name, ours, theirs);
        }
      return inst;
    }
  }
  Model m = load_model(spec);  // ModelError as it throws them; nothing registered then
  std::shared_ptr<ModelInstance> inst(new ModelInstance(id, std::move(m), batch, std::move(wanted)));
  std::lock_guard<std::mutex> g(r.lock);
  r.entries[id].instance = inst;
  return inst;
}

std::unique_ptr<ModelInstance::Stream> ModelInstance::open_stream() { return open_stream(model_.preprocess); }

std::unique_ptr<ModelInstance::Stream> ModelInstance::open_stream(const FramePreprocessOptions& preprocess) {
  detail::check_frame_options(preprocess);
  const int64_t div = model_.backbone_size_divisibility;
  if (div > 1 && preprocess.size_divisibility % div != 0)
    throw Error("size-divisibility " + std::to_string(preprocess.size_divisibility) +
                " does not suit this model: its levels need the input padded to a multiple of " + std::to_string(div));
  std::unique_ptr<Stream> s(new Stream(shared_from_this(), preprocess));
  std::lock_guard<std::mutex> g(impl_->lock);
  ++impl_->users;
  return s;
}

void ModelInstance::exclusive(const std::function<void(Engine&)>& fn) {
  std::unique_lock<std::mutex> lock(impl_->lock);
  impl_->changed.wait(lock, [this] { return !impl_->engine_busy; });
  impl_->engine_busy = true;
  lock.unlock();
  std::exception_ptr error;
  try {
    fn(*model_.engine);
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  impl_->engine_busy = false;
  impl_->changed.notify_all();
  lock.unlock();
  if (error) std::rethrow_exception(error);
}

InstanceStats ModelInstance::stats() const {
  std::lock_guard<std::mutex> g(impl_->lock);
  InstanceStats s = impl_->stats;
  s.users = impl_->users;
  s.waiting = static_cast<int>(impl_->waiting.size());
  return s;
}

ModelInstance::Stream::Stream(std::shared_ptr<ModelInstance> instance, FramePreprocessOptions preprocess)
    : instance_(std::move(instance)), preprocess_(std::move(preprocess)) {}

ModelInstance::Stream::~Stream() {
  instance_->drop_waiting(*this);
  std::lock_guard<std::mutex> g(instance_->impl_->lock);
  --instance_->impl_->users;
}

void ModelInstance::Stream::set_flushing(bool flushing) {
  {
    std::lock_guard<std::mutex> g(instance_->impl_->lock);
    flushing_ = flushing;
  }
  if (flushing) instance_->drop_waiting(*this);
}

bool ModelInstance::Stream::flushing() const {
  std::lock_guard<std::mutex> g(instance_->impl_->lock);
  return flushing_;
}

BatchResult ModelInstance::Stream::infer(const FrameView& frame) {
  if (flushing()) return {};
  PreprocessResult info = preprocess_frame(frame, preprocess_);
  Tensor input = info.tensor;
  return instance_->submit(*this, std::move(input), std::move(info));
}

void ModelInstance::drop_waiting(const Stream& stream) {
  std::lock_guard<std::mutex> g(impl_->lock);
  auto& w = impl_->waiting;
  for (auto& r : w)
    if (r->stream == &stream && !r->taken) r->flushed = true;
  w.erase(std::remove_if(w.begin(), w.end(), [](const auto& r) { return r->flushed; }), w.end());
  impl_->changed.notify_all();
}

BatchResult ModelInstance::submit(Stream& stream, Tensor input, PreprocessResult info) {
  auto req = std::make_shared<Request>();
  req->stream = &stream;
  req->input = std::move(input);
  req->info = std::move(info);
  req->queued = Clock::now();
  const auto timeout = std::chrono::nanoseconds(batch_.batch_timeout_ns);
  const size_t batch_size = static_cast<size_t>(batch_.batch_size);

  std::unique_lock<std::mutex> lock(impl_->lock);
  if (stream.flushing_) return {};
  impl_->waiting.push_back(req);
  impl_->changed.notify_all();
  while (true) {
    if (req->done) {
      if (req->error) std::rethrow_exception(req->error);
      return std::move(req->result);
    }
    if (req->flushed) return {};
    // The oldest waiting frame's group: the frames of its shape, in arrival order.
    std::vector<std::shared_ptr<Request>> group;
    Clock::time_point deadline = Clock::time_point::max();
    if (!impl_->waiting.empty()) {
      const Shape& shape = impl_->waiting.front()->input.shape();
      for (const auto& r : impl_->waiting)
        if (r->input.shape() == shape && group.size() < batch_size) group.push_back(r);
      deadline = impl_->waiting.front()->queued + timeout;
    }
    const bool ready = !group.empty() && (group.size() >= batch_size || Clock::now() >= deadline);
    if (ready && !impl_->engine_busy) {
      run_batch(std::move(group), lock);  // unlocks around the forward
      continue;
    }
    if (ready || group.empty()) impl_->changed.wait(lock);  // the engine frees up (or our frame completes)
    else impl_->changed.wait_until(lock, deadline);
  }
}

void ModelInstance::run_batch(std::vector<std::shared_ptr<Request>> batch, std::unique_lock<std::mutex>& lock) {
  auto& w = impl_->waiting;
  for (auto& r : batch) r->taken = true;
  w.erase(std::remove_if(w.begin(), w.end(), [](const auto& r) { return r->taken; }), w.end());
  impl_->engine_busy = true;
  const Clock::time_point start = Clock::now();
  const int n = static_cast<int>(batch.size());
  lock.unlock();

  std::exception_ptr error;
  FeatureMaps maps;
  try {
    Tensor input = batch.front()->input;
    if (n > 1) {
      Shape shape = input.shape();
      shape[0] = n;
      input = Tensor::empty(shape);
      const std::size_t one = batch.front()->input.nbytes();
      for (int i = 0; i < n; ++i) {
        const Tensor src = batch[i]->input.contiguous();
        std::memcpy(static_cast<char*>(input.data()) + static_cast<std::size_t>(i) * one, src.data(), one);
      }
    }
    maps = model_.engine->forward(input);
    for (auto& [name, t] : maps)
      if (t.dim() < 1 || t.size(0) != n || !t.is_contiguous())
        throw ShapeError("engine output \"" + name + "\" is " + shape_str(t.shape()) + ", expected a contiguous batch of " +
                         std::to_string(n));
  } catch (...) {
    error = std::current_exception();
  }

  lock.lock();
  impl_->engine_busy = false;
  auto& st = impl_->stats;
  st.batches++;
  if (static_cast<size_t>(n) < st.batches_by_size.size()) st.batches_by_size[static_cast<size_t>(n)]++;
  for (int i = 0; i < n; ++i) {
    Request& r = *batch[static_cast<size_t>(i)];
    r.done = true;
    const int64_t waited = std::chrono::duration_cast<std::chrono::nanoseconds>(start - r.queued).count();
    st.frames++;
    st.waited_ns_total += waited;
    st.waited_ns_max = std::max(st.waited_ns_max, waited);
    if (error) {
      r.error = error;
      continue;
    }
    r.result.status = BatchResult::Status::Done;
    r.result.batch_size = n;
    r.result.waited_ns = waited;
    r.result.info = std::move(r.info);
    for (const auto& [name, t] : maps) r.result.features.emplace_back(name, row(t, i));
  }
  impl_->changed.notify_all();
}

}  // namespace backbone
