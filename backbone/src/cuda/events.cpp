// SPDX-License-Identifier: Apache-2.0
// cuda_ready_event(): which CUDA event marks a tensor's data complete. Engines register the event of
// each output under its storage owner; a lookup by Tensor::storage().get() finds it for the tensor
// and every view sharing that storage. Plain C++, no CUDA header.
#include <mutex>
#include <unordered_map>

#include "backbone/tensor.h"
#include "cuda/loader.h"

namespace backbone {
namespace detail {
namespace {

struct ReadyEvent {
  int device = 0;
  void* event = nullptr;
};

struct Registry {
  std::mutex mutex;
  std::unordered_map<const void*, ReadyEvent> events;
};

// Never destroyed: tensors may be released from static destructors after this file's statics.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

bool lookup(const Tensor& t, ReadyEvent* out) {
  if (!t.defined() || !t.device().is_cuda() || !t.storage()) return false;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const auto it = r.events.find(t.storage().get());
  if (it == r.events.end()) return false;
  *out = it->second;
  return true;
}

}  // namespace

void register_ready_event(const void* storage_owner, int device, void* event) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.events[storage_owner] = ReadyEvent{device, event};
}

void unregister_ready_event(const void* storage_owner) noexcept {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.events.erase(storage_owner);
}

}  // namespace detail

void* cuda_ready_event(const Tensor& t) {
  detail::ReadyEvent e;
  return detail::lookup(t, &e) ? e.event : nullptr;
}

void cuda_wait_ready(const Tensor& t) {
  detail::ReadyEvent e;
  if (detail::lookup(t, &e)) detail::cuda_event_synchronize(e.device, e.event);
}

}  // namespace backbone
