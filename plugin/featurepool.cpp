/* SPDX-License-Identifier: Apache-2.0 */
#include "featurepool.h"

#include "backbone/error.h"

namespace gstbackbone {

struct FeaturePool::State {
  GMutex lock;
  GCond cond;
  guint size = 0;
  guint in_use = 0;
  guint64 waits = 0;
  bool flushing = false;

  State () {
    g_mutex_init (&lock);
    g_cond_init (&cond);
  }
  ~State () {
    g_cond_clear (&cond);
    g_mutex_clear (&lock);
  }
};

class FeatureSlot {
 public:
  explicit FeatureSlot (std::shared_ptr<FeaturePool::State> state) : state_ (std::move (state)) {}
  ~FeatureSlot () {
    g_mutex_lock (&state_->lock);
    state_->in_use--;
    g_cond_broadcast (&state_->cond);
    g_mutex_unlock (&state_->lock);
  }
  FeatureSlot (const FeatureSlot &) = delete;
  FeatureSlot & operator= (const FeatureSlot &) = delete;

 private:
  std::shared_ptr<FeaturePool::State> state_;
};

FeaturePool::FeaturePool (guint size) : state_ (std::make_shared<State> ())
{
  state_->size = MAX (size, 1u);
}

FeaturePool::~FeaturePool ()
{
  set_flushing (true);
}

std::shared_ptr<FeatureSlot>
FeaturePool::acquire ()
{
  g_mutex_lock (&state_->lock);
  bool waited = false;
  while (!state_->flushing && state_->in_use >= state_->size) {
    if (!waited)
      state_->waits++;
    waited = true;
    g_cond_wait (&state_->cond, &state_->lock);
  }
  if (state_->flushing) {
    g_mutex_unlock (&state_->lock);
    return nullptr;
  }
  state_->in_use++;
  g_mutex_unlock (&state_->lock);
  return std::make_shared<FeatureSlot> (state_);
}

void
FeaturePool::set_flushing (bool flushing)
{
  g_mutex_lock (&state_->lock);
  state_->flushing = flushing;
  g_cond_broadcast (&state_->cond);
  g_mutex_unlock (&state_->lock);
}

guint
FeaturePool::size () const
{
  return state_->size;
}

guint
FeaturePool::in_use () const
{
  g_mutex_lock (&state_->lock);
  guint n = state_->in_use;
  g_mutex_unlock (&state_->lock);
  return n;
}

guint64
FeaturePool::waits () const
{
  g_mutex_lock (&state_->lock);
  guint64 n = state_->waits;
  g_mutex_unlock (&state_->lock);
  return n;
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
