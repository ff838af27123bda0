/* SPDX-License-Identifier: Apache-2.0 */
#include "featurepool.h"

#include "backbone/error.h"

namespace gstbackbone {

struct FeaturePool::State {
  GMutex lock;
  GCond cond;
  FeaturePoolLimits limits;
  FeaturePoolStats stats;
  bool flushing = false;
  /* The thread of the last acquire() (the streaming thread): releases on it are the element's own
   * pushes reaching a synchronous consumer, never a consumer progressing on its own. */
  GThread *acquiring_thread = nullptr;

  State () {
    g_mutex_init (&lock);
    g_cond_init (&cond);
  }
  ~State () {
    g_cond_clear (&cond);
    g_mutex_clear (&lock);
  }

  /* Under the lock. */
  bool full (guint64 expected) const {
    if (limits.max_outputs > 0 && stats.in_use >= limits.max_outputs)
      return true;
    if (limits.max_bytes > 0 && stats.in_use > 0 &&
        (stats.bytes_in_use > limits.max_bytes || expected > limits.max_bytes - stats.bytes_in_use))
      return true;
    return false;
  }
  bool at_most_half () const {
    return (limits.max_outputs == 0 || stats.in_use <= limits.max_outputs / 2) &&
        (limits.max_bytes == 0 || stats.bytes_in_use <= limits.max_bytes / 2);
  }
};

class FeatureSlot {
 public:
  explicit FeatureSlot (std::shared_ptr<FeaturePool::State> state) : state_ (std::move (state)) {}
  ~FeatureSlot () {
    g_mutex_lock (&state_->lock);
    state_->stats.in_use--;
    state_->stats.bytes_in_use -= bytes_;
    if (state_->stats.stalled && g_thread_self () != state_->acquiring_thread &&
        state_->at_most_half ())
      state_->stats.stalled = false;
    g_cond_broadcast (&state_->cond);
    g_mutex_unlock (&state_->lock);
  }
  FeatureSlot (const FeatureSlot &) = delete;
  FeatureSlot & operator= (const FeatureSlot &) = delete;

  void set_bytes (guint64 bytes) {
    g_mutex_lock (&state_->lock);
    state_->stats.bytes_in_use = state_->stats.bytes_in_use - bytes_ + bytes;
    bytes_ = bytes;
    state_->stats.peak_bytes = MAX (state_->stats.peak_bytes, state_->stats.bytes_in_use);
    g_mutex_unlock (&state_->lock);
  }

 private:
  std::shared_ptr<FeaturePool::State> state_;
  guint64 bytes_ = 0;
};

FeaturePool::FeaturePool (const FeaturePoolLimits & limits) : state_ (std::make_shared<State> ())
{
  state_->limits = limits;
}

FeaturePool::~FeaturePool ()
{
  set_flushing (true);
}

FeaturePool::Acquire
FeaturePool::acquire (guint64 expected_bytes, gint64 timeout_us, std::shared_ptr<FeatureSlot> *slot)
{
  State & s = *state_;
  g_mutex_lock (&s.lock);
  s.acquiring_thread = g_thread_self ();
  Acquire result = Acquire::Ok;
  if (!s.flushing && s.full (expected_bytes)) {
    if (s.stats.stalled || timeout_us <= 0) {
      result = Acquire::Full;
    } else {
      s.stats.waits++;
      const gint64 deadline = g_get_monotonic_time () + timeout_us;
      while (!s.flushing && s.full (expected_bytes)) {
        if (!g_cond_wait_until (&s.cond, &s.lock, deadline)) {
          if (!s.flushing && s.full (expected_bytes)) {
            s.stats.timeouts++;
            s.stats.stalled = true;
            result = Acquire::Full;
          }
          break;
        }
      }
    }
  }
  if (s.flushing)
    result = Acquire::Flushing;
  if (result == Acquire::Full)
    s.stats.full++;
  if (result == Acquire::Ok) {
    s.stats.in_use++;
    s.stats.peak_in_use = MAX (s.stats.peak_in_use, s.stats.in_use);
  }
  g_mutex_unlock (&s.lock);
  if (result == Acquire::Ok)
    *slot = std::make_shared<FeatureSlot> (state_);
  return result;
}

void
FeaturePool::set_bytes (const std::shared_ptr<FeatureSlot> & slot, guint64 bytes)
{
  if (slot)
    slot->set_bytes (bytes);
}

void
FeaturePool::set_flushing (bool flushing)
{
  g_mutex_lock (&state_->lock);
  state_->flushing = flushing;
  if (!flushing)
    state_->stats.stalled = false;
  g_cond_broadcast (&state_->cond);
  g_mutex_unlock (&state_->lock);
}

void
FeaturePool::set_limits (const FeaturePoolLimits & limits)
{
  g_mutex_lock (&state_->lock);
  state_->limits = limits;
  g_cond_broadcast (&state_->cond);
  g_mutex_unlock (&state_->lock);
}

FeaturePoolLimits
FeaturePool::limits () const
{
  g_mutex_lock (&state_->lock);
  FeaturePoolLimits l = state_->limits;
  g_mutex_unlock (&state_->lock);
  return l;
}

FeaturePoolStats
FeaturePool::stats () const
{
  g_mutex_lock (&state_->lock);
  FeaturePoolStats s = state_->stats;
  g_mutex_unlock (&state_->lock);
  return s;
}

namespace {

/* What a wrapped GstBuffer keeps alive: the tensor (its storage) and the slot. */
struct WrappedTensor {
  backbone::Tensor tensor;
  std::shared_ptr<FeatureSlot> slot;
};

void
wrapped_tensor_free (gpointer data)
{
  delete static_cast < WrappedTensor * >(data);
}

}  /* namespace */

GstBuffer *
FeaturePool::wrap (const backbone::Tensor & tensor, const std::shared_ptr<FeatureSlot> & slot)
{
  if (!tensor.defined () || !tensor.device ().is_cpu () || !tensor.is_contiguous ())
    throw backbone::Error ("resnetbackbone: an output tensor must be a contiguous CPU tensor to be "
        "wrapped, found " + (tensor.defined () ? tensor.device ().str () + " " +
            backbone::shape_str (tensor.shape ()) + (tensor.is_contiguous () ? "" : " non-contiguous") :
            std::string ("an undefined tensor")));
  const gsize nbytes = tensor.nbytes ();
  auto *holder = new WrappedTensor {tensor, slot};
  /* The memory is read-only: downstream never writes into features another consumer may read. */
  return gst_buffer_new_wrapped_full (GST_MEMORY_FLAG_READONLY,
      const_cast < void *>(holder->tensor.data ()), nbytes, 0, nbytes, holder, wrapped_tensor_free);
}

}  /* namespace gstbackbone */
