/* SPDX-License-Identifier: Apache-2.0
 *
 * Bounded output storage of the resnetbackbone element. A forward result takes one of pool-size
 * slots; the slot returns when the last GstBuffer wrapping any of that result's tensors is freed.
 * When every slot is in use the streaming thread waits (backpressure instead of unbounded
 * allocation) until a slot returns or the pool is set flushing.
 *
 * Storage referenced downstream is never reused: a wrapped tensor keeps its own storage alive (shared
 * ownership) for as long as any buffer refers to it, and a slot only counts results.
 */
#ifndef __GST_BACKBONE_FEATURE_POOL_H__
#define __GST_BACKBONE_FEATURE_POOL_H__

#include <gst/gst.h>

#include <memory>

#include "backbone/tensor.h"

namespace gstbackbone {

/* One taken slot. Dropping the last reference returns it to its pool (which may be gone by then:
 * the shared state outlives the FeaturePool object). */
class FeatureSlot;

class FeaturePool {
 public:
  explicit FeaturePool (guint size);
  ~FeaturePool ();
  FeaturePool (const FeaturePool &) = delete;
  FeaturePool & operator= (const FeaturePool &) = delete;

  /* Takes a free slot, waiting while all are in use. Returns nullptr when the pool is (or becomes,
   * while waiting) flushing. */
  std::shared_ptr<FeatureSlot> acquire ();

  /* Flushing wakes every waiter and makes acquire() return nullptr until it is cleared. */
  void set_flushing (bool flushing);

  guint size () const;
  /* Slots currently taken. */
  guint in_use () const;
  /* Times acquire() had to wait for a slot. */
  guint64 waits () const;

  /* A read-only GstBuffer wrapping @tensor's memory without a copy (a CPU tensor, contiguous).
   * The buffer holds a copy of @tensor (shared storage) and a reference to @slot until it is
   * freed. */
  static GstBuffer *wrap (const backbone::Tensor & tensor, const std::shared_ptr<FeatureSlot> & slot);

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  /* namespace gstbackbone */

#endif /* __GST_BACKBONE_FEATURE_POOL_H__ */
