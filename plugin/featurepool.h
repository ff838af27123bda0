/* SPDX-License-Identifier: Apache-2.0
 *
 * Bounded output storage of the resnetbackbone element: the policy that keeps the streaming thread
 * from waiting on downstream without a bound, and the features downstream holds bounded in memory.
 *
 * Each forward result takes one slot, which records the bytes of its feature maps; the slot returns
 * when the last GstBuffer wrapping any of that result's tensors is freed. Storage referenced
 * downstream is never reused: a wrapped tensor keeps its own storage alive (shared ownership) for
 * as long as any buffer refers to it, so held features are never overwritten whatever the policy.
 *
 * The pool is full when taking one more output would pass a limit: the count (max_outputs, 0 = no
 * count limit) or the bytes (max_bytes, 0 = no byte limit; at least one output is always allowed,
 * so one output larger than max_bytes still runs when nothing is held). When full, acquire() waits
 * at most its timeout for downstream to release outputs, then gives up (the element passes the
 * frame without features). A timed-out wait means downstream holds the features until it gets
 * more frames (an encoder's lookahead, a muxer, a sink keeping its last sample): the pool is then
 * "stalled" and later acquire() calls that find it full give up at once, without waiting, until
 * outputs are released on a thread other than the one waiting (a consumer progressing on its own)
 * and the held count and bytes fall to half their limits. Waiting again would only stall each
 * frame for the timeout.
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

struct FeaturePoolLimits {
  guint max_outputs = 0;        /* outputs held at once; 0: no count limit */
  guint64 max_bytes = 0;        /* bytes of features held at once; 0: no byte limit */
};

struct FeaturePoolStats {
  guint in_use = 0;             /* outputs held now */
  guint64 bytes_in_use = 0;     /* their bytes */
  guint64 peak_bytes = 0;       /* most bytes held at once since the pool was made */
  guint peak_in_use = 0;        /* most outputs held at once */
  guint64 waits = 0;            /* acquire() calls that waited */
  guint64 timeouts = 0;         /* waits that ran out */
  guint64 full = 0;             /* acquire() calls that gave up (the frame passed without features) */
  bool stalled = false;
};

class FeaturePool {
 public:
  enum class Acquire { Ok, Full, Flushing };

  explicit FeaturePool (const FeaturePoolLimits & limits);
  ~FeaturePool ();
  FeaturePool (const FeaturePool &) = delete;
  FeaturePool & operator= (const FeaturePool &) = delete;

  /* Takes a slot for an output of about @expected_bytes (the previous output's size; 0 when
   * unknown), waiting at most @timeout_us microseconds (0: not at all) while the pool is full.
   * Ok: *@slot is set. Full: the limits hold and no slot came in time (or the pool is stalled).
   * Flushing: the pool is (or became, while waiting) flushing. */
  Acquire acquire (guint64 expected_bytes, gint64 timeout_us, std::shared_ptr<FeatureSlot> *slot);

  /* Records the real size of a taken slot's features (after the forward). */
  static void set_bytes (const std::shared_ptr<FeatureSlot> & slot, guint64 bytes);

  /* Flushing wakes every waiter and makes acquire() return Flushing until it is cleared; clearing
   * it also clears the stalled state (a new segment starts afresh). */
  void set_flushing (bool flushing);

  /* New limits, applied to the next acquire(); held slots stay. */
  void set_limits (const FeaturePoolLimits & limits);
  FeaturePoolLimits limits () const;

  FeaturePoolStats stats () const;

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
